"""Forward models: phantoms and off-axis holograms have the physics they claim."""

from __future__ import annotations

import numpy as np
import pytest

from napari_qpi.errors import InputError
from napari_qpi.physics import (
    CellSpec,
    OffAxisSystem,
    aberration_phase,
    random_cells,
    random_system,
    simulate_background,
    simulate_hologram,
)
from napari_qpi.physics.phantoms import (
    RBC_MAX_PEAK_PHASE_RAD,
    cell_phase_patch,
    evans_fung_thickness,
    phase_from_thickness,
    render_cells,
)


def test_phantoms_are_seeded_and_consistent():
    a = random_cells((256, 256), seed=7)
    b = random_cells((256, 256), seed=7)
    np.testing.assert_array_equal(a.phase, b.phase)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.phase.dtype == np.float32 and a.labels.dtype == np.int32
    assert np.all(a.phase[a.labels > 0] > 0) and np.all(a.phase[a.labels == 0] == 0)
    assert a.labels.max() == len(a.cells)
    assert not np.array_equal(a.phase, random_cells((256, 256), seed=8).phase)


def test_phantom_peak_phases_span_the_requested_range_and_rbcs_stay_physical():
    peaks = {"round": [], "rbc": []}
    for seed in range(12):
        phantom = random_cells(
            (256, 256), kinds=("round", "rbc"), n_cells=4, seed=seed, peak_phase_rad=(1.0, 12.0)
        )
        for spec in phantom.cells:
            peaks[spec.kind].append(spec.peak_phase_rad)
    assert max(peaks["round"]) > 2 * np.pi, "some cells must need unwrapping"
    assert min(peaks["round"]) < 4.0
    assert max(peaks["rbc"]) <= RBC_MAX_PEAK_PHASE_RAD


def test_isolated_sphere_integrated_phase_matches_analytic_value():
    """A sphere of radius R and peak phase p: integral of p*sqrt(1 - r^2/R^2) = 2/3 pi R^2 p."""
    sphere = CellSpec(kind="round", centre_px=(64.3, 63.7), radius_px=30.0, peak_phase_rad=5.0)
    phantom = render_cells([sphere], (128, 128))
    expected = 2.0 / 3.0 * np.pi * 30.0**2 * 5.0
    assert phantom.phase.sum() == pytest.approx(expected, rel=0.01)
    assert phantom.phase.max() == pytest.approx(5.0, rel=0.01)
    assert (phantom.labels == 1).sum() == pytest.approx(np.pi * 30.0**2, rel=0.02)


@pytest.mark.parametrize("angle", [30.0, 210.0])
def test_sideband_position_carries_plus_phase(angle):
    system = OffAxisSystem(carrier_angle_deg=angle, carrier_period_px=4.0)
    offset = 0.7
    image = simulate_hologram(np.full((128, 128), offset, np.float32), None, system, noise=False)
    fy, fx = system.sideband_cycles_per_px
    y, x = np.mgrid[:128, :128]
    demodulated = np.mean(image * np.exp(-2j * np.pi * (fy * y + fx * x)))
    assert np.angle(demodulated) == pytest.approx(offset, abs=1e-3)
    spectrum = np.abs(np.fft.fft2(image - image.mean()))
    peak = np.unravel_index(np.argmax(spectrum), spectrum.shape)
    found = np.fft.fftfreq(128)[peak[0]], np.fft.fftfreq(128)[peak[1]]
    assert np.allclose(np.abs(found), np.abs(system.carrier_cycles_per_px), atol=1 / 128)


