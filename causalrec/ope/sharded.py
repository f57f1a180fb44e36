"""Off-policy evaluation of a log too large for one process: Ray Data over its Parquet shards.

Every estimator of :func:`causalrec.ope.evaluate` reduces to per-round columns: a baseline ``a``,
a correction ``b`` and a normaliser ``d``, with estimate = mean(a) + mean(b) / mean(d) and a
delta-method interval (:class:`~causalrec.ope.intervals.EstimatorTerms`). Both are functions of
the columns' count, means and centred cross-products, which merge exactly across shards (Chan,
Golub & LeVeque's pairwise update), so :func:`evaluate_dataset` computes them part file by part
file in ``map_batches`` and merges them on the driver. The estimate and the normal interval
equal the in-memory ones (same estimators, same reward model) to floating-point rounding: 1e-12
in ``tests/ope/test_sharded.py``.

One Ray Data task evaluates one part file, reading it ``batch_rows`` rows at a time, and
sends back its merged sums; the driver merges the files' sums as they arrive, so it holds one
record at a time, never a list of the parts and never the rows. A file's batches are
contiguous, so a round split between two batches is whole again in the file; only a file's
first and last rounds can continue in another file (a part may end in the middle of a slate),
and their rows go back to the driver, which finishes them together. Every causalrec writer
keeps a round's rows together, and every round must have the same number of rows (K for
simulated slates, 1 for Open Bandit logs), which the merge checks.

The bootstrap is a Poisson bootstrap (Hanley & MacGibbon 2006; Chamandy, Muralidharan, Najmi &
Naidu 2012): replicate ``j`` weighs round ``r`` by an independent Poisson(1) count drawn from a
counter-based hash of ``(seed, round_id, j)``, so every shard computes its share of every
replicate's sums alone, and the replicates do not depend on how the rows are partitioned. The
percentile interval of the replicates is reported.

The reward model (DM and the DR family) is fitted once on a uniform sample of rounds (chosen by
a hash of the round id, at most ``reward_sample_rounds``), read with the same pipeline, and
scores every shard. It is not cross-fitted: the sampled rounds are scored in-sample, a share
``reward_sample_rounds / n_rounds`` of the log (2% of a 10^7-round log at the default), so their
over-fitting bias is of that order times the model's in-sample gain. Streaming mini-batch
fitting (one pass of SGD over every shard) was not chosen: it needs a pass over the whole log
before the evaluation pass, and the logistic, gradient-boosted and MLP models it would replace
are fitted in closed loops that a sample of 2·10^5 rounds already saturates.

References:
    Chan, Golub & LeVeque, "Algorithms for computing the sample variance", 1983.
    Hanley & MacGibbon, "Creating non-parametric bootstrap samples using Poisson frequencies",
    Computer Methods and Programs in Biomedicine 2006.
    Chamandy, Muralidharan, Najmi & Naidu, "Estimating Uncertainty for Massive Data Streams",
    Google Technical Report 2012.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats

from causalrec.ope.base import Estimator
from causalrec.ope.cross_fit import coerce_reward_model, feature_space_of
from causalrec.ope.evaluate import DEFAULT_ESTIMATORS, SLATE_ESTIMATORS, OfflineEvaluator
from causalrec.ope.intervals import EstimatorTerms
from causalrec.ope.registry import parse_estimators
from causalrec.ope.reward_model import RewardModel, RewardModelConfig, make_reward_model
from causalrec.platform import storage
from causalrec.platform.errors import ConfigError, DataError, LogFormatError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Policy
from causalrec.platform.units import CLICKS_PER_ROUND

__all__ = [
    "SHARDABLE_ESTIMATORS",
    "MomentSums",
    "evaluate_dataset",
    "poisson_weights",
]

#: Estimators whose per-round terms depend on that round alone (so they shard exactly). The
#: SLOPE-tuned ones choose a hyperparameter from the whole log, and the cluster estimators need
#: the logging policy's whole distribution: neither is sharded.
SHARDABLE_ESTIMATORS = ("dm", "ips", "snips", "dr", "sndr", "switch_dr", "dros", "sips", "iips",
                        "rips")  # fmt: skip
#: Columns of the log that the evaluation reads.
COLUMNS = ("round_id", "user_id", "position", "item_id", "click", "pscore", "pscore_prefix",
           "user_features")  # fmt: skip
#: Default most rounds the reward model is fitted on.
REWARD_SAMPLE_ROUNDS = 200_000
#: Default rows a task reads from its part file at a time.
BATCH_ROWS = 262_144
#: Poisson(1) counts above this have probability < 1e-17 per draw.
_POISSON_MAX = 20
_POISSON_CDF = stats.poisson.cdf(np.arange(_POISSON_MAX + 1), 1.0)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (Steele, Lea & Flood 2014), elementwise on uint64."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniforms(round_id: np.ndarray, columns: int, seed: int, stream: int) -> np.ndarray:
    """Counter-based uniforms in [0, 1), shape (n, columns): a hash of (seed, stream, round, j)."""
    with np.errstate(over="ignore"):
        key = _splitmix64(np.uint64(seed) * np.uint64(2) + np.uint64(stream))
        counter = round_id.astype(np.uint64)[:, None] * np.uint64(columns) + np.arange(
            columns, dtype=np.uint64
        )
        bits = _splitmix64(_splitmix64(counter ^ key))
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def poisson_weights(round_id: np.ndarray, n_replicates: int, seed: int) -> np.ndarray:
    """Poisson(1) bootstrap multiplicity of each round in each replicate, shape (n, B).

    A function of ``(seed, round_id, replicate)`` only: any shard draws the same counts for its
    rounds, whatever else it holds.
    """
    u = _uniforms(round_id, n_replicates, seed, stream=1)
    return np.searchsorted(_POISSON_CDF, u, side="right").astype(np.float64)


def _sampled_rounds(round_id: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Whether each round is in the reward model's sample (a hash of the round id), shape (n,)."""
    return _uniforms(round_id, 1, seed, stream=2)[:, 0] < share


