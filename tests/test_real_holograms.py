"""The real-hologram regression corpus: our default phase against the peers' pipeline.

The corpus (``tests/data/real_holograms``, see its README) holds real HL60 holograms from the
peers' source distributions and the phase their own pipeline gives. A method change that breaks
one microscope's data shows up here, not only on our simulator.
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from napari_qpi.cli import main
from napari_qpi.errors import QPIError
from napari_qpi.io import read_image
from test_benchmarks import load_script

corpus = load_script("real_holograms")
CASES, MANIFEST = corpus.load_corpus()
REFERENCES = corpus.load_references()


def _assert_agrees(stats: dict[str, float], name: str) -> None:
    assert stats["correlation"] >= 0.95, f"{name}: correlation {stats['correlation']:.3f}"
    assert 0.9 <= stats["slope"] <= 1.1, f"{name}: contrast {stats['slope']:.2f}"
    assert stats["mean_in_cell_rad"] > 0, f"{name}: the cell came out negative"
    assert stats["off_2pi_fraction"] == 0, f"{name}: {stats['off_2pi_fraction']:.2%} 2 pi off"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_default_retrieval_agrees_with_the_peers_pipeline(case):
    hologram, background = corpus.raw_planes(case)
    phase = corpus.our_phase(hologram, background)
    _assert_agrees(corpus.agreement(phase, REFERENCES[case.reference]), case.name)


def test_the_agreement_measure_catches_a_wrong_sign_and_a_lost_contrast():
    case = CASES[0]
    hologram, background = corpus.raw_planes(case)
    phase = corpus.our_phase(hologram, background)
    reference = REFERENCES[case.reference]
    flipped = corpus.agreement(-phase, reference)
    assert flipped["correlation"] < -0.9 and flipped["mean_in_cell_rad"] < 0
    halved = corpus.agreement(0.5 * phase, reference)
    assert halved["slope"] == pytest.approx(0.5, abs=0.03)
    assert corpus.agreement(phase + 6.3 * (reference > 2), reference)["off_2pi_fraction"] > 0.05


# --- the command line, as a user runs it on these files ------------------------------------


DATA = corpus.CORPUS_DIR
ACQUISITION = ["--wavelength", "532", "--pixel-size", "0.08475"]


def _reconstruct(paths, out, *extra) -> int:
    return main(
        [
            "reconstruct",
            *map(str, paths),
            "--out",
            str(out),
            "--quiet",
            "--workers",
            "0",
            *ACQUISITION,
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def corpus_output(tmp_path_factory):
    """Every corpus file reconstructed one by one with only wavelength and pixel size given;
    the npz hologram alone is the npz's ``data`` saved as .npy."""
    root = tmp_path_factory.mktemp("corpus")
    alone = root / "hl60_alone.npy"
    with np.load(DATA / "hl60_hologram_cell.npz") as npz:
        np.save(alone, npz["data"])
    for path in [*sorted(DATA.glob("hl60_*")), alone]:
        assert _reconstruct([path], root / "out") == 0, path.name
    return root / "out"


OUTPUTS = {
    "npz with bg_data": ("hl60_hologram_cell", None),
    "npz hologram alone": ("hl60_alone", None),
    "JPEG, curved background": ("hl60_curved_bg", None),
    "TIFF": ("hl60_single_holo", None),
    "HDF5 single": ("hl60_single_raw-oah", None),
    "HDF5 series, plane 0": ("hl60_series_raw-oah", 0),
    "HDF5 series, plane 1": ("hl60_series_raw-oah", 1),
}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_command_line_at_default_settings_agrees_with_the_peers(case, corpus_output):
    stem, plane = OUTPUTS[case.name]
    image = read_image(corpus_output / f"{stem}_phase.ome.tif")
    phase = image.data if plane is None else image.data[plane]
    _assert_agrees(corpus.agreement(phase, REFERENCES[case.reference]), case.name)
    assert image.acquisition.pixel_size_um == pytest.approx(0.08475)
    assert image.acquisition.wavelength_nm == 532
    method = image.extra["method"]
    record = method["retrieval"] if plane is None else method["planes"][plane]
    assert record["sign"] in (1, -1) and len(record["carrier_cycles_per_px"]) == 2
    assert record["unwrap"]["ok"] and record["background"]["model"].startswith("polynomial")
    assert method["background_in_file"] == (case.name == "npz with bg_data")


def test_hdf5_holograms_are_read_with_their_acquisition():
    single = read_image(DATA / "hl60_single_raw-oah.h5")
    assert single.data.shape == (294, 280) and single.axes == "YX"
    assert single.acquisition.wavelength_nm == pytest.approx(532)
    assert single.acquisition.pixel_size_um == pytest.approx(0.08475, rel=1e-4)
    assert single.acquisition.modality == "hologram"
    series = read_image(DATA / "hl60_series_raw-oah.h5")
    assert series.data.shape == (2, 294, 280) and series.axes == "TYX"
    assert series.extra["time_s"] == [2.5, 2.8]


