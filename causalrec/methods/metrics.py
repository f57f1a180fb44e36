"""How good a trained recommender is: exact value, regret, ranking metrics on unbiased data, DR.

On simulated logs the simulator recorded in the log's metadata gives the exact value of the
model's top-K policy and the oracle's; a fresh log from a uniform-random policy (unbiased
exposure) gives AUC and NDCG@K. On any log, the DR estimate of the policy's value on a held-out
slice is what a real user would see.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from causalrec.methods.base import Recommender
from causalrec.platform.feedback import LoggedFeedback

__all__ = ["TrainingReport", "auc", "evaluate_recommender", "ndcg_at_k"]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (NaN when only one class is present)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if np.unique(labels).size < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def ndcg_at_k(users: np.ndarray, scores: np.ndarray, clicks: np.ndarray, k: int) -> float:
    """Mean NDCG@k over users with at least one click, ranking each user's rows by score.

    Args:
        users: User of each row, shape (n,).
        scores: Model score of each row's item, shape (n,).
        clicks: Click of each row, shape (n,).
        k: Cut-off.
    """
    order = np.lexsort((-scores, users))
    users, clicks = users[order], clicks[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    values = []
    for start, end in zip(starts, ends, strict=True):
        gains = clicks[start:end]
        if gains.sum() == 0:
            continue
        discounts = 1.0 / np.log2(np.arange(2, min(k, len(gains)) + 2))
        dcg = gains[:k] @ discounts
        ideal = np.sort(gains)[::-1][:k] @ discounts
        values.append(dcg / ideal)
    return float(np.mean(values)) if values else float("nan")


@dataclass(frozen=True)
class TrainingReport:
    """Metrics of a trained recommender (``None`` where the log cannot provide them).

    Attributes:
        policy_value: Exact value of the model's top-K policy (simulated logs).
        oracle_value: Exact value of the best top-K policy.
        logging_value: Exact value of the policy that wrote the log.
        regret: ``oracle_value - policy_value``.
        auc: ROC AUC on a uniform-random log.
        ndcg: NDCG@K on a uniform-random log.
        dr_estimate: DR estimate of the policy's value on the held-out slice.
        dr_interval: 95% interval of that estimate.
        k: Slate size used.
    """

    policy_value: float | None
    oracle_value: float | None
    logging_value: float | None
    regret: float | None
    auc: float | None
    ndcg: float | None
    dr_estimate: float | None
    dr_interval: tuple[float, float] | None
    k: int

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return asdict(self)


def evaluate_recommender(
    model: Recommender,
    holdout: LoggedFeedback,
    *,
    uniform_rounds: int = 20_000,
    seed: int = 0,
) -> TrainingReport:
    """Measure ``model`` (see the module docstring)."""
    import warnings

    from causalrec.ope import OverlapWarning, evaluate
    from causalrec.platform.errors import ConfigError
    from causalrec.simulators import generate_logs
    from causalrec.simulators.world import simulator_from_logs

    k = holdout.slate_size
    policy = model.policy(k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OverlapWarning)  # reported by the interval's width
        table = evaluate(holdout, policy, ["dr"], seed=seed)
    dr = table.iloc[0]
    try:
        simulator = simulator_from_logs(holdout)
    except ConfigError:  # real logs: no ground truth
        return TrainingReport(
            None, None, None, None, None, None, float(dr["estimate"]),
            (float(dr["low"]), float(dr["high"])), k,
        )  # fmt: skip
    value = simulator.policy_value(policy)
    oracle = simulator.oracle_value()
    uniform = generate_logs(simulator, simulator.uniform_policy(), uniform_rounds, seed=seed + 1)
    scores = np.empty(uniform.n_rows)
    for start in range(0, uniform.n_rows, 4096):
        rows = slice(start, start + 4096)
        block = model.score(uniform.user_id[rows])
        scores[rows] = block[np.arange(len(block)), uniform.item_id[rows]]
    return TrainingReport(
        policy_value=value,
        oracle_value=oracle,
        logging_value=simulator.policy_value(simulator.logging_policy()),
        regret=oracle - value,
        auc=auc(scores, uniform.click),
        ndcg=ndcg_at_k(uniform.user_id, scores, uniform.click, max(k, 5)),
        dr_estimate=float(dr["estimate"]),
        dr_interval=(float(dr["low"]), float(dr["high"])),
        k=k,
    )
