"""Coded diffraction patterns: forward models, classical solvers, CDPNet and distillation."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_qpi.cli.distill import add_distill_arguments, config_from_args, distill_main
from napari_qpi.errors import InputError, ModelError
from napari_qpi.models.card import ModelCard
from napari_qpi.nn.cdpnet import CDPNet, CDPNetConfig, LearnedMasks, build, complex_mse
from napari_qpi.physics.cdp import (
    add_noise_torch,
    add_poisson_noise,
    cdp_adjoint_torch,
    cdp_farfield_torch,
    cdp_forward_torch,
    cell_objects,
    coded_diffraction_patterns,
    image_objects,
    quantise_phase,
    quantise_phase_ste,
    random_objects,
    random_phase_masks,
    remove_global_phase,
)
from napari_qpi.retrieval.cdp_solvers import (
    global_phase_align,
    measured_modulus,
    relative_error,
    solve_cdp,
    solve_phase_object,
    spectral_init,
)
from napari_qpi.training.distill import (
    DistillationStudent,
    DistillConfig,
    distillation_loss,
    evaluate_model,
    held_out_objects,
    load_cdp_model,
    make_card,
    mask_gram,
    mask_gram_loss,
    save_cdp_model,
    teacher_initial_masks,
    train_student,
    train_teacher,
)
from napari_qpi.training.loop import fit


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def complex_object(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    amplitude = rng.uniform(0.5, 1.0, shape)
    return (amplitude * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))).astype(np.complex64)


def direct_patterns(obj: np.ndarray, masks: np.ndarray, oversampling: int) -> np.ndarray:
    """|DFT|^2 of the zero-padded coded fields by explicit sums, centred (reference)."""
    h, w = obj.shape
    big_h, big_w = oversampling * h, oversampling * w
    fy = np.exp(-2j * np.pi * np.outer(np.arange(big_h), np.arange(h)) / big_h)
    fx = np.exp(-2j * np.pi * np.outer(np.arange(big_w), np.arange(w)) / big_w)
    fields = np.einsum("uy,kyx,vx->kuv", fy, np.exp(1j * masks) * obj, fx)
    patterns = np.abs(fields) ** 2 / (big_h * big_w)
    return np.roll(patterns, (big_h // 2, big_w // 2), axis=(-2, -1))


# --- physics ----------------------------------------------------------------------------------


def test_torch_forward_matches_direct_and_numpy(rng: np.random.Generator) -> None:
    obj = complex_object(rng, (12, 10))
    masks = random_phase_masks(3, (12, 10), seed=1)
    reference = direct_patterns(obj.astype(np.complex128), masks.astype(np.float64), 2)
    numpy_patterns = coded_diffraction_patterns(obj, masks, oversampling=2)
    torch_patterns = cdp_forward_torch(
        torch.from_numpy(obj.astype(np.complex128)), torch.from_numpy(masks.astype(np.float64)), 2
    ).numpy()
    assert torch_patterns.shape == (3, 24, 20)
    np.testing.assert_allclose(torch_patterns, reference, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(numpy_patterns, reference, rtol=1e-4, atol=1e-6)
    batched = cdp_forward_torch(torch.from_numpy(np.stack([obj, obj])), torch.from_numpy(masks), 2)
    np.testing.assert_allclose(batched[1].numpy(), numpy_patterns, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("oversampling", [1, 2, 3])
def test_energy_is_conserved(rng: np.random.Generator, oversampling: int) -> None:
    obj = complex_object(rng, (16, 16))
    masks = random_phase_masks(4, (16, 16), seed=2)
    energy = np.sum(np.abs(obj) ** 2)
    numpy_patterns = coded_diffraction_patterns(obj, masks, oversampling=oversampling)
    torch_patterns = cdp_forward_torch(torch.from_numpy(obj), torch.from_numpy(masks), oversampling)
    np.testing.assert_allclose(numpy_patterns.sum(axis=(-2, -1)), energy, rtol=1e-5)
    np.testing.assert_allclose(torch_patterns.sum(dim=(-2, -1)).numpy(), energy, rtol=1e-5)


def test_adjoint_and_normal_operator(rng: np.random.Generator) -> None:
    x = torch.from_numpy(complex_object(rng, (8, 12)).astype(np.complex128))
    z = torch.from_numpy(rng.standard_normal((3, 16, 24)) + 1j * rng.standard_normal((3, 16, 24)))
    masks = torch.from_numpy(random_phase_masks(3, (8, 12), seed=3).astype(np.float64))
    ax = cdp_farfield_torch(x, masks, 2)
    lhs = torch.vdot(ax.flatten(), z.flatten())
    rhs = torch.vdot(x.flatten(), cdp_adjoint_torch(z, masks).flatten())
    assert abs(complex(lhs - rhs)) < 1e-9 * abs(complex(lhs))
    torch.testing.assert_close(cdp_adjoint_torch(ax, masks), 3 * x)


def test_the_numpy_and_torch_operators_are_one_operator(rng: np.random.Generator) -> None:
    """physics.cdp.CDPOperator (the solvers') and the torch far field / adjoint (the network's
    and the losses') give the same A x and A^H z, and the patterns are |A x|^2 shifted."""
    from napari_qpi.physics.cdp import CDPOperator

    x = complex_object(rng, (8, 12)).astype(np.complex64)
    z = (rng.standard_normal((3, 16, 24)) + 1j * rng.standard_normal((3, 16, 24))).astype(
        np.complex64
    )
    phases = random_phase_masks(3, (8, 12), seed=3)
    op = CDPOperator(phases, 2)
    masks = torch.from_numpy(phases)
    far = cdp_farfield_torch(torch.from_numpy(x), masks, 2).numpy()
    np.testing.assert_allclose(op.forward(x), far, atol=1e-5)
    np.testing.assert_allclose(
        op.adjoint(z), cdp_adjoint_torch(torch.from_numpy(z), masks).numpy(), atol=1e-4
    )
    patterns = coded_diffraction_patterns(x, phases, oversampling=2)
    np.testing.assert_allclose(
        np.fft.fftshift(np.abs(op.forward(x)) ** 2, axes=(-2, -1)), patterns, atol=1e-5
    )


def test_quantised_masks_and_straight_through_gradient() -> None:
    phases = torch.linspace(-6.0, 6.0, 101, requires_grad=True)
    quantised = quantise_phase_ste(phases, 4)
    levels = -math.pi + 2 * math.pi * torch.arange(4) / 4
    assert torch.isclose(quantised[:, None], levels[None], atol=1e-5).any(dim=1).all()
    np.testing.assert_allclose(
        quantised.detach().numpy(), quantise_phase(phases.detach().numpy(), 4), atol=1e-5
    )
    quantised.sum().backward()
    assert torch.equal(phases.grad, torch.ones_like(phases))
    assert quantise_phase_ste(phases, None) is phases
    with pytest.raises(InputError):
        quantise_phase_ste(phases, 1)


def test_noise_has_the_photon_statistics_and_passes_gradients() -> None:
    patterns = torch.full((2, 3, 32, 32), 2.0, requires_grad=True)
    noisy = add_noise_torch(patterns, 100.0, generator=torch.Generator().manual_seed(0))
    counts = noisy.detach() / 2.0 * 100.0
    assert abs(float(counts.mean()) - 100.0) < 1.0
    assert abs(float(counts.var()) - 100.0) < 8.0
    noisy.sum().backward()
    assert torch.equal(patterns.grad, torch.ones_like(patterns))
    assert add_noise_torch(patterns, None) is patterns
    read = add_poisson_noise(np.full((64, 64), 3.0), 50.0, read_noise_photons=5.0, seed=0)
    assert abs(np.var(read / 3.0 * 50.0) - 75.0) < 8.0


def test_training_objects() -> None:
    cells = cell_objects(3, (48, 48), seed=0)
    assert cells.shape == (3, 48, 48) and cells.dtype == np.complex64
    np.testing.assert_allclose(np.abs(cells), 1.0, atol=1e-6)
    phase = np.angle(cells)
    assert phase.max() <= 3.0 + 1e-5 and phase.min() >= -1e-6 and (phase == 0).mean() > 0.2
    images = image_objects(4, (40, 32), amplitude_range=(0.5, 1.0), seed=0)
    assert images.shape == (4, 40, 32)
    assert np.abs(images).min() >= 0.5 - 1e-6 and np.abs(images).max() <= 1.0 + 1e-6
    np.testing.assert_array_equal(
        random_objects(5, (32, 32), seed=3), random_objects(5, (32, 32), seed=3)
    )
    with pytest.raises(InputError):
        random_objects(2, (32, 32), sources=("stars",))


def test_remove_global_phase_sets_the_background_to_zero() -> None:
    cells = cell_objects(1, (64, 64), seed=1)[0]
    rotated = cells * np.exp(1j * 2.5)
    np.testing.assert_allclose(np.angle(remove_global_phase(rotated)), np.angle(cells), atol=1e-4)


# --- classical solvers ------------------------------------------------------------------------


def test_wirtinger_flow_recovers_the_object(rng: np.random.Generator) -> None:
    obj = complex_object(rng, (32, 32))
    masks = random_phase_masks(6, (32, 32), seed=4)
    patterns = coded_diffraction_patterns(obj, masks, oversampling=2)
    residuals: list[float] = []
    estimate = solve_cdp(
        patterns,
        masks,
        method="wf",
        oversampling=2,
        iterations=150,
        callback=lambda i, n, r: residuals.append(r),
    )
    assert relative_error(estimate, obj) < 1e-3
    assert residuals[-1] < 1e-3 < residuals[0]


@pytest.mark.parametrize("method", ["gs", "hio"])
def test_projection_solvers_recover_the_object(rng: np.random.Generator, method: str) -> None:
    obj = complex_object(rng, (24, 24))
    masks = random_phase_masks(6, (24, 24), seed=5)
    patterns = coded_diffraction_patterns(obj, masks, oversampling=2)
    estimate = solve_cdp(patterns, masks, method=method, iterations=200, seed=0)
    assert relative_error(estimate, obj) < 1e-3


def test_phase_only_constraint_and_support_are_accepted() -> None:
    obj = cell_objects(1, (32, 32), seed=2)[0]
    masks = random_phase_masks(4, (32, 32), seed=6)
    patterns = coded_diffraction_patterns(obj, masks)
    estimate = solve_cdp(
        patterns, masks, method="gs", iterations=100, amplitude=1.0, support=np.ones((32, 32))
    )
    np.testing.assert_allclose(np.abs(estimate), 1.0, atol=1e-5)
    assert relative_error(estimate, obj) < 1e-2


def test_a_phase_object_is_found_from_one_noisy_pattern_where_spectral_starts_fail() -> None:
    """One pattern at 100 photons per pixel: the flat start with the measured modulus finds the
    cells; the same solver (and HIO) from the spectral start does not."""
    obj = cell_objects(1, (48, 48), peak_phase_rad=(2.0, 3.0), seed=11)[0]
    mask = random_phase_masks(1, (48, 48), seed=12)
    clean = coded_diffraction_patterns(obj, mask, oversampling=2)
    patterns = add_poisson_noise(clean, 100, seed=13)
    modulus = measured_modulus(patterns[None] if patterns.ndim == 2 else patterns, _op(mask))
    assert modulus == pytest.approx(1.0, abs=0.02)  # the objects' modulus, from the energy
    found = solve_phase_object(patterns, mask, iterations=50)
    spectral = [
        solve_cdp(patterns, mask, method=m, iterations=150, amplitude=modulus, seed=0)
        for m in ("gs", "hio")
    ]
    assert relative_error(found, obj) < 0.15
    assert all(relative_error(estimate, obj) > 0.4 for estimate in spectral)
    np.testing.assert_allclose(np.abs(found), modulus, rtol=1e-5)


def _op(mask: np.ndarray):
    from napari_qpi.physics.cdp import CDPOperator

    return CDPOperator(mask, 2)


def test_one_pattern_defaults_to_the_phase_object_solver(tmp_path: Path) -> None:
    from napari_qpi.io import CDPStack, write_cdp_stack
    from napari_qpi.reconstruct import default_cdp_method, reconstruct_cdp_file

    assert default_cdp_method(1) == "phase object"
    assert default_cdp_method(4) == "wirtinger flow"
    obj = cell_objects(1, (32, 32), peak_phase_rad=(2.0, 3.0), seed=21)[0]
    mask = random_phase_masks(1, (32, 32), seed=22)
    path = tmp_path / "one.npz"
    write_cdp_stack(path, CDPStack(coded_diffraction_patterns(obj, mask), mask))
    out, record = reconstruct_cdp_file(path, tmp_path, iterations=50)
    assert record["method"] == "phase object"
    phase = tifffile.imread(out)
    error = np.angle(np.exp(1j * (phase - np.angle(obj))))
    assert np.abs(error - np.median(error)).mean() < 0.05  # up to the unmeasurable global phase


def test_spectral_init_correlates_with_the_object(rng: np.random.Generator) -> None:
    obj = complex_object(rng, (32, 32))
    masks = random_phase_masks(6, (32, 32), seed=7)
    patterns = coded_diffraction_patterns(obj, masks)
    start = spectral_init(patterns, masks)
    correlation = abs(np.vdot(start, obj)) / (np.linalg.norm(start) * np.linalg.norm(obj))
    assert correlation > 0.8
    np.testing.assert_allclose(np.linalg.norm(start), np.linalg.norm(obj), rtol=1e-3)


def test_solver_callback_stops_and_bad_input_is_refused(rng: np.random.Generator) -> None:
    obj = complex_object(rng, (16, 16))
    masks = random_phase_masks(2, (16, 16), seed=8)
    patterns = coded_diffraction_patterns(obj, masks)
    calls: list[int] = []
    solve_cdp(patterns, masks, iterations=50, callback=lambda i, n, r: calls.append(i) or i == 3)
    assert calls == [1, 2, 3]
    with pytest.raises(InputError, match="do not fit"):
        solve_cdp(patterns[:1], masks)
    with pytest.raises(InputError, match="Unknown CDP solver"):
        solve_cdp(patterns, masks, method="admm")  # type: ignore[arg-type]


def test_global_phase_align(rng: np.random.Generator) -> None:
    obj = complex_object(rng, (8, 8))
    rotated = obj * np.exp(-1.2j)
    np.testing.assert_allclose(global_phase_align(rotated, obj), obj, atol=1e-5)
    assert relative_error(rotated, obj) < 1e-6
    phase = np.angle(obj)
    assert relative_error(np.exp(1j * (phase + 0.4)), phase) < 1e-6


# --- network ----------------------------------------------------------------------------------


def tiny(role: str = "student", **overrides: object) -> CDPNetConfig:
    base = {"shape": (16, 16), "base_channels": 4, "depth": 2, "power_iterations": 3}
    maker = CDPNetConfig.teacher if role == "teacher" else CDPNetConfig.student
    return maker(**{**base, **overrides})


def test_learned_masks_are_quantised_and_receive_gradients() -> None:
    masks = LearnedMasks(2, (8, 8), levels=4, seed=0)
    phases = masks()
    assert phases.shape == (2, 8, 8)
    exported = masks.export()
    np.testing.assert_allclose(exported, quantise_phase(exported, 4), atol=1e-6)
    model = CDPNet(tiny("teacher", mask_levels=4, photons_per_pixel=1000.0))
    x = torch.from_numpy(cell_objects(2, (16, 16), seed=0))
    complex_mse(model(x), x).backward()
    assert model.masks.latent.grad is not None and model.masks.latent.grad.abs().sum() > 0
    assert model.estimate.step_sizes.grad is not None


def test_cdpnet_reads_objects_or_patterns_and_returns_features() -> None:
    model = CDPNet(tiny("teacher", n_masks=3)).eval()
    x = torch.from_numpy(random_objects(2, (16, 16), seed=1))
    with torch.no_grad():
        estimate, features = model(x, return_features=True)
        patterns = model.measure(x)
        torch.testing.assert_close(model(patterns), estimate)
    assert estimate.shape == (2, 16, 16) and estimate.is_complex()
    assert set(features) == {"bottleneck", "dec0"}
    assert features["dec0"].shape == (2, 4, 16, 16)
    assert model.predict_phase(patterns).shape == (2, 1, 16, 16)
    assert model.reconstruct(patterns[0].numpy()).shape == (16, 16)
    with pytest.raises(InputError, match="reads patterns"):
        model(patterns[:, :2])


def test_config_round_trip_and_build() -> None:
    config = tiny("teacher", mask_levels=2, photons_per_pixel=500.0)
    data = json.loads(json.dumps(config.to_dict()))
    assert CDPNetConfig.from_dict(data) == config
    assert isinstance(build(data), CDPNet)
    with pytest.raises(ModelError):
        CDPNetConfig.from_dict({"n_mask": 2})
    with pytest.raises(ModelError):
        CDPNetConfig(shape=(18, 18), depth=3)


def test_an_untrained_flat_modulus_network_is_the_phase_object_solver() -> None:
    """Zero-initialised head: the network's output is its first estimate, which with
    ``first_estimate="flat-modulus"`` and unit step sizes is the classical phase-object solver."""
    config = CDPNetConfig.student(
        shape=(32, 32), first_estimate="flat-modulus", unrolled_steps=40, base_channels=4
    )
    model = CDPNet(config).eval()
    obj = cell_objects(1, (32, 32), peak_phase_rad=(2.0, 3.0), seed=31)[0]
    patterns = add_poisson_noise(
        coded_diffraction_patterns(obj, model.masks.export()), 100, seed=32
    )
    network = model.reconstruct(patterns)
    classical = solve_phase_object(patterns, model.masks.export(), iterations=40)
    assert relative_error(network, classical) < 1e-3
    assert relative_error(network, obj) < 0.2  # and it is the object, not a failed start
    spectral = CDPNet(dataclasses.replace(config, first_estimate="spectral")).eval()
    assert relative_error(spectral.reconstruct(patterns), obj) > 0.4
    assert CDPNetConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ModelError, match="first_estimate"):
        CDPNetConfig(first_estimate="random")


