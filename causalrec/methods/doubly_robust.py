"""Doubly robust joint learning (DR-JL) and more robust doubly robust (MRDR) recommenders.

Exposed setting. A prediction model f (the recommender) and an imputation model g (a second MF
whose sigmoid is an imputed click probability) are trained jointly. With e = ℓ(y, f) the loss on
an exposed pair, ê = ℓ(g, f) the imputed loss (cross-entropy of f against g's imputed label) and
w the normalised inverse propensity of the logged row:

* f minimises  mean_{uniform items j} ê(u, j) + w · (e − ê)   — the doubly robust estimate of
  the loss over all items (g held fixed);
* g minimises  v · (e − ê)²  on exposed pairs (f held fixed), with v = w for DR-JL and
  v ∝ (1 − p) / p² for MRDR, which targets the variance of the DR estimate.

References:
    Wang, Zhang, Sun, Qi, "Doubly Robust Joint Learning for Recommendation on Data Missing Not
    at Random", ICML 2019.
    Guo, Zou, Song, Zhang, Dong, Zhang, "Enhanced Doubly Robust Learning for Debiasing
    Post-Click Conversion Rate Estimation", SIGIR 2021.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from causalrec.methods.data import Feedback
from causalrec.methods.ips import IPSMF
from causalrec.methods.networks import MatrixFactorization
from causalrec.platform.errors import ConfigError

__all__ = ["DRJointLearning", "MoreRobustDR"]


class DRJointLearning(IPSMF):
    """DR-JL (Wang et al. 2019): a recommender and an imputation model trained jointly.

    Args:
        imputation_samples: Uniformly drawn items per logged row for the imputed-loss term.
        propensity: ``auto``, ``logged``, ``popularity`` or ``logistic``.
        propensity_floor: Propensities are clipped below at this value.
        dim, lr, weight_decay, epochs, batch_size, feedback, negatives, backbone, device, seed:
            Shared torch parameters (see :class:`TorchRecommender`).
        history_length, layers, heads, dropout, num_workers, precision, compile: Shared torch
            parameters of the ``transformer`` backbone, of data-parallel and of mixed-precision
            or compiled training (see :class:`TorchRecommender`).

    IPSMF's ``adversarial_gamma`` and ``augment`` are not parameters here (left at their
    defaults: no robust or augmented variant).
    """

    name: ClassVar[str] = "dr_jl"
    supported_feedback: ClassVar[tuple[str, ...]] = ("exposed",)
    mean_normalised: ClassVar[tuple[str, ...]] = ("weight", "imputation_weight")

    def __init__(
        self,
        *,
        imputation_samples: int = 4,
        propensity: str = "auto",
        propensity_floor: float | None = None,
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
            propensity=propensity,
            propensity_floor=propensity_floor,
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
        self.imputation_samples = imputation_samples

    def _validate(self) -> None:
        super()._validate()
        if self.imputation_samples < 1:
            raise ConfigError(f"imputation_samples must be >= 1; got {self.imputation_samples}")

    def _imputation_weight(self, p: np.ndarray) -> np.ndarray:
        return 1.0 / p

    def _weights(self, p: np.ndarray) -> dict[str, np.ndarray]:
        # Each normalised by its mean (IPSMF._prepare in memory, the stream's sums when streamed).
        return {"weight": 1.0 / p, "imputation_weight": self._imputation_weight(p)}

    def _build_networks(self, data, generator):
        return {
            "main": self._build_network(data.n_users, data.n_items, generator),
            # The imputation model reads what the prediction model reads (ids, or histories).
            "imputation": (
                self._build_network(data.n_users, data.n_items, generator)
                if self.backbone == "transformer"
                else MatrixFactorization(data.n_users, data.n_items, self.dim, generator)
            ),
        }

    def _sample(self, data, size, rng, device):
        items = rng.integers(data.n_items, size=(size, self.imputation_samples))
        return {"uniform_items": torch.from_numpy(items).to(device)}

    def _losses(self, batch, networks):
        main, imputation = networks["main"], networks["imputation"]
        users, items, labels = batch["users"], batch["items"], batch["labels"]
        logits = main(users, items)
        imputed = torch.sigmoid(imputation(users, items))
        error = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        # Prediction model: DR estimate of the loss over all items, imputation model fixed.
        imputed_error = F.binary_cross_entropy_with_logits(
            logits, imputed.detach(), reduction="none"
        )
        m = batch["uniform_items"].shape[1]
        all_users = users.repeat_interleave(m)
        all_items = batch["uniform_items"].reshape(-1)
        all_logits = main(all_users, all_items)
        all_imputed = torch.sigmoid(imputation(all_users, all_items)).detach()
        direct = F.binary_cross_entropy_with_logits(all_logits, all_imputed)
        main_loss = direct + (batch["weight"] * (error - imputed_error)).mean()
        # Imputation model: weighted squared error of the imputed loss, prediction model fixed.
        detached = logits.detach()
        imputation_error = F.binary_cross_entropy_with_logits(detached, imputed, reduction="none")
        residual = error.detach() - imputation_error
        imputation_loss = (batch["imputation_weight"] * residual**2).mean()
        return {"main": main_loss, "imputation": imputation_loss}


class MoreRobustDR(DRJointLearning):
    """MRDR (Guo et al. 2021): DR-JL whose imputation loss is weighted by (1 − p) / p².

    Args:
        imputation_samples, propensity, propensity_floor: As in :class:`DRJointLearning`.
        dim, lr, weight_decay, epochs, batch_size, feedback, negatives, backbone, device, seed:
            Shared torch parameters (see :class:`TorchRecommender`).
        history_length, layers, heads, dropout, num_workers, precision, compile: Shared torch
            parameters of the ``transformer`` backbone, of data-parallel and of mixed-precision
            or compiled training (see :class:`TorchRecommender`).
    """

    name: ClassVar[str] = "mrdr"

    def _imputation_weight(self, p: np.ndarray) -> np.ndarray:
        return (1.0 - p) / p**2