def test_noise_statistics_follow_the_camera_model():
    system = OffAxisSystem(
        fringe_visibility=0.9, full_well_electrons=10000, read_noise_electrons=5, bit_depth=12
    )
    expected = simulate_background((128, 128), system, noise=False)
    images = np.stack([simulate_background((128, 128), system, seed=s) for s in range(40)])
    assert images.dtype == np.uint16 and images.max() <= 4095
    np.testing.assert_allclose(images.mean(axis=0).mean(), expected.mean(), rtol=0.01)
    gain = 4095 / 10000
    variance = images.astype(float).var(axis=0)
    bright, dark = expected > np.percentile(expected, 80), expected < np.percentile(expected, 20)
    shot_bright = expected[bright].mean() * gain  # Poisson: var(e-) = mean(e-), scaled by gain^2
    assert variance[bright].mean() == pytest.approx(shot_bright, rel=0.15)
    assert variance[bright].mean() > 1.5 * variance[dark].mean()


def test_defocus_is_radially_symmetric_and_tilt_is_linear():
    defocus = aberration_phase((65, 65), {"defocus": 2.0})
    np.testing.assert_allclose(defocus, defocus.T, atol=1e-6)
    np.testing.assert_allclose(defocus, defocus[::-1, ::-1], atol=1e-6)
    tilt = aberration_phase((65, 65), {"tilt_x": 1.0})
    np.testing.assert_allclose(np.diff(tilt, axis=1), np.diff(tilt, axis=1)[0, 0], atol=1e-6)
    np.testing.assert_allclose(np.diff(tilt, axis=0), 0, atol=1e-6)


def test_random_systems_vary_and_bad_systems_are_refused():
    systems = [random_system(s) for s in range(5)]
    assert len({round(s.carrier_angle_deg, 3) for s in systems}) == 5
    with pytest.raises(InputError, match="Nyquist"):
        OffAxisSystem(carrier_period_px=1.5)
    with pytest.raises(InputError, match="aberration"):
        OffAxisSystem(aberrations_rad={"trefoil": 1.0})


def _system_on_grid(ky: int, kx: int, n: int, **kwargs) -> OffAxisSystem:
    """A system whose reference frequency is exactly FFT bin (ky, kx) of an n x n image."""
    fy, fx = ky / n, kx / n
    return OffAxisSystem(
        carrier_period_px=1.0 / np.hypot(fy, fx),
        carrier_angle_deg=float(np.degrees(np.arctan2(fy, fx)) % 360.0),
        **kwargs,
    )


def _demodulate(hologram: np.ndarray, sideband: tuple[float, float], radius: float) -> np.ndarray:
    """Complex field of the sideband at ``sideband`` (cycles/px), shifted to zero frequency."""
    height, width = hologram.shape
    spectrum = np.fft.fft2(hologram - hologram.mean())
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    spectrum[np.hypot(fy - sideband[0], fx - sideband[1]) >= radius] = 0
    y, x = np.mgrid[:height, :width]
    return np.fft.ifft2(spectrum) * np.exp(-2j * np.pi * (sideband[0] * y + sideband[1] * x))


QUADRANT_BINS = [(0, 32), (32, 32), (-20, 27), (24, -30), (-30, -17), (16, 0)]


@pytest.mark.parametrize("bins", QUADRANT_BINS)
def test_spectrum_peaks_exactly_at_plus_and_minus_carrier(bins):
    n = 128
    system = _system_on_grid(*bins, n)
    np.testing.assert_allclose(system.carrier_cycles_per_px, np.array(bins) / n, atol=1e-12)
    image = simulate_background((n, n), system, noise=False)
    spectrum = np.abs(np.fft.fft2(image - image.mean())).ravel()
    top = np.argsort(spectrum)[-2:]
    found = {tuple(int(i) for i in np.unravel_index(k, (n, n))) for k in top}
    assert found == {(bins[0] % n, bins[1] % n), (-bins[0] % n, -bins[1] % n)}
    assert np.sort(spectrum)[-3] < 1e-6 * spectrum.max()


