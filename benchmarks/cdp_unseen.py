"""The shipped single-snapshot CDP models on objects unlike their training set, against HIO and WF.

    python benchmarks/cdp_unseen.py            # prints the tables
    python benchmarks/cdp_unseen.py --write    # ... and updates docs/cdp.md
    python benchmarks/cdp_unseen.py --quick    # smoke run: 2 images, 10 iterations, n=4

Objects (phase only, unit amplitude, phase ``PEAK_RAD * I`` in radians for a grey image I in
[0, 1]): whole scikit-image sample images that are *not* among the training images
(``napari_qpi.physics.cdp.BUNDLED_IMAGES``), resized to the models' 64 x 64 px: the Shepp-Logan
phantom, a checkerboard, binary blobs, the horse silhouette, a retina, microaneurysms, the
scikit-image logo and a face of the LFW subset. The training objects are random crops of other
images and simulated cells.

Every system reads one pattern through the model's own mask at ``PHOTONS`` photons per pattern
pixel (Poisson, seeded per object): the network; HIO and Wirtinger flow (``solve_cdp``,
``ITERATIONS`` iterations from the spectral start); HIO told that the object is phase-only
(``amplitude=1``, the strongest classical prior these objects allow); the classical default for
one pattern, ``solve_phase_object`` (Gerchberg-Saxton with the modulus the pattern's energy
implies, from a flat phase, the same iterations); and a constant phase.
Scores: PSNR / SSIM of the phase after the global phase (``cdp_metrics``).

A second table compares the two shipped students on 128 held-out synthetic objects of each of
two kinds (cells and scikit-image crops, the first training set; procedural sharp-edged objects,
``napari_qpi.physics.shapes``; seed ``2**22``, sets no choice has seen) with per-object paired
differences: the spread there is over objects, not over training seeds (that one is in
``benchmarks/cdp_kd_regimes.py``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from _docs import machine, write_section
from napari_qpi.models import load_model
from napari_qpi.nn.cdpnet import CDPNet
from napari_qpi.physics.cdp import add_poisson_noise, coded_diffraction_patterns
from napari_qpi.physics.shapes import shape_objects
from napari_qpi.retrieval.cdp_solvers import solve_cdp, solve_phase_object
from napari_qpi.training.distill import DistillConfig, cdp_metrics, held_out_objects

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "cdp.md"
MODELS = ("cdp-student", "cdp-control")
IMAGES = ("shepp_logan_phantom", "checkerboard", "binary_blobs", "horse", "retina",
          "microaneurysms", "logo", "lfw_subset")  # fmt: skip
PEAK_RAD = 2.0
PHOTONS = 100.0
ITERATIONS = 300
SYNTHETIC_SEED = 2**22

Reconstruct = Callable[[np.ndarray], np.ndarray]


def unseen_objects(shape: tuple[int, int], names: Sequence[str]) -> np.ndarray:
    """Phase-only objects, complex64 (n, H, W), from whole scikit-image images (see module)."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.transform import resize

    out = []
    for name in names:
        if name == "binary_blobs":
            image = skimage.data.binary_blobs(256, blob_size_fraction=0.15, rng=0)
        else:
            image = np.asarray(getattr(skimage.data, name)())
        if name == "lfw_subset":
            image = image[0]  # the first face
        if image.ndim == 3:
            image = rgb2gray(image[..., :3])
        image = resize(image.astype(np.float64), shape, anti_aliasing=True)
        image = (image - image.min()) / max(float(np.ptp(image)), 1e-12)
        out.append(np.exp(1j * PEAK_RAD * image))
    return np.stack(out).astype(np.complex64)


def measure(objects: np.ndarray, mask: np.ndarray, oversampling: int) -> list[np.ndarray]:
    """Noisy patterns (1, sH, sW), seeded per object."""
    return [
        add_poisson_noise(
            coded_diffraction_patterns(obj, mask, oversampling=oversampling),
            PHOTONS,
            seed=np.random.default_rng([77, i]),
        )
        for i, obj in enumerate(objects)
    ]


def systems(model: CDPNet, iterations: int) -> dict[str, Reconstruct]:
    mask, s = model.masks.export(), model.config.oversampling

    def net(y: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(y)[None])[0].numpy()

    def solver(method: str, **kw) -> Reconstruct:
        return lambda y: solve_cdp(
            y, mask, method=method, oversampling=s, iterations=iterations, seed=0, **kw
        )

    return {
        "network": net,
        "HIO": solver("hio"),
        "HIO, phase-only prior": solver("hio", amplitude=1.0),
        "Wirtinger flow": solver("wf"),
        "phase object (GS, flat start)": lambda y: solve_phase_object(
            y, mask, oversampling=s, iterations=iterations
        ),
        "constant phase": lambda y: np.ones(model.config.shape, np.complex64),
    }


def per_object(run: Reconstruct, patterns: list[np.ndarray], objects: np.ndarray) -> np.ndarray:
    """PSNR and SSIM of each object, (n, 2)."""
    rows = []
    for y, obj in zip(patterns, objects, strict=True):
        s = cdp_metrics(run(y)[None], obj[None])
        rows.append((s["psnr_db"], s["ssim"]))
    return np.asarray(rows)