# --- distillation -----------------------------------------------------------------------------


def test_mask_gram() -> None:
    phases = torch.from_numpy(random_phase_masks(3, (12, 12), seed=0))
    gram = mask_gram(phases, patch=3)
    assert gram.shape == (3, 10, 10)
    torch.testing.assert_close(gram, gram.conj().transpose(1, 2))
    torch.testing.assert_close(
        torch.diagonal(gram, dim1=1, dim2=2).real, torch.ones(3, 10), atol=1e-6, rtol=0
    )
    assert float(mask_gram_loss(phases[:1], gram[:1].mean(0), patch=3)) < 1e-12
    assert float(mask_gram_loss(phases[:1], gram[1:].mean(0), patch=3)) > 0


def test_distillation_loss_terms_are_positive_and_fall() -> None:
    teacher = CDPNet(tiny("teacher", base_channels=8)).eval().requires_grad_(False)
    student = CDPNet(tiny("student", mask_seed=5))
    model = DistillationStudent(student, teacher, ["bottleneck", "dec0"])
    assert isinstance(model.adapters["dec0"], torch.nn.Conv2d)
    loss_fn = distillation_loss(
        teacher, weights=(1.0, 1.0, 100.0), layers=["bottleneck", "dec0"], patch=3
    )
    batch = torch.from_numpy(random_objects(2, (16, 16), seed=2))
    result = fit(
        model, loss_fn, lambda first: itertools.repeat(batch), steps=15, lr=1e-2, warmup=0.0
    )
    first, last = result.history[:3], result.history[-3:]
    for term in ("reconstruction", "feature", "mask"):
        before = np.mean([row[term] for row in first])
        after = np.mean([row[term] for row in last])
        assert before > 0 and after < before, term


