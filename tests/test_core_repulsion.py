"""The core repulsion: k (r0 - r)^3 for pairs closer than their species pair's onset r0."""

import numpy as np
import pytest
import torch
from conftest import build_tiny_model
from synthetic import write_md17_npz

from mlff.cli.main import main
from mlff.data import Frames, read_frames
from mlff.data.reference import shortest_pair_distances
from mlff.export import load_potential, read_metadata

pytestmark = pytest.mark.usefixtures("single_thread")

# Species of the tiny model: H, C, O.
ONSETS_A = torch.tensor([[1.5, 1.0, 0.9], [1.0, 1.3, 1.2], [0.9, 1.2, 1.4]], dtype=torch.float64)
STRENGTH = 40.0


def call(model, numbers, positions):
    count = len(numbers)
    energy, forces = model(
        torch.as_tensor(positions, dtype=torch.float64),
        torch.as_tensor(numbers),
        torch.zeros(count, dtype=torch.long),
        torch.zeros(1, 3, 3, dtype=torch.float64),
        torch.zeros(1, 3, dtype=torch.bool),
    )
    return float(energy[0].detach()), forces.detach().numpy()


def test_pairs_inside_their_onset_add_k_overlap_cubed_and_nothing_outside():
    plain, guarded = build_tiny_model().eval(), build_tiny_model().eval()
    guarded.set_core_repulsion(ONSETS_A, STRENGTH)
    numbers = [1, 1, 6]
    # H-H at 1.2 A (onset 1.5), H-C at 2.0 and 2.33 A (onset 1.0): one overlapping pair.
    positions = np.array([[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], [0.0, 2.0, 0.0]])
    expected = call(plain, numbers, positions)[0] + STRENGTH * (1.5 - 1.2) ** 3
    assert call(guarded, numbers, positions)[0] == pytest.approx(expected, rel=1e-12)
    apart = positions * np.array([2.0, 1.0, 1.0])
    np.testing.assert_array_equal(call(guarded, numbers, apart)[1], call(plain, numbers, apart)[1])


def test_repulsive_forces_are_minus_the_energy_gradient():
    model = build_tiny_model().eval()
    model.set_core_repulsion(ONSETS_A, STRENGTH)
    numbers = [8, 1, 1, 6]
    positions = np.array([[0.0, 0.0, 0.0], [0.7, 0.1, 0.0], [-0.2, 0.8, 0.1], [0.3, -0.4, 1.0]])
    _, forces = call(model, numbers, positions)
    step = 1e-5
    numeric = np.zeros_like(positions)
    for atom in range(len(numbers)):
        for axis in range(3):
            shifted = positions.copy()
            shifted[atom, axis] += step
            up = call(model, numbers, shifted)[0]
            shifted[atom, axis] -= 2 * step
            numeric[atom, axis] = -(up - call(model, numbers, shifted)[0]) / (2 * step)
    np.testing.assert_allclose(forces, numeric, rtol=1e-6, atol=1e-7)
    assert np.abs(forces).max() > 1.0, "the overlaps push hard"


def test_bad_onsets_are_refused():
    model = build_tiny_model()
    with pytest.raises(ValueError, match="shape"):
        model.set_core_repulsion(torch.zeros(2, 2), STRENGTH)
    with pytest.raises(ValueError, match="symmetric"):
        model.set_core_repulsion(torch.triu(ONSETS_A), STRENGTH)
    with pytest.raises(ValueError, match=">= 0"):
        model.set_core_repulsion(ONSETS_A, -1.0)


def test_a_state_dict_without_the_repulsion_loads_with_it_off():
    old_state = {
        key: value for key, value in build_tiny_model(seed=3).state_dict().items() if not key.startswith("repulsion")
    }
    model = build_tiny_model()
    model.set_core_repulsion(ONSETS_A, STRENGTH)
    model.load_state_dict(old_state)
    assert float(model.repulsion_strength) == 0.0 and not bool(model.repulsion_onset.any())


def test_shortest_pair_distances_per_species_pair():
    numbers = np.array([1, 6, 1, 8, 6])
    first = np.array([[0, 0, 0], [1.1, 0, 0], [0, 2.5, 0], [0, 0, 1.4], [3.0, 3.0, 3.0]], dtype=float)
    second = first * 0.9
    frames = Frames(
        positions=np.concatenate([first, second]),
        atomic_numbers=np.concatenate([numbers, numbers]),
        n_atoms=np.array([5, 5]),
        energies=np.zeros(2),
        forces=np.zeros((10, 3)),
    )
    only_first = shortest_pair_distances(frames, np.array([0]), [1, 6, 7, 8])
    assert only_first[0, 0] == pytest.approx(2.5) and only_first[0, 1] == pytest.approx(1.1)
    assert only_first[0, 3] == only_first[3, 0] == pytest.approx(1.4)
    assert only_first[2].sum() == 0.0, "nitrogen never appears: its onsets stay 0 (off)"
    assert only_first[3, 3] == 0.0, "one oxygen has no oxygen partner"
    both = shortest_pair_distances(frames, np.array([0, 1]), [1, 6, 7, 8])
    assert both[0, 1] == pytest.approx(0.99)
    with pytest.raises(ValueError, match="outside the species"):
        shortest_pair_distances(frames, np.array([0]), [1, 6])


def test_export_fits_onsets_on_the_training_frames_and_the_file_equals_the_eager_model(tmp_path):
    from mlff.checkpoint import load_checkpoint, model_from_checkpoint
    from mlff.data.splits import make_split

    data = write_md17_npz(tmp_path / "mol.npz", num_frames=40)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"data: {{path: {data}, n_val: 4}}\nmodel: {{backbone_options: {{hidden: 8, layers: 1}}, encoding_size: 4}}\n"
        f"train: {{epochs: 1, batch_size: 8, eval_batch_size: 32}}\noutput_dir: {tmp_path / 'run'}\n"
    )
    assert main(["train", str(config), "--no-progress"]) == 0
    output = tmp_path / "guarded.pt"
    assert main(["export", str(tmp_path / "run" / "best.pt"), "-o", str(output), "--core-repulsion", "30"]) == 0
    recorded = read_metadata(output)["core_repulsion"]
    frames = read_frames(data)
    split = make_split(frames, split_index=0, n_val=4)
    seen = np.concatenate([split.train, split.val])
    expected = shortest_pair_distances(frames, seen, recorded["species"])
    np.testing.assert_allclose(recorded["onsets_a"], expected, atol=1e-6)
    assert recorded["strength_ev_per_a3"] == 30.0

    eager = model_from_checkpoint(load_checkpoint(tmp_path / "run" / "best.pt")).double().eval()
    # The checkpoint's network is float32: the file's onsets went through float32 too.
    eager.set_core_repulsion(torch.as_tensor(expected).float().double(), 30.0)
    numbers, positions = frames.frame(0)[:2]
    squeezed = positions * 0.6  # every pair well inside its onset
    energy, forces = call(eager, numbers, squeezed)
    file_energy, file_forces = load_potential(output).energy_and_forces(numbers, squeezed)
    assert file_energy == pytest.approx(energy, rel=1e-6)
    np.testing.assert_allclose(file_forces, forces, rtol=1e-6, atol=1e-9)
    unguarded = model_from_checkpoint(load_checkpoint(tmp_path / "run" / "best.pt")).double().eval()
    assert energy > call(unguarded, numbers, squeezed)[0] + 1.0
