"""Transformer backbone: multi-head self-attention over the atoms within the cutoff.

Following Gao et al. 2022, the encoded interatomic distance goes through an MLP
that gives every pair a bias per head and layer. Each layer is a pre-norm
residual block over the neighbour pairs only:

    a_ij = q_i . k_j / sqrt(d) + b(enc(r_ij))                     (per head)
    w_ij = env(r_ij) exp(a_ij) / (1 + sum_k env(r_ik) exp(a_ik))
    h_i <- h_i + W_o concat_heads(sum_j w_ij v_j)
    h_i <- h_i + FFN(LN(h_i))
    E_i = phi_out(LN(h_i))

The weights are a softmax over the neighbours plus one fixed "null" key of
score 0 and value 0, with each neighbour's term scaled by the cutoff envelope.
A neighbour entering at the cutoff then adds a term that starts at zero with
zero slope, so energies and forces are continuous. The null key is what keeps
the last neighbour continuous too: without it an atom with one neighbour gives
it weight 1 however small its envelope, and 0 once it has left.
"""

import math

import torch
from torch import nn

from mlff.encodings.base import DistanceEncoding
from mlff.models.base import Backbone, check_heads
from mlff.models.neighbors import Edges

FEED_FORWARD_EXPANSION = 2


def envelope_softmax(
    scores: torch.Tensor, envelope: torch.Tensor, receiver: torch.Tensor, num_atoms: int
) -> torch.Tensor:
    """Attention weights of each receiver's neighbours, with a null key and the cutoff envelope.

    w_ij = env_ij exp(a_ij) / (1 + sum_k env_ik exp(a_ik)), per head.

    Args:
        scores: [E, H] attention logits a_ij (dimensionless).
        envelope: [E] cutoff envelope of each pair, in [0, 1].
        receiver: [E] receiving atom i of each pair.
        num_atoms: N.

    Returns:
        [E, H] weights; each receiver's weights sum to less than 1.
    """
    heads = scores.size(1)
    index = receiver.unsqueeze(-1).expand(-1, heads)
    # Subtracting the per-receiver maximum (at least 0, the null key's score)
    # keeps exp() <= 1. The weights do not depend on the shift, so it is
    # detached: its jumps as neighbours come and go change nothing.
    shift = torch.zeros(num_atoms, heads, dtype=scores.dtype, device=scores.device).scatter_reduce(
        0, index, scores.detach(), reduce="amax", include_self=True
    )
    terms = envelope.unsqueeze(-1) * torch.exp(scores - shift[receiver])
    normaliser = torch.exp(-shift).index_add(0, receiver, terms)
    return terms / normaliser[receiver]


class TransformerLayer(nn.Module):
    """One pre-norm attention block and one pre-norm feed-forward block, both residual."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.attention_norm = nn.LayerNorm(hidden)
        self.query_key_value = nn.Linear(hidden, 3 * hidden)
        self.attention_output = nn.Linear(hidden, hidden)
        self.feed_forward_norm = nn.LayerNorm(hidden)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden, FEED_FORWARD_EXPANSION * hidden),
            nn.SiLU(),
            nn.Linear(FEED_FORWARD_EXPANSION * hidden, hidden),
        )

    def forward(
        self,
        h: torch.Tensor,
        edge_index: torch.Tensor,
        bias: torch.Tensor,
        envelope: torch.Tensor,
    ) -> torch.Tensor:
        """Update atom features.

        Args:
            h: [N, hidden] atom features.
            edge_index: [2, E] (receiver, sender).
            bias: [E, heads] distance bias of each pair.
            envelope: [E] cutoff envelope of each pair.

        Returns:
            [N, hidden] updated features.
        """
        num_atoms = h.size(0)
        receiver, sender = edge_index[0], edge_index[1]
        qkv = self.query_key_value(self.attention_norm(h)).reshape(num_atoms, 3, self.heads, self.head_dim)
        query, key, value = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        scores = (query[receiver] * key[sender]).sum(-1) * self.scale + bias
        weights = envelope_softmax(scores, envelope, receiver, num_atoms)
        attended = torch.zeros_like(value).index_add(0, receiver, weights.unsqueeze(-1) * value[sender])
        h = h + self.attention_output(attended.reshape(num_atoms, -1))
        return h + self.feed_forward(self.feed_forward_norm(h))


class Transformer(Backbone):
    """Transformer backbone with distance-biased, envelope-weighted attention over neighbour pairs.

    Args:
        num_species: number of distinct elements the model knows.
        encoding: any distance encoding; an MLP maps it to the attention biases.
        hidden: atom feature width (default 128); must be divisible by `heads`.
        heads: attention heads per layer (default 8).
        layers: attention + feed-forward blocks (default 6).
    """

    def __init__(
        self,
        num_species: int,
        encoding: DistanceEncoding,
        hidden: int = 128,
        heads: int = 8,
        layers: int = 6,
    ) -> None:
        super().__init__(num_species, encoding)
        check_heads(hidden, heads)
        self.heads = heads
        self.num_layers = layers
        self.embedding = nn.Embedding(num_species, hidden)
        # One MLP gives every layer's biases at once: [E, layers * heads].
        self.distance_bias = nn.Sequential(
            nn.Linear(encoding.size, hidden), nn.SiLU(), nn.Linear(hidden, layers * heads)
        )
        self.layers = nn.ModuleList([TransformerLayer(hidden, heads) for _ in range(layers)])
        self.output_norm = nn.LayerNorm(hidden)
        self.readout = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, species: torch.Tensor, edges: Edges) -> torch.Tensor:
        num_edges = edges.distances.size(0)
        biases = self.distance_bias(edges.encoded).reshape(num_edges, self.num_layers, self.heads)
        h = self.embedding(species)
        for index, layer in enumerate(self.layers):
            h = layer(h, edges.index, biases[:, index], edges.envelope)
        return self.readout(self.output_norm(h)).squeeze(-1)
