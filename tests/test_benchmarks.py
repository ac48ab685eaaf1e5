"""Smoke tests of the benchmark scripts in quick mode (they never write docs here)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from torch import nn

from napari_qpi.models import ModelCard, list_models, save_user_model
from napari_qpi.nn import build_network
from napari_qpi.training.data import NORMALISATION
from napari_qpi.training.search import save_model_folder

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY_PRNET = {
    "width": 0.25,
    "decoder_channels": 8,
    "coord_channels": True,
    "connectivity": {"D0": ["E0", "G"]},
}


def load_script(name: str) -> ModuleType:
    """A script of ``benchmarks/`` imported as a module (with ``benchmarks/`` importable, as when
    the script runs)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tiny_searched(name: str) -> tuple[nn.Module, ModelCard]:
    """An untrained tiny searched PRNet and its card."""
    net = build_network("prnet", TINY_PRNET).eval()
    card = ModelCard(
        name=name,
        family="searched",
        modality="hologram",
        architecture={"network": "prnet", "config": net.config.to_dict()},
        normalisation=dict(NORMALISATION),
    )
    return net, card


def table_rows(text: str, header_start: str) -> list[list[str]]:
    """Cells of the rows of every markdown table whose header starts with ``header_start``."""
    lines = text.splitlines()
    rows = []
    for i, line in enumerate(lines):
        if line.startswith(header_start):
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip("|").split("|")])
    return rows


def test_searched_models_benchmark_quick(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAPARI_QPI_USER_DIR", str(tmp_path / "user"))
    bench = load_script("searched_models")
    monkeypatch.setattr(bench, "DOCS", tmp_path / "benchmarks.md")
    save_user_model(*tiny_searched("bench-searched"))
    save_model_folder(tmp_path / "bench-transfer", *tiny_searched("bench-transfer"))

    measured = []
    run = bench.run
    monkeypatch.setattr(bench, "run", lambda *a, **k: measured.append(run(*a, **k)) or measured[0])
    argv = ["--quick", "--threads", "1", "--transfer-model", str(tmp_path / "bench-transfer")]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out

    assert not (tmp_path / "benchmarks.md").exists()
    models = [card.name for card in list_models("hologram")]
    assert "bench-searched" in models
    methods = [bench.CLASSICAL, bench.CLASSICAL_CARRIER, bench.CLASSICAL_ORDER3, *models]
    accuracy = table_rows(out, "| method | family | parameters | PSNR")
    assert [row[0] for row in accuracy] == [bench.ZERO, *methods] * len(bench.SPLITS)
    for row in accuracy:
        assert all(math.isfinite(float(cell)) for cell in row[3:7]), row
        assert row[7] == "0 of 2" or row[0] in (bench.CLASSICAL, bench.CLASSICAL_ORDER3), row
    real = table_rows(out, "| method | npz with bg_data")
    # every method on the real HL60 corpus ("carrier known" would repeat the classical row:
    # the corpus has no carrier metadata)
    assert [row[0] for row in real] == [m for m in methods if m != bench.CLASSICAL_CARRIER]
    assert real[0][-1] == "yes"  # the classical method meets the thresholds on all 7
    latency = table_rows(out, "| method | parameters | 256^2")
    assert [row[0] for row in latency] == [*methods, bench.UNET64]
    assert all(float(row[2]) > 0 for row in latency)
    transfer = table_rows(out, "| method | training |")
    assert len(transfer) == 6
    assert transfer[-1][0] == "(b) bench-transfer, retrained on the transfer system"
    assert all(math.isfinite(float(cell)) for row in transfer for cell in row[2:6])
    # no model trained on the transfer system is shipped: without the option, no row (b)
    alone = replace(measured[0], transfer_model=None, transfer_accuracy=None)
    transfer = table_rows(bench.render(alone, "python ...", True), "| method | training |")
    assert len(transfer) == 5 and transfer[-1][0].endswith(", as is")


def test_latencies_are_timed_in_turn_round_after_round():
    """Every method runs twice per round, in turn (a load change slows all alike; the first
    run warms it up after the others); each gets the median of its timed runs."""
    bench = load_script("searched_models")
    calls = []
    timings = bench.interleaved_median_ms(
        {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}, repeats=3
    )
    assert calls == ["a", "a", "b", "b", "c", "c"] * 3
    assert set(timings) == {"a", "b", "c"} and all(ms >= 0 for ms in timings.values())


def test_resolution_reference_keeps_flat_phase_and_loses_detail_with_stride(tmp_path, monkeypatch):
    bench = load_script("resolution_bound")
    flat = np.full((64, 64), 1.5, dtype=np.float32)
    assert np.allclose(bench.through_grid(flat, 8), flat)

    scores = [bench.bound("standard", stride, n=2)["psnr_db"] for stride in (2, 8, 32)]
    assert scores[0] > scores[1] > scores[2]

    monkeypatch.setattr(bench, "STRIDES", (2, 8))
    docs = tmp_path / "benchmarks.md"
    monkeypatch.setattr(bench, "write_section", lambda name, text: docs.write_text(text))
    assert bench.main(["--images", "1", "--write"]) == 0
    assert "| 8 |" in docs.read_text()


def test_loss_ablation_quick_run_trains_every_variant(capsys):
    bench = load_script("loss_ablation")
    assert bench.main(["--quick", "--jobs", "1"]) == 0
    rows = table_rows(capsys.readouterr().out, "| loss | steps |")
    assert [row[0] for row in rows] == ["zero phase (ignores the data)"] + [
        label for label, _, _ in bench.VARIANTS
    ]
    assert all(int(row[1]) > 0 for row in rows[1:])
    assert all(math.isfinite(float(cell)) for row in rows for cell in row[2:])


def test_refocus_benchmark_quick_compares_with_pyholoscope(capsys):
    bench = load_script("refocus")
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out, "| pixel (um) | true z (um) | ours z")
    assert len(rows) == len(bench.QUICK_CASES)
    for row in rows:
        true_z, ours = float(row[1]), float(row[2].split()[0])
        assert abs(ours - true_z) <= max(1.0, 0.03 * abs(true_z))
    times = table_rows(out, "| ours, transfer function cached")
    assert all(float(cell) > 0 for cell in times[0])


