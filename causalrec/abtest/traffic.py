"""Serving an experiment's visits: in-process through the arms' policies, or over HTTP.

Both return the same :class:`ServedSlates`; clicks are then drawn by the simulator, so a run
through a live Serve endpoint and an in-process run of the same deterministic models give the
same slates, clicks and statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causalrec.abtest.arms import Arm
from causalrec.platform.errors import CausalRecError, ConfigError
from causalrec.serve.routing import ARMS, ExperimentSplit

__all__ = ["ServedSlates", "check_server", "send_feedback", "serve_http", "serve_in_process"]


@dataclass(frozen=True)
class ServedSlates:
    """Slates shown to a sequence of visits.

    Attributes:
        actions: Item ids, shape (n_visits, K).
        pscore: Marginal probability of each item at its position, shape (n_visits, K).
        pscore_prefix: Probability of each slate prefix, shape (n_visits, K).
        arm: The arm of each visit (``a``/``b``), shape (n_visits,).
        request_ids: ``/recommend`` request id of each visit (``None`` in-process).
    """

    actions: np.ndarray
    pscore: np.ndarray
    pscore_prefix: np.ndarray
    arm: np.ndarray
    request_ids: list[str] | None = None


def serve_in_process(
    arms: dict[str, Arm], users: np.ndarray, split: ExperimentSplit, rng: np.random.Generator
) -> ServedSlates:
    """Each visit served by its arm's policy, in this process.

    Args:
        arms: ``{"a": Arm, "b": Arm}``.
        users: The visiting users, shape (n_visits,).
        split: The assignment.
        rng: Randomness of stochastic policies.
    """
    assigned = split.arms(users)
    n, K = len(users), arms["a"].policy.slate_size
    actions = np.empty((n, K), dtype=np.int64)
    pscore, prefix = np.empty((n, K)), np.empty((n, K))
    for label in ARMS:
        rows = np.flatnonzero(assigned == label)
        if len(rows):
            sample = arms[label].policy.sample(users[rows], rng)
            actions[rows], pscore[rows] = sample.actions, sample.marginal_pscore
            prefix[rows] = sample.pscore_prefix
    return ServedSlates(actions, pscore, prefix, assigned)


def _client(url: str):
    import httpx

    return httpx.Client(base_url=url.rstrip("/"), timeout=120)


def check_server(url: str, arms: dict[str, Arm]) -> ExperimentSplit:
    """The server's split, after checking it serves ``arms`` (same model versions).

    Raises:
        ConfigError: If the server is unreachable, runs no experiment, or serves other models.
    """
    import httpx

    try:
        with _client(url) as client:
            answer = client.get("/experiment")
    except httpx.HTTPError as exc:
        raise ConfigError(f"--url: cannot reach {url!r}: {exc}") from None
    if answer.status_code == 404:
        raise ConfigError(
            f"--url: the server at {url!r} runs no experiment; deploy it with "
            "experiment: {model_dir: ...} (ServeAppArgs) so its ingress splits users"
        )
    if answer.status_code != 200:
        raise ConfigError(f"--url: GET {url}/experiment answered HTTP {answer.status_code}")
    experiment = answer.json()
    for label in ARMS:
        served = experiment["arms"][label]["model_version"]
        if arms[label].model_dir is None or arms[label].version != served:
            raise ConfigError(
                f"--{label}: {arms[label].spec!r} (version {arms[label].version}) is not what "
                f"the server's arm {label} serves (model version {served})"
            )
    return ExperimentSplit(experiment["salt"], experiment["share_b"])


def serve_http(
    url: str, users: np.ndarray, k: int, *, batch_size: int = 64, progress: bool = False
) -> ServedSlates:
    """Each visit served by the live endpoint, whose ingress routes users to their arms.

    Args:
        url: Base URL of the Serve application (``http://127.0.0.1:8000``).
        users: The visiting users, shape (n_visits,).
        k: Slate size.
        batch_size: Users per ``/recommend`` request.
        progress: Show a progress bar.
    """
    from tqdm.auto import tqdm

    n = len(users)
    actions = np.empty((n, k), dtype=np.int64)
    pscore, prefix = np.empty((n, k)), np.empty((n, k))
    assigned = np.empty(n, dtype="<U1")
    request_ids = [""] * n
    with _client(url) as client, tqdm(total=n, unit="visit", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            batch = users[start : start + batch_size].tolist()
            answer = client.post("/recommend", json={"user_id": batch, "k": k})
            if answer.status_code != 200:
                raise CausalRecError(
                    f"POST {url}/recommend answered HTTP {answer.status_code}: {answer.text[:300]}"
                )
            body = answer.json()
            for offset, row in enumerate(body["recommendations"]):
                i = start + offset
                actions[i], pscore[i] = row["items"], row["propensities"]
                prefix[i], assigned[i] = row["prefix_propensities"], row["arm"]
                request_ids[i] = body["request_id"]
            bar.update(len(batch))
    return ServedSlates(actions, pscore, prefix, assigned, request_ids)


def send_feedback(url: str, served: ServedSlates, clicks: np.ndarray) -> int:
    """Post each request's clicks to ``/feedback``; returns the rows the server logged.

    Returns 0 without posting when the server has no feedback sink (HTTP 409).
    """
    logged = 0
    assert served.request_ids is not None
    rows_of: dict[str, list[int]] = {}
    for row, request_id in enumerate(served.request_ids):
        rows_of.setdefault(request_id, []).append(row)
    with _client(url) as client:
        for request_id, rows in rows_of.items():
            answer = client.post(
                "/feedback", json={"request_id": request_id, "clicks": clicks[rows].tolist()}
            )
            if answer.status_code == 409:
                return 0
            if answer.status_code != 200:
                raise CausalRecError(
                    f"POST {url}/feedback answered HTTP {answer.status_code}: {answer.text[:300]}"
                )
            logged += answer.json()["rows"]
    return logged
