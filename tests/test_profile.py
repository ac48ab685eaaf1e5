"""Microscope profiles, acquisition flags and background pairing: what a lab sets once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_qpi.calibration import voting_indices
from napari_qpi.cli import main
from napari_qpi.errors import MetadataError, QPIError
from napari_qpi.io import read_image
from napari_qpi.io.images import SUPPORTED_EXTENSIONS
from napari_qpi.pairing import pair_backgrounds
from napari_qpi.physics import OffAxisSystem, random_cells, simulate_background, simulate_hologram
from napari_qpi.profile import (
    MicroscopeProfile,
    load_profile,
    sample_pixel_size_um,
    save_profile,
)


def test_a_profile_round_trips_and_is_never_overwritten_unasked(tmp_path):
    profile = MicroscopeProfile(
        name="DHM 2.14",
        wavelength_nm=532,
        pixel_size_um=np.float32(0.0847),
        carrier_cycles_per_px=(-0.25, 0.25),
        filter="disk",
        background_order=1,
    )
    path = save_profile(profile, tmp_path / "lab.json")
    assert load_profile(path) == profile
    assert load_profile(path).settings_changes()["sign_carrier"] == (-0.25, 0.25)
    with pytest.raises(QPIError, match="already exists"):
        save_profile(profile, path)
    save_profile(profile.merged(MicroscopeProfile(wavelength_nm=633)), path, overwrite=True)
    assert load_profile(path).wavelength_nm == 633


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"wavelength_nm": "532"}, r"lab\.json.*wavelength_nm.*must be a number"),
        ({"pixel_size_um": 0}, r"lab\.json.*pixel_size_um.*positive"),
        ({"pixel_size_um": -0.1}, r"lab\.json.*pixel_size_um.*positive"),
        ({"background_order": 2.5}, r"lab\.json.*background_order.*integer 0-5"),
        ({"filter": "box"}, r"lab\.json.*filter.*disk"),
        ({"wavelenght_nm": 532}, r"lab\.json: unknown profile field\(s\) wavelenght_nm"),
        ({"carrier_cycles_per_px": [0.7, 0]}, r"lab\.json.*Nyquist"),
        ([1, 2], r"lab\.json: a profile is a JSON object"),
    ],
)
def test_a_bad_profile_is_refused_in_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "lab.json"
    path.write_text(json.dumps(content))
    with pytest.raises(MetadataError, match=message) as info:
        load_profile(path)
    assert "\n" not in str(info.value)


def test_pixel_size_from_camera_pixel_and_magnification():
    assert sample_pixel_size_um(None, 5.5, 40) == pytest.approx(0.1375)
    assert sample_pixel_size_um(0.2, None, None) == 0.2
    with pytest.raises(MetadataError, match="add --magnification"):
        sample_pixel_size_um(None, 5.5, None)
    with pytest.raises(MetadataError, match="not both"):
        sample_pixel_size_um(0.2, 5.5, 40)
    with pytest.raises(MetadataError, match="positive"):
        sample_pixel_size_um(0.0, None, None)


@pytest.fixture
def hologram_file(tmp_path) -> Path:
    system = OffAxisSystem(pixel_size_um=0.2)
    phantom = random_cells((128, 128), n_cells=2, seed=4)
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, simulate_hologram(phantom.phase, phantom.amplitude, system, seed=1))
    return path


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--pixel-size", "0"], "pixel size must be a positive number"),
        (["--pixel-size", "-0.2"], "pixel size must be a positive number"),
        (["--camera-pixel", "5.5"], "needs the magnification"),
        (["--wavelength", "-532"], "--wavelength must be a positive number"),
        (["--profile", "missing.json"], "Cannot read the profile"),
    ],
)
def test_bad_acquisition_flags_get_one_line_and_no_work(
    hologram_file, tmp_path, capsys, flags, message
):
    out = tmp_path / "out"
    status = main(["reconstruct", str(hologram_file), "--out", str(out), "--quiet", *flags])
    err = capsys.readouterr().err
    assert status == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not list(out.glob("*_phase.ome.tif"))


def test_acquisition_flags_override_the_file_and_reach_the_output(hologram_file, tmp_path):
    out = tmp_path / "out"
    flags = [
        "--camera-pixel",
        "6.5",
        "--magnification",
        "40",
        "--wavelength",
        "633",
        "--medium-index",
        "1.337",
    ]
    assert main(["reconstruct", str(hologram_file), "--out", str(out), "--quiet", *flags]) == 0
    acquisition = read_image(out / "cells_phase.ome.tif").acquisition
    assert acquisition.pixel_size_um == pytest.approx(6.5 / 40)
    assert acquisition.wavelength_nm == 633 and acquisition.medium_index == 1.337
    assert (
        main(["measure", str(out), "--out", str(tmp_path / "m"), "--quiet", "--wavelength", "532"])
        == 0
    )


def _names(paths):
    return sorted(p.name for p in paths)


def test_backgrounds_pair_by_name_and_are_never_samples(tmp_path):
    names = [
        "a.tif",
        "a_bg.tif",
        "b.tif",
        "run_1.tif",
        "run_background.tif",
        "x_bg.tif",
        "sub/c.tif",
        "sub/background.tif",
    ]
    paths = [tmp_path / n for n in names]
    pairing = pair_backgrounds(paths, SUPPORTED_EXTENSIONS)
    assert _names(pairing.holograms) == ["a.tif", "b.tif", "c.tif", "run_1.tif", "x_bg.tif"]
    assert pairing.backgrounds[tmp_path / "a.tif"].name == "a_bg.tif"
    assert pairing.backgrounds[tmp_path / "run_1.tif"].name == "run_background.tif"
    assert pairing.backgrounds[tmp_path / "sub/c.tif"].name == "background.tif"
    assert tmp_path / "b.tif" not in pairing.backgrounds
    assert [(p.name, "reconstructed as a hologram" in m) for p, m in pairing.notes] == [
        ("x_bg.tif", True)
    ]


def test_a_background_that_fits_two_holograms_is_an_error_for_all_three(tmp_path):
    paths = [tmp_path / n for n in ("run_1.tif", "run_2.tif", "run_bg.tif")]
    pairing = pair_backgrounds(paths, SUPPORTED_EXTENSIONS)
    assert pairing.holograms == []
    assert _names(p for p, _ in pairing.problems) == ["run_1.tif", "run_2.tif", "run_bg.tif"]
    assert all(
        "fits 2 holograms" in reason and "\n" not in reason for _, reason in pairing.problems
    )


def test_a_folder_background_is_used_and_not_reconstructed(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    system = OffAxisSystem(aberrations_rad={"defocus": 6.0, "tilt_x": 4.0})
    phantom = random_cells((128, 128), n_cells=2, seed=7)
    tifffile.imwrite(
        folder / "cells.tif", simulate_hologram(phantom.phase, phantom.amplitude, system, seed=1)
    )
    tifffile.imwrite(folder / "cells_bg.tif", simulate_background((128, 128), system, seed=2))
    out = tmp_path / "out"
    assert main(["reconstruct", str(folder), "--out", str(out), "--quiet", "--workers", "0"]) == 0
    assert _names(out.glob("*_phase.ome.tif")) == ["cells_phase.ome.tif"]
    image = read_image(out / "cells_phase.ome.tif")
    assert image.extra["method"]["reference"] == "cells_bg.tif"
    assert image.extra["method"]["retrieval"]["reference"] is True


def test_a_stack_decides_its_sign_once(tmp_path):
    system = OffAxisSystem(carrier_angle_deg=200.0)
    planes = []
    for seed in range(4):
        phantom = random_cells((128, 128), n_cells=3, seed=seed)
        if seed == 2:  # an empty plane cannot tell its sign by itself
            phantom.phase[:] = 0
        planes.append(simulate_hologram(phantom.phase, phantom.amplitude, system, seed=seed))
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.stack(planes))
    out = tmp_path / "out"
    assert main(["reconstruct", str(path), "--out", str(out), "--quiet", "--workers", "0"]) == 0
    records = read_image(out / "stack_phase.ome.tif").extra["method"]["planes"]
    assert [r["sign_from"] for r in records] == ["sign carrier"] * 4
    carriers = np.array([r["carrier_cycles_per_px"] for r in records])
    np.testing.assert_allclose(carriers, carriers[:1].repeat(4, axis=0), atol=0.01)
    assert voting_indices((4, 128, 128)) == [(0,), (2,), (3,)]
