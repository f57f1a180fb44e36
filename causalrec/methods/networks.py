"""Torch scoring networks (backbones) shared by the recommenders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MatrixFactorization"]


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