@dataclass
class MomentSums:
    """Count, means and centred cross-products of per-round columns; merges exactly.

    Attributes:
        n: Rounds.
        mean: Column means, shape (m,).
        m2: Centred cross-products Σ (x - mean)(x - mean)ᵀ, shape (m, m).
        replicate_weight: Σ_r W_rj per bootstrap replicate, shape (B,).
        replicate_sum: Σ_r W_rj x_r, shape (B, m).
    """

    n: int
    mean: np.ndarray
    m2: np.ndarray
    replicate_weight: np.ndarray
    replicate_sum: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, weights: np.ndarray) -> MomentSums:
        """The sums of rows ``x`` (shape (n, m)) with bootstrap multiplicities (shape (n, B))."""
        n, m = x.shape
        if n == 0:
            return cls.empty(m, weights.shape[1])
        mean = x.mean(axis=0)
        centred = x - mean
        return cls(n, mean, centred.T @ centred, weights.sum(axis=0), weights.T @ x)

    @classmethod
    def empty(cls, m: int, replicates: int) -> MomentSums:
        """No rounds."""
        return cls(
            0, np.zeros(m), np.zeros((m, m)), np.zeros(replicates), np.zeros((replicates, m))
        )

    def merge(self, other: MomentSums) -> MomentSums:
        """The sums of both sets of rounds (Chan, Golub & LeVeque 1983)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n)
        return MomentSums(
            n,
            mean,
            m2,
            self.replicate_weight + other.replicate_weight,
            self.replicate_sum + other.replicate_sum,
        )


@dataclass
class _BatchResult:
    """What one batch sends to the driver: its sums and the rows of rounds it did not finish."""

    moments: MomentSums | None
    weight_sum: float
    weight_sq_sum: float
    weight_max: float
    rows: int
    round_rows: int | None = None
    layout: _Layout | None = None
    pending: pa.Table | None = None
    node_id: str | None = None


@dataclass(frozen=True)
class _Layout:
    """Where each estimator's columns sit in the stacked per-round matrix."""

    columns: list[tuple[int | None, int, int | None]] = field(default_factory=list)
    width: int = 0

    @classmethod
    def of(cls, terms: Sequence[EstimatorTerms]) -> _Layout:
        columns, width = [], 0
        for term in terms:
            baseline = correction = normalizer = None
            if term.baseline is not None:
                baseline, width = width, width + 1
            correction, width = width, width + 1
            if term.normalizer is not None:
                normalizer, width = width, width + 1
            columns.append((baseline, correction, normalizer))
        return cls(columns, width)

    def stack(self, terms: Sequence[EstimatorTerms]) -> np.ndarray:
        out = np.empty((terms[0].n if terms else 0, self.width))
        for (a, b, d), term in zip(self.columns, terms, strict=True):
            if (a is None) != (term.baseline is None) or (d is None) != (term.normalizer is None):
                raise DataError("an estimator's terms changed form between batches")
            if a is not None:
                out[:, a] = term.baseline
            out[:, b] = term.correction
            if d is not None:
                out[:, d] = term.normalizer
        return out


