"""Torch scoring networks (backbones) shared by the recommenders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MatrixFactorization", "TwoTower"]


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
