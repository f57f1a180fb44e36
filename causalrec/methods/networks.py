"""Torch scoring networks (backbones) shared by the recommenders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MatrixFactorization", "SequentialTransformer", "TwoTower"]


class MatrixFactorization(nn.Module):
    """logit(u, i) = p_u · q_i + b_u + b_i + b_0 with ID embeddings.

    Args:
        n_users: Number of users.
        n_items: Number of items.
        dim: Embedding dimension.
        generator: Source of the initial weights (N(0, 0.1²)).

    References:
        Koren, Bell, Volinsky, "Matrix Factorization Techniques for Recommender Systems",
        Computer 2009.
    """

    def __init__(self, n_users: int, n_items: int, dim: int, generator: torch.Generator):
        super().__init__()
        self.user = nn.Parameter(0.1 * torch.randn(n_users, dim, generator=generator))
        self.item = nn.Parameter(0.1 * torch.randn(n_items, dim, generator=generator))
        self.user_bias = nn.Parameter(torch.zeros(n_users))
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of pairs: users, items of shape (b,) -> (b,)."""
        # F.embedding's CPU backward sums gradients in index order: deterministic and fast.
        dot = (F.embedding(users, self.user) * F.embedding(items, self.item)).sum(dim=1)
        user_bias = F.embedding(users, self.user_bias[:, None])[:, 0]
        item_bias = F.embedding(items, self.item_bias[:, None])[:, 0]
        return dot + user_bias + item_bias + self.bias

    def all_items(self, users: torch.Tensor) -> torch.Tensor:
        """Logits of every item: users (b,) -> (b, n_items)."""
        logits = self.user[users] @ self.item.T + self.item_bias[None, :]
        return logits + (self.user_bias[users] + self.bias)[:, None]


