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
from napari_qpi.physics.phantoms import RBC_MAX_PEAK_PHASE_RAD, render_cells


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
