"""Procedural piecewise-constant CDP training objects; training one single-snapshot run alone."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from napari_qpi.cli.distill import add_distill_arguments, config_from_args, distill_main
from napari_qpi.errors import InputError
from napari_qpi.models.card import ModelCard
from napari_qpi.physics.cdp import random_objects
from napari_qpi.physics.shapes import FIELDS, SHAPE_KINDS, shape_field, shape_objects

#: The scikit-image images of benchmarks/cdp_unseen.py: the generator must not use them.
BENCHMARK_IMAGES = ("shepp_logan_phantom", "checkerboard", "binary_blobs", "horse", "retina",
                    "microaneurysms", "logo", "lfw_subset")  # fmt: skip


def _jumps(field: np.ndarray) -> np.ndarray:
    """Absolute differences between horizontal and vertical neighbours, flattened."""
    return np.concatenate(
        [np.abs(np.diff(field, axis=0)).ravel(), np.abs(np.diff(field, axis=1)).ravel()]
    )


def test_shape_objects_phase_range_amplitude_and_dtype() -> None:
    objects = shape_objects(24, (40, 32), max_phase_rad=(0.5, 3.0), seed=0)
    assert objects.shape == (24, 40, 32) and objects.dtype == np.complex64
    phase = np.angle(objects)
    assert phase.min() >= -1e-5 and phase.max() <= 3.0 + 1e-5  # [0, p] with p <= 3 < pi
    peaks = phase.max(axis=(1, 2))
    assert np.all(np.abs(phase.min(axis=(1, 2))) < 1e-5)  # every field spans [0, p]
    assert peaks.min() >= 0.5 - 1e-5 and np.ptp(peaks) > 1.0
    amplitude = np.abs(objects)
    phase_only = np.all(np.isclose(amplitude, 1.0, atol=1e-6), axis=(1, 2))
    assert 0 < phase_only.sum() < len(objects)  # both kinds appear (half on average)
    assert amplitude.min() >= 0.5 - 1e-6 and amplitude.max() <= 1.0 + 1e-6
    only = shape_objects(8, (16, 16), phase_only_fraction=1.0, max_phase_rad=2.0, seed=1)
    np.testing.assert_allclose(np.abs(only), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.angle(only).max(axis=(1, 2)), 2.0, atol=1e-5)


def test_shape_objects_are_seeded() -> None:
    first = shape_objects(6, (32, 32), seed=3)
    np.testing.assert_array_equal(first, shape_objects(6, (32, 32), seed=3))
    np.testing.assert_array_equal(shape_objects(6, (32, 32), seed=np.random.default_rng(3)), first)
    assert not np.array_equal(first, shape_objects(6, (32, 32), seed=4))


@pytest.mark.parametrize("kind", sorted(FIELDS))
def test_every_kind_is_sharp_edged_and_spans_zero_to_one(kind: str) -> None:
    rng = np.random.default_rng(11)
    fields = [shape_field(rng, (48, 48), kind) for _ in range(12)]
    for field in fields:
        assert field.shape == (48, 48) and field.min() == 0.0 and field.max() == 1.0
    # a jump of a quarter of the range or more between two neighbouring pixels (an edge)
    assert np.mean([_jumps(f).max() > 0.25 for f in fields]) >= 0.75, kind
    if kind != "mixture":  # piecewise constant: most neighbours are on the same level
        flat = [np.mean(_jumps(f) < 1e-9) for f in fields]
        assert np.median(flat) > 0.5, (kind, flat)
    else:  # a smooth field under the edges: few exactly flat neighbours
        assert np.median([np.mean(_jumps(f) < 1e-9) for f in fields]) < 0.5


def test_shape_objects_are_diverse() -> None:
    objects = shape_objects(32, (32, 32), phase_only_fraction=1.0, max_phase_rad=1.0, seed=5)
    phases = np.angle(objects).reshape(len(objects), -1)
    standardised = (phases - phases.mean(1, keepdims=True)) / phases.std(1, keepdims=True)
    correlation = standardised @ standardised.T / phases.shape[1]
    pairs = correlation[np.triu_indices(len(objects), 1)]
    assert np.abs(pairs).max() < 0.95 and np.abs(pairs).mean() < 0.3  # no two alike
    # edges at many densities (few large figures to fine gratings) and at several level counts
    edge_density = [np.mean(_jumps(p.reshape(32, 32)) > 0.05) for p in phases]
    assert np.ptp(edge_density) > 0.3
    levels = [len(np.unique(np.round(p, 3))) for p in phases]
    assert min(levels) <= 40 and max(levels) > 200  # binary-ish plates and mixtures
    drawn = np.random.default_rng(0).choice(
        list(SHAPE_KINDS), size=400, p=list(SHAPE_KINDS.values())
    )
    assert set(drawn) == set(FIELDS)
    with pytest.raises(InputError, match="Unknown shape kind"):
        shape_field(np.random.default_rng(0), (8, 8), "stars")


def test_the_generator_uses_no_stored_image(monkeypatch) -> None:
    """The unseen benchmark's images (or any of scikit-image's) are never read."""
    import skimage.data

    def refused(*args, **kwargs):
        raise AssertionError("a stored image was read")

    for name in (*BENCHMARK_IMAGES, "camera", "coins"):
        monkeypatch.setattr(skimage.data, name, refused)
    assert shape_objects(16, (24, 24), seed=0).shape == (16, 24, 24)
    mixed = random_objects(6, (24, 24), sources=("shapes",), seed=1)
    assert np.isfinite(mixed).all()


def test_random_objects_mix_the_three_sources() -> None:
    mixed = random_objects(12, (32, 32), sources=("cells", "images", "shapes"), seed=2)
    np.testing.assert_array_equal(
        mixed, random_objects(12, (32, 32), sources=("cells", "images", "shapes"), seed=2)
    )
    assert mixed.shape == (12, 32, 32) and np.isfinite(mixed).all()
    parser = add_distill_arguments(argparse.ArgumentParser())
    config = config_from_args(parser.parse_args(["--sources", "cells", "shapes"]))
    assert config.sources == ("cells", "shapes")


def test_one_single_snapshot_run_can_be_trained_alone(tmp_path) -> None:
    """``--students control`` (and ``kd``) train and write that model only, with its steps."""
    parser = add_distill_arguments(argparse.ArgumentParser())
    argv = [
            "--minutes", "1", "--size", "16", "--depth", "2", "--teacher-channels", "4",
            "--student-channels", "4", "--teacher-masks", "2", "--batch-size", "2",
            "--teacher-steps", "2", "--student-steps", "3", "--val-objects", "2",
            "--classical-iterations", "2", "--photons", "1000", "--sources", "cells", "shapes",
        "--feature-layers", "dec0",
    ]  # fmt: skip
    assert distill_main(parser.parse_args([*argv, "--out", str(tmp_path / "first")])) == 0
    argv += ["--teacher", str(tmp_path / "first" / "cdp-teacher")]
    assert distill_main(parser.parse_args([*argv, "--out", str(tmp_path / "both")])) == 0
    for run, name in (("control", "cdp-control"), ("kd", "cdp-student")):
        out = tmp_path / run
        args = parser.parse_args([*argv, "--out", str(out), "--students", run])
        assert distill_main(args) == 0
        written = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name.startswith("cdp"))
        assert written == [name]
        card = ModelCard.load(out / name)
        assert card.training["steps"] == 3 and f"--students {run}" in card.training["command"]
        assert "--sources cells shapes" in card.training["command"]
        report = json.loads((out / "report.json").read_text())
        assert "hio_student_mask" in report["scores"]
        # the same run as in the two-student process: same start, batches and noise
        alone = load_file(out / name / "model.safetensors")
        paired = load_file(tmp_path / "both" / name / "model.safetensors")
        assert alone.keys() == paired.keys()
        for key, value in alone.items():
            assert torch.equal(value, paired[key]), key
    with pytest.raises(SystemExit):
        parser.parse_args(["--students", "teacher"])