class _Context:
    """What every batch needs: the policy, the estimators, the reward model, the log's shape."""

    def __init__(
        self,
        policy: Policy,
        estimators: list[Estimator],
        reward_model: RewardModel | None,
        n_items: int,
        slate_size: int,
        item_table: np.ndarray | None,
        n_bootstrap: int,
        seed: int,
    ):
        self.policy, self.estimators, self.reward_model = policy, estimators, reward_model
        self.n_items, self.slate_size, self.item_table = n_items, slate_size, item_table
        self.n_bootstrap, self.seed = n_bootstrap, seed

    def feedback(self, table: pa.Table) -> LoggedFeedback:
        """A batch's rows as a log (rows of whole rounds)."""
        n = table.num_rows
        features = table.column("user_features").combine_chunks()
        width = features.type.list_size
        return LoggedFeedback(
            round_id=table.column("round_id").to_numpy(),
            user_id=table.column("user_id").to_numpy(),
            position=table.column("position").to_numpy().astype(np.int64),
            item_id=table.column("item_id").to_numpy(),
            click=table.column("click").to_numpy(),
            pscore=table.column("pscore").to_numpy().astype(np.float64),
            pscore_prefix=table.column("pscore_prefix").to_numpy().astype(np.float64),
            user_features=features.flatten().to_numpy(zero_copy_only=False).reshape(n, width),
            expected_reward=np.full(n, np.nan),
            policy=np.full(n, ""),
            n_items=self.n_items,
            slate_size=self.slate_size,
            item_table=self.item_table,
        )

    def terms(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray, list[EstimatorTerms]]:
        """Per-round terms of whole rounds: (round ids, weights per impression, terms)."""
        logs = self.feedback(table)
        if np.isnan(logs.pscore).any():
            row = int(np.flatnonzero(np.isnan(logs.pscore))[0])
            raise DataError(
                f"pscore is missing at round {int(logs.round_id[row])}: sharded evaluation "
                "weighs by the logged propensities"
            )
        evaluator = OfflineEvaluator(
            logs, self.estimators, reward_model=self.reward_model, pscore=logs.pscore
        )
        inputs, _ = evaluator.policy_inputs(self.policy)
        rounds = np.unique(logs.round_id)
        return rounds, inputs.impressions.weight, evaluator.all_terms(inputs)

    def process(self, table: pa.Table, *, finish: bool = False) -> _BatchResult:
        """The sums of a block's rounds; its first and last rounds' rows are set aside.

        A block is a contiguous run of a part file's rows, so only its first and last rounds
        can continue in another block: their rows go back to the driver, which finishes them
        together (``finish=True``) once every block is done.
        """
        round_id = table.column("round_id").to_numpy()
        pending = None
        if not finish and table.num_rows:
            edge = np.isin(round_id, [round_id[0], round_id[-1]])
            pending = table.filter(pa.array(edge))
            table = table.filter(pa.array(~edge))
            round_id = round_id[~edge]
        if table.num_rows == 0:
            return _BatchResult(None, 0.0, 0.0, 0.0, 0, None, None, pending)
        _, counts = np.unique(round_id, return_counts=True)
        if (counts != counts[0]).any():
            raise DataError(
                f"rounds of {int(counts.min())} and of {int(counts.max())} rows: sharded "
                "evaluation needs every round of the log to have the same number of rows"
            )
        # Rows of a round in position order, rounds in id order (the in-memory layout).
        order = np.lexsort((table.column("position").to_numpy(), round_id))
        table = table.take(pa.array(order))
        ids, weight, terms = self.terms(table)
        layout = _Layout.of(terms)
        replicates = (
            poisson_weights(ids, self.n_bootstrap, self.seed)
            if self.n_bootstrap
            else np.zeros((len(ids), 0))
        )
        return _BatchResult(
            moments=MomentSums.of(layout.stack(terms), replicates),
            weight_sum=float(weight.sum()),
            weight_sq_sum=float(weight @ weight),
            weight_max=float(weight.max()),
            rows=table.num_rows,
            round_rows=int(counts[0]),
            layout=layout,
            pending=pending,
        )


