"""Compiled force training (`train.compile`): the traced energy and forces are the model's, their
weight gradients the eager double backward's, and a compiled training step is the eager step."""

import dataclasses

import pytest
import torch
from conftest import TINY_ELEMENT_ENERGIES_EV, TINY_ENERGY_SCALE_EV, TINY_SPECIES, build_tiny_model, tiny_config
from geometry import random_molecules
from synthetic import write_md17_npz

from mlff.data.batch import FrameTensors
from mlff.models import BACKBONES, EnergyModel, build_model
from mlff.training import load_config
from mlff.training.compiled import CompiledEnergyForces
from mlff.training.config import ConfigError
from mlff.training.dataset import load_training_data
from mlff.training.losses import LossSettings
from mlff.training.trainer import TrainingState, initial_model, train_step

pytestmark = pytest.mark.usefixtures("single_thread")


def loss_and_gradients(model, energy, forces, target_forces):
    loss = (energy**2).mean() * 1e-3 + ((forces - target_forces) ** 2).mean()
    gradients = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(model.parameters(), gradients)]


def tiny_model_with(backbone: str, **options) -> EnergyModel:
    config = tiny_config("float64", backbone)
    config = dataclasses.replace(config, backbone_options={**config.backbone_options, **options})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_model(config, TINY_SPECIES, TINY_ELEMENT_ENERGIES_EV, TINY_ENERGY_SCALE_EV)


@pytest.mark.parametrize("backbone", [*sorted(BACKBONES), "et+polarization"])
def test_traced_energy_forces_and_their_weight_gradients_are_the_forwards(backbone):
    """Every backbone (and ET's polarization); the transformer's attention (exp, whose backward
    reads its saved output) is where make_fx's detached saved tensors gave gradients off by 20%."""
    name, _, option = backbone.partition("+")
    model = tiny_model_with(name, **({option: True} if option else {})).train()
    positions, numbers, batch, zeros, no_pbc = random_molecules([5, 7, 5], seed=2)
    target = torch.randn(positions.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    energy, forces = model(positions, numbers, batch, zeros, no_pbc)
    expected = loss_and_gradients(model, energy, forces, target)
    traced = CompiledEnergyForces(model, compile=False)
    for _ in range(2):  # the second call reuses the graph, with the weights read again
        traced_energy, traced_forces = traced(positions, numbers, batch, 3)
        torch.testing.assert_close(traced_energy, energy, rtol=0, atol=1e-10)
        torch.testing.assert_close(traced_forces, forces, rtol=0, atol=1e-10)
        for got, want in zip(loss_and_gradients(model, traced_energy, traced_forces, target), expected):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert len(traced.graphs) == 1
    # A changed weight is seen by the same graph.
    with torch.no_grad():
        next(model.parameters()).add_(0.1)
    assert not torch.allclose(traced(positions, numbers, batch, 3)[1], forces)
    assert len(traced.graphs) == 1


def test_shapes_beyond_the_graph_budget_run_eagerly():
    model = build_tiny_model().train()
    traced = CompiledEnergyForces(model, max_graphs=1, compile=False)
    first, second = random_molecules([4, 4]), random_molecules([6, 3])
    traced(*first[:3], 2)
    energy, forces = traced(*second[:3], 2)
    assert len(traced.graphs) == 1 and len(traced.eager_shapes) == 1
    torch.testing.assert_close(forces, model(*second)[1])


def test_a_compiled_training_step_is_the_eager_step(tmp_path):
    """Two AdamW steps of a float64 EGNN on 4-frame batches, compiled (inductor) and eager."""
    data = write_md17_npz(tmp_path / "mol.npz", num_frames=24)
    overrides = [
        f"data.path={data}", "data.n_val=4", "model.dtype=float64", "model.encoding_size=8",
        "model.backbone_options={hidden: 8, layers: 2}", "train.batch_size=4",
    ]  # fmt: skip

    def steps(compile: bool, count: int = 2) -> TrainingState:
        config = load_config(None, [*overrides, f"train.compile={str(compile).lower()}"])
        training = load_training_data(config.data)
        torch.manual_seed(0)
        state = TrainingState(config, initial_model(config, training.frames, training.split), 8, None)
        tensors = FrameTensors(training.frames, dtype=torch.float64)
        generator = torch.Generator().manual_seed(0)
        for start in (0, 4)[:count]:
            train_step(state, tensors.batch(training.split.train[start : start + 4]), LossSettings(), generator)
        return state

    eager, compiled = steps(False), steps(True)
    assert eager.compiled is None and len(compiled.compiled.graphs) == 1
    for key, value in eager.model.state_dict().items():
        torch.testing.assert_close(compiled.model.state_dict()[key], value, rtol=1e-7, atol=1e-9, msg=key)
    start = steps(False, count=0).model.state_dict()
    assert max(float((value - start[key]).abs().max()) for key, value in eager.model.state_dict().items()) > 1e-4


def test_compile_mode_is_validated():
    # (Periodic frames are refused: tests/test_periodic_data.py.)
    with pytest.raises(ConfigError, match="compile_mode"):
        load_config(None, ["train.compile_mode=fast"])
