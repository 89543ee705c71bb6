"""EMPP: equivariant masked position prediction, an auxiliary (or label-free pretraining) loss.

After "Equivariant Masked Position Prediction for Efficient Molecular Representation" (ICLR 2025;
the authors' code: github.com/ajy112/EMPP). Per frame, `masked_atoms_per_frame` atoms are masked
one at a time: each masked atom m gives a copy of its frame without m (m's position and its
edges are gone), on which the backbone computes per-atom scalar features x [n, F] and vector
features v [n, 3, F]. As in the paper, every remaining atom j within the model's cutoff of m's
true position predicts the vector r_m - r_j from its own features and the masked atom's element
(the query), split into a direction and a radius:

- direction: an equivariant angular function f_j(g) on the unit sphere, a sum over C channels of
  harmonic polynomials of degree l = 1..l_max (real spherical harmonics, written in Cartesian form
  and built from vectors W v_j gated by invariants; l = 0 would be a constant, which the softmax
  ignores), evaluated on a grid of G near-uniform directions (a Fibonacci sphere); softmax over the
  grid gives p_j(g). Degree 1 is exp(kappa g.a), a von Mises-Fisher density; degrees 2 and 3 add
  anisotropic and multimodal shapes.
- radius: a softmax p_j(b) over `radius_bins` bin centres b on [0, cutoff] (Angstrom), from invariants.

Loss per pair (nats): KL(q_dir || p_dir) + KL(q_rad || p_rad), where q_dir(g) ~ exp(kappa g . u)
(u = (r_m - r_j) / |r_m - r_j|, kappa = `direction_concentration`) is the true direction smoothed to
the grid's resolution and q_rad(b) ~ exp(-(b - |r_m - r_j|)^2 / (2 w^2)) (w = `radius_width_a`);
the KL is the negative log-likelihood of the (smoothed) true direction and radius less its
constant entropy, so a perfect prediction scores 0. There is no Gaussian-noise model of positions:
the distributions are free categorical ones on the grid and the bins. The loss is the mean over
pairs. (The paper smooths the direction by its SH expansion at a softmax temperature and uses an
MLP over channels on the grid; the vMF kernel here is the same idea, rotation-covariant and simpler.)

During training the grid is turned by a random rotation each call (drawn from the loss's
generator), so no direction is privileged; in eval mode it is fixed. Rotating the input and the
grid together leaves the loss unchanged and rotates every prediction (the head is equivariant;
the only approximation is the grid quadrature).

Position estimate of a masked atom (for the metric): each pair predicts r_j + R_j u_j with u_j the
normalised mean direction of p_j and R_j the mean radius of p_j; the estimates are averaged with
weights 1 / R_j^2 (an angular error moves a far neighbour's estimate more).

The head is training-only: it lives beside the EnergyModel (never inside it), so exported
potentials and the model's state dict are those of a run without EMPP.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from mlff.models.energy import EnergyModel
from mlff.training.config import EMPPConfig


@dataclass
class Masking:
    """Which atoms are masked, and the masked copies of their frames.

    Attributes:
        masked: [M] long, batch row of each masked atom (copy c masks masked[c]).
        kept: [K] long, batch row of each atom kept in some copy.
        copy_batch: [K] long, the copy of each kept atom (non-decreasing).
    """

    masked: torch.Tensor
    kept: torch.Tensor
    copy_batch: torch.Tensor

    @property
    def num_copies(self) -> int:
        return int(self.masked.numel())


@dataclass
class EMPPResult:
    """What the head computed on one batch.

    Attributes:
        loss: scalar tensor, mean over pairs of the direction and radius KL (nats); 0 without pairs.
        direction: mean direction KL (nats). radius: mean radius KL (nats).
        pairs: number of (masked atom, neighbour) pairs.
        masked: [M'] batch rows of the masked atoms that had a neighbour.
        predicted: [M', 3] estimated positions of those atoms, Angstrom (detached).
        target: [M', 3] their true positions, Angstrom.
    """

    loss: torch.Tensor
    direction: float
    radius: float
    pairs: int
    masked: torch.Tensor
    predicted: torch.Tensor
    target: torch.Tensor

    @property
    def position_error_a(self) -> float:
        """Mean distance of the estimated to the true positions of the masked atoms, Angstrom (nan: none)."""
        if self.masked.numel() == 0:
            return math.nan
        return float(torch.linalg.vector_norm(self.predicted - self.target, dim=-1).mean())


def fibonacci_sphere(count: int) -> torch.Tensor:
    """[count, 3] float64 unit vectors, near-uniform on the sphere (equal-area Fibonacci lattice)."""
    index = torch.arange(count, dtype=torch.float64)
    z = 1.0 - (2.0 * index + 1.0) / count
    radius = torch.sqrt((1.0 - z * z).clamp_min(0.0))
    angle = index * math.pi * (3.0 - math.sqrt(5.0))
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle), z], dim=-1)


def random_rotation(generator: torch.Generator | None, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A random proper rotation [3, 3] (Haar-distributed) drawn from `generator`."""
    gaussian = torch.randn(3, 3, generator=generator, dtype=torch.float64, device=device)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if torch.linalg.det(q) < 0:
        q = q * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64, device=device)
    return q.to(dtype)


def mask_atoms(
    batch: torch.Tensor, n_atoms: torch.Tensor, per_frame: int, generator: torch.Generator | None
) -> Masking:
    """Draw min(per_frame, n) distinct atoms of each frame of n >= 2 atoms, each masked in its own copy.

    Round r masks the atom of rank r in a random order of each frame; frames of one atom mask none
    (nothing would be left to predict from).

    Args:
        batch: [N] frame of each atom, non-decreasing (atoms of a frame contiguous).
        n_atoms: [B] atoms per frame.
        per_frame: masked atoms per frame (each in its own copy of the frame).
        generator: source of the draw.
    """
    device = batch.device
    keys = torch.rand(batch.numel(), generator=generator, dtype=torch.float64, device=device)
    order = torch.argsort(batch.to(torch.float64) + keys)
    offsets = torch.cumsum(n_atoms, 0) - n_atoms
    rank = torch.empty_like(batch)
    rank[order] = torch.arange(batch.numel(), device=device) - offsets[batch[order]]
    maskable = n_atoms[batch] >= 2
    masked_parts, kept_parts, copy_parts = [], [], []
    copies = 0
    for round_index in range(per_frame):
        masked = torch.nonzero((rank == round_index) & maskable).squeeze(1)
        if masked.numel() == 0:
            break
        copy_of_frame = torch.full_like(n_atoms, -1)
        copy_of_frame[batch[masked]] = copies + torch.arange(masked.numel(), device=device)
        kept = torch.nonzero((copy_of_frame[batch] >= 0) & (rank != round_index)).squeeze(1)
        masked_parts.append(masked)
        kept_parts.append(kept)
        copy_parts.append(copy_of_frame[batch[kept]])
        copies += masked.numel()
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return Masking(
        masked=torch.cat(masked_parts) if masked_parts else empty,
        kept=torch.cat(kept_parts) if kept_parts else empty,
        copy_batch=torch.cat(copy_parts) if copy_parts else empty,
    )


class EMPPHead(nn.Module):
    """Predicts a masked atom's position relative to each neighbour (module docstring).

    Args:
        hidden: F, the backbone's scalar and vector channels.
        num_species: the model's species count (the query embedding's rows).
        cutoff: Angstrom; neighbours of the masked atom within it predict, and the radius bins span [0, cutoff].
        l_max: highest harmonic degree of the angular function (1..3).
        grid: G, directions of the Fibonacci grid.
        channels: C, angular channels per degree.
        radius_bins: bins of the radius distribution.
        direction_concentration: kappa of the smoothed true direction, 1/rad^2 (its angular width ~ 1/sqrt(kappa)).
        radius_width_a: Angstrom, width of the smoothed true radius.
        masked_atoms_per_frame: atoms masked per frame and call, each in its own copy of the frame.
    """

    def __init__(
        self,
        hidden: int,
        num_species: int,
        cutoff: float,
        l_max: int = 3,
        grid: int = 512,
        channels: int = 16,
        radius_bins: int = 64,
        direction_concentration: float = 50.0,
        radius_width_a: float = 0.1,
        masked_atoms_per_frame: int = 1,
    ) -> None:
        super().__init__()
        if not 1 <= l_max <= 3:
            raise ValueError(f"l_max must be 1, 2 or 3, got {l_max}")
        self.l_max = int(l_max)
        self.channels = int(channels)
        self.cutoff = float(cutoff)
        self.direction_concentration = float(direction_concentration)
        self.radius_width_a = float(radius_width_a)
        self.masked_atoms_per_frame = int(masked_atoms_per_frame)
        self.query = nn.Embedding(num_species, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.scalars = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.radius = nn.Linear(hidden, radius_bins)
        # Degree l takes l vectors per channel: 1 + 2 + 3 blocks of C vectors for l_max 3.
        vectors = channels * self.l_max * (self.l_max + 1) // 2
        # No bias on vectors (a bias vector would break equivariance); the gates are invariants.
        self.vectors = nn.Linear(hidden, vectors, bias=False)
        self.gates = nn.Linear(hidden, vectors)
        # Not persistent: fixed by the settings, so the state dict holds trained weights only.
        self.register_buffer("grid", fibonacci_sphere(grid), persistent=False)
        self.register_buffer("bins", torch.linspace(0.0, float(cutoff), radius_bins), persistent=False)

    def _block(self, projections: torch.Tensor, degree: int, which: int) -> torch.Tensor:
        """Channels [..., C] of vector `which` (0-based) of degree `degree` in the last axis."""
        start = self.channels * (degree * (degree - 1) // 2 + which)
        return projections[..., start : start + self.channels]

    def angular_logits(self, vectors: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """f_j(g) [P, G]: the sum over channels and degrees 1..l_max of harmonic polynomials in g.

        Degree l of channel c is the traceless (harmonic) part of prod_i (g . a_i) over its l vectors
        a_i [P, 3]: g.a; (g.a)(g.b) - a.b / 3; (g.a)(g.b)(g.e) - [(a.b)(g.e) + (a.e)(g.b) + (b.e)(g.a)] / 5
        (for unit g), each a combination of the real spherical harmonics of that degree alone.

        The channels are summed in coefficient space first (a vector, a 3x3 and a 3x3x3 Cartesian
        tensor per pair, 39 numbers), which are then evaluated on the grid's monomials g_i, g_i g_j,
        g_i g_j g_k by one matrix product: the same function, without [P, G, C] intermediates.
        The constant -a.b / 3 of degree 2 is left out: a softmax over the grid ignores constants.

        Args:
            vectors: [P, 3, V] the gated vectors of each pair (V = C l_max (l_max + 1) / 2).
            grid: [G, 3] unit directions.
        """
        pairs = vectors.size(0)
        linear = self._block(vectors, 1, 0).sum(-1)  # [P, 3]
        coefficients = [linear]
        monomials = [grid]
        if self.l_max >= 2:
            a, b = self._block(vectors, 2, 0), self._block(vectors, 2, 1)
            coefficients.append(torch.einsum("pic,pjc->pij", a, b).reshape(pairs, 9))
            monomials.append((grid.unsqueeze(2) * grid.unsqueeze(1)).reshape(-1, 9))
        if self.l_max >= 3:
            a, b, e = (self._block(vectors, 3, k) for k in range(3))
            coefficients.append(torch.einsum("pic,pjc,pkc->pijk", a, b, e).reshape(pairs, 27))
            monomials.append((grid[:, :, None, None] * grid[:, None, :, None] * grid[:, None, None, :]).reshape(-1, 27))
            # The trace part of degree 3 is a degree-1 function: fold it into the linear coefficients.
            trace = (
                (a * b).sum(1, keepdim=True) * e + (a * e).sum(1, keepdim=True) * b + (b * e).sum(1, keepdim=True) * a
            )
            coefficients[0] = linear - trace.sum(-1) / 5.0
        return torch.cat(coefficients, dim=-1) @ torch.cat(monomials, dim=-1).T

    def forward(
        self,
        model: EnergyModel,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        batch: torch.Tensor,
        n_atoms: torch.Tensor,
        generator: torch.Generator | None = None,
        rotation: torch.Tensor | None = None,
        pbc: torch.Tensor | None = None,
    ) -> EMPPResult:
        """Mask atoms of the frames, predict them, and score the predictions.

        Args:
            model: the energy model whose backbone gives the features (must have `features`).
            positions: [N, 3] Angstrom. atomic_numbers: [N]. batch: [N] frame of each atom (non-decreasing).
            n_atoms: [B] atoms per frame.
            generator: source of the masking (and, in training mode, of the grid rotation).
            rotation: [3, 3] turns the grid (None: a random rotation in training mode, none in eval mode).
            pbc: [B, 3] periodic flags; any true is refused (EMPP masks atoms of molecules).
        """
        if pbc is not None and bool(pbc.any()):
            raise ValueError("EMPP masks atoms of molecules: periodic frames are not supported")
        dtype, device = positions.dtype, positions.device
        masking = mask_atoms(batch, n_atoms, self.masked_atoms_per_frame, generator)
        if rotation is None and self.training:
            rotation = random_rotation(generator, dtype, device)
        grid = self.grid.to(dtype)
        if rotation is not None:
            grid = grid @ rotation.to(dtype).T
        if masking.num_copies == 0:
            return self._empty(positions)
        kept_positions = positions[masking.kept].detach()
        species = model.species_table[atomic_numbers[masking.kept]]
        edges = model.edges(kept_positions, masking.copy_batch, masking.num_copies)
        x, vec = model.backbone.features(species, edges)

        masked_rows = masking.masked[masking.copy_batch]
        relative = (positions[masked_rows] - kept_positions).detach()  # r_m - r_j [K, 3]
        distance = torch.linalg.vector_norm(relative, dim=-1)
        pairs = torch.nonzero(distance < self.cutoff).squeeze(1)  # kept-atom rows that predict
        if pairs.numel() == 0:
            return self._empty(positions)
        query = self.query(model.species_table[atomic_numbers[masked_rows[pairs]]])
        scalars = self.scalars(torch.cat([self.norm(x[pairs]), query], dim=-1))
        vectors = self.vectors(vec[pairs]) * self.gates(scalars).unsqueeze(1)
        log_direction = torch.log_softmax(self.angular_logits(vectors, grid), dim=-1)
        log_radius = torch.log_softmax(self.radius(scalars), dim=-1)

        length = distance[pairs]
        unit = relative[pairs] / length.unsqueeze(-1)
        log_direction_target = torch.log_softmax(self.direction_concentration * unit @ grid.T, dim=-1)
        bins = self.bins.to(dtype)
        log_radius_target = torch.log_softmax(
            -((bins - length.unsqueeze(-1)) ** 2) / (2.0 * self.radius_width_a**2), dim=-1
        )
        direction_kl = (log_direction_target.exp() * (log_direction_target - log_direction)).sum(-1)
        radius_kl = (log_radius_target.exp() * (log_radius_target - log_radius)).sum(-1)

        with torch.no_grad():
            mean_direction = log_direction.exp() @ grid
            unit_estimate = mean_direction / torch.linalg.vector_norm(mean_direction, dim=-1, keepdim=True).clamp_min(
                1e-12
            )
            radius_estimate = log_radius.exp() @ bins
            estimate = kept_positions[pairs] + radius_estimate.unsqueeze(-1) * unit_estimate
            weight = 1.0 / radius_estimate.clamp_min(0.1).pow(2)
            copies = masking.copy_batch[pairs]
            count = masking.num_copies
            weight_sum = torch.zeros(count, dtype=dtype, device=device).index_add(0, copies, weight)
            summed = torch.zeros(count, 3, dtype=dtype, device=device).index_add(
                0, copies, weight.unsqueeze(-1) * estimate
            )
            seen = weight_sum > 0
            predicted = summed[seen] / weight_sum[seen].unsqueeze(-1)
            masked = masking.masked[seen]
        return EMPPResult(
            loss=(direction_kl + radius_kl).mean(),
            direction=float(direction_kl.detach().mean()),
            radius=float(radius_kl.detach().mean()),
            pairs=int(pairs.numel()),
            masked=masked,
            predicted=predicted,
            target=positions[masked].detach(),
        )

    def _empty(self, positions: torch.Tensor) -> EMPPResult:
        """The result of a batch with nothing to predict (frames of one atom, or no neighbours)."""
        none = torch.zeros(0, dtype=torch.long, device=positions.device)
        return EMPPResult(
            loss=torch.zeros((), dtype=positions.dtype, device=positions.device),
            direction=0.0,
            radius=0.0,
            pairs=0,
            masked=none,
            predicted=positions.new_zeros(0, 3),
            target=positions.new_zeros(0, 3),
        )


def build_empp_head(backbone_name: str, model: EnergyModel, weight: float, settings: EMPPConfig) -> EMPPHead | None:
    """The EMPP head of a run, or None when its loss weight is 0 (then nothing is built or drawn).

    Raises:
        ValueError: the backbone carries no per-atom vector features (only such backbones can predict
            a direction equivariantly).
    """
    if weight == 0.0:
        return None
    backbone = model.backbone
    if not getattr(backbone, "VECTOR_FEATURES", False) or not hasattr(backbone, "features"):
        from mlff.models import BACKBONES

        capable = sorted(name for name, cls in BACKBONES.items() if getattr(cls, "VECTOR_FEATURES", False))
        raise ValueError(
            f"train.loss_weights.empp needs a backbone with per-atom vector features ({', '.join(capable)}); "
            f"model.backbone {backbone_name!r} has none"
        )
    head = EMPPHead(
        hidden=int(backbone.hidden),
        num_species=len(model.species),
        cutoff=model.cutoff,
        l_max=settings.l_max,
        grid=settings.grid,
        channels=settings.channels,
        radius_bins=settings.radius_bins,
        direction_concentration=settings.direction_concentration,
        radius_width_a=settings.radius_width_a,
        masked_atoms_per_frame=settings.masked_atoms_per_frame,
    )
    reference = model.energy_scale
    return head.to(dtype=reference.dtype, device=reference.device)


def evaluate_empp(
    head: EMPPHead, model: EnergyModel, data, frame_indices, batch_size: int, seed: int
) -> dict[str, float]:
    """EMPP loss (nats, mean over pairs) and masked-atom position error (Angstrom, mean over atoms) on frames.

    The masked atoms are drawn from `seed` and the grid is not turned, so the figures of one
    set of weights are reproducible.

    Args:
        head, model: the (EMA) head and model, put in eval mode here.
        data: a FrameTensors-like source with `batch(indices)`.
        frame_indices: the frames (e.g. the validation split).
        batch_size: frames per evaluation batch.
        seed: seeds the masking.
    """
    import numpy as np

    head.eval()
    model.eval()
    generator = torch.Generator(device=data.device).manual_seed(seed)
    frame_indices = np.asarray(frame_indices)
    loss_sum, pairs, error_sum, atoms = 0.0, 0, 0.0, 0
    with torch.no_grad():
        for start in range(0, frame_indices.size, batch_size):
            batch = data.batch(frame_indices[start : start + batch_size])
            result = head(
                model, batch.positions, batch.atomic_numbers, batch.batch, batch.n_atoms, generator, pbc=batch.pbc
            )
            loss_sum += float(result.loss) * result.pairs
            pairs += result.pairs
            if result.masked.numel():
                error_sum += float(torch.linalg.vector_norm(result.predicted - result.target, dim=-1).sum())
                atoms += int(result.masked.numel())
    return {
        "empp_loss": loss_sum / pairs if pairs else math.nan,
        "empp_position_error_a": error_sum / atoms if atoms else math.nan,
    }
