"""Refocusing and autofocus: napari-qpi against PyHoloscope on cells recorded out of focus.

    python benchmarks/refocus.py           # 1024^2, six defocus cases; writes docs/benchmarks.md
    python benchmarks/refocus.py --quick   # 256^2, two cases; prints only

Simulated holograms (``napari_qpi.physics``): round cells (HL-60-like, 10-14 um, 2-8 rad peak
phase), 532 nm in a medium of index 1.335, recorded ``z`` um out of focus
(:func:`napari_qpi.physics.defocus.simulate_defocused_hologram`: the cells' field, in an empty
medium twice the field's size, propagated by ``-z`` before the hologram is formed; whole cells at
least 1/16 of the field from its borders), carrier period 4 px at 30 degrees, tilt and defocus
aberrations, fringe visibility 0.5 (reference beam stronger), 10,000 e- full well, 12 bit; a
background hologram of the same optics. Pixel sizes 0.1-0.5 um, defocus 10-100 um.

* ours: :func:`~napari_qpi.retrieval.refocus.hologram_autofocus` (Tamura coefficient of the
  amplitude of the field demodulated, from complex64 spectra, on the smallest fast grid that
  holds the filter; a coarse grid at half the depth of field of a low-passed copy, its planes in
  one batched FFT, then a bounded Brent search of the whole field, at most 5 planes, then three
  planes around it scored with the band's own loss added back to the amplitude; every plane
  written into reused buffers; default range +- the field width), then
  ``retrieve_offaxis`` with ``refocus_um`` (clipped pixels filled from the hologram's band limit,
  mirror-padded propagation);
* peer: PyHoloscope 1.1 (``off_axis_find_mod`` / ``off_axis_find_crop_radius`` /
  ``off_axis_demod`` on hologram and background, their ratio, ``find_focus`` (bounded Brent,
  ``max_iter=30``) over the same range with its Brenner score, and with the standard deviation of
  the amplitude (the minimum-variance criterion for phase objects) as a callable score. Its
  propagator uses ``exp(-i kz d)`` and it takes the sideband with ``fx > 0``; both are converted
  to our z convention (positive downstream, the sideband carrying ``+phi``) with what the
  simulation knows.

Phase RMSE in cells (radians, after removing the median error over the true background; the true
background mask is given to every reconstruction so that only the refocus differs): the hologram
recorded in focus; ours refocused at our z; our retrieval refocused at the peer's z (PyHoloscope
returns a field on its own crop grid, so its z is what is compared); and no refocus. Times:
one propagation of a 1024^2 complex64 field (ours ``propagate`` with its transfer function cached
and new; PyHoloscope ``refocus`` with a precomputed ``propagator``, and the time to compute one),
called in turn (same load), medians; and a whole autofocus from the hologram arrays
(demodulation included), each method in turn, median of 3.

Reading the tables: PyHoloscope's built-in scores (Brenner here) reward sharp amplitude, the
criterion for amplitude objects (in-line holograms of absorbing particles); a phase object is
flattest in focus, so they go to a plane far from it. With a minimum-variance score its search
usually lands near focus, but a bounded Brent search over the whole range can stop in a side
minimum. The refocused phase is only as good as the z: a few um off leaves the rims of thick cells
blurred. Out of focus the cells focus light into caustics that can clip the camera (868 pixels at
4095 in the 0.25 um / -60 um hologram, 196 at 0.1 um / -30 um; none in focus): refocused, the error
of each clipped pixel spreads over the cells around it (RMSE 1.61x in focus at the true z, 1.01x
without clipping), so the retrieval fills clipped pixels from the hologram's band limit before
refocusing (1.01x). At 0.5 um pixels the flattest amplitude lay about 1.5 um beyond focus (+1.52 /
+1.55 um at 50 / 100 um): the cells' rims are steeper than the sideband's band, so the band-limited
field is not flat in focus (the light the rims scatter beyond the band is lost) and a little
defocus fills the dips. The same filter on the cells' own field, without a hologram, gives the same
bias (+1.86 um on the 512^2 50 um case, +0.02 um without the filter), so neither the demodulation,
the reference nor the optics' aberrations cause it. The autofocus now ends by adding back what the
band takes from a unit-amplitude field of the same phase (``napari_qpi.retrieval.band_loss``,
formed on a grid 1.2x finer than the field's so that what lies beyond the band does not fold back
into it). On the cells' own field band-limited (512^2, 50 um) that takes the bias from +1.86 to
+0.85 um, and from +1.29 to +0.28 um for the same cells without absorption: most of what is left is
their absorption, which the correction does not model (it adds back a phase object's loss). The
phase RMSE in cells of the 0.5 um / +50 um case is not lowest at the true z (0.914 rad there, 0.865
at +51.52 um, 0.841 at +52 um): the band-limited rims fit better a little beyond focus, so the
closer z of the correction gives 1.24x the in-focus RMSE where +51.52 um gave 1.17x. As the
correction decides z, the Brent search before it stops at 5 planes; CPU time of a whole autofocus
(process time, all threads, medians of 7, load 4), without the correction (search run to its
tolerance) -> with it: 0.050 -> 0.064 s at 0.5 um / +50 um, 0.052 -> 0.062 s at 0.25 um / -60 um,
0.076 -> 0.070 s at 0.1 um / +10 um.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from _docs import DOCS, machine, write_section
from napari_qpi.physics import OffAxisSystem, random_cells, simulate_background
from napari_qpi.physics.defocus import simulate_defocused_hologram
from napari_qpi.retrieval import OffAxisSettings, retrieve_offaxis
from napari_qpi.retrieval.autofocus import default_range
from napari_qpi.retrieval.propagation import fft_workers, propagate
from napari_qpi.retrieval.refocus import hologram_autofocus, hologram_field

ROOT = Path(__file__).resolve().parents[1]
WAVELENGTH_NM = 532.0
MEDIUM_INDEX = 1.335
#: (pixel size um, defocus um) of the full run.
CASES = [(0.1, 10.0), (0.1, -30.0), (0.25, 25.0), (0.25, -60.0), (0.5, 50.0), (0.5, 100.0)]
QUICK_CASES = [(0.2, 12.0), (0.2, -25.0)]
PEER_MAX_ITER = 30
#: Times each autofocus runs (in turn with the peer's) for its median time.
AUTOFOCUS_REPEATS = 3
#: 1-min load average at the start and the end of the run.
LOAD = [0.0, 0.0]


def system(pixel_size_um: float) -> OffAxisSystem:
    return OffAxisSystem(
        wavelength_nm=WAVELENGTH_NM,
        pixel_size_um=pixel_size_um,
        carrier_period_px=4.0,
        carrier_angle_deg=30.0,
        fringe_visibility=0.5,
        aberrations_rad={"tilt_x": 3.0, "tilt_y": -2.0, "defocus": 2.0},
        medium_index=MEDIUM_INDEX,
    )


def simulate(size: int, pixel_um: float, z_um: float, seed: int):
    """Phantom, hologram recorded ``z_um`` out of focus, the same in focus, and a background."""
    optics = system(pixel_um)
    cells = max(3, round(6 * (size * pixel_um / 100.0) ** 2))
    phantom = random_cells(
        (size, size),
        pixel_size_um=pixel_um,
        wavelength_nm=WAVELENGTH_NM,
        n_cells=(cells, cells + 3),
        kinds=("round",),
        peak_phase_rad=(2.0, 8.0),
        margin_px=size / 16,
        seed=seed,
    )
    hologram = simulate_defocused_hologram(phantom, z_um, optics, seed=seed + 1)
    focused = simulate_defocused_hologram(phantom, 0.0, optics, seed=seed + 1)
    background = simulate_background((size, size), optics, seed=seed + 2)
    return phantom, hologram, focused, background, optics


def rmse_in_cells(phase: np.ndarray, phantom) -> float:
    cells = phantom.labels > 0
    error = phase - phantom.phase
    error -= np.median(error[~cells])
    return float(np.sqrt(np.mean(error[cells] ** 2)))


def peer_autofocus(hologram, background, optics, z_range, score) -> float:
    """PyHoloscope: z (our convention), from the hologram arrays."""
    import pyholoscope as pyh

    centre = pyh.off_axis_find_mod(hologram)
    radius = pyh.off_axis_find_crop_radius(hologram)
    field = pyh.off_axis_demod(hologram.astype(np.float32), centre, radius)
    reference = pyh.off_axis_demod(background.astype(np.float32), centre, radius)
    ratio = field / np.where(np.abs(reference) > 0, reference, 1)
    size = hologram.shape[0]
    pixel = optics.pixel_size_um * size / ratio.shape[0]
    depth = pyh.find_focus(
        ratio,
        WAVELENGTH_NM * 1e-3 / MEDIUM_INDEX,
        pixel,
        (-z_range[1], -z_range[0]),
        score,
        max_iter=PEER_MAX_ITER,
    )
    # its sideband: (fy, fx) of the fftshifted peak; the one carrying +phi keeps the sign
    fy = (centre[0] - size // 2) / size
    fx = (centre[1] - size // 2) / size
    sy, sx = optics.sideband_cycles_per_px
    conjugate = fy * sy + fx * sx < 0
    z = -float(depth)  # exp(-i kz d): its positive depth is our negative z
    return -z if conjugate else z


def amplitude_std(image: np.ndarray) -> float:
    """Minimum-variance score for PyHoloscope's ``find_focus`` (lower is better)."""
    return float(np.std(image) / np.mean(image))


