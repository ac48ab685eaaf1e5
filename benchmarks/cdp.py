"""Coded diffraction patterns: distilled single-snapshot student vs teacher, control and solvers.

    python benchmarks/cdp.py                 # n=32 held-out objects, two noise levels; prints
    python benchmarks/cdp.py --write         # ... and updates docs/benchmarks.md
    python benchmarks/cdp.py --quick         # smoke run: n=2, 20 solver iterations

Systems (by default the shipped ``cdp-teacher``, ``cdp-student`` and ``cdp-control``; or the
names / model folders given with ``--teacher``, ``--student``, ``--control``):

- HIO and Wirtinger flow (``napari_qpi.retrieval.cdp_solvers.solve_cdp``) on one pattern made
  through the KD student's mask, the same optics as the student;
- the classical default for one pattern, ``solve_phase_object`` (Gerchberg-Saxton with the
  modulus the pattern's energy implies, from a flat phase: it assumes no absorption, which the
  complex image crops among the objects violate), on the same pattern;
- Wirtinger flow on K patterns made through the teacher's K masks;
- the teacher (K patterns), the student trained alone (control) and the student trained with KD
  (one pattern each, through its own mask);
- for scale, a constant (zero) phase, which ignores the data.

Every system reads patterns simulated the same way: ``coded_diffraction_patterns`` of each
held-out object (``napari_qpi.training.distill.held_out_objects`` with the models' training
config and seed ``OBJECT_SEED``, a set that no choice of recipe has seen: phase-only cells and
complex scikit-image crops, alternating) through its masks, then
``add_poisson_noise`` at each photon level (mean photons per pattern pixel over all K patterns of
an object, seeded per object and level). Scores (``napari_qpi.training.distill.cdp_metrics``):
relative error ``||x_hat - x|| / ||x||`` after the best global phase, and PSNR / SSIM / RMSE of
the phase (the estimate's phase on the branch nearest the truth, after the global phase; PSNR
data range = truth max - min per image), averaged over the objects. Time: wall time per image,
``--threads`` torch threads (networks: batch of one, ``torch.inference_mode``).

deepinv (PyPI) was meant as an outside reference; it is not run here: deepinv 0.5.0 requires torch
>= 2.2 through a CUDA build (``pip install --dry-run deepinv`` replaces torch 2.13.0+cpu with
torch 2.14.1 and the CUDA 13 toolkit), and installed with ``--no-deps`` it imports torchvision at
import time, whose only wheel for torch 2.13 here is a CUDA build that fails to load against the
CPU torch (``operator torchvision::nms does not exist``).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from _docs import DOCS, machine, write_section
from napari_qpi.models import ModelCard, load_model
from napari_qpi.nn.cdpnet import CDPNet
from napari_qpi.physics.cdp import add_poisson_noise, coded_diffraction_patterns
from napari_qpi.retrieval.cdp_solvers import solve_cdp, solve_phase_object
from napari_qpi.training.distill import (
    DistillConfig,
    cdp_metrics,
    held_out_objects,
    load_cdp_model,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = {"teacher": "cdp-teacher", "student": "cdp-student", "control": "cdp-control"}
#: Photon levels (mean photons per pattern pixel): the models' training level and a dimmer one.
PHOTONS = (100.0, 20.0)
NOISE_SEED = 77
#: Seed of the benchmark's objects: not the cards' held-out set (seed 2**20), on which the
#: ablation of docs/cdp.md chose the recipe, but a second one that no choice has seen.
OBJECT_SEED = 2**21

Reconstruct = Callable[[np.ndarray], np.ndarray]


def load(name_or_folder: str) -> tuple[CDPNet, ModelCard]:
    """A CDP model by registered name, or from a model folder written by ``napari-qpi distill``."""
    path = Path(name_or_folder)
    if path.is_dir():
        return load_cdp_model(path)
    model, card = load_model(name_or_folder, device="cpu")
    return model, card


def network(model: CDPNet) -> Reconstruct:
    def run(patterns: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(patterns)[None])[0].numpy()

    return run


def phase_object(masks: np.ndarray, oversampling: int, iterations: int) -> Reconstruct:
    """:func:`solve_phase_object`: the classical default for one pattern (no absorption)."""
    return lambda y: solve_phase_object(y, masks, oversampling=oversampling, iterations=iterations)


def solver(method: str, masks: np.ndarray, oversampling: int, iterations: int) -> Reconstruct:
    def run(patterns: np.ndarray) -> np.ndarray:
        return solve_cdp(
            patterns,
            masks,
            method=method,
            oversampling=oversampling,
            iterations=iterations,
            seed=0,
        )

    return run


def measure(
    objects: np.ndarray, masks: np.ndarray, oversampling: int, photons: float
) -> list[np.ndarray]:
    """Noisy patterns (K, sH, sW) of every object through ``masks``, seeded per object."""
    out = []
    for index, obj in enumerate(objects):
        clean = coded_diffraction_patterns(obj, masks, oversampling=oversampling)
        rng = np.random.default_rng([NOISE_SEED, int(photons), index])
        out.append(add_poisson_noise(clean, photons, seed=rng))
    return out


def score(run: Reconstruct, patterns: list[np.ndarray], objects: np.ndarray) -> dict[str, float]:
    estimates, seconds = [], []
    for item in patterns:
        start = time.perf_counter()
        estimates.append(run(item))
        seconds.append(time.perf_counter() - start)
    return {**cdp_metrics(np.stack(estimates), objects), "ms": 1e3 * float(np.median(seconds))}


def run_benchmark(
    n: int,
    models: dict[str, str],
    *,
    iterations: int,
    photons: Sequence[float],
    threads: int,
) -> tuple[dict[float, dict[str, dict[str, float]]], dict[str, ModelCard], DistillConfig]:
    torch.set_num_threads(threads)
    loaded = {role: load(name) for role, name in models.items()}
    cards = {role: card for role, (_, card) in loaded.items()}
    teacher, student, control = (loaded[r][0] for r in ("teacher", "student", "control"))
    recipe = cards["student"].training.get("config", {})
    known = set(DistillConfig.__dataclass_fields__)
    config = DistillConfig(**{**{k: v for k, v in recipe.items() if k in known}, "val_objects": n})
    if tuple(config.shape) != tuple(student.config.shape):
        config = DistillConfig(size=student.config.shape[0], val_objects=n)
    objects = held_out_objects(config, seed=OBJECT_SEED)
    s = student.config.oversampling
    one = student.masks.export()
    many = teacher.masks.export()
    systems: list[tuple[str, np.ndarray, Reconstruct]] = [
        ("zero phase (ignores the data)", one, lambda y: np.ones(config.shape, np.complex64)),
        ("HIO, 1 mask", one, solver("hio", one, s, iterations)),
        ("Wirtinger flow, 1 mask", one, solver("wf", one, s, iterations)),
        ("phase object (GS, flat start), 1 mask", one, phase_object(one, s, iterations)),
        (f"Wirtinger flow, {len(many)} masks", many, solver("wf", many, s, iterations)),
        (f"teacher ({cards['teacher'].name}), {len(many)} masks", many, network(teacher)),
        (
            f"student alone ({cards['control'].name}), 1 mask",
            control.masks.export(),
            network(control),
        ),
        (f"student + KD ({cards['student'].name}), 1 mask", one, network(student)),
    ]
    results: dict[float, dict[str, dict[str, float]]] = {}
    for level in photons:
        results[level] = {}
        for label, masks, run in systems:
            patterns = measure(objects, masks, s, level)
            results[level][label] = score(run, patterns, objects)
            row = results[level][label]
            print(
                f"{level:>6g} photons  {label:<44} PSNR {row['psnr_db']:6.2f} dB  "
                f"SSIM {row['ssim']:.3f}  rel. error {row['relative_error']:.3f}  "
                f"{row['ms']:8.1f} ms",
                flush=True,
            )
    return results, cards, config


def render(
    results: dict[float, dict[str, dict[str, float]]],
    cards: dict[str, ModelCard],
    config: DistillConfig,
    *,
    n: int,
    iterations: int,
    threads: int,
    command: str,
    quick: bool,
) -> str:
    teacher = cards["teacher"]
    student = cards["student"]
    k = teacher.config.get("n_masks")
    lines = [
        "## Coded diffraction patterns: distilled single-snapshot student",
        "",
        f"`{command}` on {machine()}, {threads} torch thread(s), Python "
        f"{platform.python_version()}, torch {torch.__version__}"
        + (" (quick smoke run: not for comparison)." if quick else "."),
        "",
        f"{n} held-out objects of {config.size} x {config.size} px (phase-only cells and complex "
        "scikit-image crops, alternating; seeded, never trained on, and not the set of the model "
        "cards on which the recipe was chosen), oversampling "
        f"{config.oversampling}, Poisson noise at "
        f"{' and '.join(f'{level:g}' for level in results)} photons per pattern pixel (the "
        f"models were trained at {student.config.get('photons_per_pixel') or 'no noise'}). "
        "Scores after the best global phase: PSNR and SSIM of the phase (data range = true "
        "phase max - min per image), relative error of the complex field. Classical solvers: "
        f"{iterations} iterations, HIO and WF from the spectral start, the phase-object solver "
        "from a flat phase; the 1-mask solvers read the pattern "
        "made through the KD student's mask. Time: median per image.",
        "",
        f"Models: `{teacher.name}` ({teacher.training.get('steps')} steps, "
        f"{teacher.training.get('seconds')} s), `{student.name}` "
        f"({student.training.get('steps')} steps, {student.training.get('seconds')} s), "
        f"`{cards['control'].name}` ({cards['control'].training.get('steps')} steps, "
        f"{cards['control'].training.get('seconds')} s), trained by "
        f"`{student.training.get('command', 'napari-qpi distill')}`.",
        "",
    ]
    for level, rows in results.items():
        lines += [
            f"**{level:g} photons per pattern pixel**",
            "",
            "| method | snapshots | PSNR (dB) | SSIM | rel. error | time (ms) |",
            "|---|---|---|---|---|---|",
        ]
        for label, row in rows.items():
            snapshots = k if (f"{k} masks" in label) else 0 if "ignores" in label else 1
            lines.append(
                f"| {label} | {snapshots} | {row['psnr_db']:.2f} | {row['ssim']:.3f} "
                f"| {row['relative_error']:.3f} | {row['ms']:.1f} |"
            )
        lines.append("")
    lines += ["Differences in PSNR (dB):", ""]
    for level, rows in results.items():
        by_kind = {label.split(" (")[0].split(",")[0]: row for label, row in rows.items()}
        kd, alone = by_kind["student + KD"]["psnr_db"], by_kind["student alone"]["psnr_db"]
        best_classical = max(
            row["psnr_db"]
            for label, row in rows.items()
            if label.startswith(("HIO", "Wirtinger", "phase object")) and label.endswith("1 mask")
        )
        lines.append(
            f"- {level:g} photons: KD student - student alone = {kd - alone:+.2f}; "
            f"KD student - best 1-mask solver = {kd - best_classical:+.2f}; "
            f"teacher - KD student = {by_kind['teacher']['psnr_db'] - kd:+.2f}."
        )
    lines += [
        "",
        "deepinv (PyPI) as an outside reference was not run: `pip install --dry-run deepinv` "
        "replaces torch 2.13.0+cpu by torch 2.14.1 with the CUDA 13 toolkit, and with "
        "`--no-deps` deepinv 0.5.0 imports torchvision, whose only wheel for torch 2.13 here is "
        "a CUDA build that does not load against the CPU torch.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; see the module docstring."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="held-out objects (default 32, quick 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: n=2, 20 iterations")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--iterations", type=int, help="solver iterations (default 300)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    for role, name in DEFAULT_MODELS.items():
        parser.add_argument(f"--{role}", default=name, help=f"model name or folder ({name})")
    parser.add_argument(
        "--photons", type=float, nargs="+", default=list(PHOTONS), help="photon levels"
    )
    args = parser.parse_args(argv)
    n = args.n or (2 if args.quick else 32)
    iterations = args.iterations or (20 if args.quick else 300)
    models = {role: getattr(args, role) for role in DEFAULT_MODELS}
    threads_before = torch.get_num_threads()
    try:
        results, cards, config = run_benchmark(
            n, models, iterations=iterations, photons=args.photons, threads=args.threads
        )
    finally:
        torch.set_num_threads(threads_before)
    command = shlex.join(["python", "benchmarks/cdp.py", *argv])
    section = render(
        results,
        cards,
        config,
        n=n,
        iterations=iterations,
        threads=args.threads,
        command=command,
        quick=args.quick,
    )
    print()
    print(section)
    if args.write:
        write_section("cdp", section, DOCS)
        print(f"\nwrote {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
