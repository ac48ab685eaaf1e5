"""Segmentation and per-cell measurements (napari_qpi.morphology) and their files (io.tables)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from napari_qpi.errors import InputError, QPIError
from napari_qpi.io.tables import (
    read_labels_tiff,
    read_table_csv,
    table_sidecar_path,
    write_labels_tiff,
    write_table_csv,
)
from napari_qpi.morphology import (
    MorphologyWarning,
    SegmentationSettings,
    measure_cells,
    measure_stack,
    segment_cells,
)
from napari_qpi.physics.phantoms import random_cells

WAVELENGTH_NM = 532.0
NOISE_RAD = 0.02


def sphere_phase(
    shape: tuple[int, int], centre_px: tuple[float, float], radius_px: float, peak_rad: float
) -> np.ndarray:
    """Phase (rad) of a homogeneous sphere: peak * sqrt(1 - r^2 / R^2), 0 outside."""
    y, x = np.indices(shape, dtype=np.float64)
    r2 = ((y - centre_px[0]) ** 2 + (x - centre_px[1]) ** 2) / radius_px**2
    return peak_rad * np.sqrt(np.clip(1.0 - r2, 0.0, None))


def match(truth: np.ndarray, found: np.ndarray) -> dict[int, int]:
    """Truth label -> the found label covering most of it (only where some found label does)."""
    pairs = {}
    for k in np.unique(truth[truth > 0]):
        hits = found[truth == k]
        hits = hits[hits > 0]
        if hits.size:
            pairs[int(k)] = int(np.bincount(hits).argmax())
    return pairs


def row(table, label: int) -> int:
    return int(np.flatnonzero(table["label"] == label)[0])


def segment_quietly(phase, **kwargs) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", MorphologyWarning)
        return segment_cells(phase, **kwargs)


@pytest.mark.parametrize(
    ("kinds", "pixel_size_um", "seed", "area_tolerance"),
    [
        (("round", "rbc"), 0.2, 0, 0.03),
        (("round", "rbc"), 0.2, 1, 0.03),
        # Adherent cells taper to zero thickness: the rim thinner than 3 noise sigma (0.06 rad)
        # cannot be told from background, which costs up to 3-6% of their area at this noise.
        (("round", "rbc", "adherent"), 0.4, 2, 0.05),
    ],
    ids=["round+rbc-seed0", "round+rbc-seed1", "with-adherent-0.4um"],
)
def test_every_cell_of_20_found_dry_mass_pg_within_2pct_area_um2_within_3pct(
    kinds, pixel_size_um, seed, area_tolerance
):
    phantom = random_cells(
        (512, 512),
        pixel_size_um=pixel_size_um,
        n_cells=20,
        kinds=kinds,
        allow_touching=False,
        seed=seed,
    )
    assert phantom.labels.max() == 20, "the phantom should hold 20 separate cells"
    noise = np.random.default_rng(seed).normal(0.0, NOISE_RAD, phantom.shape)
    found = segment_quietly(phantom.phase + noise.astype(np.float32), pixel_size_um=pixel_size_um)

    pairs = match(phantom.labels, found)
    assert len(pairs) == 20, f"found {len(pairs)} of 20 cells"
    assert len(set(pairs.values())) == 20 == found.max(), "one segment per cell, none extra"

    kwargs = {"pixel_size_um": pixel_size_um, "wavelength_nm": WAVELENGTH_NM}
    truth = measure_cells(phantom.phase, phantom.labels, **kwargs)
    measured = measure_cells(phantom.phase, found, **kwargs)
    for k, j in pairs.items():
        t, m = row(truth, k), row(measured, j)
        mass_err = measured["dry_mass_pg"][m] / truth["dry_mass_pg"][t] - 1
        area_err = measured["area_um2"][m] / truth["area_um2"][t] - 1
        assert abs(mass_err) < 0.02, f"cell {k}: dry mass off by {100 * mass_err:.2f}% (pg)"
        assert abs(area_err) < area_tolerance, f"cell {k}: area off by {100 * area_err:.2f}% (um^2)"


def touching_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two spheres of 8-14 um diameter at 0.2 um/px, overlapping by 0-10% of their radii."""
    rng = np.random.default_rng(seed)
    shape = (256, 256)
    r1, r2 = rng.uniform(20.0, 35.0, 2)
    distance = (r1 + r2) * rng.uniform(0.9, 1.0)
    angle = rng.uniform(0.0, 2 * np.pi)
    step = np.array([np.sin(angle), np.cos(angle)]) * distance / 2
    centre = np.array(shape) / 2
    p1 = sphere_phase(shape, tuple(centre - step), r1, rng.uniform(2.0, 8.0))
    p2 = sphere_phase(shape, tuple(centre + step), r2, rng.uniform(2.0, 8.0))
    truth = np.where(p1 > 0, 1, 0)
    truth[p2 > p1] = 2
    return p1 + p2 + rng.normal(0.0, NOISE_RAD, shape), truth


