"""Compiled force training: energy and forces of a batch as one traced graph, compiled by torch.compile.

Force training differentiates the forces (a first backward, -dE/dx) with respect to the weights:
a double backward, which torch.compile's aot_autograd cannot do. Here `make_fx` first traces
energy and forces of the batch, the force backward included, into a graph of plain aten ops
(`EnergyModel.energy_forces_padded` with `create_graph`); differentiating that graph with respect
to the weights is then a first-order backward, so `torch.compile` compiles forward and backward
together (inductor). The neighbour list is the padded one of compiled MD with every candidate pair
kept (capacity = candidates: nothing can overflow), so every shape depends on the batch shape alone.

Each batch shape (atoms, structures, candidate pairs) is traced and compiled once, which takes
minutes on a CPU: it suits training on one molecule's frames (two shapes: the full batch and the
epoch's last). Shapes beyond `max_graphs` run eagerly. Periodic frames are refused
(`check_compilable`).
On one CPU thread (aspirin, batch 32) a step took 0.74x the eager CPU time, with gradients equal
to float32 rounding (docs/training.md#compiled-training).
"""

from typing import Any

import torch
from torch.func import functional_call

from mlff.models import EnergyModel
from mlff.models.neighbors import structure_pairs
from mlff.training.config import ConfigError


def check_compilable(periodic: bool) -> None:
    """Raise ConfigError unless `train.compile` can train on these frames."""
    if periodic:
        raise ConfigError("train.compile is for isolated molecules: the training frames include periodic ones")


def reattach_saved_tensors(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """`graph` with every `aten.detach` replaced by its input, in place.

    When make_fx traces the force backward, a tensor that autograd saved for it appears detached:
    exp's backward is grad * exp(z), and the trace reads exp(z) through a detach. Autograd itself
    re-attaches a saved output's history under `create_graph`, so in the eager double backward the
    weight gradient flows through it; in the trace it did not (the transformer's attention weights:
    weight gradients off by up to 20% while energies and forces agreed). The models' own detaches
    are of the input positions (the traced inputs hold no graph) and of the transformer's softmax
    shift (the weights do not depend on it), so dropping every detach loses nothing; the tests
    compare every backbone's traced weight gradients with the eager ones.
    """
    for node in list(graph.graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten.detach.default:
            node.replace_all_uses_with(node.args[0])
            graph.graph.erase_node(node)
    graph.recompile()
    return graph


class _PaddedEnergyForces(torch.nn.Module):
    """The model's padded energy and forces as a module forward, for `functional_call`."""

    def __init__(self, model: EnergyModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, positions: torch.Tensor, atomic_numbers: torch.Tensor, batch: torch.Tensor, candidates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        num_structures = int(self.num_structures)
        energy, forces, _ = self.model.energy_forces_padded(
            positions, atomic_numbers, batch, num_structures, candidates, candidates.size(1), create_graph=True
        )
        return energy, forces


class CompiledEnergyForces:
    """(positions [N, 3] A, atomic_numbers [N], batch [N], B) -> (energy [B] eV, forces [N, 3] eV/A),
    differentiable with respect to the model's weights, through one compiled graph per batch shape.

    Args:
        model: the model being trained (its parameters are read at every call, so optimiser steps
            and rollbacks are seen).
        mode: `torch.compile` mode ("default"; "reduce-overhead" adds CUDA graphs on CUDA).
        max_graphs: batch shapes compiled at most; further shapes run eagerly (`model.forward`).
        compile: False runs the traced graphs uncompiled (the reference of the tests).
    """

    def __init__(self, model: EnergyModel, mode: str = "default", max_graphs: int = 4, compile: bool = True) -> None:
        self.model = model
        self.mode = mode
        self.compile = compile
        self.max_graphs = max_graphs
        self.graphs: dict[tuple[int, ...], Any] = {}
        self.eager_shapes: set[tuple[int, ...]] = set()
        self._module = _PaddedEnergyForces(model)

    def _weights(self) -> dict[str, torch.Tensor]:
        named = dict(self._module.named_parameters())
        named.update(self._module.named_buffers())
        return named

    def _trace(self, num_structures: int, sample: tuple[torch.Tensor, ...]) -> Any:
        from torch.fx.experimental.proxy_tensor import make_fx

        module = self._module

        def energy_forces(weights: dict[str, torch.Tensor], *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            module.num_structures = num_structures
            return functional_call(module, weights, inputs)

        graph = reattach_saved_tensors(make_fx(energy_forces)(self._weights(), *sample))
        if not self.compile:
            return graph
        return torch.compile(graph, dynamic=False, mode=None if self.mode == "default" else self.mode)

    def __call__(
        self, positions: torch.Tensor, atomic_numbers: torch.Tensor, batch: torch.Tensor, num_structures: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        candidates = structure_pairs(batch, num_structures)
        key = (positions.size(0), num_structures, candidates.size(1))
        graph = self.graphs.get(key)
        if graph is None and key not in self.eager_shapes:
            if len(self.graphs) < self.max_graphs:
                graph = self.graphs[key] = self._trace(num_structures, (positions, atomic_numbers, batch, candidates))
            else:
                self.eager_shapes.add(key)
        if graph is None:
            zeros = torch.zeros(num_structures, 3, 3, dtype=positions.dtype, device=positions.device)
            no_pbc = torch.zeros(num_structures, 3, dtype=torch.bool, device=positions.device)
            return self.model(positions, atomic_numbers, batch, zeros, no_pbc)
        return graph(self._weights(), positions, atomic_numbers, batch, candidates)
