"""Where does distillation help the single-snapshot CDP student? KD vs control, over seeds.

    python benchmarks/cdp_kd_regimes.py                  # the grid; prints the table
    python benchmarks/cdp_kd_regimes.py --write          # ... and docs/cdp.md + the plot
    python benchmarks/cdp_kd_regimes.py --quick --out /tmp/kd   # smoke run (tiny, 2 seeds)
    python benchmarks/cdp_kd_regimes.py --reverse        # a second process on the same grid

One factor at a time around a base regime (32 x 32 px objects, oversampling 2, 100 photons per
pattern pixel, unlimited training objects, a student with 1/4 of the teacher's network
parameters, free mask phases): a finite training set (``DistillConfig.train_objects``: 256,
1024), photons per pattern pixel (10, 1000), a student with 1/16 of the teacher's parameters,
a student mask quantised to 4 or 2 levels (the teacher's stays free), students trained 4x
longer (the head start a teacher's mask gives may fade with training). One teacher (4 masks,
seed 0) per regime that changes it (data, photons), shared by the seeds.

For each seed s, from the same initial weights, batches and noise (``train_student`` with
``config.seed = s``), the student starting from the teacher's mask k = s:

- ``kd``: the teacher's *trained* mask k, ``L = L_rec + 0.1 L_feat + 1.0 L_mask`` (the
  library's distillation, the paper's weights);
- ``mask_only`` (in ``MASK_ONLY_REGIMES``): the teacher's trained mask k,
  ``L_rec`` alone, the recipe of the shipped ``cdp-student``;
- ``control``: the random mask k the teacher started from, ``L_rec`` alone: no teacher.

Scores: ``evaluate_model`` on 64 held-out objects (``held_out_objects``, noise seed 0).
Differences are paired by seed (same weights, batches, noise, mask index); mean +- sample
standard deviation over the seeds. Each run is written to ``<out>/runs/*.json`` as it ends, and
a rerun skips what is done; two processes can share the grid (claim files, ``--reverse``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from _docs import machine, write_section
from napari_qpi.nn.cdpnet import CDPNet
from napari_qpi.training.distill import (
    DistillConfig,
    evaluate_model,
    held_out_objects,
    load_cdp_model,
    make_card,
    save_cdp_model,
    teacher_initial_masks,
    train_student,
    train_teacher,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "cdp.md"
PLOT = ROOT / "docs" / "images" / "cdp_kd_regimes.png"
OUT = ROOT / "results" / "cdp_kd_regimes"
TEACHER_SEED = 0

#: The base regime and the quick smoke version of it.
BASE = {
    "size": 32,
    "photons_per_pixel": 100.0,
    "teacher_channels": 32,
    "student_channels": 16,
    "depth": 3,
    "batch_size": 8,
    "teacher_steps": 500,
    "student_steps": 400,
    "val_objects": 64,
}
QUICK = {
    "size": 16,
    "photons_per_pixel": 100.0,
    "teacher_channels": 8,
    "student_channels": 4,
    "depth": 2,
    "batch_size": 2,
    "teacher_steps": 3,
    "student_steps": 2,
    "val_objects": 2,
    "feature_layers": ("dec0",),
    "gram_patch": 3,
}
#: name -> (factor, level shown, DistillConfig overrides); ``None`` in train_objects: unlimited.
REGIMES: dict[str, tuple[str, str, dict]] = {
    "base": ("base", "unlimited data, 100 photons, 1/4 student, free mask", {}),
    "mask4": ("mask constraint", "4 levels", {"student_mask_levels": 4}),
    "mask2": ("mask constraint", "2 levels", {"student_mask_levels": 2}),
    "student16": ("student size", "1/16 of the teacher", {"student_channels": "quarter"}),
    "photons10": ("photons per pixel", "10", {"photons_per_pixel": 10.0}),
    "photons1000": ("photons per pixel", "1000", {"photons_per_pixel": 1000.0}),
    "data256": ("training objects", "256", {"train_objects": 256}),
    "data1024": ("training objects", "1024", {"train_objects": 1024}),
    "steps4x": ("student steps", "1600 (4x the base)", {"student_steps": "x4"}),
}
#: Regimes that also train the ``mask_only`` arm (the shipped recipe): the base, longer training,
#: and the two where KD won with 3 seeds (is it the mask, or the feature and Gram losses?).
MASK_ONLY_REGIMES = ("base", "steps4x", "mask4", "data256")
QUICK_DATA = {256: 8, 1024: 16}
#: arm -> (distils?, loss weights (l1, l2, l3)).
ARMS = {"kd": (True, (1.0, 0.1, 1.0)), "mask_only": (True, (1.0, 0.0, 0.0)), "control": (False,)}
TEACHER_FIELDS = ("size", "photons_per_pixel", "teacher_channels", "depth", "batch_size",
                  "teacher_steps", "train_objects")  # fmt: skip


def regime_config(name: str, seed: int, quick: bool) -> DistillConfig:
    """The DistillConfig of regime ``name`` for seed ``seed`` (student mask k = seed mod 4)."""
    base = dict(QUICK if quick else BASE)
    overrides = dict(REGIMES[name][2])
    if overrides.get("student_channels") == "quarter":  # params ~ channels^2: 1/4 -> 1/16
        overrides["student_channels"] = base["student_channels"] // 2
    if overrides.get("student_steps") == "x4":
        overrides["student_steps"] = 4 * base["student_steps"]
    if quick and "train_objects" in overrides:
        overrides["train_objects"] = QUICK_DATA[overrides["train_objects"]]
    return DistillConfig(**{**base, **overrides, "seed": seed, "student_mask": seed % 4})


def parameters(model: torch.nn.Module) -> int:
    """Network parameters, masks not counted (one mask has H x W phases, the teacher four)."""
    return sum(p.numel() for n, p in model.named_parameters() if "masks" not in n)


def claim(path: Path) -> bool:
    """Claim a job for this process (False: another live process holds it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(path.read_text() or 0), 0)
            return False
        except (ProcessLookupError, ValueError):
            path.unlink(missing_ok=True)  # its process died: take it over
            return claim(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(str(os.getpid()))
    return True


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def get_teacher(config: DistillConfig, out: Path, objects: np.ndarray) -> tuple[CDPNet, dict]:
    """The regime's teacher (seed 0), trained once and reloaded from its fp16 folder."""
    key = "-".join(f"{f}{getattr(config, f)}" for f in TEACHER_FIELDS)
    folder = out / "teachers" / key
    lock = out / "claims" / f"teacher-{key}"
    while not (folder / "score.json").exists():
        if claim(lock):
            teacher_config = replace(config, seed=TEACHER_SEED)
            start = time.perf_counter()
            model, fit = train_teacher(teacher_config)
            seconds = time.perf_counter() - start
            card = make_card("regime-teacher", "teacher", model, description="", training={})
            save_cdp_model(model, folder, card)
            model, _ = load_cdp_model(folder)
            score = {**evaluate_model(model, objects), "seconds": seconds, "steps": fit.step}
            write_json(folder / "score.json", score)
            lock.unlink(missing_ok=True)
        else:
            time.sleep(5)  # the other process is training it
    model, _ = load_cdp_model(folder)
    return model.eval().requires_grad_(False), json.loads((folder / "score.json").read_text())


def run_one(config: DistillConfig, arm: str, teacher: CDPNet, objects: np.ndarray) -> dict:
    """Train one student of ``arm`` and score it."""
    distils, *weights = ARMS[arm]
    if distils:
        l1, l2, l3 = weights[0]
        config = replace(config, reconstruction_weight=l1, feature_weight=l2, mask_weight=l3)
    initial = teacher_initial_masks(replace(config, seed=TEACHER_SEED))
    start = time.perf_counter()
    student, fit = train_student(config, teacher if distils else None, initial_masks=initial)
    seconds = time.perf_counter() - start
    last = fit.history[-min(20, len(fit.history)) :]
    return {
        **evaluate_model(student, objects),
        "seconds": seconds,
        "steps": fit.step,
        "final_reconstruction_loss": float(
            np.mean([row.get("reconstruction", row["loss"]) for row in last])
        ),
        "student_parameters": parameters(student),
    }


def run_grid(regimes: Sequence[str], seeds: int, out: Path, quick: bool, reverse: bool) -> None:
    """Every (regime, seed, arm) not yet in ``out/runs``, in order (or reversed)."""
    jobs = [
        (name, seed, arm)
        for name in regimes
        for seed in range(seeds)
        for arm in ARMS
        if arm != "mask_only" or name in MASK_ONLY_REGIMES
    ]
    objects = held_out_objects(regime_config("base", 0, quick))
    for name, seed, arm in reversed(jobs) if reverse else jobs:
        path = out / "runs" / f"{name}__{arm}__s{seed}.json"
        if path.exists() or not claim(out / "claims" / path.stem):
            continue
        config = regime_config(name, seed, quick)
        teacher, teacher_score = get_teacher(config, out, objects)
        row = run_one(config, arm, teacher, objects)
        row.update(regime=name, arm=arm, seed=seed, config=config.to_dict())
        row["teacher"] = teacher_score | {"parameters": parameters(teacher)}
        write_json(path, row)
        (out / "claims" / path.stem).unlink(missing_ok=True)
        print(
            f"{name:<12} {arm:<9} seed {seed}: PSNR {row['psnr_db']:6.2f} dB  SSIM "
            f"{row['ssim']:.3f}  ({row['steps']} steps, {row['seconds']:.0f} s)",
            flush=True,
        )


def load_runs(out: Path) -> dict[tuple[str, str, int], dict]:
    runs = {}
    for path in sorted((out / "runs").glob("*.json")):
        row = json.loads(path.read_text())
        runs[row["regime"], row["arm"], row["seed"]] = row
    return runs


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan for one value)."""
    array = np.asarray(values, float)
    sd = float(array.std(ddof=1)) if array.size > 1 else float("nan")
    return float(array.mean()), sd


def summarise(runs: dict[tuple[str, str, int], dict]) -> list[dict]:
    """One row per (regime, arm against control): both arms' scores and the paired difference."""
    rows = []
    for name, (factor, level, _) in REGIMES.items():
        for arm in ("kd", "mask_only"):
            seeds = sorted(s for (r, a, s) in runs if r == name and a == arm)
            paired = [s for s in seeds if (name, "control", s) in runs]
            if not paired:
                continue
            row = {"regime": name, "factor": factor, "level": level, "arm": arm}
            row["seeds"] = len(paired)
            for metric in ("psnr_db", "ssim"):
                kd = [runs[name, arm, s][metric] for s in paired]
                control = [runs[name, "control", s][metric] for s in paired]
                row[metric] = {
                    "arm": mean_sd(kd),
                    "control": mean_sd(control),
                    "difference": mean_sd(np.subtract(kd, control)),
                    "per_seed": list(np.subtract(kd, control)),
                }
            first = runs[name, arm, paired[0]]
            row["teacher_psnr_db"] = first["teacher"]["psnr_db"]
            row["parameter_ratio"] = first["student_parameters"] / first["teacher"]["parameters"]
            row["seconds"] = float(
                np.mean([runs[name, a, s]["seconds"] for s in paired for a in (arm, "control")])
            )
            rows.append(row)
    return rows