PEER_SCORES: dict[str, str | Callable[[np.ndarray], float]] = {
    "brenner": "brenner",
    "amplitude std": amplitude_std,
}


def run_case(size: int, pixel_um: float, z_um: float, seed: int) -> dict:
    phantom, hologram, focused, background, optics = simulate(size, pixel_um, z_um, seed)
    acquisition = optics.acquisition()
    mask = phantom.labels == 0
    z_range = default_range(hologram.shape, pixel_um)

    def phase_at(holo: np.ndarray, z: float | None) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return retrieve_offaxis(
                holo,
                reference=background,
                acquisition=acquisition,
                settings=OffAxisSettings(refocus_um=z),
                background_mask=mask,
            ).phase

    found: dict[str, Any] = {}

    def ours() -> None:
        found["ours"] = hologram_autofocus(
            hologram, reference=background, acquisition=acquisition, z_range=z_range
        )

    def peer(name: str) -> Callable[[], None]:
        def run() -> None:
            found[name] = peer_autofocus(hologram, background, optics, z_range, PEER_SCORES[name])

        return run

    # each autofocus AUTOFOCUS_REPEATS times, in turn (same load), median time
    times, cpu = _interleaved_ms(
        {"ours": ours, **{name: peer(name) for name in PEER_SCORES}},
        AUTOFOCUS_REPEATS,
        with_cpu=True,
    )
    z_ours, search = found["ours"]
    row = {
        "pixel_um": pixel_um,
        "z_true": z_um,
        "z_ours": z_ours,
        "evaluations": search.evaluations,
        "t_ours": times["ours"] / 1e3,
        "cpu_ours": cpu["ours"] / 1e3,
        "rmse_focus": rmse_in_cells(phase_at(focused, None), phantom),
        "rmse_ours": rmse_in_cells(phase_at(hologram, z_ours), phantom),
        "rmse_none": rmse_in_cells(phase_at(hologram, None), phantom),
    }
    for name in PEER_SCORES:
        z_peer = found[name]
        row[f"z_{name}"] = z_peer
        row[f"t_{name}"] = times[name] / 1e3
        row[f"cpu_{name}"] = cpu[name] / 1e3
        row[f"rmse_{name}"] = rmse_in_cells(phase_at(hologram, z_peer), phantom)
    return row


