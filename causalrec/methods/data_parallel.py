"""Data-parallel training of torch recommenders on Ray Train (``num_workers > 1``).

:func:`fit_data_parallel` runs the recommender's own training loop
(:meth:`~causalrec.methods.torch_base.TorchRecommender.fit_epochs`) in ``num_workers`` Ray Train
workers (:class:`ray.train.torch.TorchTrainer`, which sets up the torch process group: gloo on
CPU, NCCL on GPU). Every worker builds the same initial weights from the seed and draws the same
shuffle; each mini-batch of ``batch_size`` examples is split between the workers, and after each
backward pass the gradients are averaged by one all-reduce (:class:`WorkerShard`), which is what
DistributedDataParallel does. The all-reduce is explicit rather than a DDP wrapper because
several methods call their networks more than once per step (DR-JL, MRDR), which DDP's
per-parameter hooks do not allow. Rank 0 saves the trained model as a checkpoint; the driver
loads it.

With one worker, training runs in the calling process and Ray is not used.

References:
    Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training",
    VLDB 2020.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from causalrec.platform.errors import CausalRecError

if TYPE_CHECKING:
    from causalrec.methods.torch_base import TorchRecommender
    from causalrec.platform.feedback import LoggedFeedback

__all__ = ["WorkerShard", "adopt_trained", "fit_data_parallel", "report_trained", "uses_gpu"]


@dataclass(frozen=True)
class WorkerShard:
    """One worker's part of a data-parallel run.

    Attributes:
        rank: The worker's rank in [0, world_size).
        world_size: Workers in the run.
    """

    rank: int
    world_size: int

    def rows(self, start: int, stop: int) -> slice:
        """This worker's rows of the global mini-batch ``[start, stop)`` (every world_size-th)."""
        return slice(start + self.rank, stop, self.world_size)

    def average_gradients(self, modules: list[torch.nn.Module]) -> None:
        """Replace each parameter's gradient by its mean over the workers (one all-reduce)."""
        import torch.distributed as dist

        parameters = [p for module in modules for p in module.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for parameter, grad in zip(parameters, grads, strict=True):
            size = grad.numel()
            parameter.grad = flat[offset : offset + size].view_as(grad).clone()
            offset += size

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any worker (one all-reduce)."""
        import torch.distributed as dist

        tensor = torch.tensor([int(flag)], dtype=torch.int64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def mean(self, values: list[float]) -> list[float]:
        """Element-wise mean of ``values`` over the workers."""
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return (tensor / self.world_size).tolist()


def _worker_loop(config: dict) -> None:
    """The training loop of one Ray Train worker (module level: Ray pickles it by reference)."""
    import ray
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    model: TorchRecommender = config["model"]
    model._shard = WorkerShard(context.get_world_rank(), context.get_world_size())
    if config["use_gpu"]:
        model.device = str(ray.train.torch.get_device())
    logs = ray.get(config["logs"])
    validation = ray.get(config["validation"]) if config["validation"] is not None else None
    model.fit(logs, validation=validation)
    report_trained(model, context.get_world_rank())


def report_trained(model: TorchRecommender, rank: int) -> None:
    """Report a worker's epoch losses; rank 0 adds the trained model as a checkpoint."""
    import ray.train

    metrics = {
        "history": list(model.history_),
        "validation_history": list(model.validation_history_),
    }
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        model.save(Path(directory) / "model")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def uses_gpu(model: TorchRecommender, resources: dict, workers: int) -> bool:
    """Whether Ray Train workers get a GPU each (``device`` cuda, or auto and enough GPUs)."""
    gpus = resources.get("GPU", 0)
    return model.device == "cuda" or (model.device == "auto" and gpus >= workers)


def adopt_trained(model: TorchRecommender, result, workers: int) -> TorchRecommender:
    """Make ``model`` the one rank 0 checkpointed in a Ray Train ``result``."""
    from causalrec.methods.artifact import SavedModel

    if result.checkpoint is None:
        raise CausalRecError("data-parallel training reported no checkpoint")
    with result.checkpoint.as_directory() as directory:
        trained = SavedModel.open(Path(directory) / "model").load()
    model._set_state(trained._get_state(), trained.n_users_, trained.n_items_)
    model.history_ = [float(v) for v in result.metrics["history"]]
    model.validation_history_ = [float(v) for v in result.metrics["validation_history"]]
    model.trained_workers_ = workers
    return model


def fit_data_parallel(
    model: TorchRecommender,
    logs: LoggedFeedback,
    validation: LoggedFeedback | None,
) -> TorchRecommender:
    """Train ``model`` with ``model.num_workers`` Ray Train workers; returns the fitted model.

    Joins the cluster of ``RAY_ADDRESS`` or starts a local one (:func:`init_ray`). Workers use
    a GPU each when ``device`` is ``cuda``, or ``auto`` and the cluster has one GPU per worker.

    Raises:
        TrainingError: If a worker failed (its error is in the message).
    """
    import ray

    from causalrec.platform.runtime import init_ray

    resources = init_ray()
    config = {
        "logs": ray.put(logs),
        "validation": ray.put(validation) if validation is not None else None,
    }
    return train_on_workers(
        model, _worker_loop, config, resources=resources, what="data-parallel training"
    )


def train_on_workers(
    model: TorchRecommender,
    loop,
    config: dict,
    *,
    resources: dict[str, float],
    what: str,
    cpus_per_worker: float | None = None,
    datasets: dict | None = None,
) -> TorchRecommender:
    """Run ``loop`` in ``model.num_workers`` Ray Train workers; returns ``model``, trained.

    Every worker gets ``config`` plus ``"model"`` (a one-worker copy of ``model``, on CPU unless
    the workers use GPUs) and ``"use_gpu"``; rank 0 reports the trained model, which
    :func:`adopt_trained` copies into ``model``.

    Args:
        model: The recommender (its ``num_workers`` and ``device`` decide the workers).
        loop: The worker function (``TorchTrainer``'s ``train_loop_per_worker``).
        config: The rest of the worker's ``train_loop_config``.
        resources: The cluster's resources (``init_ray()``).
        what: Names the run in a failure's message.
        cpus_per_worker: CPUs each worker reserves (default: Ray Train's, 1).
        datasets: Ray Data datasets for ``get_dataset_shard``.

    Raises:
        TrainingError: If a worker failed (its error is in the message).
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from causalrec.methods.base import TrainingError

    workers = int(model.num_workers)
    use_gpu = uses_gpu(model, resources, workers)
    worker_model = type(model)(**{**model.get_params(deep=False), "num_workers": 1})
    if not use_gpu:
        worker_model.device = "cpu"
    per_worker = None
    if cpus_per_worker is not None:
        per_worker = {"CPU": float(cpus_per_worker), **({"GPU": 1.0} if use_gpu else {})}
    with tempfile.TemporaryDirectory(prefix="causalrec-train-") as storage:
        trainer = TorchTrainer(
            loop,
            train_loop_config={"model": worker_model, "use_gpu": use_gpu, **config},
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=use_gpu, resources_per_worker=per_worker
            ),
            run_config=RunConfig(storage_path=storage, name="fit"),
            datasets=datasets,
        )
        try:
            result = trainer.fit()
        except Exception as exc:  # Ray Train wraps the worker's error
            raise TrainingError(f"{what} with num_workers={workers} failed: {exc}") from exc
        return adopt_trained(model, result, workers)
