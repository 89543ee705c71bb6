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
from mlff.models.priors import CubicRepulsion, ZBLRepulsion, pair_onsets
from mlff.models.priors.onsets import MAX_ONSET_FRACTION, RADII_FACTOR

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
    # The key names of models saved before the core repulsion and the priors existed.
    state = build_tiny_model(seed=3).state_dict()
    old_state = {key: value for key, value in state.items() if not key.startswith("priors.")}
    old_state["element_energies_nev"] = state["priors.element_reference.energies_nev"]
    model = build_tiny_model()
    model.set_core_repulsion(ONSETS_A, STRENGTH)
    model.load_state_dict(old_state)
    repulsion = model.priors["core_repulsion"]
    assert float(repulsion.strength) == 0.0 and not bool(repulsion.onsets.any())
    assert model.element_energies().equal(build_tiny_model(seed=3).element_energies())


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
    shortest = shortest_pair_distances(frames, seen, recorded["species"])
    expected = pair_onsets(shortest, recorded["species"], 5.0).onsets_a
    np.testing.assert_allclose(recorded["onsets_a"], expected, atol=1e-6)
    # One carbon and one oxygen: C-C and O-O never meet and take the covalent-radii floor.
    assert recorded["onset_sources"] == [["seen", "seen", "seen"], ["seen", "radii", "seen"], ["seen", "seen", "radii"]]
    assert recorded["strength_ev_per_a3"] == 30.0 and recorded["kind"] == "cubic"

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


def test_onsets_are_defined_for_every_pair_seen_or_from_covalent_radii():
    # Species H, C, O; cutoff 5 A. H-O never meet (0), C-O and O-O only beyond the cutoff (7.0, 5.69:
    # rMD17 paracetamol's oxygens), C-C seen just inside it (4.999, clamped to 0.99 x cutoff).
    shortest = np.array([[1.5, 1.0, 0.0], [1.0, 4.999, 7.0], [0.0, 7.0, 5.69]])
    onsets = pair_onsets(shortest, [1, 6, 8], 5.0)
    radius = {1: 0.31, 6: 0.76, 8: 0.66}  # Cordero et al. 2008, as ASE has them
    assert RADII_FACTOR == 0.6
    expected = np.array(
        [
            [1.5, 1.0, 0.6 * (radius[1] + radius[8])],
            [1.0, MAX_ONSET_FRACTION * 5.0, 0.6 * (radius[6] + radius[8])],
            [0.6 * (radius[1] + radius[8]), 0.6 * (radius[6] + radius[8]), 0.6 * 2 * radius[8]],
        ]
    )
    np.testing.assert_allclose(onsets.onsets_a, expected, rtol=1e-12)
    np.testing.assert_array_equal(onsets.seen, [[True, True, False], [True, True, False], [False, False, False]])
    described = onsets.describe()
    assert described["onset_sources"][2][2] == "radii" and described["onset_sources"][1][1] == "seen"
    # Whatever the frames say, every onset is accepted by both repulsions (inside the cutoff, symmetric).
    CubicRepulsion([1, 6, 8], 5.0, torch.as_tensor(onsets.onsets_a), 30.0)
    ZBLRepulsion([1, 6, 8], 5.0, torch.as_tensor(onsets.onsets_a))
    # A heavy element with a short cutoff: iodine's floor (0.6 x 2 x 1.39 A) is clamped inside 1.5 A.
    heavy = pair_onsets(np.zeros((2, 2)), [1, 53], 1.5)
    assert heavy.onsets_a[1, 1] == pytest.approx(MAX_ONSET_FRACTION * 1.5) and not heavy.seen.any()
    with pytest.raises(ValueError, match="symmetric"):
        pair_onsets(np.triu(shortest), [1, 6, 8], 5.0)
    with pytest.raises(ValueError, match="shape"):
        pair_onsets(shortest, [1, 6], 5.0)


# A paracetamol-like chain HO-C-C(H)-C-OH whose two oxygens stay 5.8 A apart, beyond the 5 A cutoff.
FAR_NUMBERS = np.array([8, 1, 6, 6, 1, 6, 8, 1])
FAR_POSITIONS = np.array(
    [
        [0.0, 0.0, 0.0],
        [-0.6, 0.75, 0.0],
        [1.4, 0.0, 0.0],
        [2.9, 0.3, 0.0],
        [2.9, 1.39, 0.0],
        [4.4, 0.0, 0.0],
        [5.8, 0.3, 0.0],
        [6.4, -0.45, 0.0],
    ]
)