class _Totals:
    """Sums of many :class:`_BatchResult` s, merged as they come (a file's, then the log's)."""

    def __init__(self) -> None:
        self.moments: MomentSums | None = None
        self.layout: _Layout | None = None
        self.weight_sum = self.weight_sq_sum = self.weight_max = 0.0
        self.rows = 0
        self.round_rows: set[int] = set()
        self.pending: list[pa.Table] = []
        self.nodes: set[str] = set()
        self.parts = 0

    def add(self, result: _BatchResult) -> None:
        """Merge one batch's sums; keep its edge rows."""
        if result.pending is not None and result.pending.num_rows:
            self.pending.append(result.pending)
        if result.rows:
            self._merge_sums(result, {result.round_rows})

    def absorb(self, other: _Totals) -> None:
        """Merge another part file's totals."""
        self.pending += other.pending
        self.nodes |= other.nodes
        self.parts += other.parts
        if other.rows:
            self._merge_sums(other, other.round_rows)

    def _merge_sums(self, sums: _BatchResult | _Totals, round_rows: set[int]) -> None:
        """Add the sums both record types share (their field names are the same)."""
        if self.layout is not None and sums.layout != self.layout:
            raise DataError("an estimator's terms changed form between parts of the log")
        self.layout = sums.layout
        self.moments = sums.moments if self.moments is None else self.moments.merge(sums.moments)
        self.weight_sum += sums.weight_sum
        self.weight_sq_sum += sums.weight_sq_sum
        self.weight_max = max(self.weight_max, sums.weight_max)
        self.rows += sums.rows
        self.round_rows |= round_rows


def _part_sums(
    batch: dict[str, np.ndarray], context: _Context, batch_rows: int, filesystem: Any
) -> dict[str, np.ndarray]:
    """``map_batches`` function: one part file, read batch by batch, to its pickled totals.

    The batches of a file are contiguous, so the rounds one batch boundary splits are whole
    again in the file's set-aside rows; only the file's first and last rounds go back to the
    driver (a part may end in the middle of a slate).
    """
    import ray

    from causalrec.platform import storage as storage_module

    (file,) = batch["file"]
    source = storage_module.Location(filesystem, str(file)) if filesystem else str(file)
    parquet = storage_module.open_parquet(source)
    totals = _Totals()
    totals.parts = 1
    totals.nodes.add(ray.get_runtime_context().get_node_id())
    for record_batch in parquet.iter_batches(batch_size=batch_rows, columns=list(COLUMNS)):
        totals.add(context.process(pa.Table.from_batches([record_batch])))
    if totals.pending:  # the file's rounds split between batches, and its two edge rounds
        edges = context.process(pa.concat_tables(totals.pending))
        totals.pending = []
        totals.add(edges)
    return {"totals": np.array([pickle.dumps(totals)], dtype=object)}


def _part_sample(
    batch: dict[str, np.ndarray], share: float, seed: int, filesystem: Any
) -> pa.Table:
    """``map_batches`` function: the rows of one part file's rounds in the model's sample."""
    from causalrec.platform import storage as storage_module

    (file,) = batch["file"]
    source = storage_module.Location(filesystem, str(file)) if filesystem else str(file)
    table = storage_module.open_parquet(source).read(columns=list(COLUMNS))
    chosen = _sampled_rounds(table.column("round_id").to_numpy(), share, seed)
    return table.filter(pa.array(chosen))