@pytest.mark.parametrize("bins", QUADRANT_BINS)
def test_sideband_carries_plus_phase_in_every_quadrant(bins):
    n, offset = 128, 1.0
    system = _system_on_grid(*bins, n)
    image = simulate_hologram(np.full((n, n), offset), None, system, noise=False)
    sy, sx = system.sideband_cycles_per_px
    assert system.acquisition().carrier_cycles_per_px == pytest.approx((sy, sx))
    y, x = np.mgrid[:n, :n]
    assert np.angle(np.sum(image * np.exp(-2j * np.pi * (sy * y + sx * x)))) == pytest.approx(
        offset, abs=1e-6
    )
    assert np.angle(np.sum(image * np.exp(+2j * np.pi * (sy * y + sx * x)))) == pytest.approx(
        -offset, abs=1e-6
    )


@pytest.mark.parametrize("angle", [30.0, 135.0, 210.0, 300.0])
def test_cells_come_out_positive_after_background_division(angle):
    n = 256
    phantom = render_cells([CellSpec("round", (128.0, 128.0), 40.0, 2.0)], (n, n))
    system = OffAxisSystem(
        carrier_period_px=4.0,
        carrier_angle_deg=angle,
        aberrations_rad={"defocus": 4.0, "astig_0": 2.0, "tilt_x": 3.0},
    )
    hologram = simulate_hologram(phantom.phase, phantom.amplitude, system, noise=False)
    background = simulate_background((n, n), system, noise=False)
    sideband = system.sideband_cycles_per_px
    phase = np.angle(
        _demodulate(hologram, sideband, 0.12) / _demodulate(background, sideband, 0.12)
    )
    assert phase[128, 128] == pytest.approx(2.0, abs=0.05)
    assert abs(phase[10, 10]) < 0.05


def test_aberrations_enter_the_object_wave_like_sample_phase():
    n, offset = 96, 0.7
    aberrations = {"defocus": 3.0, "coma_x": 1.0, "tilt_y": -2.0}
    with_sample = simulate_hologram(
        np.full((n, n), offset), None, OffAxisSystem(aberrations_rad=aberrations), noise=False
    )
    shifted = OffAxisSystem(aberrations_rad={**aberrations, "piston": offset})
    np.testing.assert_allclose(
        with_sample, simulate_background((n, n), shifted, noise=False), rtol=1e-5, atol=1e-2
    )


def test_fringe_visibility_and_exposure_level():
    system = OffAxisSystem(fringe_visibility=0.6, exposure_fill=0.5, carrier_angle_deg=0.0)
    image = simulate_background((64, 64), system, noise=False)
    hi, lo = float(image.max()), float(image.min())
    assert (hi - lo) / (hi + lo) == pytest.approx(0.6, rel=1e-3)
    assert image.mean() == pytest.approx(0.5 * 0.5 * 4095, rel=1e-3)


def test_illumination_drift_is_a_linear_ramp():
    system = OffAxisSystem(illumination_drift=0.2, drift_angle_deg=0.0, carrier_angle_deg=90.0)
    image = simulate_background((64, 128), system, noise=False)
    flat = simulate_background((64, 128), OffAxisSystem(carrier_angle_deg=90.0), noise=False)
    ramp = (image / flat)[0]
    u = (np.arange(128) - 63.5) / (0.5 * np.hypot(63, 127))
    np.testing.assert_allclose(ramp, 1.0 + 0.2 * u, rtol=1e-6)


def test_counts_are_clipped_to_the_bit_depth_and_seeded():
    system = OffAxisSystem(bit_depth=8, exposure_fill=1.0)
    amplitude = np.full((64, 64), 1.5, np.float32)
    image = simulate_hologram(np.zeros((64, 64)), amplitude, system, seed=0)
    assert image.dtype == np.uint16 and image.max() == 255
    np.testing.assert_array_equal(
        image, simulate_hologram(np.zeros((64, 64)), amplitude, system, seed=0)
    )
    assert not np.array_equal(
        image, simulate_hologram(np.zeros((64, 64)), amplitude, system, seed=1)
    )