def _interleaved_ms(
    fns: dict[str, Callable[[], object]], repeats: int, *, with_cpu: bool = False
) -> Any:
    """Median ms of each function, called in turn ``repeats`` times (same machine load); with
    ``with_cpu`` also the median process CPU ms (all threads), as a second dict."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    wall = {name: 1e3 * statistics.median(values) for name, values in times.items()}
    if not with_cpu:
        return wall
    return wall, {name: 1e3 * statistics.median(values) for name, values in cpu.items()}


def propagation_times(size: int, repeats: int) -> dict[str, float]:
    """Median ms of one propagation of a size^2 complex64 field, ours and PyHoloscope's."""
    import pyholoscope as pyh

    _, hologram, _, background, optics = simulate(size, 0.2, 20.0, seed=7)
    field = hologram_field(
        hologram, reference=background, acquisition=optics.acquisition(), resolution="full"
    ).field
    lam = WAVELENGTH_NM * 1e-3 / MEDIUM_INDEX
    kwargs = {"wavelength_nm": WAVELENGTH_NM, "pixel_size_um": 0.2, "medium_index": MEDIUM_INDEX}
    propagate(field, 20.0, **kwargs)
    zs = iter(np.linspace(5.0, 60.0, repeats + 1))
    prop = pyh.propagator(field.shape, lam, 0.2, -20.0)
    pyh.refocus(field, prop, cuda=False)
    depths = iter(np.linspace(5.0, 60.0, repeats + 1))
    return _interleaved_ms(
        {
            "ours_cached": lambda: propagate(field, 20.0, **kwargs),
            "peer_refocus": lambda: pyh.refocus(field, prop, cuda=False),
            "ours_new_z": lambda: propagate(field, float(next(zs)), **kwargs),
            "peer_propagator": lambda: pyh.propagator(field.shape, lam, 0.2, -float(next(depths))),
        },
        repeats,
    )


