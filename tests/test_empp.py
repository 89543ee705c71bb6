"""EMPP, equivariant masked position prediction (`mlff.training.empp`, loss term `empp`).

The model is a tiny ET (hidden 16, 2 heads, spline encoding of size 8, cutoff 5 A); the molecule is
the 5-atom CH3-O of tests/synthetic.py.
"""

import json

import ase
import ase.io
import numpy as np
import pytest
import torch
from geometry import random_orthogonal
from synthetic import EQUILIBRIUM, NUMBERS, TINY_TRAINING_OVERRIDES, make_frames, write_md17_npz

from mlff.checkpoint import load_checkpoint, model_from_checkpoint
from mlff.data import DatasetError, read_frames
from mlff.models import ModelConfig, build_model
from mlff.training import ConfigError, load_config, train
from mlff.training.config import EMPPConfig
from mlff.training.dataset import load_training_data
from mlff.training.empp import EMPPHead, build_empp_head, mask_atoms
from mlff.training.losses import LossSettings
from mlff.training.trainer import TrainingState, initial_model, train_step

pytestmark = pytest.mark.usefixtures("single_thread")

SPECIES = [1, 6, 8]
ET_OVERRIDES = [
    *TINY_TRAINING_OVERRIDES,
    "model.backbone=et",
    "model.backbone_options.hidden=16",
    "model.backbone_options.heads=2",
    "train.empp.grid=128",
    "train.empp.channels=4",
]
LABEL_FREE = ["train.loss_weights.energy=0", "train.loss_weights.forces=0", "train.loss_weights.empp=1"]


