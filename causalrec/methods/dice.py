"""DICE: disentangled interest and conformity embeddings (Zheng et al. 2021).

Implicit setting. Users and items have an interest and a conformity embedding; the click score
is their sum ⟨u_int, i_int⟩ + ⟨u_con, i_con⟩. Training uses BPR triples (u, positive i, negative
j) split by popularity, which acts as a cause-specific label:

* O1, j more popular than i: the user chose i despite j's popularity, so interest prefers i over
  j while conformity prefers j over i;
* O2, j less popular than i: conformity prefers i over j (interest is not identified).

Loss = BPR(click score) + α (BPR_interest on O1 + BPR_conformity on O1 ∪ O2) − β · discrepancy
between the interest and conformity embeddings of the batch (mean squared distance).
Recommendations use the interest score (``score_with="interest"``, the debiased ranking) or the
full click score (``"both"``).

References:
    Zheng, Gao, Li, He, Jin, "Disentangling User Interest and Conformity for Recommendation with
    Causal Embedding", WWW 2021.
    Rendle, Freudenthaler, Gantner, Schmidt-Thieme, "BPR: Bayesian Personalized Ranking from
    Implicit Feedback", UAI 2009.
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

__all__ = ["DICE", "DICENetwork"]


class DICENetwork(nn.Module):
    """Interest and conformity embeddings of dimension ``dim // 2`` each."""

    def __init__(
        self, n_users: int, n_items: int, dim: int, generator: torch.Generator, score_with: str
    ):
        super().__init__()
        half = max(1, dim // 2)
        self.score_with = score_with
        for name, rows in (("user_interest", n_users), ("user_conformity", n_users),
                           ("item_interest", n_items), ("item_conformity", n_items)):  # fmt: skip
            setattr(self, name, nn.Parameter(0.1 * torch.randn(rows, half, generator=generator)))

    def interest(self, users, items):
        """⟨u_int, i_int⟩ of pairs."""
        return (
            F.embedding(users, self.user_interest) * F.embedding(items, self.item_interest)
        ).sum(1)

    def conformity(self, users, items):
        """⟨u_con, i_con⟩ of pairs."""
        u = F.embedding(users, self.user_conformity)
        return (u * F.embedding(items, self.item_conformity)).sum(1)

    def forward(self, users, items):
        """The click score of pairs (interest + conformity)."""
        return self.interest(users, items) + self.conformity(users, items)

    def all_items(self, users):
        """Ranking scores of every item: interest only, or both, per ``score_with``."""
        scores = self.user_interest[users] @ self.item_interest.T
        if self.score_with == "both":
            scores = scores + self.user_conformity[users] @ self.item_conformity.T
        return scores


def _bpr(positive: torch.Tensor, negative: torch.Tensor, mask: torch.Tensor | None = None):
    losses = -F.logsigmoid(positive - negative)
    if mask is None:
        return losses.mean()
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)


class DICE(TorchRecommender):
    """DICE with popularity-split BPR triples (implicit feedback).

    Args:
        alpha: Weight of the cause-specific (interest, conformity) BPR losses.
        beta: Weight of the discrepancy term (larger pushes the two embeddings apart).
        margin: Popularity difference (in clicks) below which a triple is neither O1 nor O2.
        score_with: ``"interest"`` (debiased ranking) or ``"both"``.
        feedback: ``"implicit"`` (the only setting DICE supports).
        negatives: BPR triples per positive.
        dim, lr, weight_decay, epochs, batch_size, backbone, device, seed: Shared torch
            parameters (see :class:`TorchRecommender`).
        history_length, layers, heads, dropout, num_workers, precision, compile: Shared torch
            parameters too (this method uses the ``mf`` backbone; see :class:`TorchRecommender`).
    """

    name: ClassVar[str] = "dice"
    supported_feedback: ClassVar[tuple[str, ...]] = ("implicit",)
    supported_backbones: ClassVar[tuple[str, ...]] = ("mf",)
    stream_refusal: ClassVar[str] = (
        "its BPR triples are split by each item's click count over the whole log, and its "
        "positives are the log's distinct clicked pairs"
    )

    def __init__(
        self,
        *,
        alpha: float = 0.1,
        beta: float = 0.01,
        margin: float = 0.0,
        score_with: str = "interest",
        dim: int = 32,
        lr: float = 0.01,
        weight_decay: float = 1e-6,
        epochs: int = 10,
        batch_size: int = 16_384,
        feedback: Feedback = "implicit",
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
        self.alpha = alpha
        self.beta = beta
        self.margin = margin
        self.score_with = score_with

    def _validate(self) -> None:
        super()._validate()
        if self.score_with not in ("interest", "both"):
            raise ConfigError(f"score_with must be 'interest' or 'both'; got {self.score_with!r}")
        for name in ("alpha", "beta", "margin"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0; got {getattr(self, name)}")

    def _build_network(self, n_users, n_items, generator):
        return DICENetwork(n_users, n_items, self.dim, generator, self.score_with)

    def _prepare(self, logs: LoggedFeedback, data: InteractionData) -> dict[str, np.ndarray]:
        clicks = np.bincount(logs.item_id[logs.click > 0], minlength=logs.n_items)
        self.popularity_ = torch.from_numpy(clicks.astype(np.float32))
        return {}

    def _losses(self, batch, networks):
        network = networks["main"]
        m = self.negatives
        users = batch["users"].repeat_interleave(m)
        positives = batch["items"].repeat_interleave(m)
        negatives = batch["neg_items"]  # uniform items, m per positive
        popularity = self.popularity_.to(users.device)
        gap = popularity[negatives] - popularity[positives]
        o1 = (gap > self.margin).float()  # negative more popular
        o2 = (gap < -self.margin).float()  # negative less popular
        interest_pos, interest_neg = (
            network.interest(users, positives),
            network.interest(users, negatives),
        )
        conform_pos, conform_neg = (
            network.conformity(users, positives),
            network.conformity(users, negatives),
        )
        click = _bpr(interest_pos + conform_pos, interest_neg + conform_neg)
        interest = _bpr(interest_pos, interest_neg, o1)
        # Conformity prefers the more popular item: j on O1, i on O2.
        conformity = _bpr(conform_neg, conform_pos, o1) + _bpr(conform_pos, conform_neg, o2)
        items = torch.unique(torch.cat([positives, negatives]))
        user_ids = torch.unique(users)
        discrepancy = (
            (
                F.embedding(items, network.item_interest)
                - F.embedding(items, network.item_conformity)
            )
            ** 2
        ).sum(1).mean() + (
            (
                F.embedding(user_ids, network.user_interest)
                - F.embedding(user_ids, network.user_conformity)
            )
            ** 2
        ).sum(1).mean()
        loss = click + self.alpha * (interest + conformity) - self.beta * discrepancy
        return {"main": loss}

    def _sample(self, data, size, rng, device):
        items = rng.integers(data.n_items, size=size * self.negatives)
        return {"neg_items": torch.from_numpy(items).to(device)}
