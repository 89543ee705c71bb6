"""Equivariant Transformer in the style of TorchMD-NET's ET (Tholke & De Fabritiis 2022).

Every atom carries scalar features x [N, F] and vector features v [N, 3, F]
(F = hidden). The distance encoding replaces ET's expnorm radial basis in
every distance filter. Per layer, with heads of width d = F / heads, unit edge
vectors u_ij = (r_j - r_i) / r_ij and env the cosine cutoff envelope:

    y = LN(x);  q, k, (s, g, t) = W_q y, W_k y, W_v y      (per head)
    A_ij = SiLU(q_i . (k_j * D_k(enc_ij))) env_ij           (attention)
    (s, g, t)_ij = (s, g, t)_j * D_v(enc_ij)                 (filtered values)
    m_i = sum_j A_ij s_ij                                    (scalar messages)
    w_i = sum_j env_ij (g_ij v_j + t_ij u_ij)                (vector messages)
    (U1 v, U2 v, U3 v) = W_u v;   (o1, o2, o3) = W_o m
    x_i <- x_i + o2 * <U1 v_i, U2 v_i> + o3                  (gated scalar update)
    v_i <- v_i + o1 * U3 v_i + w_i                           (vector update)

E_i = MLP(LN(x_i)) (TorchMD-NET's "Scalar" head). Scalars see the vectors only
through dot products, so the energy is invariant under rotations and
reflections; no vector norm is taken, whose gradient is undefined at the zero
vectors every atom starts with.

Unlike TorchMD-NET's default, the vector messages are multiplied by the
envelope as well: its filters have biases, so a pair entering the cutoff would
otherwise switch on a finite vector message and make the energy jump.

Neural polarization (option `polarization`, off by default; after "Neural Polarization:
Toward Electron Density for Molecules by Extending Equivariant Networks"): every atom j also
owns a polarization point p_j = r_j + d_j, moved off its nucleus by an equivariant
displacement d_j = W_d v_j (a bias-free linear map of its F vector channels to one vector,
Angstrom). After each layer l a second attention block of the same form (its own weights)
lets every nucleus i receive from the polarization points of its neighbours j:

    d_j = W_d^(l) v_j;   q_ij = p_j - r_i = (r_j - r_i) + d_j;   rho_ij = |q_ij|
    env'_ij = env(r_ij) env(rho_ij);   enc'_ij = enc(rho_ij);   u'_ij = q_ij / rho_ij
    (dx, dvec) = Attention^(l)(x, v; enc', env', u')      x <- x + dx,  v <- v + dvec

The pairs are the nuclear ones (r_ij < cutoff, no new neighbour search). rho_ij may exceed
the cutoff: env(rho_ij) switches such a message off smoothly, and env(r_ij) switches it off
as j leaves the nuclear list, so the energy stays smooth. The energy is a function of the
nuclear positions only (p depends on them through the network), so forces are exact
gradients and the model scripts like the plain one. With the option off no polarization
module exists and `forward` runs the plain loop: the model is exactly the plain one.
"""

import torch
from torch import nn
from torch.nn import functional

from mlff.encodings.base import DistanceEncoding, cosine_envelope
from mlff.models.base import Backbone, check_heads
from mlff.models.neighbors import Edges


class NeighborEmbedding(nn.Module):
    """ET's initial neighbour embedding: x_i <- W [x_i, sum_j env_ij D(enc_ij) * e(z_j)]."""

    def __init__(self, num_species: int, hidden: int, encoding_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_species, hidden)
        self.distance_filter = nn.Linear(encoding_size, hidden)
        self.combine = nn.Linear(2 * hidden, hidden)

    def forward(
        self,
        species: torch.Tensor,
        x: torch.Tensor,
        edge_index: torch.Tensor,
        encoded: torch.Tensor,
        envelope: torch.Tensor,
    ) -> torch.Tensor:
        """Mix each atom's embedding [N, F] with its neighbours' species and distances."""
        weights = self.distance_filter(encoded) * envelope.unsqueeze(-1)
        messages = weights * self.embedding(species[edge_index[1]])
        neighbours = torch.zeros_like(x).index_add(0, edge_index[0], messages)
        return self.combine(torch.cat([x, neighbours], dim=-1))


