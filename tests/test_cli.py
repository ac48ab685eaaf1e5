"""The napari-qpi command line, run as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_qpi.cli import main
from napari_qpi.io import read_image
from napari_qpi.physics import OffAxisSystem, random_cells, simulate_hologram


@pytest.fixture
def data_dir(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    system = OffAxisSystem(pixel_size_um=0.25)
    for seed in range(2):
        phantom = random_cells((192, 192), n_cells=3, seed=seed, pixel_size_um=0.25)
        hologram = simulate_hologram(phantom.phase, phantom.amplitude, system, seed=seed)
        tifffile.imwrite(folder / f"cells_{seed}.tif", hologram)
    sidecar = '{"qpi": {"pixel_size_um": 0.25, "wavelength_nm": 532}}'
    (folder / "cells_0.tif.json").write_text(sidecar)
    return folder


def test_reconstruct_folder_writes_phase_with_metadata(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reconstruct", str(data_dir), "--out", str(out), "--quiet"]) == 0
    written = sorted(out.glob("*_phase.ome.tif"))
    assert [p.name for p in written] == ["cells_0_phase.ome.tif", "cells_1_phase.ome.tif"]
    phase = read_image(written[0])
    assert phase.data.dtype == np.float32
    assert phase.acquisition.pixel_size_um == pytest.approx(0.25)
    assert phase.acquisition.modality == "phase"
    summary = capsys.readouterr().out
    assert "2 file(s)" in summary and str(out) in summary


def test_reconstruct_skips_existing_outputs_unless_overwrite(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    main(["reconstruct", str(data_dir), "--out", str(out), "--quiet"])
    first = (out / "cells_0_phase.ome.tif").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["reconstruct", str(data_dir), "--out", str(out), "--quiet"]) == 0
    assert "2 skipped" in capsys.readouterr().out
    assert (out / "cells_0_phase.ome.tif").stat().st_mtime_ns == first
    assert main(["reconstruct", str(data_dir), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert (out / "cells_0_phase.ome.tif").stat().st_mtime_ns != first


def test_bad_files_are_listed_and_good_ones_processed(data_dir, tmp_path, capsys):
    (data_dir / "broken.tif").write_bytes(b"II*\x00garbage")
    tifffile.imwrite(data_dir / "flat.tif", np.full((64, 64), 1000, dtype=np.uint16))
    out = tmp_path / "out"
    assert main(["reconstruct", str(data_dir), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "broken.tif" in err and "flat.tif" in err
    assert len(list(out.glob("*_phase.ome.tif"))) == 2


def test_console_script_runs(data_dir, tmp_path):
    exe = Path(sys.executable).with_name("napari-qpi")
    result = subprocess.run(
        [
            str(exe),
            "reconstruct",
            str(data_dir / "cells_1.tif"),
            "--out",
            str(tmp_path / "o"),
            "--resolution",
            "native",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "1 file(s), 1 plane(s)" in result.stdout


def test_reconstruct_with_measure_then_measure_command(data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "reconstruct",
                str(data_dir / "cells_0.tif"),
                "--out",
                str(out),
                "--quiet",
                "--measure",
            ]
        )
        == 0
    )
    assert (out / "cells_0_cells.ome.tif").exists() and (out / "cells_0_cells.csv").exists()
    assert "cell(s)" in capsys.readouterr().out
    again = tmp_path / "again"
    assert (
        main(["measure", str(out / "cells_0_phase.ome.tif"), "--out", str(again), "--quiet"]) == 0
    )
    first = (out / "cells_0_cells.csv").read_text()
    assert (again / "cells_0_cells.csv").read_text() == first


HEAVY_MODULES = ("torch", "napari", "qtpy", "PyQt5", "PySide2", "PySide6", "distributed")


def _modules_loaded_by(*argvs: list[str]) -> tuple[list[str], str]:
    """Run ``main`` on each argv in a fresh interpreter; the heavy modules it loaded, its output."""
    script = (
        "import sys\n"
        "from napari_qpi.cli import main\n"
        f"for argv in {[list(a) for a in argvs]!r}:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print('LOADED', *sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    loaded = result.stdout.strip().splitlines()[-1].split()[1:]
    return loaded, result.stdout


def test_help_and_classical_reconstruction_load_no_torch_napari_qt_or_distributed(
    data_dir, tmp_path
):
    from napari_qpi.io import CDPStack, write_cdp_stack
    from napari_qpi.physics.cdp import cell_objects, coded_diffraction_patterns, random_phase_masks

    masks = random_phase_masks(4, (16, 16), seed=9)
    patterns = coded_diffraction_patterns(cell_objects(1, (16, 16), seed=3)[0], masks)
    write_cdp_stack(tmp_path / "four.npz", CDPStack(patterns, masks))
    out = tmp_path / "o"
    loaded, output = _modules_loaded_by(
        ["--help"],
        ["reconstruct", "--help"],
        ["reconstruct", str(data_dir / "cells_1.tif"), "--out", str(out), "--quiet"],
        ["reconstruct", str(tmp_path / "four.npz"), "--out", str(out), "--iterations", "20"],
    )
    assert loaded == [], output
    assert "search" in output and "--carrier" in output  # both helps were printed
    assert (out / "cells_1_phase.ome.tif").exists() and (out / "four_phase.ome.tif").exists()


#: What building the parser (``napari-qpi --help``, any command's ``--help``) must not import:
#: numpy and scipy cost most of a second on a busy 2-core machine; the rest are far heavier.
PARSER_FORBIDDEN = (
    "numpy",
    "scipy",
    "skimage",
    "dask",
    "distributed",
    "torch",
    "napari",
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
)


def test_building_the_parser_imports_no_numpy_scipy_torch_napari_qt_or_distributed():
    """The parser of every non-training command and ``import napari_qpi`` count no forbidden
    top-level package in ``sys.modules`` (a count, not a clock: robust on a busy machine)."""
    script = (
        "import sys\n"
        "import napari_qpi\n"
        f"forbidden = set({PARSER_FORBIDDEN!r})\n"
        "def heavy():\n"
        "    return sorted({m.split('.')[0] for m in sys.modules} & forbidden)\n"
        "print('PACKAGE', *heavy())\n"
        "from napari_qpi.cli import build_parser\n"
        "for selected in ('', 'reconstruct', 'measure', 'models'):\n"
        "    build_parser(selected)\n"
        "print('PARSER', *heavy())\n"
        "import napari_qpi.cli.commands\n"  # the check can fail: the commands do load numpy
        "print('COMMANDS', *heavy())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    lines = dict(line.partition(" ")[::2] for line in result.stdout.strip().splitlines())
    assert lines["PACKAGE"] == "" and lines["PARSER"] == "", result.stdout
    assert {"numpy", "scipy"} <= set(lines["COMMANDS"].split()), result.stdout


def test_the_parser_defaults_are_the_engine_defaults(capsys):
    """The light :mod:`napari_qpi.defaults` the parser reads are the values the engine uses."""
    from napari_qpi import batch, defaults, morphology
    from napari_qpi.cli import build_parser
    from napari_qpi.retrieval import FILTERS, OffAxisSettings, autofocus, fourier

    settings = OffAxisSettings()
    assert settings.filter == defaults.DEFAULT_FILTER in FILTERS == defaults.FILTERS
    assert settings.radius_fraction == fourier.DEFAULT_RADIUS_FRACTION == 0.7
    assert settings.background_order == defaults.DEFAULT_BACKGROUND_ORDER == 2
    assert sorted(autofocus.METRICS) == sorted(defaults.FOCUS_METRICS)
    assert autofocus.DEFAULT_METRIC == defaults.DEFAULT_FOCUS_METRIC in autofocus.METRICS
    assert morphology.DEFAULT_ALPHA_UM3_PER_PG == defaults.DEFAULT_ALPHA_UM3_PER_PG == 0.18
    assert (batch.PHASE_SUFFIX, batch.TABLE_SUFFIX, batch.CONNECT_TIMEOUT_S) == (
        "_phase.ome.tif",
        "_cells.csv",
        10.0,
    )
    assert batch.ClusterOptions().timeout_s == defaults.CONNECT_TIMEOUT_S
    args = build_parser("reconstruct").parse_args(["reconstruct", "x.tif"])
    assert (args.alpha, args.connect_timeout, args.focus_metric) == (0.18, 10.0, "tamura")
    with pytest.raises(SystemExit):
        build_parser("reconstruct").parse_args(["reconstruct", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "else smooth_disk)" in text and "else 0.7)" in text and "else 2)" in text
    assert "{gradient,tamura,variance}" in text  # --focus-metric's choices


def test_a_training_command_loads_its_flags_only_when_it_runs(capsys):
    from napari_qpi.cli import TRAINING_COMMANDS, build_parser

    loaded, output = _modules_loaded_by(["search", "--help"])
    assert "torch" in loaded and "--search-steps" in output
    full = build_parser()  # every command's flags, for documentation and tests
    for name in TRAINING_COMMANDS:
        with pytest.raises(SystemExit):
            full.parse_args([name, "--help"])
        assert "--out" in capsys.readouterr().out


def test_measure_options_and_the_missing_wavelength_line(tmp_path, capsys):
    from cell_fields import make_field
    from napari_qpi.acquisition import Acquisition
    from napari_qpi.io import write_phase
    from napari_qpi.io.tables import read_table_csv

    field = make_field("round", n_cells=10, touching_pairs=3, seed=3)
    path = tmp_path / "field_phase.ome.tif"
    write_phase(path, field.phase, acquisition=Acquisition(pixel_size_um=0.3), method={})

    def measure(out: str, *options: str) -> tuple[int, str]:
        code = main(["measure", str(path), "--out", str(tmp_path / out), "--quiet", *options])
        return code, capsys.readouterr().out

    code, out = measure("auto")
    assert code == 0 and "10 cell(s)" in out
    assert "No dry mass: it needs the wavelength" in out, "one line says why and how"
    table = read_table_csv(tmp_path / "auto" / "field_cells.csv")
    assert len(table) == 10 and np.isnan(table["dry_mass_pg"]).all(), "column there, empty"
    code, out = measure("merged", "--no-split")
    assert code == 0 and "7 cell(s)" in out, "three touching pairs left as one object each"
    code, out = measure("level", "--threshold", "0.5", "--min-area", "20")
    assert code == 0 and "10 cell(s)" in out
    with pytest.raises(SystemExit):
        main(["measure", str(path), "--threshold", "lots"])
    assert "neither auto" in capsys.readouterr().err


def test_measure_cell_background_zero_counts_an_offset_local_removes_it(tmp_path, capsys):
    """--cell-background zero measures as DryMass does (background at 0 rad): a 0.3 rad offset
    under the cells adds to their mass; the default local ring background removes it."""
    from cell_fields import make_field
    from napari_qpi.acquisition import Acquisition
    from napari_qpi.io import write_phase
    from napari_qpi.io.tables import read_table_csv

    field = make_field("round", n_cells=6, offset_rad=0.0, background_rad=0.0, seed=5)
    acquisition = Acquisition(pixel_size_um=0.3, wavelength_nm=532.0)
    tables = {}
    for name, phase in (("flat", field.phase), ("offset", field.phase + 0.3)):
        path = tmp_path / f"{name}_phase.ome.tif"
        write_phase(path, phase.astype(np.float32), acquisition=acquisition, method={})
        for mode in ("local", "zero"):
            out = tmp_path / f"{name}-{mode}"
            argv = ["measure", str(path), "--out", str(out), "--quiet", "--no-split"]
            assert main([*argv, "--cell-background", mode]) == 0
            tables[name, mode] = read_table_csv(out / f"{name}_cells.csv")
    capsys.readouterr()
    mass = {key: np.sort(t["dry_mass_pg"]) for key, t in tables.items()}
    assert len(mass["flat", "zero"]) == len(mass["offset", "zero"]) >= 5
    np.testing.assert_allclose(mass["offset", "local"], mass["flat", "local"], rtol=0.02)
    assert (mass["offset", "zero"] > 1.05 * mass["flat", "zero"]).all(), "the offset is counted"
    np.testing.assert_allclose(mass["flat", "zero"], mass["flat", "local"], rtol=0.05)
    assert tables["offset", "zero"].metadata["cell_background"] == "zero"
    assert tables["offset", "local"].metadata["cell_background"] == "local"


def test_measure_track_writes_tracks_and_summary_and_refuses_a_single_image(tmp_path, capsys):
    from cell_fields import make_timelapse
    from napari_qpi.acquisition import Acquisition
    from napari_qpi.io import write_phase
    from napari_qpi.io.tables import read_table_csv

    movie = make_timelapse(n_frames=8, n_cells=6, seed=2)
    acquisition = Acquisition(pixel_size_um=movie.pixel_size_um, wavelength_nm=633.0)
    stack = tmp_path / "movie_phase.ome.tif"
    write_phase(stack, movie.phase, acquisition=acquisition, method={}, axes="TYX")
    single = tmp_path / "still_phase.ome.tif"
    write_phase(single, movie.phase[0], acquisition=acquisition, method={})
    out = tmp_path / "out"
    argv = ["measure", str(stack), str(single), "--out", str(out), "--quiet", "--track"]
    assert main([*argv, "--frame-interval", "900"]) == 1  # the still image cannot be tracked
    captured = capsys.readouterr()
    assert "still_cells.csv: cannot track: Tracking needs a time-lapse" in captured.err
    assert "movie: 8 track(s), 5 through all frames, 1 division(s)" in captured.out
    tracks = read_table_csv(out / "movie_tracks.csv")
    assert {"track_id", "parent_track_id", "frame", "dry_mass_pg", "area_um2"} <= set(tracks.names)
    summary = read_table_csv(out / "movie_track_summary.csv")
    assert summary.units["growth_rate_per_h"] == "1/h"
    rates = summary["growth_rate_per_h"][summary["n_frames"] == 8]
    assert np.all((rates > 0.03 * 4 * 0.9) & (rates < 0.08 * 4 * 1.1))  # 4 frames per hour


def test_measure_wavelength_and_pixel_size_on_the_command_line_fill_the_dry_mass(tmp_path):
    from cell_fields import make_field
    from napari_qpi.acquisition import Acquisition
    from napari_qpi.io import write_phase
    from napari_qpi.io.tables import read_table_csv

    field = make_field("round", n_cells=6, offset_rad=0.0, background_rad=0.0, seed=5)
    path = tmp_path / "bare_phase.ome.tif"
    write_phase(path, field.phase, acquisition=Acquisition(), method={})
    out = tmp_path / "out"
    argv = ["measure", str(path), "--out", str(out), "--quiet"]
    assert main([*argv, "--wavelength", "633", "--pixel-size", "0.3"]) == 0
    table = read_table_csv(out / "bare_cells.csv")
    assert np.isfinite(table["dry_mass_pg"]).all()
    assert np.median(table["dry_mass_pg"]) == pytest.approx(np.median(field.dry_mass_pg), rel=0.03)