def test_cdp_kd_regimes_quick_grid_pairs_seeds_and_resumes(tmp_path, monkeypatch, capsys):
    """The KD-regimes grid at tiny sizes: every regime has KD and control for each seed, paired;
    results are written as runs end, and a rerun trains nothing. No margin is asserted."""
    bench = load_script("cdp_kd_regimes")
    monkeypatch.setattr(bench, "DOCS", tmp_path / "cdp.md")
    out, plot = tmp_path / "runs", tmp_path / "regimes.png"
    assert bench.main(["--quick", "--out", str(out), "--plot", str(plot)]) == 0
    runs = sorted(p.stem for p in (out / "runs").glob("*.json"))
    mask_only = len(bench.MASK_ONLY_REGIMES)
    assert len(runs) == 2 * (2 * len(bench.REGIMES) + mask_only)  # 2 seeds; KD, control, mask-only
    summary = json.loads((out / "summary.json").read_text())["rows"]
    assert [(r["regime"], r["arm"]) for r in summary][:2] == [("base", "kd"), ("base", "mask_only")]
    assert {r["regime"] for r in summary} == set(bench.REGIMES)
    for row in summary:
        assert row["seeds"] == 2
        kd, control = row["psnr_db"]["arm"][0], row["psnr_db"]["control"][0]
        assert row["psnr_db"]["difference"][0] == pytest.approx(kd - control, abs=1e-9)
        assert all(math.isfinite(v) for v in row["psnr_db"]["difference"])
    teachers = {p.name for p in (out / "teachers").iterdir()}
    assert len(teachers) == 5  # base (shared by mask, size, steps regimes), 2 photons, 2 data
    assert plot.stat().st_size > 0 and not (tmp_path / "cdp.md").exists()
    text = capsys.readouterr().out
    assert "| training objects | 256 |" in text and "+-" in text
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    assert bench.main(["--quick", "--out", str(out)]) == 0
    assert "seed 0: PSNR" not in capsys.readouterr().out  # nothing trained again
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == stamps


def test_cdp_kd_regimes_students_are_a_quarter_and_a_sixteenth_of_the_teacher():
    from napari_qpi.nn.cdpnet import CDPNet

    bench = load_script("cdp_kd_regimes")
    teacher = CDPNet(bench.regime_config("base", 0, False).network_config("teacher"))
    for regime, ratio in (("base", 1 / 4), ("student16", 1 / 16)):
        config = bench.regime_config(regime, 1, False)
        student = CDPNet(config.network_config("student"))
        assert bench.parameters(student) / bench.parameters(teacher) == pytest.approx(
            ratio, rel=0.05
        )
        assert config.student_mask == 1 and config.seed == 1
    assert bench.regime_config("data256", 0, False).train_objects == 256
    assert bench.regime_config("mask2", 0, False).network_config("teacher").mask_levels is None