class EquivariantAttention(nn.Module):
    """One ET layer: distance-filtered attention on scalars, equivariant vector updates.

    Returns the increments (dx [N, F], dvec [N, 3, F]); the caller adds them.
    """

    def __init__(self, hidden: int, heads: int, encoding_size: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.heads = heads
        self.head_dim = hidden // heads
        self.norm = nn.LayerNorm(hidden)
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, 3 * hidden)
        self.output = nn.Linear(hidden, 3 * hidden)
        # No bias: a bias would add a non-equivariant constant vector.
        self.vector_mix = nn.Linear(hidden, 3 * hidden, bias=False)
        self.key_filter = nn.Linear(encoding_size, hidden)
        self.value_filter = nn.Linear(encoding_size, 3 * hidden)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases, as in TorchMD-NET."""
        for layer in (self.query, self.key, self.value, self.output, self.key_filter, self.value_filter):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.xavier_uniform_(self.vector_mix.weight)

    def forward(
        self,
        x: torch.Tensor,
        vec: torch.Tensor,
        edge_index: torch.Tensor,
        encoded: torch.Tensor,
        envelope: torch.Tensor,
        unit_vectors: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Increments of the scalar and vector features.

        Args:
            x: [N, F] scalar features.
            vec: [N, 3, F] vector features.
            edge_index: [2, E] (receiver, sender).
            encoded: [E, s] distance encoding (envelope included).
            envelope: [E] cutoff envelope.
            unit_vectors: [E, 3] (r_j - r_i) / r_ij, dimensionless.

        Returns:
            dx [N, F] and dvec [N, 3, F].
        """
        num_atoms, num_edges = x.size(0), encoded.size(0)
        heads, head_dim = self.heads, self.head_dim
        receiver, sender = edge_index[0], edge_index[1]
        y = self.norm(x)
        query = self.query(y).reshape(num_atoms, heads, head_dim)
        key = self.key(y).reshape(num_atoms, heads, head_dim)
        value = self.value(y).reshape(num_atoms, heads, 3 * head_dim)
        mixed = self.vector_mix(vec)
        vec_dot = (mixed[..., : self.hidden] * mixed[..., self.hidden : 2 * self.hidden]).sum(dim=1)
        vec_self = mixed[..., 2 * self.hidden :]

        key_filter = functional.silu(self.key_filter(encoded)).reshape(num_edges, heads, head_dim)
        value_filter = functional.silu(self.value_filter(encoded)).reshape(num_edges, heads, 3 * head_dim)
        attention = functional.silu((query[receiver] * key[sender] * key_filter).sum(-1)) * envelope.unsqueeze(-1)
        filtered = value[sender] * value_filter
        scalar_values = filtered[..., :head_dim]
        vector_gate = filtered[..., head_dim : 2 * head_dim]
        edge_gate = filtered[..., 2 * head_dim :]

        scalar_messages = (scalar_values * attention.unsqueeze(-1)).reshape(num_edges, self.hidden)
        # [E, 3, F]: neighbour vectors gated per channel, plus the edge direction.
        vector_messages = vec[sender] * vector_gate.reshape(num_edges, 1, self.hidden) + edge_gate.reshape(
            num_edges, 1, self.hidden
        ) * unit_vectors.unsqueeze(-1)
        vector_messages = vector_messages * envelope.reshape(num_edges, 1, 1)
        scalar_sum = torch.zeros_like(x).index_add(0, receiver, scalar_messages)
        vector_sum = torch.zeros_like(vec).index_add(0, receiver, vector_messages)

        gates = self.output(scalar_sum)
        dx = vec_dot * gates[:, self.hidden : 2 * self.hidden] + gates[:, 2 * self.hidden :]
        dvec = vec_self * gates[:, : self.hidden].unsqueeze(1) + vector_sum
        return dx, dvec