def test_watershed_splits_touching_round_cells_in_at_least_9_of_10_pairs():
    split = 0
    for seed in range(10):
        phase, truth = touching_pair(seed)
        found = segment_quietly(phase, pixel_size_um=0.2)
        if found.max() != 2:
            continue
        pairs = match(truth, found)
        ious = [
            np.sum((truth == k) & (found == j)) / np.sum((truth == k) | (found == j))
            for k, j in pairs.items()
        ]
        split += len(set(pairs.values())) == 2 and min(ious) > 0.85
    assert split >= 9, f"only {split} of 10 touching pairs split into their two cells"


def test_dry_mass_pg_of_uniform_square_matches_hand_computation():
    phase = np.zeros((40, 40), np.float32)
    phase[10:20, 15:25] = 1.0
    labels = (phase > 0).astype(np.int32)
    table = measure_cells(
        phase, labels, pixel_size_um=0.5, wavelength_nm=532.0, alpha_um3_per_pg=0.18
    )
    area_um2 = 100 * 0.5**2
    optical_volume_um3 = 0.532 / (2 * math.pi) * 1.0 * area_um2
    dry_mass_pg = optical_volume_um3 / 0.18
    assert math.isclose(dry_mass_pg, 11.7597, rel_tol=1e-4)
    assert table["area_um2"][0] == pytest.approx(area_um2)
    assert table["integrated_phase_rad_um2"][0] == pytest.approx(area_um2)
    assert table["optical_volume_um3"][0] == pytest.approx(optical_volume_um3, rel=1e-12)
    assert table["dry_mass_pg"][0] == pytest.approx(dry_mass_pg, rel=1e-12)
    assert table["dry_mass_density_pg_per_um2"][0] == pytest.approx(dry_mass_pg / area_um2)
    assert table["mean_phase_rad"][0] == pytest.approx(1.0)
    assert table["centroid_y_um"][0] == pytest.approx(14.5 * 0.5)
    assert table.units["dry_mass_pg"] == "pg"
    assert table.metadata["alpha_um3_per_pg"] == 0.18
    assert not table.metadata["pixel_size_missing"]


