"""The selection observer: spread, bond-deviation and pre-collapse candidates, de-duplicated and capped."""

import ase.io
import numpy as np
import pytest

from mlff.dynamics.frame import Frame
from mlff.dynamics.observers import SpreadObserver
from mlff.dynamics.selection import SelectionObserver, descriptor_distance, distance_descriptor

NUMBERS = np.array([8, 1, 1])
START = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
BONDS = np.array([[0, 1], [0, 2]])
LENGTHS = np.linalg.norm(START[BONDS[:, 1]] - START[BONDS[:, 0]], axis=1)


def frame(step, positions, spread):
    """One replica's saved frame with the largest atomic spread `spread` (on atom 0)."""
    return Frame(
        step=step,
        time_fs=step * 0.5,
        replicas=[0],
        positions_a=[positions],
        forces_ev_per_a=[np.zeros((3, 3))],
        potential_energy_ev=np.zeros(1),
        kinetic_energy_ev=np.zeros(1),
        temperature_k=np.zeros(1),
        force_spread_ev_per_a=[np.array([spread, 0.01, 0.01])],
    )


def observer(**options):
    return SelectionObserver([NUMBERS], [BONDS], [LENGTHS], spread_threshold_ev_per_a=0.5, **options)


def jiggled(rng, scale=0.02):
    return START + rng.normal(scale=scale, size=START.shape)


def test_descriptor_ignores_rotation_and_permutation():
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    moved = (START @ rotation.T)[[0, 2, 1]] + 3.0
    assert descriptor_distance(distance_descriptor(START), distance_descriptor(moved)) < 1e-12


def test_selector_picks_a_planted_high_spread_frame_and_drops_near_duplicates(tmp_path):
    rng = np.random.default_rng(0)
    selection = observer(output=tmp_path / "candidates.extxyz")
    spreads = SpreadObserver()
    planted = jiggled(rng)
    for step in range(1, 21):
        positions = planted if step == 7 else jiggled(rng)
        seen = frame(step * 10, positions, 2.0 if step == 7 else 0.1)
        selection.observe(seen)
        spreads.observe(seen)
    # Near-duplicates of the planted frame (rotated, 1e-4 A off) with high spread too: dropped.
    for step in (21, 22):
        selection.observe(frame(step * 10, planted[[0, 2, 1]] + 1e-4, 1.5))
    summary = selection.summary()
    assert summary["candidates"] == 1 and summary["by_reason"] == {"spread": 1}
    assert summary["duplicates_dropped"] == 2
    (kept,) = ase.io.read(tmp_path / "candidates.extxyz", ":")
    assert kept.info["reason"] == "spread" and kept.info["step"] == 70
    np.testing.assert_allclose(kept.get_positions(), planted, atol=1e-7)  # extxyz keeps 8 decimals
    assert spreads.summary()["largest_ev_per_a"] == 2.0 and spreads.summary()["frames"] == 20


def test_bond_deviation_and_the_frames_before_a_collapse_are_candidates():
    selection = observer(before_collapse=2)
    stretched = START.copy()
    stretched[1, 0] += 0.35  # O-H 0.35 A longer: above 0.3 A, below the 0.5 A collapse limit
    selection.observe(frame(10, START + 0.01, 0.1))
    selection.observe(frame(20, START + [[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0]], 0.1))
    selection.observe(frame(30, stretched, 0.1))
    broken = START.copy()
    broken[2, 1] += 2.0
    selection.observe(frame(40, broken, 0.1))
    selection.observe(frame(50, START, 5.0))  # after the collapse: replica 0 is no longer watched
    by_step = {c["step"]: c["reason"] for c in selection.candidates}
    # Frame 30 was a bond_deviation candidate and is also a pre-collapse frame: kept once, as the latter.
    assert by_step == {20: "before_collapse", 30: "before_collapse"}
    assert selection.collapsed == [0]


def test_candidates_are_capped_keeping_the_highest_scores():
    rng = np.random.default_rng(1)
    selection = observer(max_candidates=3)
    for step in range(10):
        selection.observe(frame(step, jiggled(rng, 0.1), 1.0 + step))
    assert sorted(c["step"] for c in selection.candidates) == [7, 8, 9]
    assert selection.over_cap_dropped == 7
    restored = observer(max_candidates=3)
    restored.load_state_dict(selection.state_dict())
    assert restored.summary()["candidates"] == 3


def test_frames_above_the_spread_ceiling_are_skipped_but_the_frames_before_a_collapse_stay():
    rng = np.random.default_rng(2)
    selection = observer(spread_ceiling_factor=4.0, before_collapse=1)  # ceiling 4 x 0.5 = 2 eV/A
    for step, spread in enumerate((1.0, 1.9, 2.0, 3.0), start=1):
        selection.observe(frame(step * 10, jiggled(rng, 0.05), spread))
    assert sorted(c["step"] for c in selection.candidates) == [10, 20]
    assert selection.summary()["over_ceiling"] == 2
    broken = START.copy()
    broken[2, 1] += 2.0
    selection.observe(frame(50, broken, 9.0))
    # The last frame before the collapse (step 40, spread 3.0) is kept although above the ceiling.
    assert {c["step"]: c["reason"] for c in selection.candidates}[40] == "before_collapse"
    with pytest.raises(ValueError, match="spread_ceiling_factor must be > 1"):
        observer(spread_ceiling_factor=0.5)