def et_model(dtype: str = "float64", layers: int = 1, seed: int = 0):
    config = ModelConfig(
        backbone="et",
        backbone_options={"hidden": 16, "heads": 2, "layers": layers},
        encoding="spline",
        encoding_size=8,
        encoding_options={"n_bins": 16, "r_min": 0.0},
        cutoff=5.0,
        dtype=dtype,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_model(config, SPECIES, [0.0, 0.0, 0.0], 1.0)


def molecule(dtype=torch.float64, rotation: np.ndarray | None = None):
    positions = EQUILIBRIUM if rotation is None else EQUILIBRIUM @ rotation.T
    return (
        torch.tensor(positions, dtype=dtype),
        torch.tensor(NUMBERS),
        torch.zeros(len(NUMBERS), dtype=torch.long),
        torch.tensor([len(NUMBERS)]),
    )


def write_label_free_extxyz(path, frames: int = 24, seed: int = 0):
    """Positions only: extxyz frames with neither energy nor forces."""
    positions, _, _ = make_frames(frames, seed)
    ase.io.write(path, [ase.Atoms(numbers=NUMBERS, positions=p) for p in positions], format="extxyz")
    return path


def tiny_config(tmp_path, data, name: str, epochs: int, extra=()):
    overrides = [*ET_OVERRIDES, f"data.path={data}", f"output_dir={tmp_path / name}", f"train.epochs={epochs}"]
    return load_config(None, [*overrides, *extra])


def test_masking_draws_distinct_atoms_per_frame_and_keeps_the_rest():
    batch = torch.tensor([0, 0, 0, 1, 1, 2])
    n_atoms = torch.tensor([3, 2, 1])
    masking = mask_atoms(batch, n_atoms, 2, torch.Generator().manual_seed(3))
    # Frames 0 and 1 give two copies each, frame 2 none (one atom: nothing to predict from).
    assert masking.num_copies == 4
    assert sorted(batch[masking.masked].tolist()) == [0, 0, 1, 1]
    for copy, masked in enumerate(masking.masked.tolist()):
        kept = masking.kept[masking.copy_batch == copy].tolist()
        frame = batch[masked].item()
        assert masked not in kept and sorted(kept + [masked]) == torch.nonzero(batch == frame).squeeze(1).tolist()
    for frame in (0, 1):
        assert masking.masked[batch[masking.masked] == frame].unique().numel() == 2


def test_loss_is_invariant_and_predictions_equivariant_under_rotation():
    model = et_model().eval()
    head = EMPPHead(16, 3, 5.0, grid=256, channels=4, masked_atoms_per_frame=5).double().eval()
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    with torch.no_grad():
        check_rotations(model, head)


def check_rotations(model, head):
    plain = head(model, *molecule(), torch.Generator().manual_seed(1))
    for seed, proper in ((1, True), (2, False)):
        rotation = random_orthogonal(seed, proper)
        turned_grid = torch.tensor(rotation)
        turned = head(model, *molecule(rotation=rotation), torch.Generator().manual_seed(1), rotation=turned_grid)
        # Input and grid turned together: exactly the same loss, predictions turned.
        assert torch.equal(turned.masked, plain.masked)
        assert float(turned.loss) == pytest.approx(float(plain.loss), rel=1e-10)
        assert torch.allclose(turned.predicted, plain.predicted @ turned_grid.T, atol=1e-9)
        # The grid fixed: the same up to the grid quadrature.
        fixed = head(model, *molecule(rotation=rotation), torch.Generator().manual_seed(1))
        assert float(fixed.loss) == pytest.approx(float(plain.loss), rel=0.05)
    assert plain.pairs == 20 and plain.masked.numel() == 5


def test_head_recovers_masked_atoms_of_a_molecule_it_was_trained_on():
    model = et_model(dtype="float32")
    head = EMPPHead(16, 3, 5.0, grid=256, channels=8, masked_atoms_per_frame=5)
    inputs = molecule(torch.float32)
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    head.train()
    for _ in range(60):
        loss = head(model, *inputs, generator).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    with torch.no_grad():
        result = head(model, *inputs, generator)
    errors = torch.linalg.vector_norm(result.predicted - result.target, dim=-1)
    assert result.masked.numel() == 5
    assert float(errors.max()) < 0.1, errors
    # An untrained head is nowhere near.
    untrained = EMPPHead(16, 3, 5.0, grid=256, channels=8, masked_atoms_per_frame=5).eval()
    with torch.no_grad():
        assert untrained(et_model(dtype="float32"), *inputs, generator).position_error_a > 0.3


def test_weight_zero_is_exactly_the_run_without_empp(tmp_path):
    data = write_md17_npz(tmp_path / "mol.npz", num_frames=24)

    def steps(extra):
        config = tiny_config(tmp_path, data, "unused", 1, extra)
        training = load_training_data(config.data)
        torch.manual_seed(0)
        model = initial_model(config, training.frames, training.split)
        state = TrainingState(config, model, len(training.split.train), None)
        from mlff.data.batch import FrameTensors

        tensors = FrameTensors(training.frames, dtype=torch.float32)
        generator = torch.Generator().manual_seed(0)
        for start in (0, 8):
            train_step(state, tensors.batch(training.split.train[start : start + 8]), LossSettings(), generator)
        return state

    plain = steps([])
    off = steps(["train.loss_weights.empp=0", "train.empp.l_max=2", "train.empp.grid=64"])
    on = steps(["train.loss_weights.empp=1"])
    assert off.empp is None and plain.empp is None and on.empp is not None
    assert plain.model.state_dict().keys() == off.model.state_dict().keys() == on.model.state_dict().keys()
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, off.model.state_dict()[key]), key
    assert sum(len(g["params"]) for g in off.optimizer.param_groups) == len(list(plain.model.parameters()))
    checkpoint = off.checkpoint({})
    assert "empp_state" not in checkpoint and "empp_state" in on.checkpoint({})
    # With the weight on, the head trains beside the model (its parameters are not the model's).
    assert sum(len(g["params"]) for g in on.optimizer.param_groups) > len(list(on.model.parameters()))