def small_field(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    phase = sphere_phase((128, 128), (40, 40), 18, 3.0) + sphere_phase(
        (128, 128), (85, 80), 22, 5.0
    )
    phase += np.random.default_rng(seed).normal(0.0, NOISE_RAD, phase.shape)
    return phase.astype(np.float32), segment_quietly(phase, pixel_size_um=0.25)


def test_labels_tiff_and_csv_with_sidecar_read_back_equal(tmp_path):
    phase, labels = small_field()
    table = measure_cells(
        phase,
        labels,
        pixel_size_um=0.25,
        wavelength_nm=WAVELENGTH_NM,
        frame=0,
        method=SegmentationSettings().to_dict(),
    )
    labels_path = write_labels_tiff(tmp_path / "cells.ome.tif", labels, pixel_size_um=0.25)
    csv_path = write_table_csv(tmp_path / "cells.csv", table)

    labels_back, pixel_size_um = read_labels_tiff(labels_path)
    assert labels_back.dtype == np.int32
    np.testing.assert_array_equal(labels_back, labels)
    assert pixel_size_um == pytest.approx(0.25)

    back = read_table_csv(csv_path)
    assert back.names == table.names
    for name in table.names:
        np.testing.assert_array_equal(back[name], table[name], err_msg=name)
        assert back[name].dtype == table[name].dtype
    assert back.units == table.units
    assert back.metadata == json.loads(json.dumps(table.metadata))
    sidecar = json.loads(table_sidecar_path(csv_path).read_text())
    assert sidecar["qpi"] == {"wavelength_nm": WAVELENGTH_NM, "pixel_size_um": 0.25}
    assert sidecar["metadata"]["alpha_um3_per_pg"] == 0.18

    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(csv_path)
    assert list(frame.columns) == table.names
    np.testing.assert_array_equal(frame["dry_mass_pg"].to_numpy(), table["dry_mass_pg"])


def test_writers_refuse_to_overwrite_unless_asked(tmp_path):
    phase, labels = small_field()
    table = measure_cells(phase, labels, pixel_size_um=0.25, wavelength_nm=WAVELENGTH_NM)
    csv_path = write_table_csv(tmp_path / "t.csv", table)
    tif_path = write_labels_tiff(tmp_path / "l.tif", labels, pixel_size_um=0.25)
    with pytest.raises(QPIError, match="overwrite=True"):
        write_table_csv(csv_path, table)
    with pytest.raises(QPIError, match="overwrite=True"):
        write_labels_tiff(tif_path, labels, pixel_size_um=0.25)
    write_table_csv(csv_path, {"label": np.array([7])}, overwrite=True)
    assert read_table_csv(csv_path)["label"].tolist() == [7]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.tif", "t.csv", "t.csv.json"]


def test_labels_tiff_uses_uint32_above_65535(tmp_path):
    import tifffile

    labels = np.zeros((8, 8), np.int64)
    labels[2, 3] = 70000
    path = write_labels_tiff(tmp_path / "big.tif", labels, pixel_size_um=None)
    assert tifffile.imread(path).dtype == np.uint32
    back, pixel_size_um = read_labels_tiff(path)
    np.testing.assert_array_equal(back, labels)
    assert pixel_size_um is None


@pytest.mark.parametrize(
    "phase",
    [np.zeros((96, 96)), np.random.default_rng(0).normal(0.0, 0.05, (96, 96))],
    ids=["zeros", "noise-0.05rad"],
)
def test_no_cells_gives_empty_labels_and_a_warning(phase):
    with pytest.warns(MorphologyWarning, match="No cells found"):
        labels = segment_cells(phase, pixel_size_um=0.2)
    assert labels.dtype == np.int32 and not labels.any()
    table = measure_cells(phase, labels, pixel_size_um=0.2, wavelength_nm=WAVELENGTH_NM)
    assert len(table) == 0 and "dry_mass_pg" in table.names


def test_one_cell_covering_the_field_is_reported_not_segmented():
    phase = sphere_phase((128, 128), (64, 64), 110, 5.0)
    phase += np.random.default_rng(1).normal(0.0, NOISE_RAD, phase.shape)
    with pytest.warns(MorphologyWarning, match="not 0: one cell may fill the field"):
        labels = segment_cells(phase, pixel_size_um=0.2)
    assert not labels.any()


def test_nan_regions_are_set_aside_with_a_message_and_the_other_cells_kept():
    phase, labels = small_field()
    kept = segment_quietly(phase, pixel_size_um=0.25)
    bad = phase.copy()
    bad[5, 5] = np.nan  # one pixel in the background: nothing changes
    np.testing.assert_array_equal(segment_quietly(bad, pixel_size_um=0.25), kept)
    cell = labels[40, 40]
    bad[25:45, 25:45] = np.nan  # a NaN region over part of one cell: it is left out, others kept
    with pytest.warns(MorphologyWarning, match="touching NaN or infinite phase were left out"):
        found = segment_cells(bad, pixel_size_um=0.25)
    assert found.max() == kept.max() - 1
    with pytest.warns(MorphologyWarning, match="inside 1 labelled cell"):
        table = measure_cells(bad, labels, pixel_size_um=0.25, wavelength_nm=WAVELENGTH_NM)
    rows = table["label"] == cell
    assert np.isnan(table["dry_mass_pg"][rows]).all()
    assert np.isfinite(table["dry_mass_pg"][~rows]).all() and (~rows).sum() == labels.max() - 1
    with pytest.raises(InputError, match="no finite pixel"):
        segment_cells(np.full((16, 16), np.nan))


def test_labels_of_another_shape_raise_input_error():
    phase, labels = small_field()
    with pytest.raises(InputError, match=r"\(128, 127\) do not match .* \(128, 128\)"):
        measure_cells(phase, labels[:, :-1], pixel_size_um=0.25)
    with pytest.raises(InputError, match="integers"):
        measure_cells(phase, labels.astype(float), pixel_size_um=0.25)


def test_missing_pixel_size_measures_in_px_and_flags_it():
    phase, labels = small_field()
    table = measure_cells(phase, labels, wavelength_nm=WAVELENGTH_NM)
    assert table.metadata["pixel_size_missing"] is True
    assert not table.metadata["dry_mass_available"]
    assert {"area_px2", "perimeter_px", "centroid_x_px", "integrated_phase_rad_px2"} <= set(
        table.names
    )
    lengths = [n for n in table.names if n.endswith(("_um", "_um2")) and "dry_mass" not in n]
    assert not lengths
    assert np.isnan(table["dry_mass_pg"]).all(), "no pixel size: the column is there, empty"
    assert any("pixel_size_um" in note for note in table.metadata["notes"])
    physical = measure_cells(phase, labels, pixel_size_um=0.25)
    np.testing.assert_allclose(table["area_px2"] * 0.25**2, physical["area_um2"])
    assert np.isnan(physical["dry_mass_pg"]).all(), "no wavelength: dry mass (pg) empty"
    assert len(physical["dry_mass_pg"]) == labels.max()
    assert any("wavelength_nm" in note for note in physical.metadata["notes"])
    # the learnt defaults need no pixel size: the same cells with and without one
    np.testing.assert_array_equal(
        segment_quietly(phase), segment_quietly(phase, pixel_size_um=0.25)
    )
    with pytest.warns(MorphologyWarning, match="read in pixels"):
        segment_cells(phase, settings=SegmentationSettings(min_area_um2=10))


def test_background_offset_is_removed_by_the_local_background_and_reported():
    phase, labels = small_field()
    args = {"pixel_size_um": 0.25, "wavelength_nm": WAVELENGTH_NM}
    clean = measure_cells(phase, labels, **args)
    offset = measure_cells(phase + 0.5, labels, **args)
    np.testing.assert_allclose(offset["dry_mass_pg"], clean["dry_mass_pg"], rtol=0.01)
    np.testing.assert_allclose(offset["background_phase_rad"], 0.5, atol=0.02)
    assert offset.metadata["background_phase_rad"] == pytest.approx(0.5, abs=0.02)
    with pytest.warns(MorphologyWarning, match="background phase is 0.5 rad"):
        measure_cells(phase + 0.5, labels, local_background=False, **args)


def test_measure_stack_segments_each_frame_and_adds_frame_column():
    phase, _ = small_field()
    stack = np.stack([phase, phase[::-1], np.zeros_like(phase)])
    with pytest.warns(MorphologyWarning, match="No cells found"):
        table, found = measure_stack(stack, pixel_size_um=0.25, wavelength_nm=WAVELENGTH_NM)
    assert found.shape == stack.shape and found.dtype == np.int32
    assert table["frame"].tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(found[1], segment_quietly(phase[::-1], pixel_size_um=0.25))
    given, _ = measure_stack(stack[:2], found[:2], pixel_size_um=0.25)
    assert given.metadata["method"] == "user labels"
    np.testing.assert_allclose(given["area_um2"], table["area_um2"])


def test_bad_settings_raise_input_error():
    with pytest.raises(InputError, match="Unknown threshold"):
        SegmentationSettings(threshold="median")
    with pytest.raises(InputError, match="max_area_um2"):
        SegmentationSettings(min_area_um2=50, max_area_um2=10)


@pytest.mark.parametrize("name", ["wavelength_nm", "pixel_size_um"])
def test_measure_refuses_a_boolean_and_takes_a_float32_for_units(name):
    from napari_qpi.morphology import measure_cells

    labels = np.zeros((32, 32), int)
    labels[10:20, 10:20] = 1
    phase = np.where(labels > 0, 1.0, 0.0)
    units = {"pixel_size_um": 0.25, "wavelength_nm": 532.0}
    with pytest.raises(InputError, match=name):
        measure_cells(phase, labels, **{**units, name: True})
    as_float32 = measure_cells(phase, labels, **{**units, name: np.float32(units[name])})
    reference = measure_cells(phase, labels, **units)
    assert as_float32["dry_mass_pg"] == pytest.approx(reference["dry_mass_pg"], rel=1e-6)
    assert reference["dry_mass_pg"][0] > 0