def test_overlapping_cells_add_phase_and_the_larger_one_takes_the_label():
    a = CellSpec("round", (64.0, 50.0), 20.0, 2.0)
    b = CellSpec("round", (64.0, 80.0), 20.0, 6.0)
    both = render_cells([a, b], (128, 128))
    only_a = render_cells([a], (128, 128)).phase
    only_b = render_cells([b], (128, 128)).phase
    np.testing.assert_allclose(both.phase, only_a + only_b, atol=1e-6)
    overlap = (only_a > 0) & (only_b > 0)
    assert overlap.any()
    np.testing.assert_array_equal(
        both.labels[overlap], np.where(only_b[overlap] > only_a[overlap], 2, 1)
    )


def test_touching_cells_keep_separate_labels():
    contacts = 0
    for seed in range(4):
        phantom = random_cells((384, 384), n_cells=6, allow_touching=1.0, seed=seed)
        labels = phantom.labels
        np.testing.assert_array_equal(np.unique(labels), np.arange(len(phantom.cells) + 1))
        right = (labels[:, :-1] > 0) & (labels[:, 1:] > 0) & (labels[:, :-1] != labels[:, 1:])
        down = (labels[:-1] > 0) & (labels[1:] > 0) & (labels[:-1] != labels[1:])
        contacts += int(right.sum() + down.sum())
    assert contacts > 0


@pytest.mark.parametrize("kind", ["round", "rbc", "adherent"])
def test_each_kind_reaches_its_peak_phase_and_absorbs(kind):
    spec = CellSpec(
        kind,
        (64.0, 64.0),
        30.0,
        4.5,
        aspect=0.8,
        orientation_rad=0.4,
        nucleus_radius_frac=0.4,
        nucleus_phase_frac=1.0,
        nucleus_offset=(0.1, -0.1),
        outline_modes=((0.1, 0.3), (0.05, 1.0)) if kind == "adherent" else (),
        absorption=0.01,
    )
    phantom = render_cells([spec], (128, 128))
    assert phantom.phase.max() == pytest.approx(4.5, rel=1e-5)
    np.testing.assert_allclose(phantom.amplitude, np.exp(-0.01 * phantom.phase), rtol=1e-6)


def test_cell_cut_by_the_border_keeps_its_profile():
    region, patch = cell_phase_patch(CellSpec("round", (5.0, 64.0), 20.0, 3.0), (128, 128))
    inside = render_cells([CellSpec("round", (60.0, 64.0), 20.0, 3.0)], (128, 128)).phase
    assert region[0].start == 0
    np.testing.assert_allclose(patch, inside[region[0].start + 55 : region[0].stop + 55, region[1]])
    assert cell_phase_patch(CellSpec("round", (-50.0, 64.0), 20.0, 3.0), (128, 128)) is None


def test_red_blood_cell_is_biconcave():
    assert float(evans_fung_thickness(0.0)) == pytest.approx(0.81)
    r = np.linspace(0.0, 3.91, 400)
    t = evans_fung_thickness(r)
    assert 2.5 < t.max() < 2.6 and 0.65 < r[t.argmax()] / 3.91 < 0.75
    assert float(evans_fung_thickness(4.0)) == 0.0
    phase = render_cells([CellSpec("rbc", (64.0, 64.0), 30.0, 2.0)], (128, 128)).phase
    assert phase[64, 64] / phase.max() == pytest.approx(0.81 / t.max(), rel=0.02)
    # 1 um of dn = 0.05 at 500 nm: 2 pi * 0.05 * 1 / 0.5 = 0.2 pi rad.
    assert phase_from_thickness(1.0, 0.05, 500.0) == pytest.approx(0.2 * np.pi)


def test_bad_cells_are_refused():
    with pytest.raises(InputError):
        CellSpec("blob", (0.0, 0.0), 10.0, 1.0)
    with pytest.raises(InputError):
        CellSpec("round", (0.0, 0.0), 0.5, 1.0)
    with pytest.raises(InputError):
        random_cells((64, 64), kinds=("square",), seed=0)