def test_backbones_without_vector_features_are_refused():
    config = ModelConfig(backbone="egnn", backbone_options={"hidden": 8, "layers": 1}, encoding_size=4)
    model = build_model(config, SPECIES, [0.0, 0.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="'egnn' has none"):
        build_empp_head("egnn", model, 1.0, EMPPConfig())
    assert build_empp_head("egnn", model, 0.0, EMPPConfig()) is None
    with pytest.raises(ConfigError, match="train.empp.l_max"):
        load_config(None, ["train.empp.l_max=4"])


def test_label_free_files_are_read_only_when_labels_are_optional(tmp_path):
    extxyz = write_label_free_extxyz(tmp_path / "free.extxyz", frames=3)
    with pytest.raises(DatasetError, match="no energy or forces.*empp: 1"):
        read_frames(extxyz)
    frames = read_frames(extxyz, require_labels=False)
    assert frames.num_frames == 3 and not frames.has_energy.any() and not frames.forces.any()
    npz = tmp_path / "free.npz"
    np.savez(npz, z=NUMBERS, R=make_frames(4)[0])
    with pytest.raises(DatasetError, match=r"missing key\(s\).*empp: 1"):
        read_frames(npz)
    frames = read_frames(npz, require_labels=False)
    assert frames.num_frames == 4 and not frames.has_energy.any()
    np.testing.assert_allclose(frames.positions, make_frames(4)[0].reshape(-1, 3))


def test_pretrain_label_free_then_fine_tune_and_export(tmp_path):
    free = write_label_free_extxyz(tmp_path / "free.extxyz", frames=24)
    # A force run refuses the label-free file, naming the way to train it.
    with pytest.raises(DatasetError, match="empp: 1"):
        train(tiny_config(tmp_path, free, "refused", 1), progress=False)

    pretrain = tiny_config(tmp_path, free, "pretrain", 2, [*LABEL_FREE, "data.n_test=0"])
    result = train(pretrain, progress=False)
    records = [json.loads(line) for line in (tmp_path / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert record["val_empp_loss"] > 0 and 0 < record["val_empp_position_error_a"] < 10
        assert "empp" in record and "empp_position_error_a" in record
    assert result.best_val_force_mae == min(r["val_empp_loss"] for r in records)
    best = load_checkpoint(tmp_path / "pretrain" / "best.pt")
    assert best["empp_state"] is not None and not any(key.startswith("empp") for key in best["model_state"])

    # The exported potential of the EMPP-trained checkpoint is a plain one: the model, no head.
    from mlff.export import export_checkpoint

    potential = torch.jit.load(str(export_checkpoint(tmp_path / "pretrain" / "best.pt", tmp_path / "p.pt")))
    model = model_from_checkpoint(best).double().eval()
    inputs = (
        torch.tensor(EQUILIBRIUM),
        torch.tensor(NUMBERS),
        torch.zeros(5, dtype=torch.long),
        torch.zeros(1, 3, 3, dtype=torch.float64),
        torch.zeros(1, 3, dtype=torch.bool),
    )
    energy, forces = potential(*inputs)
    expected_energy, expected_forces = model(*inputs)
    torch.testing.assert_close(energy, expected_energy)
    torch.testing.assert_close(forces, expected_forces.to(forces.dtype))

    # Fine-tuning on labelled frames starts from the pretrained weights (the EMPP head is dropped).
    labelled = write_md17_npz(tmp_path / "mol.npz", num_frames=24)
    finetune = tiny_config(tmp_path, labelled, "finetune", 1, [f"init_from={tmp_path / 'pretrain' / 'best.pt'}"])
    result = train(finetune, progress=False)
    assert result.epochs_run == 1 and np.isfinite(result.test_metrics["force_mae_mev_per_a"])
    tuned = load_checkpoint(tmp_path / "finetune" / "best.pt")
    assert "empp_state" not in tuned and tuned["data_summary"]["init_from"].endswith("best.pt")
