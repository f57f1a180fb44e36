"""A neural causal recommender: shared representation, propensity and outcome heads.

DragonNet (Shi et al. 2019) adapted to exposure as the treatment. A user–item representation
φ(u, i) = ReLU(W (p_u ⊙ q_i) + b) feeds two heads: g(u, i) = P(exposed | u, i), trained on the
exposed pairs against uniformly sampled pairs, and q(u, i) = P(click | exposed, u, i), trained
on the exposed pairs with weights 1/g (the learned propensity, held fixed in that term). The
targeted regulariser of DragonNet, mean (y − q − ε / g)² over exposed pairs with a learned ε,
makes the outcome head satisfy the efficient-influence-function estimating equation.
Recommendations rank by q.

References:
    Shi, Blei, Veitch, "Adapting Neural Networks for the Estimation of Treatment Effects",
    NeurIPS 2019.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from causalrec.methods.data import Feedback, InteractionData
from causalrec.methods.torch_base import TorchRecommender
from causalrec.platform.errors import ConfigError
from causalrec.platform.feedback import LoggedFeedback

__all__ = ["CausalNet", "CausalNetwork"]


class CausalNetwork(nn.Module):
    """Embeddings, a shared hidden layer, a propensity head, an outcome head and ε."""

    _USERS_PER_CHUNK = 256

    def __init__(self, n_users: int, n_items: int, dim: int, hidden: int, generator):
        super().__init__()
        self.user = nn.Parameter(0.1 * torch.randn(n_users, dim, generator=generator))
        self.item = nn.Parameter(0.1 * torch.randn(n_items, dim, generator=generator))
        self.shared = nn.Linear(dim, hidden)
        self.propensity_head = nn.Linear(hidden, 1)
        self.outcome_head = nn.Linear(hidden, 1)
        self.epsilon = nn.Parameter(torch.zeros(()))
        with torch.no_grad():  # seeded initialisation of the linear layers too
            for layer in (self.shared, self.propensity_head, self.outcome_head):
                bound = 1.0 / np.sqrt(layer.in_features)
                layer.weight.copy_(
                    (torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound
                )
                layer.bias.zero_()

    def heads(self, users, items) -> tuple[torch.Tensor, torch.Tensor]:
        """(propensity logits, outcome logits) of pairs."""
        hidden = F.relu(self.shared(F.embedding(users, self.user) * F.embedding(items, self.item)))
        return self.propensity_head(hidden)[:, 0], self.outcome_head(hidden)[:, 0]

    def forward(self, users, items):
        """Outcome logits of pairs."""
        return self.heads(users, items)[1]

    def all_items(self, users):
        """Outcome logits of every item, users in chunks to bound memory."""
        out = []
        for start in range(0, len(users), self._USERS_PER_CHUNK):
            chunk = users[start : start + self._USERS_PER_CHUNK]
            product = self.user[chunk][:, None, :] * self.item[None, :, :]
            hidden = F.relu(self.shared(product))
            out.append(self.outcome_head(hidden)[..., 0])
        return torch.cat(out)


class CausalNet(TorchRecommender):
    """DragonNet-style joint propensity/outcome recommender (exposed setting).

    Args:
        hidden: Width of the shared representation.
        propensity_weight: Weight of the propensity head's loss (α).
        targeted_weight: Weight of the targeted regulariser (β).
        unexposed: Uniformly drawn pairs per exposed pair for the propensity head.
        dim, lr, weight_decay, epochs, batch_size, feedback, negatives, backbone, device, seed:
            Shared torch parameters (see :class:`TorchRecommender`).
        history_length, layers, heads, dropout, num_workers, precision, compile: Shared torch
            parameters too (this method uses the ``mf`` backbone; see :class:`TorchRecommender`).
    """

    name: ClassVar[str] = "causalnet"
    supported_feedback: ClassVar[tuple[str, ...]] = ("exposed",)
    supported_backbones: ClassVar[tuple[str, ...]] = ("mf",)
    stream_columns: ClassVar[tuple[str, ...] | None] = ()

    def __init__(
        self,
        *,
        hidden: int = 32,
        propensity_weight: float = 1.0,
        targeted_weight: float = 0.1,
        unexposed: int = 4,
        dim: int = 32,
        lr: float = 0.01,
        weight_decay: float = 1e-6,
        epochs: int = 10,
        batch_size: int = 16_384,
        feedback: Feedback = "exposed",
        negatives: int = 4,
        backbone: str = "mf",
        history_length: int = 20,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.1,
        num_workers: int = 1,
        precision: str = "auto",
        compile: bool = False,
        device: str = "auto",
        seed: int = 0,
    ):
        super().__init__(
            dim=dim,
            lr=lr,
            weight_decay=weight_decay,
            epochs=epochs,
            batch_size=batch_size,
            feedback=feedback,
            negatives=negatives,
            backbone=backbone,
            history_length=history_length,
            layers=layers,
            heads=heads,
            dropout=dropout,
            num_workers=num_workers,
            precision=precision,
            compile=compile,
            device=device,
            seed=seed,
        )
        self.hidden = hidden
        self.propensity_weight = propensity_weight
        self.targeted_weight = targeted_weight
        self.unexposed = unexposed

    def _validate(self) -> None:
        super()._validate()
        if self.hidden < 1 or self.unexposed < 1:
            raise ConfigError(
                f"hidden and unexposed must be >= 1; got {self.hidden}, {self.unexposed}"
            )
        for name in ("propensity_weight", "targeted_weight"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0; got {getattr(self, name)}")

    def _build_network(self, n_users, n_items, generator):
        return CausalNetwork(n_users, n_items, self.dim, self.hidden, generator)

    def _prepare(self, logs: LoggedFeedback, data: InteractionData) -> dict[str, np.ndarray]:
        return {}

    def _sample(self, data, size, rng, device):
        count = size * self.unexposed
        return {
            "neg_users": torch.from_numpy(rng.integers(data.n_users, size=count)).to(device),
            "neg_items": torch.from_numpy(rng.integers(data.n_items, size=count)).to(device),
        }

    def _losses(self, batch, networks):
        network = networks["main"]
        exposed_logit, outcome_logit = network.heads(batch["users"], batch["items"])
        sampled_logit, _ = network.heads(batch["neg_users"], batch["neg_items"])
        propensity_loss = 0.5 * (
            F.binary_cross_entropy_with_logits(exposed_logit, torch.ones_like(exposed_logit))
            + F.binary_cross_entropy_with_logits(sampled_logit, torch.zeros_like(sampled_logit))
        )
        g = torch.sigmoid(exposed_logit).clamp(min=1e-3)
        weight = (1.0 / g).detach()
        weight = weight / weight.mean()
        labels = batch["labels"]
        outcome = F.binary_cross_entropy_with_logits(outcome_logit, labels, reduction="none")
        outcome_loss = (weight * outcome).mean()
        q = torch.sigmoid(outcome_logit)
        targeted = ((labels - q - network.epsilon / g) ** 2).mean()
        loss = outcome_loss + self.propensity_weight * propensity_loss
        return {"main": loss + self.targeted_weight * targeted}
