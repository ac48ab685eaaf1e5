"""File formats: real files written to a temporary folder and read back."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import dask.array as da
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_qpi.acquisition import Acquisition
from napari_qpi.errors import FileFormatError, InputError, MetadataError, QPIError
from napari_qpi.io import (
    CDPStack,
    OutputExistsError,
    acquisition_from_json,
    acquisition_to_json,
    atomic_write,
    is_cdp_stack,
    read_cdp_stack,
    read_image,
    validate_hologram,
    write_cdp_stack,
    write_phase,
    write_sidecar,
)

ACQ = Acquisition(
    wavelength_nm=632.8,
    pixel_size_um=0.345,
    magnification=20.0,
    medium_index=1.335,
    carrier_cycles_per_px=(-0.21, 0.19),
    numerical_aperture=0.4,
    modality="hologram",
)


def fringes(shape: tuple[int, ...] = (32, 40), dtype: str = "uint16") -> np.ndarray:
    """A small off-axis-like fringe pattern (or stack of them) in the given dtype."""
    y, x = np.mgrid[: shape[-2], : shape[-1]]
    plane = 1000 + 800 * np.cos(2 * np.pi * (0.2 * y + 0.15 * x))
    lead = shape[:-2]
    stack = (
        plane * (1 + 0.01 * np.arange(int(np.prod(lead))).reshape(*lead, 1, 1)) if lead else plane
    )
    return stack.astype(dtype)


def leftover_temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


# --- metadata -------------------------------------------------------------------------------


def test_json_record_round_trip() -> None:
    text = acquisition_to_json(ACQ, method={"name": "fourier"})
    assert json.loads(text)["qpi"]["wavelength_nm"] == 632.8
    assert acquisition_from_json(text) == ACQ


def test_ome_tiff_physical_size_in_nm(tmp_path: Path) -> None:
    path = tmp_path / "cells.ome.tif"
    data = fringes()
    meta = {"axes": "YX", "PhysicalSizeX": 345.0, "PhysicalSizeXUnit": "nm"}
    meta.update(PhysicalSizeY=345.0, PhysicalSizeYUnit="nm")
    tifffile.imwrite(path, data, ome=True, metadata=meta)
    image = read_image(path)
    assert image.axes == "YX"
    np.testing.assert_array_equal(image.data, data)
    assert image.acquisition.pixel_size_um == pytest.approx(0.345)
    assert image.extra["format"] == "ome-tiff"
    assert not image.lazy


def test_ome_map_annotation_record_beats_physical_size(tmp_path: Path) -> None:
    path = tmp_path / "cells.ome.tif"
    meta = {"axes": "YX", "PhysicalSizeX": 9.0, "PhysicalSizeY": 9.0}
    meta["MapAnnotation"] = {"napari_qpi": acquisition_to_json(ACQ)}
    tifffile.imwrite(path, fringes(), ome=True, metadata=meta)
    assert read_image(path).acquisition == ACQ


def test_plain_tiff_with_sidecar_overrides_embedded_record(tmp_path: Path) -> None:
    path = tmp_path / "cells.tif"
    embedded = {"qpi": {"wavelength_nm": 532.0, "medium_index": 1.33}}
    tifffile.imwrite(path, fringes(), metadata=embedded)
    assert read_image(path).acquisition.wavelength_nm == 532.0
    (tmp_path / "cells.tif.json").write_text(json.dumps({"qpi": ACQ.to_dict(), "note": "x"}))
    image = read_image(path)
    assert image.acquisition == ACQ
    assert image.extra["note"] == "x"
    assert image.extra["metadata_sources"][-1] == "sidecar:cells.tif.json"


def test_write_sidecar_is_read_back(tmp_path: Path) -> None:
    path = tmp_path / "holo.png"
    iio.imwrite(path, fringes(dtype="uint8"))
    sidecar = write_sidecar(path, ACQ)
    assert sidecar.name == "holo.png.json"
    assert read_image(path).acquisition == ACQ
    with pytest.raises(OutputExistsError):
        write_sidecar(path, ACQ)


def test_stem_sidecar_and_flat_record(tmp_path: Path) -> None:
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, fringes(), ome=True, metadata={"axes": "YX"})
    (tmp_path / "cells.json").write_text(json.dumps({"wavelength_nm": 633, "pixel_size_um": 0.2}))
    acq = read_image(path).acquisition
    assert (acq.wavelength_nm, acq.pixel_size_um) == (633.0, 0.2)


def test_imagej_stack_tyx(tmp_path: Path) -> None:
    path = tmp_path / "timelapse.tif"
    data = fringes((3, 16, 20))
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"axes": "TYX", "unit": "um", "spacing": 0.5},
    )
    image = read_image(path)
    assert image.axes == "TYX"
    np.testing.assert_array_equal(image.data, data)
    assert image.acquisition.pixel_size_um == pytest.approx(0.25)
    assert image.extra["z_spacing_um"] == pytest.approx(0.5)
    assert image.extra["format"] == "imagej-tiff"


def test_resolution_tags_in_centimetres_and_screen_dpi_ignored(tmp_path: Path) -> None:
    path = tmp_path / "a.tif"
    tifffile.imwrite(
        path, fringes(), resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER"
    )
    assert read_image(path).acquisition.pixel_size_um == pytest.approx(0.5)
    tifffile.imwrite(path, fringes(), resolution=(72, 72), resolutionunit="INCH")
    assert read_image(path).acquisition.pixel_size_um is None


def test_rgb_tiff_becomes_grey(tmp_path: Path) -> None:
    path = tmp_path / "rgb.tif"
    rgb = np.stack(
        [fringes(dtype="uint8"), np.zeros((32, 40), np.uint8), fringes(dtype="uint8")], -1
    )
    tifffile.imwrite(path, rgb, photometric="rgb")
    image = read_image(path)
    assert image.axes == "YX" and image.data.dtype == np.float32
    assert "luminance" in image.extra["colour_conversion"]


def test_three_plane_tiff_with_tifffile_defaults_stays_a_stack(tmp_path: Path) -> None:
    path = tmp_path / "three.tif"
    data = fringes((3, 16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tifffile.imwrite(path, data)
    image = read_image(path)
    np.testing.assert_array_equal(image.data, data)
    assert image.axes == "CYX"


# --- raster and numpy formats --------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".bmp"])
def test_lossless_raster_formats(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"holo{suffix}"
    data = fringes(dtype="uint8")
    iio.imwrite(path, data)
    image = read_image(path)
    np.testing.assert_array_equal(image.data, data)
    assert image.axes == "YX" and image.extra["format"] == suffix[1:]


def test_sixteen_bit_png(tmp_path: Path) -> None:
    path = tmp_path / "holo.png"
    data = fringes(dtype="uint16")
    iio.imwrite(path, data)
    np.testing.assert_array_equal(read_image(path).data, data)


def test_rgb_jpeg_to_grey_by_luminance(tmp_path: Path) -> None:
    path = tmp_path / "holo.jpg"
    grey = fringes(dtype="uint8")
    rgb = np.stack([grey, grey // 2, grey // 3], axis=-1)
    iio.imwrite(path, rgb, quality=95)
    image = read_image(path)
    assert image.data.shape == grey.shape and image.data.dtype == np.float32
    expected = 0.2125 * grey + 0.7154 * (grey // 2) + 0.0721 * (grey // 3)
    assert np.abs(image.data - expected).mean() < 4
    assert "luminance" in image.extra["colour_conversion"]


def test_grey_saved_as_rgb_png_keeps_dtype(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    grey = fringes(dtype="uint8")
    iio.imwrite(path, np.stack([grey] * 3, axis=-1))
    image = read_image(path)
    np.testing.assert_array_equal(image.data, grey)
    assert image.data.dtype == np.uint8


def test_npy_and_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "stack.npy"
    data = fringes((2, 16, 16), dtype="float32")
    np.save(path, data)
    (tmp_path / "stack.json").write_text(json.dumps({"qpi": {"wavelength_nm": 650}}))
    image = read_image(path)
    assert image.axes == "TYX" and isinstance(image.data, np.ndarray)
    np.testing.assert_array_equal(image.data, data)
    assert image.acquisition.wavelength_nm == 650.0


def test_npz_prefers_hologram_and_reads_metadata(tmp_path: Path) -> None:
    path = tmp_path / "set.npz"
    holo = fringes()
    np.savez(
        path, other=np.zeros((4, 4)), hologram=holo, metadata=np.array(acquisition_to_json(ACQ))
    )
    image = read_image(path)
    np.testing.assert_array_equal(image.data, holo)
    assert image.extra["npz_key"] == "hologram"
    assert image.acquisition == ACQ


def test_npz_first_array(tmp_path: Path) -> None:
    path = tmp_path / "set.npz"
    np.savez(path, frame=fringes())
    assert read_image(path).extra["npz_key"] == "frame"


# --- lazy reading --------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_lazy_tiff(tmp_path: Path, compression: str | None) -> None:
    path = tmp_path / "big.tif"
    data = fringes((4, 16, 24))
    tifffile.imwrite(
        path, data, compression=compression, photometric="minisblack", metadata={"axes": "TYX"}
    )
    image = read_image(path, lazy_threshold_bytes=100)
    assert isinstance(image.data, da.Array) and image.lazy and image.extra["lazy"]
    assert image.data.chunks[0] == (1, 1, 1, 1)
    np.testing.assert_array_equal(image.data.compute(), data)
    np.testing.assert_array_equal(np.asarray(image.data[2]), data[2])


def test_lazy_npy(tmp_path: Path) -> None:
    path = tmp_path / "big.npy"
    data = fringes((3, 16, 16), dtype="float32")
    np.save(path, data)
    image = read_image(path, lazy_threshold_bytes=100)
    assert isinstance(image.data, da.Array)
    np.testing.assert_array_equal(image.data.compute(), data)


# --- CDP stacks ----------------------------------------------------------------------------


def make_cdp(rng: np.random.Generator, k: int = 3, h: int = 8, s: int = 2) -> CDPStack:
    masks = rng.uniform(-np.pi, np.pi, (k, h, h)).astype(np.float32)
    truth = np.exp(1j * rng.uniform(0, 1, (h, h))).astype(np.complex64)
    field = np.fft.fft2(np.exp(1j * masks) * truth, s=(s * h, s * h), norm="ortho")
    patterns = np.fft.fftshift(np.abs(field) ** 2, axes=(-2, -1)).astype(np.float32)
    acq = Acquisition(wavelength_nm=532.0, pixel_size_um=1.0)
    return CDPStack(patterns, masks, acq, oversampling=s, truth=truth, extra={"noise": "none"})


def test_cdp_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    stack = make_cdp(rng)
    path = write_cdp_stack(tmp_path / "cdp.npz", stack)
    assert is_cdp_stack(path)
    back = read_cdp_stack(path)
    np.testing.assert_array_equal(back.patterns, stack.patterns)
    np.testing.assert_array_equal(back.masks, stack.masks)
    np.testing.assert_array_equal(back.truth, stack.truth)
    assert back.oversampling == 2 and back.n_patterns == 3 and back.object_shape == (8, 8)
    assert back.acquisition == stack.acquisition and back.acquisition.modality == "cdp"
    assert back.extra == {"noise": "none"}
    with pytest.raises(FileFormatError, match="CDP stack"):
        read_image(path)


def test_cdp_unshifted_file_is_centred_on_read(tmp_path: Path, rng: np.random.Generator) -> None:
    stack = make_cdp(rng, k=1)
    header = {"format": "napari-qpi-cdp", "version": 1, "fft_shifted": False}
    path = tmp_path / "other.npz"
    unshifted = np.fft.ifftshift(stack.patterns, axes=(-2, -1))
    np.savez(path, patterns=unshifted, masks=stack.masks, metadata=np.array(json.dumps(header)))
    back = read_cdp_stack(path)
    assert back.oversampling == 2
    np.testing.assert_array_equal(back.patterns, stack.patterns)


def test_cdp_shape_errors(tmp_path: Path, rng: np.random.Generator) -> None:
    stack = make_cdp(rng)
    with pytest.raises(InputError, match="one mask per pattern"):
        CDPStack(stack.patterns, stack.masks[:1], oversampling=2)
    with pytest.raises(InputError, match="oversampling"):
        CDPStack(stack.patterns, stack.masks, oversampling=3)
    path = tmp_path / "bad.npz"
    np.savez(path, patterns=stack.patterns, masks=stack.masks[:2])
    with pytest.raises(FileFormatError, match="one mask per pattern"):
        read_cdp_stack(path)
    np.savez(path, patterns=stack.patterns)
    assert not is_cdp_stack(path)
    with pytest.raises(FileFormatError, match="masks"):
        read_cdp_stack(path)


# --- phase output --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(24, 32), (3, 24, 32)])
def test_phase_round_trip(tmp_path: Path, rng: np.random.Generator, shape: tuple[int, ...]) -> None:
    phase = rng.normal(size=shape).astype(np.float32)
    method = {"name": "fourier", "settings": {"filter": "disk", "radius": 0.1}}
    path = write_phase(tmp_path / "p.ome.tif", phase, acquisition=ACQ, method=method)
    image = read_image(path)
    assert image.data.dtype == np.float32
    np.testing.assert_array_equal(image.data, phase)
    assert image.acquisition == ACQ.replace(modality="phase")
    assert image.extra["method"] == method and image.extra["units"] == "rad"
    assert image.axes == ("YX" if len(shape) == 2 else "TYX")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and 'PhysicalSizeX="0.345"' in tif.ome_metadata


def test_phase_from_dask_stack(tmp_path: Path, rng: np.random.Generator) -> None:
    phase = rng.normal(size=(2, 8, 8)).astype(np.float32)
    path = write_phase(
        tmp_path / "p.ome.tif",
        da.from_array(phase, chunks=(1, 8, 8)),
        acquisition=ACQ,
        method={"name": "x"},
        axes="ZYX",
    )
    image = read_image(path)
    np.testing.assert_array_equal(image.data, phase)
    assert image.axes == "ZYX"


def test_phase_overwrite_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.ome.tif"
    write_phase(path, np.zeros((4, 4)), acquisition=ACQ, method={"name": "a"})
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="overwrite=True") as info:
        write_phase(path, np.ones((4, 4)), acquisition=ACQ, method={"name": "b"})
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, QPIError)
    assert path.read_bytes() == before
    write_phase(path, np.ones((4, 4)), acquisition=ACQ, method={"name": "b"}, overwrite=True)
    assert read_image(path).extra["method"] == {"name": "b"}
    assert not leftover_temp_files(tmp_path)


def test_phase_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"numpy\.angle"):
        write_phase(tmp_path / "c.ome.tif", np.ones((4, 4), complex), acquisition=ACQ, method={})
    with pytest.raises(InputError, match="JSON"):
        write_phase(
            tmp_path / "c.ome.tif", np.ones((4, 4)), acquisition=ACQ, method={"f": object()}
        )
    with pytest.raises(FileFormatError, match="OME-TIFF"):
        write_phase(tmp_path / "c.png", np.ones((4, 4)), acquisition=ACQ, method={})
    assert not list(tmp_path.iterdir())


def test_atomic_write_cleans_up_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target, overwrite=True) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert not leftover_temp_files(tmp_path)
    with atomic_write(target, overwrite=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith("out.bin")
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"


# --- bad input -----------------------------------------------------------------------------


def test_text_file_renamed_tif(tmp_path: Path) -> None:
    path = tmp_path / "notes.tif"
    path.write_text("hello, these are my notes\n")
    with pytest.raises(FileFormatError, match="text file"):
        read_image(path)


def test_png_renamed_tif_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "holo.tif"
    iio.imwrite(path, fringes(dtype="uint8"), extension=".png")
    with pytest.raises(FileFormatError, match=r"rename it to end with \.png"):
        read_image(path)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_truncated_tiff(tmp_path: Path, compression: str | None) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, fringes((3, 32, 40)), compression=compression, photometric="minisblack")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="truncated"):
        read_image(path)
    with pytest.raises(FileFormatError, match="truncated"):
        read_image(path, lazy_threshold_bytes=10)


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "holo.czi"
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(FileFormatError, match=r"cannot read '\.czi'"):
        read_image(path)
    with pytest.raises(FileFormatError, match="No such file"):
        read_image(tmp_path / "missing.tif")


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.arange(10.0), "1-D"),
        (np.zeros((2, 2, 8, 8), np.float32), "Split the channels"),
        (np.ones((8, 8), np.complex64), "complex"),
        (np.zeros((0, 8), np.float32), "empty"),
        (np.ones((1, 8), np.float32), "single row"),
    ],
)
def test_bad_arrays(tmp_path: Path, array: np.ndarray, message: str) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(InputError, match=message):
        read_image(path)


def test_four_d_ome_tiff_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tcyx.ome.tif"
    tifffile.imwrite(path, fringes((2, 2, 16, 16)), ome=True, metadata={"axes": "TCYX"})
    with pytest.raises(InputError, match="TCYX"):
        read_image(path)


def test_wrong_metadata_types(tmp_path: Path) -> None:
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, fringes())
    sidecar = tmp_path / "cells.tif.json"
    sidecar.write_text(json.dumps({"qpi": {"wavelength_nm": "green"}}))
    with pytest.raises(MetadataError, match=r"cells\.tif\.json.*wavelength_nm"):
        read_image(path)
    sidecar.write_text("{not json")
    with pytest.raises(MetadataError, match="not valid JSON"):
        read_image(path)
    sidecar.unlink()
    tifffile.imwrite(path, fringes(), metadata={"qpi": {"pixel_size_um": [1, 2]}})
    with pytest.raises(MetadataError, match=r"cells\.tif.*pixel_size_um"):
        read_image(path)
    with pytest.raises(MetadataError, match="'qpi'"):
        acquisition_from_json('{"qpi": 5}', source="x.json")


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([[1.0, np.nan], [np.inf, 2.0]]), "1 NaN and 1 infinite"),
        (np.zeros((8, 8), np.uint16), "all zero"),
        (np.full((8, 8), 7.0), "constant"),
        (np.where(np.eye(8, dtype=bool), 0, 255).astype(np.uint8), "saturated.*255"),
        (np.where(np.eye(8, dtype=bool), 0, 4095).astype(np.uint16), "saturated.*clipped"),
        (np.ones((8, 8), np.complex64), "complex"),
        (np.ones(8), "2-D"),
    ],
)
def test_validate_hologram_rejects(array: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        validate_hologram(array)


def test_validate_hologram_names_the_plane() -> None:
    stack = fringes((3, 16, 16)).astype(np.float32)
    validate_hologram(stack)
    stack[1] = 0
    with pytest.raises(InputError, match=r"plane 1\) is all zero"):
        validate_hologram(da.from_array(stack, chunks=(1, 16, 16)))


@pytest.mark.parametrize("value", [np.float32(0.25), np.float64(0.25), np.int64(2), 0.25, 2])
def test_acquisition_takes_numpy_numbers(value):
    acquisition = Acquisition(pixel_size_um=value, wavelength_nm=value)
    assert acquisition.pixel_size_um == pytest.approx(float(value))
    assert type(acquisition.pixel_size_um) is float and type(acquisition.wavelength_nm) is float


@pytest.mark.parametrize("value", [True, np.True_, "0.25", [0.25]])
def test_acquisition_refuses_booleans_and_text(value):
    with pytest.raises(MetadataError, match=r"wavelength_nm.*must be a number"):
        Acquisition(wavelength_nm=value)