def test_a_qpimage_phase_file_is_read_as_phase(tmp_path):
    raw = np.linspace(0, 3, 32 * 40, dtype=np.float64).reshape(32, 40)
    path = tmp_path / "phase.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["qpimage version"] = "0.9.3"
        h5.attrs["wavelength"] = 633e-9
        h5.attrs["pixel size"] = 0.2e-6
        h5.create_dataset("phase/raw", data=raw)
        h5.create_dataset("phase/bg_data/fit", data=np.full_like(raw, 0.5))
    image = read_image(path)
    assert image.acquisition.modality == "phase"
    assert image.acquisition.wavelength_nm == pytest.approx(633)
    np.testing.assert_allclose(image.data, raw - 0.5, rtol=1e-6)


def test_an_hdf5_file_of_another_kind_is_refused_naming_what_it_holds(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("images", data=np.zeros((4, 4)))
    with pytest.raises(QPIError, match=r"other\.h5 is an HDF5 file but not a qpimage file.*images"):
        read_image(path)


def test_an_npz_background_of_another_shape_is_refused_in_one_line(tmp_path):
    path = tmp_path / "cell.npz"
    np.savez(path, data=np.ones((20, 30), np.uint8), bg_data=np.ones((20, 31), np.uint8))
    with pytest.raises(QPIError, match=r"cell\.npz.*'bg_data' has shape \(20, 31\)") as info:
        read_image(path)
    assert "\n" not in str(info.value)


def test_a_saved_profile_fixes_the_sign_of_the_next_files(tmp_path, capsys):
    first = tmp_path / "first"
    shutil.copy(DATA / "hl60_single_holo.tif", tmp_path / "a.tif")
    profile = tmp_path / "lab.json"
    assert _reconstruct([tmp_path / "a.tif"], first, "--save-profile", str(profile)) == 0
    assert "profile written" in capsys.readouterr().out
    second = tmp_path / "second"
    assert (
        main(
            [
                "reconstruct",
                str(DATA / "hl60_curved_bg.jpg"),
                "--out",
                str(second),
                "--quiet",
                "--workers",
                "0",
                "--profile",
                str(profile),
            ]
        )
        == 0
    )
    image = read_image(second / "hl60_curved_bg_phase.ome.tif")
    assert image.extra["method"]["retrieval"]["sign_from"] == "sign carrier"
    assert image.acquisition.pixel_size_um == pytest.approx(0.08475)  # from the profile
    _assert_agrees(corpus.agreement(image.data, REFERENCES["jpg"]), "JPEG with a profile")


def test_wrapped_output_and_one_line_warnings(tmp_path, capsys):
    out = tmp_path / "out"
    assert _reconstruct([DATA / "hl60_single_holo.tif"], out, "--wrapped") == 0
    wrapped = read_image(out / "hl60_single_holo_phase.ome.tif").data
    assert wrapped.min() >= -np.pi - 1e-5 and wrapped.max() <= np.pi + 1e-5
    flat = tmp_path / "empty.npy"
    with np.load(DATA / "hl60_hologram_cell.npz") as npz:
        np.save(flat, npz["bg_data"])  # the background hologram alone: no cells
    capsys.readouterr()
    assert _reconstruct([flat], tmp_path / "out2") == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "warning" in line]
    assert lines and "No cells stand out" in lines[0]
    assert ".py" not in err and "warnings.warn" not in err


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_dropping_each_corpus_file_in_napari_gives_its_phase(case, tmp_path):
    """The reader (what a drag-and-drop runs) returns the hologram and its phase; an npz's
    ``bg_data`` is used as its background."""
    import npe2

    if case.name == "npz hologram alone":
        path = tmp_path / "alone.npy"
        with np.load(DATA / case.file) as npz:
            np.save(path, npz["data"])
    else:
        path = DATA / case.file
    layers = npe2.read([str(path)], stack=False, plugin_name="napari-qpi")
    assert [kind for _, _, kind in layers] == ["image", "image"]
    data = np.asarray(layers[1][0] if case.frame is None else layers[1][0][case.frame])
    _assert_agrees(corpus.agreement(data, REFERENCES[case.reference]), case.name)


def test_a_stack_reconstructed_in_one_go_decides_its_sign_once():
    from napari_qpi.reconstruct import iter_reconstruct

    series = read_image(DATA / "hl60_series_raw-oah.h5")
    results = list(iter_reconstruct(series.data, acquisition=series.acquisition))
    assert [r.info["sign_from"] for r in results] == ["sign carrier", "sign carrier"]
    for result in results:
        _assert_agrees(corpus.agreement(result.phase, REFERENCES["h5"]), "series in one go")