def _versions() -> str:
    import pyholoscope
    import scipy

    return (
        f"numpy {np.__version__}, scipy {scipy.__version__}, PyHoloscope "
        f"{getattr(pyholoscope, '__version__', '1.1.3')}, Python {platform.python_version()}"
    )


def format_section(rows: list[dict], times: dict[str, float], size: int, command: str) -> str:
    day = datetime.date.today().isoformat()
    lines = [
        "## Refocusing and autofocus (`benchmarks/refocus.py`)",
        "",
        f"Run {day} on {machine()}; {_versions()}; {fft_workers()} FFT threads (ours); "
        f"1-min load average {LOAD[0]:.1f} at the start, {LOAD[1]:.1f} at the end (the machine "
        f"is shared). Command: `{command}`",
        "",
        __doc__.split("\n\n", 2)[2].strip(),
        "",
        f"### Autofocus ({size}^2 holograms)",
        "",
        "| pixel (um) | true z (um) | ours z (err) | PyHoloscope Brenner z (err) | PyHoloscope "
        "amplitude std z (err) | ours (s) | PyHoloscope Brenner (s) | PyHoloscope std (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:

        def z(key: str, r=r) -> str:
            return f"{r[key]:+.2f} ({r[key] - r['z_true']:+.2f})"

        lines.append(
            f"| {r['pixel_um']:g} | {r['z_true']:+g} | {z('z_ours')} | {z('z_brenner')} | "
            f"{z('z_amplitude std')} | {r['t_ours']:.2f} | {r['t_brenner']:.2f} | "
            f"{r['t_amplitude std']:.2f} |"
        )
    lines += [
        "",
        f"CPU time of the same runs (s, process time of all threads, median): ours uses "
        f"{fft_workers()} FFT threads, PyHoloscope one (its `scipy.fft` calls pass no `workers`; "
        "`find_focus` leaves numba off).",
        "",
        "| pixel (um) | true z (um) | ours CPU (s) | PyHoloscope Brenner CPU (s) | "
        "PyHoloscope std CPU (s) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pixel_um']:g} | {r['z_true']:+g} | {r['cpu_ours']:.3f} | "
            f"{r['cpu_brenner']:.3f} | {r['cpu_amplitude std']:.3f} |"
        )
    lines += [
        "",
        "### Phase RMSE in cells (rad)",
        "",
        "| pixel (um) | true z (um) | in focus | refocused, ours | refocused at PyHoloscope "
        "Brenner z | at PyHoloscope std z | no refocus | ours / in focus |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pixel_um']:g} | {r['z_true']:+g} | {r['rmse_focus']:.3f} | "
            f"{r['rmse_ours']:.3f} | {r['rmse_brenner']:.3f} | {r['rmse_amplitude std']:.3f} | "
            f"{r['rmse_none']:.3f} | {r['rmse_ours'] / r['rmse_focus']:.2f} |"
        )
    lines += [
        "",
        f"### One propagation of a {size}^2 complex64 field (ms, median)",
        "",
        "| ours, transfer function cached | ours, new z | PyHoloscope `refocus`, propagator "
        "precomputed | PyHoloscope `propagator` (one z) |",
        "|---|---|---|---|",
        f"| {times['ours_cached']:.1f} | {times['ours_new_z']:.1f} | "
        f"{times['peer_refocus']:.1f} | {times['peer_propagator']:.1f} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256^2, two cases; prints only")
    parser.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write docs/benchmarks.md (default: yes for a full run, no for --quick)",
    )
    args = parser.parse_args(argv)
    size, cases, repeats = (256, QUICK_CASES, 3) if args.quick else (1024, CASES, 9)
    LOAD[0] = os.getloadavg()[0]
    rows = []
    for seed, (pixel, z) in enumerate(cases):
        rows.append(run_case(size, pixel, z, seed=10 * seed + 1))
        print(rows[-1], file=sys.stderr)
    times = propagation_times(size, repeats)
    LOAD[1] = os.getloadavg()[0]
    command = "python benchmarks/refocus.py" + (" --quick" if args.quick else "") + " --write"
    section = format_section(rows, times, size, command)
    print(section)
    if args.write if args.write is not None else not args.quick:
        write_section("refocus", section, DOCS)
        print(f"wrote {DOCS.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