class TwoTower(nn.Module):
    """logit(u, i) = f(x_u) · g(z_i) + b with MLP towers over observed features.

    The towers see only the user and item feature tables (stored as buffers, so a saved model
    is self-contained), which lets the model score users and items it was not trained on.

    Args:
        user_features: Shape (n_users, d_user).
        item_features: Shape (n_items, d_item).
        dim: Output dimension of both towers.
        hidden: Hidden width of both towers.
        generator: Source of the initial weights.

    References:
        Yi, Yang, Hong, Cheng, Heldt, Kumthekar, Zhao, Wei, Chi, "Sampling-Bias-Corrected
        Neural Modeling for Large Corpus Item Recommendations", RecSys 2019.
    """

    def __init__(
        self,
        user_features: torch.Tensor,
        item_features: torch.Tensor,
        dim: int,
        hidden: int,
        generator: torch.Generator,
    ):
        super().__init__()
        self.register_buffer("user_features", user_features.float())
        self.register_buffer("item_features", item_features.float())
        self.user_tower = self._tower(user_features.shape[1], hidden, dim, generator)
        self.item_tower = self._tower(item_features.shape[1], hidden, dim, generator)
        self.bias = nn.Parameter(torch.zeros(()))

    @staticmethod
    def _tower(inputs: int, hidden: int, outputs: int, generator: torch.Generator) -> nn.Module:
        layers = [nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs)]
        with torch.no_grad():  # seeded initialisation
            for layer in (layers[0], layers[2]):
                bound = 1.0 / float(layer.in_features) ** 0.5
                layer.weight.copy_(
                    (torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound
                )
                layer.bias.zero_()
        return nn.Sequential(*layers)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of pairs: users, items of shape (b,) -> (b,)."""
        user = self.user_tower(self.user_features[users])
        item = self.item_tower(self.item_features[items])
        return (user * item).sum(dim=1) + self.bias

    def all_items(self, users: torch.Tensor) -> torch.Tensor:
        """Logits of every item: users (b,) -> (b, n_items)."""
        return self.all_items_from_features(self.user_features[users])

    def all_items_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of every item for users given by features: (b, d_user) -> (b, n_items)."""
        return self.user_tower(features) @ self.item_tower(self.item_features).T + self.bias


class SequentialTransformer(nn.Module):
    """logit(h, i) = s(h) · e_i + b_i, with s(h) a self-attention encoding of the history h.

    A SASRec-style encoder (Kang & McAuley 2018) over the user's last L impressions, oldest
    first. Each history step is the sum of the item's embedding, a click embedding and a
    position embedding; a learned query token at position L attends to every non-empty step
    (pre-norm Transformer layers), and its output is the user's state s(h). Item embeddings are
    shared between the input and the output (as in SASRec), so an empty history still scores
    items by their biases and the query token's state.

    ``forward(contexts, items)`` and ``all_items(contexts)`` read the histories of row
    ``contexts`` of a context table (:meth:`set_contexts`: the rounds' histories while training,
    each user's latest history when scoring by user id), so the losses written for ID models
    work unchanged; :meth:`all_items_from_history` scores given histories.

    Args:
        n_items: Catalogue size (item id ``n_items`` is the empty slot).
        length: L, history steps.
        dim: Width d of every token and of the state.
        layers: Transformer layers.
        heads: Attention heads (must divide ``dim``).
        dropout: Dropout in the layers (training only).
        generator: Source of the initial weights.

    References:
        Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018.
        Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
    """

    def __init__(
        self,
        n_items: int,
        length: int,
        dim: int,
        layers: int,
        heads: int,
        dropout: float,
        generator: torch.Generator,
    ):
        super().__init__()
        self.n_items, self.length = n_items, length
        self.item = nn.Parameter(0.1 * torch.randn(n_items + 1, dim, generator=generator))
        self.click = nn.Parameter(0.1 * torch.randn(2, dim, generator=generator))
        self.position = nn.Parameter(0.1 * torch.randn(length + 1, dim, generator=generator))
        self.query = nn.Parameter(0.1 * torch.randn(dim, generator=generator))
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        with torch.random.fork_rng(devices=[]):  # torch's draws here are overwritten below
            layer = nn.TransformerEncoderLayer(
                dim, heads, 2 * dim, dropout=dropout, batch_first=True, norm_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        # Seeded initialisation of the layers: torch's own draws (nn.Linear's weights and
        # biases) come from the global stream. Matrices are Xavier uniform, biases zero (as in
        # BERT) and the layer norms keep their ones and zeros.
        with torch.no_grad():
            for name, parameter in self.encoder.named_parameters():
                if parameter.dim() > 1:
                    bound = (6.0 / sum(parameter.shape[:2])) ** 0.5
                    parameter.copy_(
                        (torch.rand(parameter.shape, generator=generator) * 2 - 1) * bound
                    )
                elif name.endswith("bias"):
                    parameter.zero_()
        self.norm = nn.LayerNorm(dim)
        empty = torch.zeros(0, length, dtype=torch.long)
        self.register_buffer("context_items", empty, persistent=False)
        self.register_buffer("context_clicks", empty.clone(), persistent=False)

    def set_contexts(self, items: torch.Tensor, clicks: torch.Tensor) -> None:
        """The histories that context ids refer to, shape (n_contexts, L) each (NO_ITEM: -1)."""
        device = self.item.device
        self.context_items = items.to(device=device, dtype=torch.long)
        self.context_clicks = clicks.to(device=device, dtype=torch.long)

    def encode(self, items: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
        """User states of histories: items, clicks of shape (b, L) -> (b, d)."""
        empty = items < 0
        tokens = F.embedding(torch.where(empty, self.n_items, items), self.item)
        tokens = tokens + F.embedding(clicks.clamp(0, 1), self.click) + self.position[:-1]
        query = (self.query + self.position[-1]).expand(len(items), 1, -1)
        sequence = torch.cat([tokens, query], dim=1)
        mask = torch.cat([empty, torch.zeros_like(empty[:, :1])], dim=1)
        return self.norm(self.encoder(sequence, src_key_padding_mask=mask)[:, -1])

    def _states(self, contexts: torch.Tensor) -> torch.Tensor:
        """States of context rows (b,) -> (b, d), each distinct row encoded once."""
        unique, inverse = torch.unique(contexts, return_inverse=True)
        states = self.encode(self.context_items[unique], self.context_clicks[unique])
        return states[inverse]

    def forward(self, contexts: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of pairs: context rows, items of shape (b,) -> (b,)."""
        states = self._states(contexts)
        return (states * F.embedding(items, self.item)).sum(dim=1) + self.item_bias[items]

    def all_items(self, contexts: torch.Tensor) -> torch.Tensor:
        """Logits of every item: context rows (b,) -> (b, n_items)."""
        return self._all_items(self._states(contexts))

    def all_items_from_history(self, items: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
        """Logits of every item for given histories, shape (b, L) each -> (b, n_items)."""
        return self._all_items(self.encode(items, clicks))

    def _all_items(self, states: torch.Tensor) -> torch.Tensor:
        return states @ self.item[:-1].T + self.item_bias[None, :]