def test_model_folder_round_trip(tmp_path) -> None:
    model = CDPNet(tiny("teacher", n_masks=2, mask_levels=4)).eval()
    card = make_card("cdp-test", "teacher", model, description="test", training={"seed": 0})
    folder = save_cdp_model(model, tmp_path / "cdp-test", card)
    loaded, loaded_card = load_cdp_model(folder)
    assert loaded_card.modality == "cdp" and loaded_card.family == "teacher"
    assert ModelCard.load(folder).sha256 == loaded_card.sha256
    np.testing.assert_array_equal(loaded.masks.export(), model.masks.export())
    masks = tifffile.imread(folder / "masks.tif")
    np.testing.assert_allclose(masks, model.masks.export(), atol=0)
    x = torch.from_numpy(random_objects(2, (16, 16), seed=4))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(model.measure(x)), model(model.measure(x)), atol=0.05, rtol=0.05
        )


def test_distill_command_line(tmp_path) -> None:
    parser = add_distill_arguments(argparse.ArgumentParser())
    defaults = config_from_args(parser.parse_args([]))
    assert defaults == DistillConfig()
    argv = [
            "--out", str(tmp_path), "--minutes", "1", "--size", "16", "--depth", "2",
            "--teacher-channels", "4", "--student-channels", "4", "--teacher-masks", "2",
            "--batch-size", "2", "--teacher-steps", "2", "--student-steps", "2",
            "--val-objects", "2", "--classical-iterations", "3", "--gram-patch", "3",
            "--feature-layers", "dec0", "--photons", "1000",
    ]  # fmt: skip
    flat = config_from_args(
        parser.parse_args(
            [*argv, "--student-first-estimate", "flat-modulus", "--student-unrolled-steps", "7"]
        )
    ).network_config("student")
    assert (flat.first_estimate, flat.unrolled_steps) == ("flat-modulus", 7)
    args = parser.parse_args(argv)
    assert distill_main(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert {"teacher", "student_kd", "student_control", "wf_student_mask"} <= set(report["scores"])
    assert report["steps"]["student_control"] == report["steps"]["student_kd"]
    for name, family in [("teacher", "teacher"), ("student", "distilled"), ("control", "baseline")]:
        card = ModelCard.load(tmp_path / f"cdp-{name}")
        assert (card.family, card.modality) == (family, "cdp")
        assert "napari-qpi distill" in card.training["command"]
        assert (tmp_path / f"cdp-{name}" / "masks.tif").is_file()
    # distil again from the teacher just written: only the students are trained and written
    again = parser.parse_args(
        [*argv[2:], "--out", str(tmp_path / "again"), "--teacher", str(tmp_path / "cdp-teacher")]
    )
    assert distill_main(again) == 0
    assert not (tmp_path / "again" / "cdp-teacher").exists()
    student = ModelCard.load(tmp_path / "again" / "cdp-student")
    assert (
        student.training["teacher"] == "cdp-teacher" and "--teacher" in student.training["command"]
    )
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "again" / "cdp-control" / "masks.tif"),
        tifffile.imread(tmp_path / "cdp-control" / "masks.tif"),
    )
    wrong = parser.parse_args([*again_argv(argv), "--teacher", str(tmp_path / "cdp-teacher")])
    with pytest.raises(InputError, match="does not fit"):
        distill_main(wrong)


