"""Loss terms behind one interface and a registry.

Each term maps a `LossInputs` (the model, the batch, the model's predicted
energy [B] eV and forces [N, 3] eV/A on it, the settings and the noise
generator) to a scalar; the trainer adds them with the weights of
`train.loss_weights` and logs each one. A term that needs more than the
prediction on the batch (denoising) calls the model itself. Adding a term:
write the function, add one line to LOSSES.

Force-centric training (Feng et al. 2023, "May the Force be with You"): every
frame is off-equilibrium (reference forces: `forces`) or an equilibrium frame,
a local minimum whose forces are zero (`zero_force`) and around which a
perturbed geometry feels a harmonic restoring force (`denoising`). Energies are
trained only where a frame carries an energy label on one consistent scale
(`energy`).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from mlff.data.batch import Batch
from mlff.models.energy import EnergyModel
from mlff.units import BOLTZMANN_EV_PER_K


@dataclass
class LossSettings:
    """Settings of the terms that have any (train.denoising_* in the config).

    Attributes:
        denoising_sigma: Angstrom, standard deviation of the noise per Cartesian coordinate.
        denoising_temperature_k: Kelvin, the temperature T that makes the noise a thermal sample
            of the harmonic well (force constant k_B T / sigma^2 per coordinate).
    """

    denoising_sigma: float = 0.04
    denoising_temperature_k: float = 300.0


@dataclass
class LossInputs:
    """What a loss term sees.

    Attributes:
        model: the model being trained (in train mode: its forces carry a graph).
        batch: the labelled structures.
        energy: [B] eV, the model's prediction on the batch.
        forces: [N, 3] eV/A, the model's prediction on the batch.
        settings: the terms' settings.
        generator: source of the denoising noise (None: torch's global generator).
        empp_head: the EMPP head (`mlff.training.empp.EMPPHead`), which the trainer builds when
            train.loss_weights.empp > 0 (None: no head).
        diagnostics: figures a term reports beside its value (e.g. the EMPP position error, Angstrom);
            `total_loss` returns them with the terms.
    """

    model: EnergyModel
    batch: Batch
    energy: torch.Tensor
    forces: torch.Tensor
    settings: LossSettings = field(default_factory=LossSettings)
    generator: torch.Generator | None = None
    empp_head: Any = None
    diagnostics: dict[str, float] = field(default_factory=dict)


LossTerm = Callable[[LossInputs], torch.Tensor]


def _zero(inputs: LossInputs) -> torch.Tensor:
    """An exact 0 for a term that has no frames to act on in this batch."""
    return torch.zeros((), dtype=inputs.forces.dtype, device=inputs.forces.device)


def energy_mse(inputs: LossInputs) -> torch.Tensor:
    """Mean squared error of total energies over the frames with an energy label, eV^2 (0 if none)."""
    batch = inputs.batch
    if not bool(batch.has_energy.any()):
        return _zero(inputs)
    return (inputs.energy - batch.energies)[batch.has_energy].pow(2).mean()


def _force_errors(inputs: LossInputs) -> torch.Tensor | None:
    """[M, 3] eV/A, predicted minus reference forces on the atoms of off-equilibrium frames (None if none).

    Equilibrium frames are left to `zero_force`: their stored forces are not labels.
    """
    batch = inputs.batch
    atoms = ~batch.equilibrium[batch.batch]
    if not bool(atoms.any()):
        return None
    return (inputs.forces - batch.forces)[atoms]


def force_mse(inputs: LossInputs) -> torch.Tensor:
    """Mean squared error of force components on off-equilibrium frames, (eV/A)^2 (0 if none)."""
    errors = _force_errors(inputs)
    return _zero(inputs) if errors is None else errors.pow(2).mean()


def force_mae(inputs: LossInputs) -> torch.Tensor:
    """Mean absolute error of force components on off-equilibrium frames, eV/A (0 if none).

    The benchmark's own metric: late in training it weighs every error alike, where the squared
    error spends the gradient on the largest ones.
    """
    errors = _force_errors(inputs)
    return _zero(inputs) if errors is None else errors.abs().mean()


def zero_force(inputs: LossInputs) -> torch.Tensor:
    """Mean squared predicted force component on equilibrium frames, (eV/A)^2 (0 if none).

    A local minimum has zero forces: this is the force error on those frames with a label of 0.
    """
    batch = inputs.batch
    atoms = batch.equilibrium[batch.batch]
    if not bool(atoms.any()):
        return _zero(inputs)
    return inputs.forces[atoms].pow(2).mean()


def rigid_body_modes(reference: torch.Tensor, batch: torch.Tensor, num_structures: int) -> torch.Tensor:
    """The 6 infinitesimal rigid-body motions of each structure, [N, 3, 6].

    Columns 0-2 translate along x, y, z; columns 3-5 rotate about x, y, z through
    the structure's centroid (atom k moves by e_j x (r_k - centroid)). They span
    translations and rotations of the structure whatever the centre; for a linear
    structure the rotation about its axis vanishes (5 modes), for one atom all
    three rotations do (3 modes).

    Args:
        reference: [N, 3] positions, Angstrom.
        batch: [N] structure index of each atom.
        num_structures: B.
    """
    counts = torch.zeros(num_structures, dtype=reference.dtype, device=reference.device).index_add(
        0, batch, torch.ones_like(reference[:, 0])
    )
    centroid = torch.zeros(num_structures, 3, dtype=reference.dtype, device=reference.device).index_add(
        0, batch, reference
    ) / counts.clamp(min=1.0).unsqueeze(1)
    relative = reference - centroid[batch]
    axes = torch.eye(3, dtype=reference.dtype, device=reference.device).expand(len(reference), 3, 3)
    rotations = torch.linalg.cross(axes, relative.unsqueeze(1).expand(-1, 3, -1), dim=-1).transpose(1, 2)
    return torch.cat([axes, rotations], dim=2)


def project_out_rigid_motions(
    displacements: torch.Tensor, reference: torch.Tensor, batch: torch.Tensor, num_structures: int
) -> torch.Tensor:
    """Displacements [N, 3] less their component along the rigid-body motions of `reference`.

    The projection is the plain (unweighted, Euclidean) orthogonal one: the result
    eps satisfies sum_k eps_k = 0 and sum_k r_k x eps_k = 0 in each structure. Plain
    rather than mass-weighted because eps becomes a force target (-c eps / sigma^2):
    the forces of any translation- and rotation-invariant energy are orthogonal to
    the rigid motions in exactly this inner product (no net force, no net torque),
    so the target lies where the model's forces can reach. (A mass-weighted
    projection would fix the centre of mass instead and leave a net force.)

    Works in float64 whatever the input dtype; returns float64.

    Args:
        displacements: [N, 3] Angstrom.
        reference: [N, 3] positions (Angstrom) whose rigid motions are removed.
        batch: [N] structure index of each atom.
        num_structures: B.
    """
    displacements = displacements.to(torch.float64)
    modes = rigid_body_modes(reference.detach().to(torch.float64), batch, num_structures)
    gram = torch.zeros(num_structures, 6, 6, dtype=torch.float64, device=modes.device).index_add(
        0, batch, torch.einsum("nai,naj->nij", modes, modes)
    )
    overlap = torch.zeros(num_structures, 6, dtype=torch.float64, device=modes.device).index_add(
        0, batch, torch.einsum("nai,na->ni", modes, displacements)
    )
    # The pseudo-inverse drops the modes that vanish (linear structures, single atoms): B G^+ B^T is
    # the orthogonal projector onto the span of the modes whatever their number.
    coefficients = torch.einsum("bij,bj->bi", torch.linalg.pinv(gram, hermitian=True), overlap)
    return displacements - torch.einsum("nai,ni->na", modes, coefficients[batch])


def harmonic_restoring_force(displacements: torch.Tensor, sigma: float, temperature_k: float) -> torch.Tensor:
    """The denoising target: F = -c eps / sigma^2 with c = k_B T, eV/A, same shape as eps (Angstrom).

    For an isotropic harmonic well U(x0 + eps) = (c / (2 sigma^2)) |eps|^2 the
    Boltzmann density exp(-U / k_B T) is Gaussian with variance k_B T sigma^2 / c
    per coordinate, which is sigma^2 exactly when c = k_B T: Gaussian noise of
    scale sigma is then a thermal sample of that well, and the force at
    x0 + eps is -grad U = -k_B T eps / sigma^2 (k_B T times the score of the noise
    distribution, as in denoising score matching).
    """
    return -(BOLTZMANN_EV_PER_K * temperature_k / sigma**2) * displacements


def denoising(inputs: LossInputs) -> torch.Tensor:
    """Force-based denoising on equilibrium frames, (eV/A)^2 (0 if the batch has none).

    Each equilibrium geometry x0 is perturbed by Gaussian noise eps of scale
    sigma per coordinate (`train.denoising_sigma`, Angstrom) with its rigid-body
    part projected out (`project_out_rigid_motions`: plain centroid translation
    and rotation about x0, 6 modes, 5 for a linear molecule), and the model's
    force at x0 + eps is trained toward the restoring force of a harmonic well
    around x0, F = -k_B T eps / sigma^2 (`harmonic_restoring_force`, T =
    `train.denoising_temperature_k`).

    Why c = k_B T: for the isotropic well U = (c / (2 sigma^2)) |eps|^2, the
    Boltzmann distribution at temperature T has variance k_B T sigma^2 / c per
    coordinate, which equals sigma^2 exactly when c = k_B T; noise of scale sigma
    is then a thermal sample of the well and its force is -c eps / sigma^2. The
    projected noise is isotropic with variance sigma^2 on the internal (non-rigid)
    subspace, along which the well acts; rigid motions are zero modes of any
    invariant potential, so the well is flat along them.

    The model is evaluated a second time, on the perturbed equilibrium frames
    alone; the noise comes from `inputs.generator`.
    """
    batch = inputs.batch
    frames = torch.nonzero(batch.equilibrium).squeeze(1)
    if frames.numel() == 0:
        return _zero(inputs)
    settings = inputs.settings
    atoms = batch.equilibrium[batch.batch]
    reference = batch.positions[atoms]
    sub_batch = (torch.cumsum(batch.equilibrium.long(), 0) - 1)[batch.batch[atoms]]
    noise = settings.denoising_sigma * torch.randn(
        reference.shape, generator=inputs.generator, dtype=torch.float64, device=reference.device
    )
    noise = project_out_rigid_motions(noise, reference, sub_batch, int(frames.numel()))
    target = harmonic_restoring_force(noise, settings.denoising_sigma, settings.denoising_temperature_k)
    _, predicted = inputs.model(
        reference.detach() + noise.to(reference.dtype),
        batch.atomic_numbers[atoms],
        sub_batch,
        batch.cell[frames],
        batch.pbc[frames],
    )
    return (predicted - target.to(predicted.dtype)).pow(2).mean()


def smoothness(inputs: LossInputs) -> torch.Tensor:
    """The distance encoding's regulariser (the spline's smoothness loss; 0 for the others)."""
    return inputs.model.backbone.encoding.regularization()


def empp(inputs: LossInputs) -> torch.Tensor:
    """Equivariant masked position prediction (`mlff.training.empp`), nats: needs positions only.

    Masks atoms of the batch's frames and scores the head's direction and radius distributions for
    them (KL to the smoothed truth, mean over (masked atom, neighbour) pairs). Reports the mean
    position error of the masked atoms (Angstrom) as the diagnostic `empp_position_error_a`.
    """
    head = inputs.empp_head
    if head is None:
        raise ValueError(
            "the empp loss term needs the EMPP head, which the trainer builds when train.loss_weights.empp > 0"
        )
    batch = inputs.batch
    result = head(
        inputs.model,
        batch.positions,
        batch.atomic_numbers,
        batch.batch,
        batch.n_atoms,
        inputs.generator,
        pbc=batch.pbc,
    )
    if result.masked.numel():
        inputs.diagnostics["empp_position_error_a"] = result.position_error_a
    return result.loss


LOSSES: dict[str, LossTerm] = {
    "energy": energy_mse,
    "forces": force_mse,
    "forces_mae": force_mae,
    "zero_force": zero_force,
    "denoising": denoising,
    "smoothness": smoothness,
    "empp": empp,
}

# Terms that need no energy or force labels: a run weighting only these trains on positions alone.
LABEL_FREE_TERMS = ("empp", "smoothness")


def label_free(weights: dict[str, float]) -> bool:
    """True when the weighted terms need no labels and EMPP is among them (a label-free pretraining run)."""
    return weights.get("empp", 0.0) > 0.0 and all(
        weight == 0.0 for name, weight in weights.items() if name not in LABEL_FREE_TERMS
    )


def check_loss_weights(weights: dict[str, float]) -> None:
    """Raise ValueError naming any weight whose term is not registered."""
    unknown = sorted(set(weights) - set(LOSSES))
    if unknown:
        raise ValueError(f"unknown loss term(s) {unknown} in train.loss_weights; known: {sorted(LOSSES)}")


def total_loss(
    weights: dict[str, float],
    model: EnergyModel,
    batch: Batch,
    energy: torch.Tensor,
    forces: torch.Tensor,
    settings: LossSettings | None = None,
    generator: torch.Generator | None = None,
    empp_head: Any = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the terms with a non-zero weight, and each term's value.

    Args:
        weights: term name -> weight (train.loss_weights).
        model, batch, energy, forces: the model, the batch and its prediction on it.
        settings: the terms' settings (None: the defaults).
        generator: the denoising noise source (None: torch's global generator).
        empp_head: the EMPP head (needed when the empp weight is non-zero).

    The returned dict also holds the terms' diagnostics (`LossInputs.diagnostics`).
    """
    inputs = LossInputs(model, batch, energy, forces, settings or LossSettings(), generator, empp_head)
    total = torch.zeros((), dtype=torch.float64, device=energy.device)
    parts: dict[str, float] = {}
    for name, weight in weights.items():
        if weight == 0.0:
            continue
        value = LOSSES[name](inputs)
        parts[name] = float(value.detach())
        total = total + weight * value.to(torch.float64)
    parts.update(inputs.diagnostics)
    return total, parts