def write_far_oxygens(path, num_frames: int = 16):
    """An MD17-layout npz of the chain with 0.03 A noise (labels zero: only its geometry matters here)."""
    rng = np.random.default_rng(7)
    positions = FAR_POSITIONS + 0.03 * rng.standard_normal((num_frames, len(FAR_NUMBERS), 3))
    order = rng.permutation(num_frames)
    np.savez(
        path,
        z=FAR_NUMBERS,
        R=positions,
        E=np.zeros(num_frames),
        F=np.zeros((num_frames, len(FAR_NUMBERS), 3)),
        split_train=order[: num_frames // 2][None],
        split_test=order[num_frames // 2 :][None],
    )
    return path


@pytest.fixture
def far_checkpoint(tmp_path):
    """A checkpoint of the tiny model (cutoff 5 A) written by hand, naming the far-oxygens dataset."""
    import dataclasses

    from conftest import tiny_config

    from mlff._version import __version__
    from mlff.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, atomic_torch_save

    data = write_far_oxygens(tmp_path / "far.npz")
    model = build_tiny_model(seed=1)
    data_config = {"path": str(data), "split": 0, "n_val": 2, "n_train": None, "n_test": None, "seed": 0}
    contents = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "mlff_version": __version__,
        "config": {"model": dataclasses.asdict(tiny_config()), "data": {**data_config, "train_pool": "split"}},
        "species": model.species,
        "element_energies_ev": model.element_energies()[model.species].tolist(),
        "energy_scale_ev": float(model.energy_scale),
        "model_state": model.state_dict(),
        "ema_state": None,
        "optimizer_state": None,
        "scheduler_state": None,
        "epoch": 1,
        "command": "hand-made",
        "best_val_force_mae": None,
        "history": [],
    }
    atomic_torch_save(contents, tmp_path / "far.pt")
    return tmp_path / "far.pt", data


def energies_and_forces(path, numbers, positions):
    """Energies [F] eV and forces [F, n, 3] eV/A of a potential file on frames of one molecule."""
    potential = load_potential(path)
    results = [potential.energy_and_forces(numbers, frame) for frame in positions]
    return np.array([energy for energy, _ in results]), np.stack([forces for _, forces in results])


@pytest.mark.parametrize("options", [["--repulsion", "zbl"], ["--core-repulsion", "30"]], ids=["zbl", "cubic"])
def test_export_defines_the_onset_of_a_pair_that_never_meets_and_leaves_the_training_frames_alone(
    far_checkpoint, tmp_path, capsys, options
):
    from mlff.data.splits import make_split

    checkpoint, data = far_checkpoint
    plain, guarded = tmp_path / "plain.pt", tmp_path / "guarded.pt"
    assert main(["export", str(checkpoint), "-o", str(plain), "--no-card"]) == 0
    assert main(["export", str(checkpoint), "-o", str(guarded), "--no-card", *options]) == 0
    kind = "zbl" if "zbl" in options else "cubic"
    assert f"core repulsion {kind}: onsets seen" in capsys.readouterr().out
    metadata = read_metadata(guarded)
    recorded = metadata["core_repulsion"]
    assert recorded["kind"] == kind and recorded["species"] == [1, 6, 8]
    # O-O: 5.8 A apart in every frame, beyond the cutoff: the covalent-radii floor, 0.6 x 2 x 0.66 A.
    assert recorded["onset_sources"][2][2] == "radii"
    assert recorded["onsets_a"][2][2] == pytest.approx(0.792)
    frames = read_frames(data)
    split = make_split(frames, split_index=0, n_val=2)
    seen = np.concatenate([split.train, split.val])
    shortest = shortest_pair_distances(frames, seen, [1, 6, 8])
    assert shortest[2, 2] > 5.0
    np.testing.assert_allclose(np.array(recorded["onsets_a"])[:2, :2], shortest[:2, :2], atol=1e-6)
    assert [row[:2] for row in recorded["onset_sources"][:2]] == [["seen", "seen"], ["seen", "seen"]]
    if kind == "zbl":
        assert metadata["model"]["priors"]["zbl_repulsion"] == "zbl_repulsion"
        assert recorded["inner_fraction"] == 0.5
    # Zero on every frame the model learnt from: energies and forces bit for bit those of the plain file.
    positions = frames.positions.reshape(-1, len(FAR_NUMBERS), 3)[seen]
    for expected, actual in zip(
        energies_and_forces(plain, FAR_NUMBERS, positions), energies_and_forces(guarded, FAR_NUMBERS, positions)
    ):
        np.testing.assert_array_equal(actual, expected)
    # Two oxygens 0.5 A apart (inside their floor) are pushed apart.
    oxygens = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    plain_energy, plain_forces = load_potential(plain).energy_and_forces([8, 8], oxygens)
    energy, forces = load_potential(guarded).energy_and_forces([8, 8], oxygens)
    assert energy > plain_energy + 0.3 and forces[1, 0] > plain_forces[1, 0] + 1.0


def test_export_refuses_a_repulsion_without_its_settings(far_checkpoint, tmp_path, capsys):
    checkpoint, _ = far_checkpoint
    output = str(tmp_path / "p.pt")
    assert main(["export", str(checkpoint), "-o", output, "--no-card", "--repulsion", "cubic"]) != 0
    assert "needs its strength" in capsys.readouterr().err
    both = ["--repulsion", "zbl", "--core-repulsion", "5"]
    assert main(["export", str(checkpoint), "-o", output, "--no-card", *both]) != 0
    assert "no strength" in capsys.readouterr().err