def again_argv(argv: list[str]) -> list[str]:
    """``argv`` with three teacher masks instead of two (a teacher that does not fit)."""
    out = list(argv)
    out[out.index("--teacher-masks") + 1] = "3"
    return out


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_students_start_from_the_teachers_mask_before_and_after_training() -> None:
    config = DistillConfig(
        size=16, depth=2, teacher_channels=4, student_channels=4, teacher_masks=3,
        batch_size=2, teacher_steps=3, student_steps=2, student_mask=2, gram_patch=3,
        feature_layers=("dec0",),
    )  # fmt: skip
    teacher, _ = train_teacher(config)
    initial = teacher_initial_masks(config)
    assert not torch.allclose(teacher.masks.latent, initial)
    config.mask_lr = 0.0
    student, _ = train_student(config, teacher)
    control, _ = train_student(config, None)
    np.testing.assert_allclose(student.masks.export()[0], teacher.masks.export()[2], atol=1e-5)
    wrapped = np.angle(np.exp(1j * initial[2].detach().numpy()))
    np.testing.assert_allclose(np.angle(np.exp(1j * control.masks.export()[0])), wrapped, atol=1e-5)
    with pytest.raises(InputError, match="student_mask"):
        DistillConfig(teacher_masks=3, student_mask=3)


