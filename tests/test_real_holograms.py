"""The real-hologram regression corpus: our default phase against the peers' pipeline.

The corpus (``tests/data/real_holograms``, see its README) holds real HL60 holograms from the
peers' source distributions and the phase their own pipeline gives. A method change that breaks
one microscope's data shows up here, not only on our simulator.
"""

from __future__ import annotations

import pytest

from test_benchmarks import load_script

corpus = load_script("real_holograms")
CASES, MANIFEST = corpus.load_corpus()
REFERENCES = corpus.load_references()


def _assert_agrees(stats: dict[str, float], name: str) -> None:
    assert stats["correlation"] >= 0.95, f"{name}: correlation {stats['correlation']:.3f}"
    assert 0.9 <= stats["slope"] <= 1.1, f"{name}: contrast {stats['slope']:.2f}"
    assert stats["mean_in_cell_rad"] > 0, f"{name}: the cell came out negative"
    assert stats["off_2pi_fraction"] == 0, f"{name}: {stats['off_2pi_fraction']:.2%} 2 pi off"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_default_retrieval_agrees_with_the_peers_pipeline(case):
    hologram, background = corpus.raw_planes(case)
    phase = corpus.our_phase(hologram, background)
    _assert_agrees(corpus.agreement(phase, REFERENCES[case.reference]), case.name)


def test_the_agreement_measure_catches_a_wrong_sign_and_a_lost_contrast():
    case = CASES[0]
    hologram, background = corpus.raw_planes(case)
    phase = corpus.our_phase(hologram, background)
    reference = REFERENCES[case.reference]
    flipped = corpus.agreement(-phase, reference)
    assert flipped["correlation"] < -0.9 and flipped["mean_in_cell_rad"] < 0
    halved = corpus.agreement(0.5 * phase, reference)
    assert halved["slope"] == pytest.approx(0.5, abs=0.03)
    assert corpus.agreement(phase + 6.3 * (reference > 2), reference)["off_2pi_fraction"] > 0.05