def _parse(estimators: str | Sequence[str | Estimator] | None, slate_size: int) -> list[Estimator]:
    if estimators is None:
        specs = list(DEFAULT_ESTIMATORS) + (list(SLATE_ESTIMATORS) if slate_size > 1 else [])
        parsed = parse_estimators(specs)
    elif isinstance(estimators, str):
        parsed = parse_estimators(estimators)
    else:
        parsed = [e if isinstance(e, Estimator) else parse_estimators([e])[0] for e in estimators]
    refused = [repr(e) for e in parsed if e.name not in SHARDABLE_ESTIMATORS]
    if refused:
        raise ConfigError(
            f"estimators: {', '.join(refused)} cannot be evaluated shard by shard (their terms "
            "depend on the whole log); sharded evaluation supports "
            f"{', '.join(SHARDABLE_ESTIMATORS)}"
        )
    return parsed


@dataclass(frozen=True)
class _LogShape:
    """What the part files' metadata says about the log.

    ``files`` are local paths, or paths on ``filesystem`` (the log is at a URI or a
    :class:`~causalrec.platform.storage.Location`).
    """

    files: list[str]
    n_rows: int
    n_items: int
    slate_size: int
    item_table: np.ndarray | None
    filesystem: Any = None


def _log_shape(path: str | Path | storage.Location) -> _LogShape:
    files = storage.log_files(path)
    metadata: dict[str, Any] = {}
    n_rows, slate_size = 0, 1
    for file in files:
        parquet = storage.open_parquet(file)
        n_rows += parquet.metadata.num_rows
        metadata = storage.log_file_metadata(file, parquet)
        slate_size = max(slate_size, storage.metadata_slate_size(metadata))
    n_items = int(metadata.get("n_items", metadata.get("simulator", {}).get("n_items", 0)))
    if n_items < 1:
        raise LogFormatError(f"{str(files[-1])!r} does not record n_items in its metadata")
    root = storage.log_root(path)
    items = storage.read_item_features(root) if root is not None else None
    if isinstance(files[0], storage.Location):  # one file system: that of ``path``
        return _LogShape(
            [f.path for f in files], n_rows, n_items, slate_size, items, files[0].filesystem
        )
    return _LogShape([str(f) for f in files], n_rows, n_items, slate_size, items)


