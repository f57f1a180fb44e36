"""CausE: causal embeddings from a small uniform-exposure slice (Bonner & Vasile 2018).

Two item representations are learned with shared user embeddings: a *treatment* one from the
logged (biased) rows and a *control* one from the rows whose exposure was uniformly random
(``policy == "uniform"`` in the log, see ``uniform_fraction``). A penalty λ‖t_i − c_i‖² pulls
the treatment embeddings towards the unbiased control ones; recommendations use the treatment
representation.

References:
    Bonner & Vasile, "Causal Embeddings for Recommendation", RecSys 2018.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from causalrec.methods.data import Feedback, InteractionData
from causalrec.methods.networks import MatrixFactorization
from causalrec.methods.torch_base import TorchRecommender
from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.feedback import LoggedFeedback

__all__ = ["CausE", "CausENetwork"]


class CausENetwork(MatrixFactorization):
    """MF whose items have a treatment (scoring) and a control embedding and bias."""

    def __init__(self, n_users: int, n_items: int, dim: int, generator: torch.Generator):
        super().__init__(n_users, n_items, dim, generator)
        self.control_item = nn.Parameter(0.1 * torch.randn(n_items, dim, generator=generator))
        self.control_item_bias = nn.Parameter(torch.zeros(n_items))

    def control(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of pairs under the control (uniform-exposure) representation."""
        dot = (F.embedding(users, self.user) * F.embedding(items, self.control_item)).sum(dim=1)
        item_bias = F.embedding(items, self.control_item_bias[:, None])[:, 0]
        user_bias = F.embedding(users, self.user_bias[:, None])[:, 0]
        return dot + user_bias + item_bias + self.bias


class CausE(TorchRecommender):
    """CausE-prod: treatment item embeddings regularised towards control ones.

    Args:
        distance_weight: λ of the treatment–control penalty.
        dim, lr, weight_decay, epochs, batch_size, feedback, negatives, backbone, device, seed:
            Shared torch parameters (see :class:`TorchRecommender`).
        history_length, layers, heads, dropout, num_workers, precision, compile: Shared torch
            parameters too (this method uses the ``mf`` backbone; see :class:`TorchRecommender`).
    """

    name: ClassVar[str] = "cause"
    supported_feedback: ClassVar[tuple[str, ...]] = ("exposed",)
    supported_backbones: ClassVar[tuple[str, ...]] = ("mf",)
    stream_columns: ClassVar[tuple[str, ...] | None] = ("policy",)

    def __init__(
        self,
        *,
        distance_weight: float = 0.1,
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
        self.distance_weight = distance_weight

    def _validate(self) -> None:
        super()._validate()
        if not self.distance_weight >= 0:
            raise ConfigError(f"distance_weight must be >= 0; got {self.distance_weight}")

    def _build_network(self, n_users, n_items, generator):
        return CausENetwork(n_users, n_items, self.dim, generator)

    def _row_arrays(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"uniform": (np.asarray(columns["policy"]) == "uniform").astype(np.float32)}

    def _check_row_means(self, means: dict[str, float]) -> None:
        if not means["uniform"] > 0:
            raise DataError(
                "cause needs a uniform-exposure slice (rows with policy 'uniform'); simulate "
                "with --uniform-fraction > 0 (e.g. 0.05)"
            )

    def _prepare(self, logs: LoggedFeedback, data: InteractionData) -> dict[str, np.ndarray]:
        arrays = self._row_arrays({"policy": logs.policy})
        self._check_row_means({key: float(value.mean()) for key, value in arrays.items()})
        return arrays

    def _losses(self, batch, networks):
        network = networks["main"]
        users, items, labels, uniform = (
            batch["users"], batch["items"], batch["labels"], batch["uniform"],
        )  # fmt: skip
        biased = 1.0 - uniform
        treatment = F.binary_cross_entropy_with_logits(
            network(users, items), labels, reduction="none"
        )
        control = F.binary_cross_entropy_with_logits(
            network.control(users, items), labels, reduction="none"
        )
        loss = (treatment * biased).sum() / biased.sum().clamp(min=1.0)
        loss = loss + (control * uniform).sum() / uniform.sum().clamp(min=1.0)
        unique_items = torch.unique(items)
        gap = F.embedding(unique_items, network.item) - F.embedding(
            unique_items, network.control_item
        )
        loss = loss + self.distance_weight * (gap**2).sum(dim=1).mean()
        return {"main": loss}