class PolarizationBlock(nn.Module):
    """One layer's polarization: displacements d = W_d v and the nucleus <- polarization-point attention."""

    def __init__(self, hidden: int, heads: int, encoding_size: int) -> None:
        super().__init__()
        # No bias, so d is equivariant (and zero while the vector features are).
        self.displacement = nn.Linear(hidden, 1, bias=False)
        self.attention = EquivariantAttention(hidden, heads, encoding_size)


class EquivariantTransformer(Backbone):
    """TorchMD-NET-style equivariant transformer backbone.

    Args:
        num_species: number of distinct elements the model knows.
        encoding: any distance encoding (its size is the filter input size);
            the cutoff comes from it (5 A by default).
        hidden: scalar and vector channels F (default 128); must be divisible by `heads`.
        heads: attention heads per layer (default 8).
        layers: attention layers (default 6).
        polarization: add neural polarization (default False): after every layer, nuclei
            receive messages from their neighbours' polarization points (module docstring).
            Costs a second attention block per layer, about twice the plain model's work.
    """

    VECTOR_FEATURES = True

    def __init__(
        self,
        num_species: int,
        encoding: DistanceEncoding,
        hidden: int = 128,
        heads: int = 8,
        layers: int = 6,
        polarization: bool = False,
    ) -> None:
        super().__init__(num_species, encoding)
        check_heads(hidden, heads)
        self.hidden = hidden
        self.embedding = nn.Embedding(num_species, hidden)
        self.neighbor_embedding = NeighborEmbedding(num_species, hidden, encoding.size)
        self.layers = nn.ModuleList([EquivariantAttention(hidden, heads, encoding.size) for _ in range(layers)])
        self.output_norm = nn.LayerNorm(hidden)
        readout_width = max(hidden // 2, 1)
        self.readout = nn.Sequential(nn.Linear(hidden, readout_width), nn.SiLU(), nn.Linear(readout_width, 1))
        self.polarization = bool(polarization)
        # Empty when off: no parameters, so the state dict is exactly the plain model's.
        self.polarization_blocks = nn.ModuleList(
            [PolarizationBlock(hidden, heads, encoding.size) for _ in range(layers)] if self.polarization else []
        )

    def forward(self, species: torch.Tensor, edges: Edges) -> torch.Tensor:
        x, _ = self.features(species, edges)
        return self.readout(self.output_norm(x)).squeeze(-1)

    def features(self, species: torch.Tensor, edges: Edges) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-atom features after the last layer: scalars x [N, F] and vectors v [N, 3, F].

        `forward` reads the energies from x; training-only heads (EMPP, `mlff.training.empp`) read
        the equivariant vectors v too.
        """
        encoded, envelope = edges.encoded, edges.envelope
        # Pairs are distinct atoms, so distances > 0 and the division is safe.
        unit_vectors = edges.vectors / edges.distances.unsqueeze(-1)
        x = self.neighbor_embedding(species, self.embedding(species), edges.index, encoded, envelope)
        vec = torch.zeros(x.size(0), 3, self.hidden, dtype=x.dtype, device=x.device)
        if self.polarization:
            for layer, block in zip(self.layers, self.polarization_blocks):
                dx, dvec = layer(x, vec, edges.index, encoded, envelope, unit_vectors)
                x = x + dx
                vec = vec + dvec
                displacements = block.displacement(vec).squeeze(-1)  # [N, 3] Angstrom
                vectors = edges.vectors + displacements[edges.index[1]]  # p_j - r_i
                distances = torch.linalg.vector_norm(vectors, dim=-1)
                # p_j can reach r_i only on a measure-zero set; the clamp keeps u' finite there.
                polar_units = vectors / distances.clamp_min(1e-6).unsqueeze(-1)
                own_envelope = cosine_envelope(distances, self.cutoff)
                polar_encoded = self.encoding.with_envelope(distances, own_envelope)
                polar_envelope = envelope * own_envelope
                dx, dvec = block.attention(x, vec, edges.index, polar_encoded, polar_envelope, polar_units)
                x = x + dx
                vec = vec + dvec
            return x, vec
        for layer in self.layers:
            dx, dvec = layer(x, vec, edges.index, encoded, envelope, unit_vectors)
            x = x + dx
            vec = vec + dvec
        return x, vec