def verdict(difference: tuple[float, float]) -> str:
    mean, sd = difference
    if not np.isfinite(sd):
        return "one seed"
    if mean > 2 * sd:
        return "**KD better** (> 2 sd)"
    if mean < -2 * sd:
        return "**control better** (> 2 sd)"
    return "within 2 sd"


def render(rows: list[dict], runs: dict, command: str, quick: bool, wall_s: float) -> str:
    """The docs section: the table, the budget and the command."""
    base = next(iter(runs.values()))["config"] if runs else {}
    teacher_s = {json.dumps(r["teacher"]["seconds"]) for r in runs.values()}
    lines = [
        "## Where distillation helps: regimes with seeds",
        "",
        f"`{command}` on {machine()}, one torch thread per process"
        + (" (quick smoke run: not for comparison)." if quick else "."),
        "",
        f"Budget per run: teachers {base.get('teacher_steps')} steps "
        f"({len(teacher_s)} teachers, "
        f"{np.mean([float(s) for s in teacher_s]) if teacher_s else 0:.0f} s each on average), "
        f"students {base.get('student_steps')} steps of {base.get('batch_size')} objects "
        f"of {base.get('size')} x {base.get('size')} px; {len(runs)} student runs, "
        f"{wall_s / 60:.0f} min of training in all (the 2 cores were shared with other jobs, "
        "so times are inflated). Scores on "
        f"{base.get('val_objects')} held-out objects (PSNR and SSIM of the phase after the "
        "global phase). KD - control is paired by seed (same initial weights, batches, noise "
        "and teacher mask index k = seed); +- is the sample standard deviation over seeds.",
        "",
        "| factor | regime | arm | seeds | teacher PSNR | arm PSNR | control PSNR "
        "| arm - control (dB) | arm SSIM | control SSIM | arm - control SSIM | reading |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        p, s = row["psnr_db"], row["ssim"]
        arm = "KD (1, 0.1, 1)" if row["arm"] == "kd" else "mask only (1, 0, 0)"
        lines.append(
            f"| {row['factor']} | {row['level']} | {arm} | {row['seeds']} "
            f"| {row['teacher_psnr_db']:.2f} "
            f"| {p['arm'][0]:.2f} +- {p['arm'][1]:.2f} "
            f"| {p['control'][0]:.2f} +- {p['control'][1]:.2f} "
            f"| {p['difference'][0]:+.2f} +- {p['difference'][1]:.2f} "
            f"| {s['arm'][0]:.3f} +- {s['arm'][1]:.3f} "
            f"| {s['control'][0]:.3f} +- {s['control'][1]:.3f} "
            f"| {s['difference'][0]:+.3f} +- {s['difference'][1]:.3f} "
            f"| {verdict(p['difference'])} |"
        )
    ratios = sorted({round(r["parameter_ratio"], 3) for r in rows})
    lines += [
        "",
        f"Student network parameters / teacher's: {', '.join(f'{r:.3f}' for r in ratios)} "
        "(masks not counted: the teacher has 4 masks, a student 1).",
    ]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """KD - control per regime: per-seed differences and mean +- sd, PSNR and SSIM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(rows) + 1.6), sharey=True)
    labels = [
        ("base regime" if r["regime"] == "base" else f"{r['factor']}: {r['level']}")
        + (" [mask only]" if r["arm"] == "mask_only" else "")
        for r in rows
    ]
    y = np.arange(len(rows))[::-1]
    for ax, metric, unit in zip(axes, ("psnr_db", "ssim"), (" (dB)", ""), strict=True):
        for yi, row in zip(y, rows, strict=True):
            mean, sd = row[metric]["difference"]
            ax.errorbar(mean, yi, xerr=0 if not np.isfinite(sd) else sd, fmt="o", color="C0",
                        capsize=4)  # fmt: skip
            ax.plot(row[metric]["per_seed"], [yi] * len(row[metric]["per_seed"]), "x",
                    color="C1", alpha=0.8)  # fmt: skip
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(f"student with teacher - control: {metric.split('_')[0].upper()}{unit}")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels)
    axes[0].set_title("mean +- sd over seeds (o), each seed (x)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; see the module docstring."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 2 seeds")
    parser.add_argument("--seeds", type=int, help="seeds per regime (default 3, quick 2)")
    parser.add_argument("--regimes", nargs="+", choices=list(REGIMES), default=list(REGIMES))
    parser.add_argument("--out", type=Path, default=OUT, help=f"run folder ({OUT})")
    parser.add_argument("--reverse", action="store_true", help="take the jobs from the end")
    parser.add_argument("--write", action="store_true", help="update docs/cdp.md and the plot")
    parser.add_argument("--plot", type=Path, help="where to save the plot (default: with --write)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        run_grid(args.regimes, seeds, args.out, args.quick, args.reverse)
    finally:
        torch.set_num_threads(threads)
    runs = {k: v for k, v in load_runs(args.out).items() if k[0] in args.regimes}
    rows = summarise(runs)
    wall = sum(r["seconds"] for r in runs.values())
    command = shlex.join(["python", "benchmarks/cdp_kd_regimes.py", *argv])
    section = render(rows, runs, command, args.quick, wall)
    write_json(args.out / "summary.json", {"rows": rows, "command": command})
    print()
    print(section)
    plot_path = args.plot or (PLOT if args.write else None)
    if plot_path is not None:
        plot(rows, plot_path)
        print(f"\nplot: {plot_path}")
    if args.write:
        write_section("cdp-kd-regimes", section, DOCS)
        print(f"wrote {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