def test_cdp_unseen_quick_scores_the_shipped_students_and_the_solvers(
    tmp_path, monkeypatch, capsys
):
    bench = load_script("cdp_unseen")
    monkeypatch.setattr(bench, "DOCS", tmp_path / "cdp.md")
    objects = bench.unseen_objects((16, 16), bench.IMAGES)
    assert objects.shape == (len(bench.IMAGES), 16, 16)
    np.testing.assert_allclose(np.abs(objects), 1.0, atol=1e-6)  # phase only
    assert np.angle(objects).min() >= -1e-6 and np.angle(objects).max() <= bench.PEAK_RAD + 1e-6
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out, "| model (its own mask) |")
    paired = table_rows(out, "| held-out set |")
    assert [row[0] for row in paired] == list(bench.SYNTHETIC_SETS)  # both kinds, paired
    systems = ["network", "HIO", "HIO, phase-only prior", "Wirtinger flow"]
    systems += ["phase object (GS, flat start)", "constant phase"]
    assert [row[1] for row in rows] == systems * len(bench.MODELS)
    assert all(math.isfinite(float(cell)) for row in rows for cell in row[2:-2])
    assert {row[0] for row in rows} == {f"`{name}`" for name in bench.MODELS}
    assert not (tmp_path / "cdp.md").exists()


def test_cdp_ship_students_installs_the_pair_with_the_measured_margin(tmp_path, monkeypatch):
    from napari_qpi.nn.cdpnet import CDPNet, CDPNetConfig
    from napari_qpi.training.cdp_models import make_card, save_cdp_model

    bench = load_script("cdp_ship_students")
    monkeypatch.setattr(bench, "N_OBJECTS", 6)
    folders = {}
    for name, family, seed in (("cdp-student", "distilled", 1), ("cdp-control", "baseline", 2)):
        config = CDPNetConfig.student(shape=(16, 16), base_channels=4, depth=2, mask_seed=seed)
        model = CDPNet(config).eval()
        training = {"steps": 0, "config": {"sources": ["cells", "shapes"]}}
        card = make_card(name, family, model, description="", training=training)
        folders[name] = save_cdp_model(model, tmp_path / "runs" / name, card)
    dest = tmp_path / "shipped"
    dest.mkdir()
    assert (
        bench.main([str(folders["cdp-student"]), str(folders["cdp-control"]), "--dest", str(dest)])
        == 0
    )
    student, control = (ModelCard.load(dest / name) for name in ("cdp-student", "cdp-control"))
    for card, source in ((student, "cdp-student"), (control, "cdp-control")):
        assert card.sha256 == ModelCard.load(folders[source]).sha256  # weights untouched
        margin = card.extra["kd_margin"]
        assert set(margin["psnr_db_vs_other_single_snapshot"]) == set(bench.SYNTHETIC_SETS)
        assert margin["recommended"] in ("cdp-student", "cdp-control")
        assert "cells, procedural sharp-edged objects" in card.description
        assert str(tmp_path) not in margin["command"]
    ours, theirs = (
        c.extra["kd_margin"]["psnr_db_vs_other_single_snapshot"] for c in (student, control)
    )
    assert all(ours[k] == pytest.approx(-theirs[k]) for k in ours)  # the same pairs, both signs
    # the rule: KD only when it beats the control by more than two seed sd on every set
    wide = {name: (2.5 * bench.SEED_SD_DB, 0.1) for name in bench.SYNTHETIC_SETS}
    assert bench.recommendation(wide, 2.5 * bench.SEED_SD_DB) == "cdp-student"
    narrow = {name: (-0.3, 0.1) for name in bench.SYNTHETIC_SETS}
    assert bench.recommendation(narrow, -0.3) == "cdp-control"


def test_cdp_vs_phase_object_compares_a_model_with_the_solver_on_every_set(monkeypatch, capsys):
    bench = load_script("cdp_vs_phase_object")
    monkeypatch.setattr(bench, "N_SYNTHETIC", 2)
    monkeypatch.setattr(bench.cdp_unseen, "ITERATIONS", 5)
    assert bench.main(["cdp-student"]) == 0
    rows = table_rows(capsys.readouterr().out, "| model | objects |")
    assert [row[1].split(" (")[0] for row in rows] == [
        "unseen scikit-image",
        *bench.cdp_unseen.SYNTHETIC_SETS,
    ]
    for row in rows:
        network, solver = (float(cell.split(" / ")[0]) for cell in row[2:4])
        difference = float(row[4].split(" +- ")[0])
        assert difference == pytest.approx(network - solver, abs=0.02)


def test_cdp_vs_phase_object_starts_table_scores_each_start(monkeypatch):
    bench = load_script("cdp_vs_phase_object")
    monkeypatch.setattr(bench.cdp_unseen, "ITERATIONS", 20)
    monkeypatch.setattr(bench.cdp_unseen, "IMAGES", bench.cdp_unseen.IMAGES[:2])
    rows = [row.strip("|").split("|") for row in bench.starts("cdp-student")]
    scores = {
        (method.strip(), init.strip()): float(cell.split(" / ")[0]) for method, init, cell in rows
    }
    assert set(scores) == {("gs", "spectral"), ("gs", "random"), ("gs", "flat"), ("hio", "flat")}
    assert scores["gs", "flat"] > scores["gs", "spectral"] + 10  # the start decides