def test_a_free_teacher_hands_a_quantised_mask_to_a_levelled_student() -> None:
    config = DistillConfig(
        size=16, depth=2, teacher_channels=4, student_channels=4, teacher_masks=2,
        batch_size=2, teacher_steps=3, student_steps=2, gram_patch=3, feature_layers=("dec0",),
        student_mask_levels=4,
    )  # fmt: skip
    assert config.network_config("teacher").mask_levels is None
    assert config.network_config("student").mask_levels == 4
    teacher, _ = train_teacher(config)
    assert len(np.unique(np.round(teacher.masks.export(), 4))) > 4
    config.mask_lr = 0.0
    student, _ = train_student(config, teacher)
    levels = -np.pi + 2 * np.pi * np.arange(4) / 4
    realised = student.masks.export()[0].astype(np.float64)
    teachers = teacher.masks.export()[0].astype(np.float64)

    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.abs(np.angle(np.exp(1j * (a - b))))

    to_levels = distance(realised[..., None], levels)
    assert to_levels.min(axis=-1).max() < 1e-5  # every pixel is one of the four etch depths
    nearest = levels[distance(teachers[..., None], levels).argmin(axis=-1)]
    assert distance(realised, nearest).max() < 1e-5  # ... the one nearest the teacher's phase
    with pytest.raises(ModelError, match="mask_levels"):
        DistillConfig(student_mask_levels=1).network_config("student")


def test_the_kd_student_is_taught_by_the_teacher_and_the_control_is_not(one_thread: None) -> None:
    """What distillation does, step by step. Whether it pays (student vs control, over seeds and
    masks) is measured by benchmarks/cdp_kd_ablation.py, not asserted on one seed here."""
    config = DistillConfig(
        size=16,
        teacher_channels=4,
        student_channels=4,
        depth=2,
        feature_layers=("dec0",),
        teacher_steps=8,
        student_steps=6,
        batch_size=2,
        val_objects=2,
        feature_weight=0.1,
        mask_weight=1.0,
        seed=0,
    )
    teacher, _ = train_teacher(config)
    k = config.student_mask
    initial = teacher_initial_masks(config)[k].detach().numpy()
    trained = teacher.masks.export()[k]

    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(np.angle(np.exp(1j * (a - b)))).max())

    assert distance(trained, initial) > 1e-3  # the teacher's training moved its mask k
    config.mask_lr = 0.0  # the students' masks stay where they start
    student, kd = train_student(config, teacher)
    control, alone = train_student(config, None, steps=kd.step)
    assert distance(student.masks.export()[0], trained) < 1e-5  # the teacher's trained mask
    assert distance(control.masks.export()[0], initial) < 1e-5  # the mask before its training
    assert kd.step == alone.step == config.student_steps
    assert all(row["feature"] > 0 and row["mask"] > 0 for row in kd.history)
    assert not any("feature" in row or "mask" in row for row in alone.history)


