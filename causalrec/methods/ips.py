"""Naive matrix factorisation and its inverse-propensity-weighted versions (IPS, SNIPS).

Exposed setting, with ℓ the logistic loss and p the exposure propensity of each example:

* naive:  mean ℓ(y, ŷ) over exposed pairs — learns the exposure bias back.
* ips:    mean ℓ(y, ŷ) · w with w = (1/p) / mean(1/p): an unbiased estimate (up to a constant)
  of the loss over all user–item pairs (Schnabel et al. 2016).
* snips:  Σ ℓ w / Σ w per mini-batch (self-normalised; Swaminathan & Joachims 2015).

Implicit setting (clicks are positives, uniform negatives are unlabelled): the pointwise loss
over positives P and sampled pairs N,
[Σ_P ((1/θ) ℓ(1, ŷ) + (1 − 1/θ) ℓ(0, ŷ)) + Σ_N ℓ(0, ŷ)] / (|P| + |N|), with θ the exposure
propensity — Rel-MF (Saito et al. 2020). ``naive`` is the same loss with θ = 1.

References:
    Schnabel, Swaminathan, Singh, Chandak, Joachims, "Recommendations as Treatments: Debiasing
    Learning and Evaluation", ICML 2016.
    Swaminathan & Joachims, "The Self-Normalized Estimator for Counterfactual Learning",
    NeurIPS 2015.
    Saito, Yaginuma, Nishino, Sakata, Nakata, "Unbiased Recommender Learning from
    Missing-Not-At-Random Implicit Feedback", WSDM 2020.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from causalrec.methods.data import Feedback, InteractionData
from causalrec.methods.propensity import clip_propensities, propensities
from causalrec.methods.robust import worst_case_weights
from causalrec.methods.torch_base import TorchRecommender
from causalrec.platform.errors import ConfigError
from causalrec.platform.feedback import LoggedFeedback

__all__ = ["IMPLICIT_FLOOR", "IPSMF", "SNIPSMF", "NaiveMF"]

#: Default propensity clipping of Rel-MF (Saito et al. 2020).
IMPLICIT_FLOOR = 0.1
#: The backbones of the loss-weighting methods: the debiasing is in the loss, not the network.
TRANSFORMER_READY = ("mf", "two_tower", "transformer")


def _implicit_loss(batch: dict[str, torch.Tensor], inverse_theta: torch.Tensor) -> torch.Tensor:
    positive = F.binary_cross_entropy_with_logits(
        batch["logits"], torch.ones_like(batch["logits"]), reduction="none"
    )
    negative = F.binary_cross_entropy_with_logits(
        batch["logits"], torch.zeros_like(batch["logits"]), reduction="none"
    )
    sampled = F.binary_cross_entropy_with_logits(
        batch["neg_logits"], torch.zeros_like(batch["neg_logits"]), reduction="sum"
    )
    weighted = (inverse_theta * positive + (1 - inverse_theta) * negative).sum()
    return (weighted + sampled) / (len(batch["logits"]) + len(batch["neg_logits"]))


def _robust_loss(losses: torch.Tensor, weights: torch.Tensor, gamma: float) -> torch.Tensor:
    adversarial = worst_case_weights(losses, weights, gamma)
    return (losses * adversarial).sum() / adversarial.sum()


class NaiveMF(TorchRecommender):
    """Matrix factorisation on the logged feedback as if it were unbiased.

    Exposed setting: logistic loss on the exposed pairs. Implicit setting: clicks against uniform
    negatives. Both learn what the logger exposed, not only what users prefer.

    Args:
        dim, lr, weight_decay, epochs, batch_size, feedback, negatives, backbone, device, seed:
            Shared torch parameters (see :class:`TorchRecommender`).
        history_length, layers, heads, dropout, num_workers, precision, compile: Shared torch
            parameters of the ``transformer`` backbone, of data-parallel and of mixed-precision
            or compiled training (see :class:`TorchRecommender`).

    References:
        Koren, Bell, Volinsky, Computer 2009.
    """

    name: ClassVar[str] = "naive"
    supported_backbones: ClassVar[tuple[str, ...]] = TRANSFORMER_READY
    stream_columns: ClassVar[tuple[str, ...] | None] = ()

    def _loss(self, batch):
        if self.feedback == "implicit":
            return _implicit_loss(batch, torch.ones_like(batch["logits"]))
        return F.binary_cross_entropy_with_logits(batch["logits"], batch["labels"])


class IPSMF(TorchRecommender):
    """MF-IPS (Schnabel et al. 2016); in the implicit setting Rel-MF (Saito et al. 2020).

    Args:
        propensity: ``auto``, ``logged``, ``popularity`` or ``logistic`` (see
            :mod:`causalrec.methods.propensity`).
        adversarial_gamma: Γ >= 1. Above 1 the propensities are trusted only up to a factor Γ
            and each mini-batch minimises the worst-case self-normalised weighted loss over
            that set (closed form, :mod:`causalrec.methods.robust`): robustness to hidden
            confounding. Exposed setting only.
        augment: k >= 0. Counterfactual data augmentation: each exposed pair in a mini-batch
            brings k uniformly drawn user–item pairs labelled (softly) by an imputation model,
            a naive MF fitted first on the same log. Exposed setting only.
        propensity_floor: Propensities are clipped below at this value (weight clipping);
            ``None``: 0.1 in the implicit setting (as Saito et al. 2020, whose loss is unbounded
            below without it) and no clipping in the exposed setting.
        dim, lr, weight_decay, epochs, batch_size, feedback, negatives, backbone, device, seed:
            Shared torch parameters (see :class:`TorchRecommender`).
        history_length, layers, heads, dropout, num_workers, precision, compile: Shared torch
            parameters of the ``transformer`` backbone, of data-parallel and of mixed-precision
            or compiled training (see :class:`TorchRecommender`).
    """

    name: ClassVar[str] = "ips"
    supported_backbones: ClassVar[tuple[str, ...]] = TRANSFORMER_READY
    stream_columns: ClassVar[tuple[str, ...] | None] = ("pscore",)
    mean_normalised: ClassVar[tuple[str, ...]] = ("weight",)

    def __init__(
        self,
        *,
        propensity: str = "auto",
        propensity_floor: float | None = None,
        adversarial_gamma: float = 1.0,
        augment: int = 0,
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
        self.propensity = propensity
        self.propensity_floor = propensity_floor
        self.adversarial_gamma = adversarial_gamma
        self.augment = augment

    def _validate(self) -> None:
        super()._validate()
        if not self.adversarial_gamma >= 1:
            raise ConfigError(f"adversarial_gamma must be >= 1; got {self.adversarial_gamma}")
        if self.adversarial_gamma > 1 and self.feedback != "exposed":
            raise ConfigError("adversarial_gamma > 1 is available in the exposed setting only")
        if self.augment < 0 or int(self.augment) != self.augment:
            raise ConfigError(f"augment must be an integer >= 0; got {self.augment}")
        if self.augment and self.feedback != "exposed":
            raise ConfigError("augment > 0 is available in the exposed setting only")
        if self.augment and self.backbone == "transformer":
            raise ConfigError(
                "augment > 0 draws user-item pairs without a history; it is not available with "
                "backbone='transformer'"
            )

    def _floor(self) -> float:
        floor = self.propensity_floor
        if floor is None:
            floor = IMPLICIT_FLOOR if self.feedback == "implicit" else 0.0
        return floor

    def _propensities(self, logs: LoggedFeedback, data: InteractionData) -> np.ndarray:
        """Clipped propensity of every training example, shape (n_examples,)."""
        return propensities(self.propensity, logs, data, floor=self._floor())

    def _weights(self, p: np.ndarray) -> dict[str, np.ndarray]:
        """Per-example weights before their normalisation by the mean (exposed setting)."""
        return {"weight": 1.0 / p}

    def streaming_refusal(self) -> str | None:
        """Streaming needs the logged propensities and no imputation model fitted first."""
        reason = super().streaming_refusal()
        if reason is None and self.propensity not in ("auto", "logged"):
            reason = (
                f"propensity={self.propensity!r} is estimated from the whole log; streaming "
                "reads each row's logged pscore (propensity='logged')"
            )
        if reason is None and self.augment:
            reason = "augment > 0 fits an imputation model on the whole log first"
        return reason

    def _row_arrays(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._weights(clip_propensities(columns["pscore"], self._floor()))

    def _check_row_means(self, means: dict[str, float]) -> None:
        if not all(np.isfinite(value) for value in means.values()):
            raise ConfigError(
                "propensity='logged' needs the log's pscore, which this log does not record on "
                "every row; use an estimated propensity ('popularity' or 'logistic') in memory"
            )

    def _prepare(self, logs: LoggedFeedback, data: InteractionData) -> dict[str, np.ndarray]:
        p = self._propensities(logs, data)
        if self.feedback == "implicit":
            return {"inverse_propensity": 1.0 / p}
        if self.augment:
            imputation = NaiveMF(
                dim=self.dim,
                lr=self.lr,
                epochs=max(1, self.epochs // 2),
                batch_size=self.batch_size,
                device=self.device,
                seed=self.seed + 1,
            )
            self.imputation_network_ = imputation.fit(logs).network_
        return {key: weights / weights.mean() for key, weights in self._weights(p).items()}

    def _sample(self, data, size, rng, device):
        samples = super()._sample(data, size, rng, device)
        if self.augment:
            users = rng.integers(data.n_users, size=size * self.augment)
            items = rng.integers(data.n_items, size=size * self.augment)
            samples["augment_users"] = torch.from_numpy(users).to(device)
            samples["augment_items"] = torch.from_numpy(items).to(device)
        return samples

    def _losses(self, batch, networks):
        losses = super()._losses(batch, networks)
        if not self.augment:
            return losses
        users, items = batch["augment_users"], batch["augment_items"]
        with torch.no_grad():
            pseudo = torch.sigmoid(self.imputation_network_(users, items))
        augmented = F.binary_cross_entropy_with_logits(networks["main"](users, items), pseudo)
        share = len(users) / (len(users) + len(batch["users"]))
        losses["main"] = (1 - share) * losses["main"] + share * augmented
        return losses

    def _loss(self, batch):
        if self.feedback == "implicit":
            return _implicit_loss(batch, batch["inverse_propensity"])
        losses = F.binary_cross_entropy_with_logits(
            batch["logits"], batch["labels"], reduction="none"
        )
        if self.adversarial_gamma > 1:
            return _robust_loss(losses, batch["weight"], self.adversarial_gamma)
        return (losses * batch["weight"]).mean()


class SNIPSMF(IPSMF):
    """Self-normalised IPS: Σ ℓ w / Σ w per mini-batch (exposed setting).

    Args:
        propensity, propensity_floor, adversarial_gamma, augment: As in :class:`IPSMF`.
        dim, lr, weight_decay, epochs, batch_size, feedback, negatives, backbone, device, seed:
            Shared torch parameters (see :class:`TorchRecommender`).
        history_length, layers, heads, dropout, num_workers, precision, compile: Shared torch
            parameters of the ``transformer`` backbone, of data-parallel and of mixed-precision
            or compiled training (see :class:`TorchRecommender`).

    References:
        Swaminathan & Joachims, NeurIPS 2015; Schnabel et al., ICML 2016.
    """

    name: ClassVar[str] = "snips"
    supported_feedback: ClassVar[tuple[str, ...]] = ("exposed",)

    def _loss(self, batch):
        losses = F.binary_cross_entropy_with_logits(
            batch["logits"], batch["labels"], reduction="none"
        )
        if self.adversarial_gamma > 1:
            return _robust_loss(losses, batch["weight"], self.adversarial_gamma)
        return (losses * batch["weight"]).sum() / batch["weight"].sum()