def _fit_reward_model(
    parts, shape: _LogShape, config: RewardModelConfig, sample_rounds: int, seed: int
) -> tuple[RewardModel, int]:
    """A reward model fitted on a hash-chosen sample of at most ``sample_rounds`` rounds.

    ``parts`` is the Ray dataset of the log's part files (one row per file).
    """
    share = min(1.0, sample_rounds / max(1, shape.n_rows // shape.slate_size))
    sampled = parts.map_batches(
        _part_sample,
        fn_kwargs={"share": share, "seed": seed, "filesystem": shape.filesystem},
        batch_size=1,
        batch_format="numpy",
    )
    tables = list(sampled.iter_batches(batch_format="pyarrow", batch_size=None))
    table = pa.concat_tables(tables) if tables else None
    if table is None or table.num_rows == 0:
        raise DataError("the reward model's sample of rounds is empty; raise reward_sample_rounds")
    # In log order, whatever order the batches came in: the fit does not depend on the partition.
    order = np.lexsort((table.column("position").to_numpy(), table.column("round_id").to_numpy()))
    table = table.take(pa.array(order))
    n = table.num_rows
    features = table.column("user_features").combine_chunks()
    x = features.flatten().to_numpy(zero_copy_only=False).reshape(n, features.type.list_size)
    space = feature_space_of(shape.item_table, shape.n_items, shape.slate_size)
    model = make_reward_model(space, config).fit(
        x.astype(np.float64),
        table.column("item_id").to_numpy().copy(),  # Arrow's buffers are read-only
        table.column("position").to_numpy().astype(np.int64),
        table.column("click").to_numpy().astype(np.float64),
    )
    return model, n


def evaluate_dataset(
    path: str | Path | storage.Location,
    policy: Policy,
    estimators: str | Sequence[str | Estimator] | None = None,
    *,
    reward_model: str | RewardModelConfig | dict | RewardModel | None = "logistic",
    reward_sample_rounds: int = REWARD_SAMPLE_ROUNDS,
    alpha: float = 0.05,
    n_bootstrap: int = 0,
    seed: int = 0,
    batch_rows: int = BATCH_ROWS,
    workers: int | None = None,
    address: str | None = None,
) -> pd.DataFrame:
    """Estimate ``policy``'s value from a Parquet log with Ray Data (see the module docstring).

    Args:
        path: A log directory (its ``logs/`` part files) or a part file: a local path, a URI
            (``s3://bucket/run``: every read task opens the parts there itself) or a
            :class:`~causalrec.platform.storage.Location`.
        policy: The target policy.
        estimators: Specs or instances among :data:`SHARDABLE_ESTIMATORS`; default: the
            default estimators of :func:`~causalrec.ope.evaluate` (with the slate estimators
            for K > 1).
        reward_model: Kind, config, an already fitted
            :class:`~causalrec.ope.reward_model.RewardModel`, or ``None`` (DM and the DR family
            are then dropped).
        reward_sample_rounds: Most rounds the reward model is fitted on.
        alpha: 1 - confidence level of the intervals.
        n_bootstrap: Poisson bootstrap replicates (0: normal intervals only).
        seed: Seed of the reward model's sample and of the bootstrap.
        batch_rows: Rows a task reads from its part file at a time (its memory grows with it).
        workers: Part files evaluated at once (Ray Data tasks); default: every CPU of the
            cluster.
        address: Ray cluster (default ``RAY_ADDRESS``, else a local Ray).

    Returns:
        One row per estimator: ``estimator``, ``estimate``, ``low``, ``high`` (normal),
        ``se``, ``boot_low``, ``boot_high`` (percentile, NaN without replicates), ``unit``
        (clicks per round), ``ess``, ``ess_share``, ``max_weight``, ``mean_weight``,
        ``reward_model``, ``reward_sample_rounds`` (rounds it was fitted on), ``n_rows``,
        ``n_rounds``, ``n_parts`` (part files, one task each) and ``nodes`` (Ray nodes that
        evaluated them).

    Raises:
        ConfigError: An estimator that cannot be sharded, or a bad option (named).
        DataError: A round whose rows are not its slate's K rows, or a missing pscore.
    """
    import ray

    from causalrec.platform.runtime import init_ray

    for name, value, low in (("alpha", alpha, None), ("n_bootstrap", n_bootstrap, 0),
                             ("reward_sample_rounds", reward_sample_rounds, 1)):  # fmt: skip
        if name == "alpha":
            if not 0 < alpha < 1:
                raise ConfigError(f"alpha must be in (0, 1); got {alpha}")
        elif not isinstance(value, int | np.integer) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}; got {value!r}")
    for name, value in (("workers", workers), ("batch_rows", batch_rows)):
        if value is not None and (not isinstance(value, int | np.integer) or value < 1):
            raise ConfigError(f"{name} must be an integer >= 1; got {value!r}")
    shape = _log_shape(path)
    parsed = _parse(estimators, shape.slate_size)
    fitted = reward_model if isinstance(reward_model, RewardModel) else None
    config = fitted.config if fitted else coerce_reward_model(reward_model)
    if config is None:
        parsed = [e for e in parsed if not e.needs_reward_model]
        if not parsed:
            raise DataError("every estimator needs a reward model; reward_model is None")
    needs_model = any(e.needs_reward_model for e in parsed)
    cluster = init_ray(address)
    workers = workers or max(1, int(cluster.get("CPU", 1)))
    # One row, and one task, per part file: a file's rows are contiguous whatever Ray Data
    # would make of them (it may read several small files as one block).
    parts = ray.data.from_items(
        [{"file": file} for file in shape.files], override_num_blocks=len(shape.files)
    )
    sample_size = 0
    if needs_model and fitted is None:
        fitted, sample_size = _fit_reward_model(parts, shape, config, reward_sample_rounds, seed)
    context = _Context(
        policy, parsed, fitted if needs_model else None, shape.n_items, shape.slate_size,
        shape.item_table, n_bootstrap, seed,
    )  # fmt: skip
    sums = parts.map_batches(
        _part_sums,
        fn_kwargs={"context": context, "batch_rows": batch_rows, "filesystem": shape.filesystem},
        batch_size=1,
        batch_format="numpy",
        concurrency=workers,
    )
    totals = _Totals()
    with warnings.catch_warnings():
        # A log of fewer files than workers runs fewer tasks; Ray Data warns, nothing is wrong.
        warnings.filterwarnings("ignore", "The maximum number of concurrent tasks", UserWarning)
        for row in sums.iter_rows():  # merged as they come: the driver holds no list of parts
            totals.absorb(pickle.loads(row["totals"]))
    return _finish(context, parsed, totals, shape, alpha, config, sample_size)


def _finish(context, parsed, totals: _Totals, shape, alpha, config, sample_size) -> pd.DataFrame:
    """Finish the part files' edge rounds, then turn the merged sums into the estimator table."""
    if totals.pending:  # the parts' edge rounds, whole again
        totals.add(context.process(pa.concat_tables(totals.pending), finish=True))
        totals.pending = []
    if not totals.rows:
        raise DataError("the log has no rounds")
    sizes = sorted(totals.round_rows)
    if len(sizes) > 1:
        raise DataError(
            f"rounds of {sizes[0]} and of {sizes[-1]} rows: sharded evaluation needs every "
            "round of the log to have the same number of rows"
        )
    moments, layout, rows = totals.moments, totals.layout, totals.rows
    weight_sum, weight_sq = totals.weight_sum, totals.weight_sq_sum
    z = stats.norm.ppf(1 - alpha / 2)
    records = []
    for estimator, columns in zip(parsed, layout.columns, strict=True):
        value, se = _estimate(moments, columns)
        boot_low = boot_high = np.nan
        if moments.replicate_sum.shape[0]:
            replicates = _replicate_values(moments, columns)
            boot_low, boot_high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
        ess = weight_sum**2 / max(weight_sq, np.finfo(float).tiny)
        records.append(
            {
                "estimator": repr(estimator),
                "estimate": value,
                "low": value - z * se,
                "high": value + z * se,
                "se": se,
                "boot_low": float(boot_low),
                "boot_high": float(boot_high),
                "unit": CLICKS_PER_ROUND,
                "ess": ess,
                "ess_share": ess / rows,
                "max_weight": totals.weight_max,
                "mean_weight": weight_sum / rows,
                "reward_model": config.kind if config and estimator.needs_reward_model else "none",
                "reward_sample_rounds": sample_size // shape.slate_size if sample_size else 0,
                "n_rows": rows,
                "n_rounds": moments.n,
                "n_parts": totals.parts,
                "nodes": len(totals.nodes),
            }
        )
    return pd.DataFrame.from_records(records)


def _estimate(moments: MomentSums, columns) -> tuple[float, float]:
    """Estimate and delta-method standard error from merged moments (as EstimatorTerms)."""
    a, b, d = columns
    mean = moments.mean
    ratio = mean[b] / mean[d] if d is not None else mean[b]
    if d is not None and mean[d] == 0:
        raise DataError(
            "the target policy gives no weight to any logged impression: a self-normalised "
            "estimate is undefined"
        )
    value = float(ratio + (mean[a] if a is not None else 0.0))
    gradient = np.zeros(len(mean))  # influence = gradient · (x - mean)
    if d is None:
        gradient[b] = 1.0
    else:
        gradient[b] = 1.0 / mean[d]
        gradient[d] = -ratio / mean[d]
    if a is not None:
        gradient[a] = 1.0
    if moments.n < 2:
        return value, np.inf
    variance = float(gradient @ moments.m2 @ gradient) / (moments.n - 1)
    return value, float(np.sqrt(max(variance, 0.0)) / np.sqrt(moments.n))


def _replicate_values(moments: MomentSums, columns) -> np.ndarray:
    """Each Poisson replicate's estimate, shape (B,)."""
    a, b, d = columns
    with np.errstate(invalid="ignore", divide="ignore"):
        means = moments.replicate_sum / moments.replicate_weight[:, None]
        values = means[:, b] / means[:, d] if d is not None else means[:, b].copy()
    if a is not None:
        values = values + means[:, a]
    return values[np.isfinite(values)]