# --- shipped models, files and the command line -----------------------------------------------


@pytest.fixture
def tiny_cdp_models(tmp_path, monkeypatch):
    """Two tiny registered CDP models in a throw-away user folder: 2 masks and 1 (4 levels)."""
    from napari_qpi.models import clear_cache, save_user_model

    monkeypatch.setenv("NAPARI_QPI_USER_DIR", str(tmp_path / "user"))
    clear_cache()
    models = {}
    for name, role, k in (("tiny-cdp-2", "teacher", 2), ("tiny-cdp-1", "student", 1)):
        model = CDPNet(tiny(role, n_masks=k, mask_levels=4, mask_seed=k)).eval()
        card = make_card(name, role if k > 1 else "distilled", model, description="t", training={})
        save_user_model(model, card)
        models[name] = model
    yield models
    clear_cache()


def test_export_mask_command_writes_the_masks_as_trained(tiny_cdp_models, tmp_path, capsys):
    from napari_qpi.cli import main
    from napari_qpi.io import read_mask_tiff
    from napari_qpi.models import load_model

    path = tmp_path / "masks.tif"
    assert main(["models", "export-mask", "tiny-cdp-2", str(path)]) == 0
    assert "2 mask(s) of 16 x 16 px" in capsys.readouterr().out
    masks, info = read_mask_tiff(path)
    expected = load_model("tiny-cdp-2")[0].masks.export()
    np.testing.assert_array_equal(masks, expected)
    np.testing.assert_allclose(masks, quantise_phase(masks, 4), atol=1e-6)
    assert info["unit"] == "rad" and info["levels"] == 4 and info["model"] == "tiny-cdp-2"
    assert main(["models", "export-mask", "tiny-cdp-2", str(path)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["models", "export-mask", "tiny-cdp-2", str(path), "--overwrite"]) == 0
    assert main(["models", "export-mask", "no-such-model", str(tmp_path / "x.tif")]) == 2
    assert main(["models"]) == 0
    assert "tiny-cdp-1" in capsys.readouterr().out


def _stack_file(path, masks: np.ndarray, obj: np.ndarray, **overrides) -> None:
    from napari_qpi.io import CDPStack, write_cdp_stack

    patterns = coded_diffraction_patterns(obj, masks, oversampling=2)
    arrays = {"patterns": patterns, "masks": masks, **overrides}
    write_cdp_stack(path, CDPStack(arrays["patterns"], arrays["masks"], truth=obj))


def test_reconstruct_command_reads_cdp_stacks(tiny_cdp_models, tmp_path, capsys):
    from napari_qpi.cli import main
    from napari_qpi.io import read_image

    obj = cell_objects(1, (16, 16), seed=3)[0]
    masks = random_phase_masks(4, (16, 16), seed=9)
    _stack_file(tmp_path / "four.npz", masks, obj)
    out = tmp_path / "out"
    args = ["reconstruct", str(tmp_path / "four.npz"), "--out", str(out), "--iterations", "200"]
    assert main(args) == 0
    assert "4 pattern(s), wirtinger flow" in capsys.readouterr().out
    image = read_image(out / "four_phase.ome.tif")
    assert image.data.dtype == np.float32 and image.data.shape == (16, 16)
    assert relative_error(np.exp(1j * np.asarray(image.data)), obj) < 1e-2

    model_masks = tiny_cdp_models["tiny-cdp-2"].masks.export()
    _stack_file(tmp_path / "model.npz", model_masks, obj)
    assert main(["reconstruct", str(tmp_path / "model.npz"), "--out", str(out), "--model",
                 "tiny-cdp-2"]) == 0  # fmt: skip
    assert (out / "model_phase.ome.tif").is_file()


def test_cdp_bad_input_gives_clear_errors(tiny_cdp_models, tmp_path, capsys):
    from napari_qpi.cli import main
    from napari_qpi.reconstruct import reconstruct_cdp

    obj = cell_objects(1, (16, 16), seed=3)[0]
    two = tiny_cdp_models["tiny-cdp-2"].masks.export()
    patterns = coded_diffraction_patterns(obj, two, oversampling=2)
    # a model asked for the wrong number of snapshots
    with pytest.raises(InputError, match=r"'tiny-cdp-2' reads 2 snapshot\(s\).*this stack has 1"):
        reconstruct_cdp(patterns[:1], two[:1], method="tiny-cdp-2")
    with pytest.raises(InputError, match=r"'tiny-cdp-1' reads 1 snapshot\(s\).*this stack has 2"):
        reconstruct_cdp(patterns, two, method="tiny-cdp-1")
    # patterns through other masks than the model's
    with pytest.raises(InputError, match="other masks than model 'tiny-cdp-2'"):
        reconstruct_cdp(patterns, two + 0.5, method="tiny-cdp-2")
    # negative values, NaN, masks missing or of the wrong size
    with pytest.raises(InputError, match="negative"):
        reconstruct_cdp(patterns - 1.0, two)
    bad = patterns.copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        reconstruct_cdp(bad, two)
    with pytest.raises(InputError, match="2 pattern"):
        reconstruct_cdp(patterns, two[:1])
    with pytest.raises(InputError, match="do not fit"):
        reconstruct_cdp(patterns, two[:, :8, :8])
    np.savez(tmp_path / "nomasks.npz", patterns=patterns, masks=two[:, :8])
    np.savez(tmp_path / "nan.npz", patterns=bad, masks=two)
    for name, message in [("nomasks", "do not fit"), ("nan", "NaN")]:
        assert main(["reconstruct", str(tmp_path / f"{name}.npz"), "--out", str(tmp_path)]) == 1
        assert message in capsys.readouterr().err
    # a CDP model in a wrong-count stack through the CLI
    np.savez(tmp_path / "one.npz", patterns=patterns[:1], masks=two[:1])
    assert main(["reconstruct", str(tmp_path / "one.npz"), "--model", "tiny-cdp-2"]) == 1
    assert "reads 2 snapshot(s)" in capsys.readouterr().err
    with pytest.raises(InputError, match="reads patterns of shape"):
        tiny_cdp_models["tiny-cdp-2"](torch.from_numpy(patterns[:1])[None])


@pytest.mark.gui
def test_widget_exports_the_masks_and_runs_the_model(
    tiny_cdp_models, make_napari_viewer, qtbot, tmp_path
):
    from napari_qpi._napari.retrieval_widget import PhaseRetrievalWidget
    from napari_qpi.io import read_mask_tiff

    viewer = make_napari_viewer()
    masks = tiny_cdp_models["tiny-cdp-1"].masks.export()
    obj = cell_objects(1, (16, 16), seed=3)[0]
    patterns = coded_diffraction_patterns(obj, masks, oversampling=2)
    viewer.add_image(
        patterns,
        name="single",
        metadata={"qpi": {"modality": "cdp"}, "qpi_cdp": {"oversampling": 2, "masks": masks}},
    )
    widget = PhaseRetrievalWidget(viewer)
    widget.hologram.value = viewer.layers["single"]
    assert "tiny-cdp-1" in widget.method.choices and "tiny-cdp-2" not in widget.method.choices
    widget.method.value = "hio"
    assert not widget.export_masks.visible
    widget.method.value = "tiny-cdp-1"
    assert widget.export_masks.native.isVisibleTo(widget.native)
    widget.mask_file.value = tmp_path / "student_masks"
    written = widget._export_masks()
    assert written == tmp_path / "student_masks.tif"
    np.testing.assert_array_equal(read_mask_tiff(written)[0], masks)
    with qtbot.waitSignal(widget.controls.finished, timeout=30_000):  # the result shown
        assert widget.controls.start() is not None
    phase = np.asarray(viewer.layers["single phase (tiny-cdp-1)"].data)
    assert phase.shape == (16, 16) and np.isfinite(phase).all()


def test_cdp_benchmark_quick(tmp_path, monkeypatch, capsys):
    import importlib.util
    import sys

    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    spec = importlib.util.spec_from_file_location("benchmark_cdp", benchmarks / "cdp.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "benchmark_cdp", bench)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "DOCS", tmp_path / "benchmarks.md")
    folders = []
    for name, role, k in (("t", "teacher", 2), ("s", "distilled", 1), ("c", "baseline", 1)):
        model = CDPNet(tiny("teacher" if k > 1 else "student", n_masks=k)).eval()
        card = make_card(name, role, model, description="", training={"steps": 0})
        folders.append(str(save_cdp_model(model, tmp_path / name, card)))
    argv = ["--quick", "--teacher", folders[0], "--student", folders[1], "--control", folders[2]]
    assert bench.main([*argv, "--photons", "100"]) == 0
    out = capsys.readouterr().out
    assert "| student + KD (" in out and "| Wirtinger flow, 2 masks | 2 |" in out
    assert "KD student - student alone" in out and "deepinv" in out
    assert not (tmp_path / "benchmarks.md").exists()
    assert bench.main([*argv, "--photons", "100", "--write"]) == 0
    assert "<!-- cdp:start -->" in (tmp_path / "benchmarks.md").read_text()


SHIPPED_CDP = ("cdp-teacher", "cdp-student", "cdp-control")


@pytest.mark.parametrize("name", SHIPPED_CDP)
def test_shipped_cdp_model_reproduces_its_card(name: str, one_thread: None) -> None:
    """The card's held-out scores, measured again on the fp16 weights as shipped."""
    from napari_qpi.models import get_card, load_model

    card = get_card(name)
    assert card.modality == "cdp" and card.source == "shipped"
    ((split, expected),) = card.metrics.items()
    assert split == "synthetic-64px-heldout" and "napari-qpi distill" in expected["command"]
    config = DistillConfig(**card.training["config"])
    model, _ = load_model(name, device="cpu", cached=False)
    scores = evaluate_model(model, held_out_objects(config))
    assert scores["n"] == expected["n"] == 32
    assert scores["psnr_db"] == pytest.approx(expected["psnr_db"], abs=0.1)
    assert scores["ssim"] == pytest.approx(expected["ssim"], abs=0.005)
    assert scores["relative_error"] == pytest.approx(expected["relative_error"], rel=0.01)
    masks, info = read_mask_tiff_of(card)
    np.testing.assert_array_equal(masks, model.masks.export())
    assert info["unit"] == "rad" and masks.shape[0] == card.config["n_masks"]


def read_mask_tiff_of(card: ModelCard) -> tuple[np.ndarray, dict]:
    from importlib.resources import as_file

    from napari_qpi.io import read_mask_tiff
    from napari_qpi.models import shipped_models_dir
    from napari_qpi.training.distill import MASKS_FILE

    with as_file(shipped_models_dir() / card.name / MASKS_FILE) as path:
        return read_mask_tiff(path)


def test_shipped_students_use_the_data_and_the_samples_use_the_shipped_masks() -> None:
    from importlib.resources import as_file, files

    from napari_qpi.io import read_cdp_stack
    from napari_qpi.models import get_card, load_model
    from napari_qpi.reconstruct import reconstruct_cdp
    from napari_qpi.training.distill import DistillConfig, cdp_metrics, held_out_objects

    for name in ("cdp-student", "cdp-control"):
        card = get_card(name)
        objects = held_out_objects(DistillConfig(**card.training["config"]))  # the card's set
        zero_phase = cdp_metrics(np.ones_like(objects), objects)["psnr_db"]
        assert card.metrics["synthetic-64px-heldout"]["psnr_db"] > zero_phase + 5.0, name
    for file, name in (("cells_cdp.npz", "cdp-teacher"), ("cells_cdp_single.npz", "cdp-student")):
        with as_file(files("napari_qpi.sample_data") / file) as path:
            stack = read_cdp_stack(path)
        model, _ = load_model(name, device="cpu")
        np.testing.assert_array_equal(stack.masks, model.masks.export())
        phase, info = reconstruct_cdp(stack.patterns, stack.masks, method=name)
        assert info["method"] == name and phase.shape == stack.truth.shape
        assert relative_error(np.exp(1j * phase), stack.truth) < 0.5


def test_a_sample_image_that_fails_to_load_is_an_error_not_a_skip(monkeypatch):
    import skimage.data

    from napari_qpi.physics import cdp

    def refused():
        raise OSError("no such file")

    cdp._bundled_images.cache_clear()
    monkeypatch.setattr(skimage.data, "coins", refused)
    try:
        with pytest.raises(InputError, match=r"coins \(OSError: no such file\)"):
            image_objects(2, (16, 16), seed=0)
    finally:
        cdp._bundled_images.cache_clear()
    monkeypatch.undo()
    assert len(cdp._bundled_images()) == len(cdp.BUNDLED_IMAGES)


def test_an_existing_cdp_output_is_skipped_before_solving(tmp_path, capsys, monkeypatch):
    import napari_qpi.reconstruct as reconstruct
    from napari_qpi.cli import main

    obj = cell_objects(1, (16, 16), seed=3)[0]
    _stack_file(tmp_path / "four.npz", random_phase_masks(4, (16, 16), seed=9), obj)
    out = tmp_path / "out"
    args = ["reconstruct", str(tmp_path / "four.npz"), "--out", str(out), "--iterations", "20"]
    assert main(args) == 0
    written = (out / "four_phase.ome.tif").read_bytes()
    capsys.readouterr()

    def no_solve(*args, **kwargs):
        raise AssertionError("solved although the output exists")

    monkeypatch.setattr(reconstruct, "reconstruct_cdp", no_solve)
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "1 CDP stack(s) skipped (output exists; --overwrite to redo)" in printed.out
    assert "failed" not in printed.err
    assert (out / "four_phase.ome.tif").read_bytes() == written
    with pytest.raises(AssertionError, match="solved although"):
        main([*args, "--overwrite"])


def test_a_finite_training_set_is_one_fixed_pool_shared_by_teacher_and_students() -> None:
    from napari_qpi.training.distill import object_batches, training_pool

    pool = training_pool(6, (16, 16), ("cells", "images"))
    np.testing.assert_array_equal(training_pool(4, (16, 16), ("cells", "images")), pool[:4])
    members = {obj.tobytes() for obj in pool}
    for seed in (0, 1):  # the teacher's and a student's batches: other orders, the same set
        batches = object_batches(3, (16, 16), sources=("cells", "images"), seed=seed, pool=6)(0)
        seen = [obj.tobytes() for _ in range(10) for obj in next(batches).numpy()]
        assert set(seen) <= members and len(set(seen)) > 3
    with pytest.raises(InputError, match="train_objects"):
        DistillConfig(train_objects=4, batch_size=8)


@pytest.mark.parametrize(
    ("name", "other"), [("cdp-student", "cdp-control"), ("cdp-control", "cdp-student")]
)
def test_shipped_single_snapshot_models_read_their_own_mask_and_refuse_others(name, other) -> None:
    """Behaviour, not a margin: through its own mask a shipped single-snapshot model
    reconstructs; patterns made through another mask of the same size are refused."""
    from napari_qpi.models import load_model
    from napari_qpi.reconstruct import reconstruct_cdp

    model, _ = load_model(name, device="cpu")
    own = model.masks.export()
    foreign = load_model(other, device="cpu")[0].masks.export()
    teacher_mask = load_model("cdp-teacher", device="cpu")[0].masks.export()[:1]
    obj = cell_objects(1, tuple(model.config.shape), seed=5)[0]
    patterns = coded_diffraction_patterns(obj, own, oversampling=model.config.oversampling)
    phase, info = reconstruct_cdp(patterns, own, method=name)
    assert info["method"] == name and phase.shape == obj.shape and np.isfinite(phase).all()
    for masks in (foreign, teacher_mask):
        patterns = coded_diffraction_patterns(obj, masks, oversampling=model.config.oversampling)
        with pytest.raises(InputError, match=f"other masks than model '{name}'"):
            reconstruct_cdp(patterns, masks, method=name)
