"""Training torch recommenders from a stream of the log's Parquet files (Ray Data).

:func:`fit_streaming` trains a :class:`~causalrec.methods.torch_base.TorchRecommender` without
any process holding the log: the rows stay in the log's part files
(:class:`~causalrec.platform.log_dataset.LogDataset`) and reach the training loop as
mini-batches of tensors.

1. **Sums over the log** — one Ray Data pass over the columns the method reads gives the row
   count, the largest user id and the sum of each per-row array of the method (the IPS weights
   1/p, DR's imputation weights, CausE's uniform-exposure flag, ...); nothing else of the log is
   kept. The method checks the means (IPS refuses a log without pscore, CausE one without a
   uniform slice) and normalises by them.
2. **Training columns** — the dataset (``ray.data.read_parquet(files).select_columns(...)``,
   filtered to the range's rounds) is mapped batch by batch to the training examples: users,
   items, labels and the method's per-row arrays, computed by the method's own
   :meth:`~causalrec.methods.torch_base.TorchRecommender._row_arrays` and divided by the means
   of step 1 — what :meth:`_prepare` gives the same rows in memory.
3. **Training** — in ``num_workers`` Ray Train workers (:class:`ray.train.torch.TorchTrainer`
   with ``datasets={"train": ...}``; each worker iterates its shard,
   ``ray.train.get_dataset_shard("train").iter_torch_batches(...)``), or, with
   ``in_process=True``, in the calling process (what a Tune trial does). Each mini-batch goes
   through the method's own step (:meth:`~TorchRecommender._train_step`: its sampling, its
   losses, the finiteness check, Adam), so a streamed model is the same method, trained by the
   same code, as ``fit``. Workers average gradients by one all-reduce per step
   (:class:`~causalrec.methods.data_parallel.WorkerShard`), each taking
   ``ceil(batch_size / num_workers)`` rows of every global mini-batch; a worker whose shard
   ran out joins each remaining step's all-reduce with zero gradients.

The user and item feature tables (``users.parquet``, ``items.parquet``: one row per user and
per item, small beside the log) are read once and broadcast with the model. The result is a
normal fitted recommender of the same class: it scores, turns into a policy and saves
(:class:`~causalrec.methods.artifact.SavedModel`) like one trained by ``fit``.

**Which methods stream.** Those whose loss is a per-row function of the logged row, given a few
sums over the log: ``naive``, ``ips``, ``snips`` (logged propensities), ``dr_jl`` and ``mrdr``
(their uniform items are drawn from the catalogue), ``causalnet`` (its unexposed pairs too) and
``cause`` (the row's logging policy), in the exposed setting with the ``mf`` or ``two_tower``
backbone. :func:`check_streamable` refuses the others with a :class:`ConfigError` naming the
method and why: the implicit setting (its positives are the log's distinct clicked pairs, a
de-duplication over the whole log), the ``transformer`` backbone (each round's history is built
from the whole log in time order), estimated propensities (``popularity`` and ``logistic`` are
fitted on the whole log), IPS ``augment`` (an imputation model is fitted on the whole log first),
``dice`` (popularity-split triples) and every non-torch method.

**Shuffling.** Rows arrive in file order, shuffled by a local buffer of ``shuffle_buffer_rows``
rows (seeded per seed, epoch and worker): a full shuffle when the log fits in the buffer, a
windowed one otherwise, unlike ``fit``'s global permutation. On one CPU worker a run repeats
exactly; across workers the split of the stream depends on timing, as in any Ray Train ingest.

**Resources.** Ray Data's read tasks run outside the training workers' reservations: keep at
least one CPU of the cluster free beside the workers (``cpus_per_worker`` below 1 on a small
machine), or the reads wait for ever.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from causalrec.methods.data import InteractionData
from causalrec.methods.torch_base import TorchRecommender, _compiled_encoders, _seeded_torch_stream
from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.log_dataset import LogDataset

if TYPE_CHECKING:
    from causalrec.platform.feedback import LoggedFeedback

__all__ = [
    "BASE_COLUMNS",
    "StreamPlan",
    "check_streamable",
    "fit_streaming",
    "is_streamable",
    "plan",
    "stream_epochs",
    "training_dataset",
]

#: Log columns every streamed method reads (users, items, labels).
BASE_COLUMNS = ("user_id", "item_id", "click")
#: Rows of the local shuffle buffer unless given (at least a mini-batch).
SHUFFLE_BUFFER_ROWS = 1 << 16


def _refusal(model) -> str | None:
    if not isinstance(model, TorchRecommender):
        return f"it is not a torch method ({type(model).__name__} trains in one step in memory)"
    return model.streaming_refusal()


def is_streamable(model) -> bool:
    """Whether ``model`` (with its parameters) can train from a stream of log rows."""
    return _refusal(model) is None


def check_streamable(model) -> None:
    """Refuse a model that cannot train from a stream of log rows.

    Raises:
        ConfigError: Naming the method and why (see the module docstring).
    """
    reason = _refusal(model)
    if reason is not None:
        raise ConfigError(
            f"{model.name} cannot train from a stream of the log: {reason}; train it in memory "
            "(fit on the whole log) instead"
        )


@dataclass(frozen=True)
class StreamPlan:
    """What every streaming worker needs besides the rows (small, broadcast).

    Attributes:
        rows: Training rows in the stream.
        n_users: Users (largest user id + 1, or the user table's length if larger).
        n_items: Catalogue size.
        means: Mean over the training rows of each of the method's per-row arrays.
        user_features: ``users.parquet`` features (``two_tower`` only), or ``None``.
        item_features: ``items.parquet`` features (``two_tower`` only), or ``None``.
        shuffle_buffer_rows: Rows of the local shuffle buffer.
    """

    rows: int
    n_users: int
    n_items: int
    means: dict[str, float]
    user_features: np.ndarray | None
    item_features: np.ndarray | None
    shuffle_buffer_rows: int

    def catalogue(self, model: TorchRecommender) -> InteractionData:
        """The catalogue the model's networks are built on and its samples drawn from."""
        return InteractionData.catalogue(
            self.n_users, self.n_items, model.feedback, self.user_features, self.item_features
        )


def _blank(model: TorchRecommender) -> TorchRecommender:
    """An unfitted copy of ``model`` (what Ray Data's tasks receive)."""
    return type(model)(**model.get_params(deep=False))


def _columns(model: TorchRecommender) -> list[str]:
    return list(dict.fromkeys([*BASE_COLUMNS, *model.stream_columns]))


def _batch_sums(batch: dict[str, np.ndarray], model: TorchRecommender) -> dict[str, np.ndarray]:
    """Ray Data task: one row of sums per batch (rows, largest user, each per-row array)."""
    n = len(batch["user_id"])
    sums = {
        "rows": np.array([n], dtype=np.int64),
        "max_user": np.array([int(batch["user_id"].max()) if n else -1], dtype=np.int64),
    }
    for key, values in model._row_arrays(batch).items():
        sums[f"sum_{key}"] = np.array([np.sum(values, dtype=np.float64)])
    return sums


def _training_columns(
    batch: dict[str, np.ndarray], model: TorchRecommender, means: dict[str, float]
) -> dict[str, np.ndarray]:
    """Ray Data task: log columns to training examples (the method's own per-row arrays)."""
    examples = {
        "users": np.asarray(batch["user_id"], dtype=np.int64),
        "items": np.asarray(batch["item_id"], dtype=np.int64),
        "labels": np.asarray(batch["click"], dtype=np.float32),
    }
    for key, values in model._row_arrays(batch).items():
        values = np.asarray(values, dtype=np.float64)
        if key in model.mean_normalised:
            values = values / means[key]
        examples[key] = values.astype(np.float32)
    return examples


def plan(
    model: TorchRecommender, source: LogDataset, *, shuffle_buffer_rows: int | None = None
) -> StreamPlan:
    """One Ray Data pass over the columns ``model`` reads: the sums of its training rows.

    Raises:
        DataError: If the range holds no row, or the method refuses the log's sums (``cause``
            without a uniform-exposure slice).
        ConfigError: If the method refuses them (``ips`` on a log without pscore).
    """
    sums = (
        source.dataset(_columns(model))
        .map_batches(_batch_sums, fn_kwargs={"model": _blank(model)}, batch_format="numpy")
        .take_all()
    )
    rows = sum(int(row["rows"]) for row in sums)
    if rows == 0:
        raise DataError("the log is empty: nothing to train on")
    keys = [key[len("sum_") :] for key in sums[0] if key.startswith("sum_")]
    means = {key: float(sum(float(row[f"sum_{key}"]) for row in sums) / rows) for key in keys}
    model._check_row_means(means)
    users, items = source.feature_tables()
    n_users = 1 + max(int(row["max_user"]) for row in sums)
    if users is not None:
        n_users = max(n_users, len(users))
    if model.backbone == "two_tower" and (users is None or items is None):
        raise ConfigError(
            "backbone='two_tower' needs the log's user and item feature tables "
            "(users.parquet and items.parquet beside the log)"
        )
    two_tower = model.backbone == "two_tower"
    buffer = shuffle_buffer_rows if shuffle_buffer_rows is not None else SHUFFLE_BUFFER_ROWS
    if buffer < 1:
        raise ConfigError(f"shuffle_buffer_rows must be >= 1; got {buffer}")
    return StreamPlan(
        rows=rows,
        n_users=n_users,
        n_items=source.n_items,
        means=means,
        user_features=users if two_tower else None,
        item_features=items if two_tower else None,
        shuffle_buffer_rows=max(buffer, int(model.batch_size)),
    )


def training_dataset(model: TorchRecommender, source: LogDataset, stream_plan: StreamPlan):
    """The Ray Data dataset of ``model``'s training examples over ``source`` (lazy)."""
    return source.dataset(_columns(model)).map_batches(
        _training_columns,
        fn_kwargs={"model": _blank(model), "means": dict(stream_plan.means)},
        batch_format="numpy",
    )


def _shuffle_seed(seed: int, rank: int, epoch: int) -> int:
    (state,) = np.random.SeedSequence([seed, 3, rank, epoch]).generate_state(1)
    return int(state)


def _epochs(
    model: TorchRecommender,
    batches: Callable[[int, int], Iterable[dict[str, torch.Tensor]]],
    stream_plan: StreamPlan,
    *,
    validation: LoggedFeedback | None,
    state: dict | None,
    shard,
) -> Iterator[int]:
    """The streaming training loop; ``batches(epoch, seed)`` iterates one epoch's batches."""
    data = stream_plan.catalogue(model)
    if model.backbone == "two_tower":
        model._feature_tables = (data.user_features, data.item_features)
    device = model._torch_device()
    networks, optimizers = model._training_networks(data, device)
    rank = shard.rank if shard is not None else 0
    rng = np.random.default_rng(np.random.SeedSequence([model.seed, 1 + rank]))
    model.history_, model.validation_history_ = [], []
    first_epoch = 0
    if state is not None:
        first_epoch = model._load_training_state(state, networks, optimizers, rng)
    for epoch in range(first_epoch, model.epochs):
        with (
            _seeded_torch_stream(model.seed, rank, epoch, device),
            _compiled_encoders(networks.values(), model.compile),
        ):
            for network in networks.values():
                network.train()
            total, steps, step = 0.0, 0, 0
            stream = iter(batches(epoch, _shuffle_seed(model.seed, rank, epoch)))
            while True:
                batch = next(stream, None)
                # Every worker takes the same number of steps (each step is an all-reduce).
                if not (shard.any(batch is not None) if shard is not None else batch is not None):
                    break
                if batch is None:
                    batch = {"users": torch.zeros(0, dtype=torch.int64, device=device)}
                else:
                    batch = {key: value.to(device) for key, value in batch.items()}
                loss = model._train_step(
                    batch, networks, optimizers, data, rng, device, shard, (epoch, step)
                )
                if loss is not None:
                    total += loss
                    steps += 1
                step += 1
        model._end_epoch(
            epoch, total, steps, networks, optimizers, rng, validation, device, shard,
            data.n_users, data.n_items,
        )  # fmt: skip
        model.streamed_rows_ = stream_plan.rows
        yield epoch + 1


def _iterate(source, batch_size: int, stream_plan: StreamPlan):
    """``batches(epoch, seed)`` over a Ray Data dataset or a Ray Train dataset shard."""

    def batches(epoch: int, seed: int):
        return source.iter_torch_batches(
            batch_size=batch_size,
            local_shuffle_buffer_size=stream_plan.shuffle_buffer_rows,
            local_shuffle_seed=seed,
            device="cpu",
        )

    return batches


def _worker_loop(config: dict) -> None:
    """The loop of one Ray Train worker (module level: Ray pickles it by reference)."""
    import ray
    import ray.train
    import ray.train.torch

    from causalrec.methods.data_parallel import WorkerShard, report_trained

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    model: TorchRecommender = config["model"]
    if config["use_gpu"]:
        model.device = str(ray.train.torch.get_device())
    stream_plan: StreamPlan = config["plan"]
    validation = ray.get(config["validation"]) if config["validation"] is not None else None
    shard = WorkerShard(rank, world) if world > 1 else None
    batch_size = math.ceil(model.batch_size / world)
    batches = _iterate(ray.train.get_dataset_shard("train"), batch_size, stream_plan)
    for _ in _epochs(model, batches, stream_plan, validation=validation, state=None, shard=shard):
        pass
    report_trained(model, rank)


def stream_epochs(
    model: TorchRecommender,
    source: LogDataset | str | Path,
    *,
    validation: LoggedFeedback | None = None,
    state: dict | None = None,
    in_process: bool = False,
    cpus_per_worker: float = 1.0,
    shuffle_buffer_rows: int | None = None,
) -> Iterator[int]:
    """Train ``model`` from ``source``'s rows, yielding the epochs done (as ``fit_epochs``).

    Args:
        model: An unfitted torch recommender of a method that streams (see the module
            docstring); its ``num_workers`` Ray Train workers train it.
        source: A log directory (or its ``logs/`` folder, or a part file), or a
            :class:`LogDataset` (e.g. a range of rounds).
        validation: An in-memory held-out log whose logistic loss is recorded per epoch.
        state: A :meth:`~TorchRecommender.training_state` to resume from (``in_process``).
        in_process: Train in this process, yielding after every epoch (a Tune trial); the
            rows still stream from Ray Data's tasks. Otherwise Ray Train trains and this
            yields once, after the last epoch.
        cpus_per_worker: CPUs of each Ray Train worker.
        shuffle_buffer_rows: Rows of the local shuffle buffer (default 65,536, at least
            ``batch_size``).

    Raises:
        ConfigError: For a method that cannot stream, or invalid parameters.
        DataError: For an empty range.
        TrainingError: If a worker failed (its error in the message).
    """
    check_streamable(model)
    model._validate()
    if not isinstance(source, LogDataset):
        source = LogDataset.open(source)
    if not cpus_per_worker > 0:
        raise ConfigError(f"cpus_per_worker must be > 0; got {cpus_per_worker}")
    if state is not None and not in_process:
        raise ConfigError("resuming a streamed training (state=...) needs in_process=True")
    from causalrec.platform.runtime import init_ray

    resources = init_ray()
    stream_plan = plan(model, source, shuffle_buffer_rows=shuffle_buffer_rows)
    dataset = training_dataset(model, source, stream_plan)
    if in_process:
        batches = _iterate(dataset, int(model.batch_size), stream_plan)
        yield from _epochs(
            model, batches, stream_plan, validation=validation, state=state, shard=None
        )
        model.trained_workers_ = 1
        return
    _train_on_workers(model, dataset, stream_plan, validation, resources, cpus_per_worker)
    model.streamed_rows_ = stream_plan.rows
    yield model.epochs


def _train_on_workers(model, dataset, stream_plan, validation, resources, cpus_per_worker):
    import ray

    from causalrec.methods.data_parallel import train_on_workers

    config = {
        "plan": stream_plan,
        "validation": ray.put(validation) if validation is not None else None,
    }
    return train_on_workers(
        model, _worker_loop, config, resources=resources,
        what=f"streaming training of {model.name}", cpus_per_worker=cpus_per_worker,
        datasets={"train": dataset},
    )  # fmt: skip


def fit_streaming(
    model: TorchRecommender,
    source: LogDataset | str | Path,
    *,
    validation: LoggedFeedback | None = None,
    in_process: bool = False,
    cpus_per_worker: float = 1.0,
    shuffle_buffer_rows: int | None = None,
) -> TorchRecommender:
    """Train ``model`` from a stream of ``source``'s rows; returns the fitted model.

    See :func:`stream_epochs` for the arguments. The fitted model also has ``streamed_rows_``
    (training rows per epoch) and ``trained_workers_``.
    """
    for _ in stream_epochs(
        model,
        source,
        validation=validation,
        in_process=in_process,
        cpus_per_worker=cpus_per_worker,
        shuffle_buffer_rows=shuffle_buffer_rows,
    ):
        pass
    return model