def unseen_table(names: Sequence[str], iterations: int) -> list[str]:
    """PSNR per image and mean, SSIM mean, and the network's mean margin over each system."""
    short = [name.split("_")[0] for name in names]
    lines = [
        "| model (its own mask) | system | " + " | ".join(short) + " | mean PSNR (dB) | "
        "mean SSIM | network - system (dB): mean (min) |",
        "|---|---|" + "---|" * (len(names) + 3),
    ]
    for name in MODELS:
        model, _ = load_model(name, device="cpu")
        objects = unseen_objects(tuple(model.config.shape), names)
        patterns = measure(objects, model.masks.export(), model.config.oversampling)
        scores = {
            label: per_object(run, patterns, objects)
            for label, run in systems(model, iterations).items()
        }
        for label, s in scores.items():
            gap = scores["network"][:, 0] - s[:, 0]
            print(f"{name:<12} {label:<22} " + " ".join(f"{v:6.2f}" for v in s[:, 0]), flush=True)
            lines.append(
                f"| `{name}` | {label} | "
                + " | ".join(f"{v:.1f}" for v in s[:, 0])
                + f" | {s[:, 0].mean():.2f} | {s[:, 1].mean():.3f} | "
                + ("" if label == "network" else f"{gap.mean():+.2f} ({gap.min():+.2f})")
                + " |"
            )
    return lines


#: Held-out sets of the paired student-vs-control comparison: the original training kinds, and
#: the procedural sharp-edged objects (``napari_qpi.physics.shapes``) added to training later.
SYNTHETIC_SETS = ("cells and image crops", "procedural shapes")


def synthetic_objects(name: str, size: int, n: int) -> np.ndarray:
    """``n`` held-out objects of the set ``name`` (seed ``SYNTHETIC_SEED``), complex64."""
    if name == SYNTHETIC_SETS[0]:
        config = DistillConfig(size=size, sources=("cells", "images"), val_objects=n)
        return held_out_objects(config, seed=SYNTHETIC_SEED)
    return shape_objects(n, (size, size), seed=SYNTHETIC_SEED)


def paired_scores(n: int, models: dict[str, CDPNet]) -> dict[str, dict[str, np.ndarray]]:
    """Per-object (PSNR, SSIM), (n, 2), of each model on each of :data:`SYNTHETIC_SETS`."""
    scores: dict[str, dict[str, np.ndarray]] = {name: {} for name in SYNTHETIC_SETS}
    for model_name, model in models.items():
        net = systems(model, 0)["network"]
        for name in SYNTHETIC_SETS:
            objects = synthetic_objects(name, model.config.shape[0], n)
            patterns = measure(objects, model.masks.export(), model.config.oversampling)
            scores[name][model_name] = per_object(net, patterns, objects)
    return scores


def synthetic_table(n: int) -> list[str]:
    """The two shipped students on ``n`` held-out objects of each synthetic set, paired."""
    lines = [
        f"| held-out set | {MODELS[0]} | {MODELS[1]} | {MODELS[0]} - {MODELS[1]} "
        "(mean +- s.e.m. over objects) |",
        "|---|---|---|---|",
    ]
    models = {name: load_model(name, device="cpu", cached=False)[0] for name in MODELS}
    for name, by_model in paired_scores(n, models).items():
        a, b = (by_model[model] for model in MODELS)
        diff = a - b
        sem = diff.std(axis=0, ddof=1) / np.sqrt(len(diff))
        lines.append(
            f"| {name} | {a[:, 0].mean():.2f} dB / SSIM {a[:, 1].mean():.3f} | "
            f"{b[:, 0].mean():.2f} dB / SSIM {b[:, 1].mean():.3f} | {diff[:, 0].mean():+.2f} +- "
            f"{sem[0]:.2f} dB / SSIM {diff[:, 1].mean():+.3f} +- {sem[1]:.3f} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; see the module docstring."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--write", action="store_true", help="update docs/cdp.md")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        names = IMAGES[:2] if args.quick else IMAGES
        iterations = 10 if args.quick else ITERATIONS
        unseen = unseen_table(names, iterations)
        synthetic = synthetic_table(4 if args.quick else 128)
    finally:
        torch.set_num_threads(threads)
    command = shlex.join(["python", "benchmarks/cdp_unseen.py", *argv])
    section = "\n".join(
        [
            "## The shipped single-snapshot models on unseen objects",
            "",
            f"`{command}` on {machine()}, one torch thread"
            + (" (quick smoke run: not for comparison)." if args.quick else "."),
            "",
            f"{len(names)} whole scikit-image images not used in training ("
            + ", ".join(names)
            + f"), resized to 64 x 64 px, as phase-only objects with phase {PEAK_RAD:g} * I rad; "
            f"one pattern through the model's mask at {PHOTONS:g} photons per pattern pixel; "
            f"solvers {iterations} iterations (HIO, WF: from the spectral start; the phase-object "
            "solver: from a flat phase).",
            "",
            *unseen,
            "",
            f"The two shipped students on {4 if args.quick else 128} held-out synthetic objects "
            "of each kind (cells and image crops as in the first training set, and procedural "
            f"sharp-edged objects; seed {SYNTHETIC_SEED}, sets no choice has seen), paired per "
            "object:",
            "",
            *synthetic,
        ]
    )
    print()
    print(section)
    if args.write:
        write_section("cdp-unseen", section, DOCS)
        print(f"\nwrote {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
