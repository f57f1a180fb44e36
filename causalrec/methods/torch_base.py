"""The torch training loop every torch recommender shares, with its resumable state.

:class:`TorchRecommender` trains a scoring network by mini-batch Adam over shuffled examples (no
per-row Python loop), epoch by epoch (:meth:`~TorchRecommender.fit_epochs`), and can resume from
a :meth:`~TorchRecommender.training_state` bit for bit on CPU. Methods define their loss.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import numpy as np
import torch

from causalrec.methods.base import ModelState, Recommender, TrainingError
from causalrec.methods.data import Feedback, InteractionData
from causalrec.methods.history import (
    last_impressions,
    latest_histories,
    round_histories,
)
from causalrec.methods.networks import SequentialTransformer
from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import Exploration, ExplorationKind
from causalrec.platform.session import SessionPolicy

__all__ = ["TorchRecommender"]


def _validation_loss(network: torch.nn.Module, logs: LoggedFeedback, device) -> float:
    """Mean logistic loss of ``network`` on the exposed pairs of ``logs``.

    A sequential network reads each round's history from ``logs`` itself (its earlier rounds).
    """
    was_training = network.training
    network.eval()
    with torch.no_grad():
        users = torch.from_numpy(logs.user_id).to(device)
        items = torch.from_numpy(logs.item_id).to(device)
        labels = torch.from_numpy(logs.click.astype(np.float32)).to(device)
        if isinstance(network, SequentialTransformer):
            history_items, history_clicks = _row_histories(logs, network.length)
            states = network.encode(
                torch.from_numpy(history_items).to(device),
                torch.from_numpy(history_clicks.astype(np.int64)).to(device),
            )
            logits = (states * network.item[items]).sum(dim=1) + network.item_bias[items]
        else:
            logits = network(users, items)
        loss = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels))
    network.train(was_training)
    return loss


def _round_index(logs: LoggedFeedback, round_id: np.ndarray) -> np.ndarray:
    """Row of ``round_id`` (a :class:`RoundHistories` order) for every log row, shape (n_rows,)."""
    order = np.argsort(round_id, kind="stable")
    return order[np.searchsorted(round_id[order], logs.round_id)]


def _row_histories(logs: LoggedFeedback, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The history of every row's round, shape (n_rows, L) each (items, clicks)."""
    histories = round_histories(logs, length)
    rows = _round_index(logs, histories.round_id)
    return histories.items[rows], histories.clicks[rows]


def _probabilities(logits: torch.Tensor) -> np.ndarray:
    """Click probabilities of logits, as a float64 numpy array on the CPU."""
    return torch.sigmoid(logits).double().cpu().numpy()


def _feature_tensor(table) -> torch.Tensor:
    """A float32 copy of a feature table (a numpy array, possibly read-only, or a tensor)."""
    if isinstance(table, torch.Tensor):
        return table.detach().clone().float()
    return torch.from_numpy(np.array(table, dtype=np.float32))


def _tensor(array: np.ndarray, device) -> torch.Tensor:
    """``array`` on ``device`` without a copy where possible.

    Read-only arrays (from Parquet or Ray's object store) are copied: torch tensors must be
    writable.
    """
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).to(device)


@contextmanager
def _seeded_torch_stream(seed: int, rank: int, epoch: int, device: torch.device) -> Iterator[None]:
    """Run the block on torch's global random stream seeded from (seed, rank, epoch).

    Dropout has no generator argument, so training seeds the global stream (CPU, and the
    current CUDA device when training there) and :func:`torch.random.fork_rng` puts the
    caller's stream back afterwards.
    """
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        (state,) = np.random.SeedSequence([seed, 2, rank, epoch]).generate_state(1)
        torch.default_generator.manual_seed(int(state))
        if devices:
            torch.cuda.manual_seed(int(state))
        yield


#: Values of ``precision``.
PRECISIONS = ("auto", "fp32", "bf16")


#: The backend of ``compile=True`` (tests swap in ``aot_eager``, which needs no C++ compiler).
COMPILE_BACKEND = "inductor"


@contextmanager
def _compiled_encoders(networks, enabled: bool) -> Iterator[None]:
    """While the block runs, each transformer's ``encode`` is its :func:`torch.compile` version.

    The compiled function is an attribute of the instance only while training, so the module's
    state dict, pickling and scoring are those of the eager module.
    """
    transformers = [n for n in networks if isinstance(n, SequentialTransformer)] if enabled else []
    for network in transformers:
        network.encode = torch.compile(network.encode, dynamic=True, backend=COMPILE_BACKEND)
    try:
        yield
    finally:
        for network in transformers:
            del network.encode


class TorchRecommender(Recommender):
    """A recommender trained by mini-batch Adam on a torch scoring network.

    Subclasses define :meth:`_loss` (or :meth:`_losses`). Every torch recommender takes the
    parameters below (subclasses add their own).

    Args:
        dim: Embedding dimension (with ``backbone="two_tower"``: output and hidden width of
            both towers).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        epochs: Passes over the training examples.
        batch_size: Examples per mini-batch.
        feedback: ``exposed`` (clicks on the exposed pairs) or ``implicit`` (clicks against
            unlabelled pairs); see :mod:`causalrec.methods.data`.
        negatives: Implicit setting: uniform negatives per positive.
        backbone: ``mf``: ID embeddings; ``two_tower``: MLPs over the observed user and item
            features, so the model generalises to users and items it has not seen;
            ``transformer``: self-attention over the user's last ``history_length``
            impressions (:class:`~causalrec.methods.networks.SequentialTransformer`; exposed
            feedback), which scores any user from a history, seen in training or not.
        history_length: ``transformer``: impressions of history (L).
        layers: ``transformer``: Transformer layers.
        heads: ``transformer``: attention heads (must divide ``dim``).
        dropout: ``transformer``: dropout in the layers while training.
        num_workers: Above 1, training runs data-parallel in that many Ray Train workers
            (:mod:`causalrec.methods.data_parallel`), on the cluster of ``RAY_ADDRESS`` or a
            local one; ``fit_epochs`` then yields once, after the last epoch.
        precision: Arithmetic of the training forward and backward passes: ``fp32``,
            ``bf16`` (``torch.autocast`` to bfloat16; the weights, the optimiser and scoring
            stay float32, so served propensities are unaffected) or ``auto`` (``bf16`` on
            CUDA, ``fp32`` on CPU).
        compile: ``transformer``: run the encoder through :func:`torch.compile` (dynamic shapes)
            while training. Worth it on CUDA; the first epoch pays the compilation (about 45 s
            for a small model on this project's 2-core CPU).
        device: Torch device; ``"auto"``: CUDA when torch sees it.
        seed: Seed of the initial weights, the shuffling and the sampling.
    """

    def __init__(
        self,
        *,
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
        self.dim = dim
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.feedback = feedback
        self.negatives = negatives
        self.backbone = backbone
        self.history_length = history_length
        self.layers = layers
        self.heads = heads
        self.dropout = dropout
        self.num_workers = num_workers
        self.precision = precision
        self.compile = compile
        self.device = device
        self.seed = seed

    # -- hooks --------------------------------------------------------------------------------
    #: Backbones the method can use (methods with their own networks support ``mf`` only).
    supported_backbones: ClassVar[tuple[str, ...]] = ("mf", "two_tower")

    def _build_network(
        self, n_users: int, n_items: int, generator: torch.Generator
    ) -> torch.nn.Module:
        """The scoring network (built again, empty, when a saved model is loaded)."""
        from causalrec.methods.networks import MatrixFactorization, TwoTower

        if self.backbone == "transformer":
            network = SequentialTransformer(
                n_items,
                self.history_length,
                self.dim,
                self.layers,
                self.heads,
                self.dropout,
                generator,
            )
            if hasattr(self, "_train_contexts"):
                network.set_contexts(*(torch.from_numpy(a) for a in self._train_contexts))
            return network
        if self.backbone == "two_tower":
            users, items = self._feature_tables
            return TwoTower(
                _feature_tensor(users), _feature_tensor(items), self.dim, self.dim, generator
            )
        return MatrixFactorization(n_users, n_items, self.dim, generator)

    def _prepare(self, logs: LoggedFeedback, data: InteractionData) -> dict[str, np.ndarray]:
        """Per-example arrays the loss needs beyond users, items, labels (e.g. weights)."""
        return {}

    # -- streaming hooks (causalrec.methods.streaming) -----------------------------------------
    #: Log columns, beyond ``user_id``, ``item_id`` and ``click``, that :meth:`_row_arrays`
    #: reads. ``None``: the method cannot train from a stream of log rows
    #: (:attr:`stream_refusal` says why).
    stream_columns: ClassVar[tuple[str, ...] | None] = None
    #: Why a method without :attr:`stream_columns` cannot train from a stream of log rows.
    stream_refusal: ClassVar[str] = (
        "its training reads more of the log than each row and a few sums over it"
    )
    #: Keys of :meth:`_row_arrays` divided by their mean over the training rows.
    mean_normalised: ClassVar[tuple[str, ...]] = ()

    def _row_arrays(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The per-row arrays the loss reads, before normalisation, from the rows' log columns.

        ``columns`` holds :attr:`stream_columns` of any subset of the log's rows (a mini-batch
        of a stream, or the whole log in memory); the arrays have one entry per row. Those
        named in :attr:`mean_normalised` are then divided by their mean over the training rows.
        """
        return {}

    def _check_row_means(self, means: dict[str, float]) -> None:
        """Refuse a log by the means of :meth:`_row_arrays` over its rows (default: accept)."""

    def streaming_refusal(self) -> str | None:
        """Why this configuration cannot train from a stream of log rows; ``None`` if it can."""
        if self.stream_columns is None:
            return self.stream_refusal
        if self.feedback != "exposed":
            return (
                f"feedback={self.feedback!r} trains on the log's distinct clicked pairs, a "
                "de-duplication over the whole log"
            )
        if self.backbone == "transformer":
            return (
                "backbone='transformer' reads each round's history, built from the whole log in "
                "time order"
            )
        return None

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Loss of one mini-batch (keys: users, items, labels, logits, and what _prepare gave).

        Single-network methods override this; methods with several networks or custom forward
        passes override :meth:`_losses` instead.
        """
        raise TypeError(f"{type(self).__name__} must override _loss or _losses")

    # -- training -----------------------------------------------------------------------------
    def _validate(self) -> None:
        if self.feedback not in self.supported_feedback:
            raise ConfigError(
                f"{self.name} supports feedback in {list(self.supported_feedback)}; got "
                f"{self.feedback!r}"
            )
        for name in ("dim", "epochs", "batch_size", "num_workers"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1; got {getattr(self, name)}")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)) or (name == "lr" and value == 0):
                raise ConfigError(
                    f"{name} must be {'> 0' if name == 'lr' else '>= 0'}; got {value}"
                )
        if self.backbone not in self.supported_backbones:
            raise ConfigError(
                f"{self.name} supports backbone in {list(self.supported_backbones)}; got "
                f"{self.backbone!r}"
            )
        if self.negatives < 1 and self.feedback == "implicit":
            raise ConfigError(
                f"negatives must be >= 1 in the implicit setting; got {self.negatives}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}; got {self.precision!r}")
        if self.compile and self.backbone != "transformer":
            raise ConfigError(
                f"compile=True compiles the transformer's encoder; backbone is {self.backbone!r}"
            )
        if self.backbone == "transformer":
            self._validate_transformer()

    def _validate_transformer(self) -> None:
        if self.feedback != "exposed":
            raise ConfigError(
                f"backbone='transformer' learns from the exposed impressions and their histories; "
                f"got feedback={self.feedback!r}"
            )
        for name in ("history_length", "layers", "heads"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ConfigError(f"heads must divide dim; got heads={self.heads}, dim={self.dim}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1); got {self.dropout}")

    def _autocast(self, device: torch.device) -> torch.autocast:
        """The training passes' autocast context (bfloat16, or disabled for ``fp32``)."""
        bf16 = self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda")
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)

    def _torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def fit(self, logs: LoggedFeedback, *, validation: LoggedFeedback | None = None):
        """Train for ``epochs`` epochs over shuffled mini-batches (no per-row Python loop).

        On CPU the result depends only on the data and ``seed`` (embedding gradients are summed
        in index order). ``history_`` holds the mean training loss per epoch and, with
        ``validation``, ``validation_history_`` the validation log's logistic loss per epoch.
        """
        for _ in self.fit_epochs(logs, validation=validation):
            pass
        return self

    def fit_epochs(
        self,
        logs: LoggedFeedback,
        *,
        validation: LoggedFeedback | None = None,
        state: dict | None = None,
    ) -> Iterator[int]:
        """Train epoch by epoch (see :meth:`Recommender.fit_epochs`).

        Resuming from a :meth:`training_state` restores the networks, the Adam moments and the
        random stream, so on CPU an interrupted and resumed run ends with the same weights as
        an uninterrupted one.
        """
        self._validate()
        shard = getattr(self, "_shard", None)
        if self.num_workers > 1 and shard is None:
            from causalrec.methods.data_parallel import fit_data_parallel

            fit_data_parallel(self, logs, validation)
            yield self.epochs
            return
        data = InteractionData.from_logs(logs, self.feedback)
        if self.backbone == "two_tower":
            if data.user_features is None or data.item_features is None:
                raise ConfigError(
                    "backbone='two_tower' needs the log's user and item feature tables "
                    "(users.parquet and items.parquet beside the log)"
                )
            self._feature_tables = (data.user_features, data.item_features)
        extra = self._prepare(logs, data)
        n_users = data.n_users
        if self.backbone == "transformer":
            data = self._with_round_contexts(logs, data)
        device = self._torch_device()
        networks, optimizers = self._training_networks(data, device)
        tensors = {
            "users": _tensor(data.users, device),
            "items": _tensor(data.items, device),
            "labels": _tensor(data.labels, device),
            **{
                key: _tensor(np.ascontiguousarray(v, dtype=np.float32), device)
                for key, v in extra.items()
            },
        }
        rng = np.random.default_rng(np.random.SeedSequence(self.seed))
        self.history_: list[float] = []
        self.validation_history_: list[float] = []
        first_epoch = 0
        if state is not None:
            first_epoch = self._load_training_state(state, networks, optimizers, rng)
        n = data.n_examples
        # Workers share the shuffle's stream (each takes its rows of every global mini-batch)
        # and draw their samples (negatives, uniform items) from streams of their own.
        sample_rng = rng
        if shard is not None:
            sample_rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1 + shard.rank]))
        for epoch in range(first_epoch, self.epochs):
            # Dropout draws from torch's global stream: seed it per (seed, rank, epoch) and
            # restore the caller's stream after, so runs repeat and resume exactly.
            rank = shard.rank if shard else 0
            with (
                _seeded_torch_stream(self.seed, rank, epoch, device),
                _compiled_encoders(networks.values(), self.compile),
            ):
                for network in networks.values():
                    network.train()
                # One gather per epoch; mini-batches are then contiguous views (no per-batch copy).
                order = torch.from_numpy(rng.permutation(n)).to(device)
                shuffled = {key: value[order] for key, value in tensors.items()}
                total, steps = 0.0, 0
                for step, start in enumerate(range(0, n, self.batch_size)):
                    stop = min(start + self.batch_size, n)
                    # A worker takes its share of the global mini-batch.
                    rows = slice(start, stop) if shard is None else shard.rows(start, stop)
                    batch = {key: value[rows] for key, value in shuffled.items()}
                    loss = self._train_step(
                        batch, networks, optimizers, data, sample_rng, device, shard, (epoch, step)
                    )
                    if loss is not None:
                        total += loss
                        steps += 1
            self._end_epoch(
                epoch, total, steps, networks, optimizers, rng, validation, device, shard,
                n_users, data.n_items,
            )  # fmt: skip
            yield epoch + 1

    def _training_networks(
        self, data: InteractionData, device: torch.device
    ) -> tuple[dict[str, torch.nn.Module], dict[str, torch.optim.Optimizer]]:
        """The networks, built from the seed on ``device``, and an Adam optimiser for each."""
        generator = torch.Generator().manual_seed(self.seed)
        networks = {
            name: module.to(device)
            for name, module in self._build_networks(data, generator).items()
        }
        optimizers = {
            name: torch.optim.Adam(module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            for name, module in networks.items()
        }
        return networks, optimizers

    def _train_step(
        self,
        batch: dict[str, torch.Tensor],
        networks: dict[str, torch.nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        data: InteractionData,
        rng: np.random.Generator,
        device: torch.device,
        shard,
        where: tuple[int, int],
    ) -> float | None:
        """One optimiser step on a mini-batch of tensors; returns its main loss.

        ``batch`` holds ``users``, ``items``, ``labels`` and the method's per-row arrays, from
        the in-memory examples or from a stream of log rows
        (:mod:`causalrec.methods.streaming`); ``data`` gives the catalogue the samples are drawn
        from. A data-parallel worker whose share of the mini-batch is empty still joins the
        gradient all-reduce (with zero gradients) and returns ``None``.
        """
        for optimizer in optimizers.values():
            optimizer.zero_grad()
        loss = None
        if len(batch["users"]):  # a worker can get no row of a short last batch
            batch.update(self._sample(data, len(batch["users"]), rng, device))
            with self._autocast(device):
                losses = self._losses(batch, networks)
            for name, value in losses.items():
                if not torch.isfinite(value):
                    epoch, step = where
                    raise TrainingError(
                        f"non-finite {name} loss {value.item()} at epoch {epoch}, step "
                        f"{step} with lr={self.lr}; lower lr or check the propensities"
                    )
            # The losses' graphs are disjoint (detached), so one backward pass.
            sum(losses.values()).backward()
            loss = float(losses["main"].detach())
        if shard is not None:
            shard.average_gradients(list(networks.values()))
        for optimizer in optimizers.values():
            optimizer.step()
        return loss

    def _end_epoch(
        self, epoch, total, steps, networks, optimizers, rng, validation, device, shard,
        n_users: int, n_items: int,
    ) -> None:  # fmt: skip
        """Record an epoch's mean loss (and validation loss); the model is usable after it."""
        if shard is not None:
            total, steps = shard.mean([total, steps])
        self.history_.append(total / steps)
        if validation is not None:
            self.validation_history_.append(_validation_loss(networks["main"], validation, device))
        self.network_ = networks["main"].eval()
        self.n_users_, self.n_items_, self.device_ = n_users, n_items, device
        self._snapshot = (epoch + 1, networks, optimizers, rng)

    def training_state(self) -> dict | None:
        """Networks, optimizer moments, random stream and histories after the last epoch.

        A deep copy: training on, or resuming another model from it, leaves it unchanged.
        """
        if not hasattr(self, "_snapshot"):
            return None
        epoch, networks, optimizers, rng = self._snapshot
        state = {
            "epoch": epoch,
            "networks": {name: module.state_dict() for name, module in networks.items()},
            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
            "rng": rng.bit_generator.state,
            "history": list(self.history_),
            "validation_history": list(self.validation_history_),
        }
        return copy.deepcopy(state)

    def _load_training_state(self, state: dict, networks, optimizers, rng) -> int:
        """Restore a :meth:`training_state`; returns the number of epochs it had done."""
        if set(state.get("networks", {})) != set(networks):
            raise ConfigError(
                f"training state holds networks {sorted(state.get('networks', {}))}; "
                f"{self.name} trains {sorted(networks)}"
            )
        for name, module in networks.items():
            module.load_state_dict(state["networks"][name])
            optimizers[name].load_state_dict(state["optimizers"][name])
        rng.bit_generator.state = state["rng"]
        self.history_ = list(state["history"])
        self.validation_history_ = list(state["validation_history"])
        return int(state["epoch"])

    def _with_round_contexts(self, logs: LoggedFeedback, data: InteractionData) -> InteractionData:
        """The examples with each row's round (whose history the network reads) as its "user".

        The rounds' histories become the networks' context table (:meth:`_build_network`), and
        each user's latest history in the log is kept for scoring by user id.
        """
        histories = round_histories(logs, self.history_length)
        self._train_contexts = (histories.items, histories.clicks.astype(np.int64))
        self.user_history_ = latest_histories(logs, self.history_length, data.n_users)
        rounds = _round_index(logs, histories.round_id)
        return dataclasses.replace(
            data,
            users=np.ascontiguousarray(rounds, dtype=np.int64),
            n_users=len(histories.round_id),
        )

    def _build_networks(
        self, data: InteractionData, generator: torch.Generator
    ) -> dict[str, torch.nn.Module]:
        """Networks trained together; ``"main"`` is the one that scores (and is saved)."""
        return {"main": self._build_network(data.n_users, data.n_items, generator)}

    def _sample(self, data: InteractionData, size: int, rng, device) -> dict[str, torch.Tensor]:
        """Extra random pairs for a mini-batch of ``size`` examples (implicit negatives)."""
        return self._negatives(data, size, rng, device) if self.feedback == "implicit" else {}

    def _losses(
        self, batch: dict[str, torch.Tensor], networks: dict[str, torch.nn.Module]
    ) -> dict[str, torch.Tensor]:
        """Loss of each network for one mini-batch (default: the main network's :meth:`_loss`)."""
        network = networks["main"]
        batch["logits"] = network(batch["users"], batch["items"])
        if "neg_users" in batch:
            batch["neg_logits"] = network(batch["neg_users"], batch["neg_items"])
        return {"main": self._loss(batch)}

    def _negatives(self, data: InteractionData, size: int, rng, device) -> dict[str, torch.Tensor]:
        count = size * self.negatives
        return {
            "neg_users": torch.from_numpy(rng.integers(data.n_users, size=count)).to(device),
            "neg_items": torch.from_numpy(rng.integers(data.n_items, size=count)).to(device),
        }

    # -- inference ----------------------------------------------------------------------------
    def score(
        self,
        users: np.ndarray,
        items: np.ndarray | None = None,
        *,
        history: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Predicted click probability, shape (len(users), n_items or len(items)).

        Args:
            users: User ids, shape (n,). With ``history`` they may be ids the model has not
                seen (the transformer scores from the history alone).
            items: Items to score (default: the catalogue).
            history: ``transformer`` only: ``(items, clicks)`` of shape (n, m) each, oldest
                first, :data:`~causalrec.platform.session.NO_ITEM` (-1) where empty; the last
                ``history_length`` impressions are used. Without it the transformer reads each
                user's latest history in its training log.

        Raises:
            ConfigError: For a ``history`` given to a model without a transformer backbone.
            DataError: For unknown users (without ``history``) or a malformed history.
        """
        self._check_fitted()
        users = np.asarray(users)
        if users.ndim != 1 or users.dtype.kind not in "iu":
            raise DataError(f"users must be a 1-d integer array; got {users.dtype}, {users.shape}")
        if history is not None and self.backbone != "transformer":
            raise ConfigError(
                f"history: scoring a history needs backbone='transformer'; this {self.name} "
                f"model uses {self.backbone!r}"
            )
        if history is None and len(users) and (users.min() < 0 or users.max() >= self.n_users_):
            raise DataError(f"users must be in [0, n_users={self.n_users_}); got {users.max()}")
        with torch.no_grad():
            if self.backbone == "transformer":
                history_items, history_clicks = self._histories(users, history)
                logits = self.network_.all_items_from_history(
                    torch.from_numpy(history_items).to(self.device_),
                    torch.from_numpy(history_clicks.astype(np.int64)).to(self.device_),
                )
            else:
                tensor = torch.from_numpy(users.astype(np.int64)).to(self.device_)
                logits = self.network_.all_items(tensor)
            if items is not None:
                logits = logits[
                    :, torch.from_numpy(np.asarray(items, dtype=np.int64)).to(self.device_)
                ]
            return _probabilities(logits)

    def session_policy(
        self,
        k: int = 1,
        exploration: Exploration | ExplorationKind = "none",
        *,
        epsilon: float = 0.1,
        temperature: float = 1.0,
    ) -> SessionPolicy:
        """The model acting on sessions; a ``transformer`` reads each session's history.

        See :meth:`Recommender.session_policy`.
        """
        if self.backbone != "transformer":
            return super().session_policy(k, exploration, epsilon=epsilon, temperature=temperature)
        from causalrec.methods.session_policy import HistoryPolicy

        self._check_fitted()
        if not isinstance(exploration, Exploration):
            exploration = Exploration(exploration, epsilon=epsilon, temperature=temperature)
        return HistoryPolicy(self, k, exploration, name=f"{self.name}:{exploration.kind}")

    def _histories(
        self, users: np.ndarray, history: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The transformer's input for ``users``: stored or given, shape (n, L) each."""
        stored_items, stored_clicks = self.user_history_
        if history is None:
            return stored_items[users], stored_clicks[users]
        items, clicks = (np.asarray(part) for part in history)
        n = len(users)
        if items.ndim != 2 or items.shape[0] != n or clicks.shape != items.shape:
            raise DataError(
                f"history: items and clicks must both have shape (n_users={n}, m); got "
                f"{items.shape} and {clicks.shape}"
            )
        if items.dtype.kind not in "iu" or clicks.dtype.kind not in "iub":
            raise DataError(f"history: items and clicks must be integers; got {items.dtype}")
        bad = (items < -1) | (items >= self.n_items_)
        if bad.any():
            raise DataError(
                f"history: item {int(items[bad][0])} is not in the catalogue [0, "
                f"{self.n_items_}) (-1 marks an empty slot)"
            )
        odd = clicks[(clicks != 0) & (clicks != 1)]
        if len(odd):
            raise DataError(f"history: clicks must be 0 or 1; got {int(odd[0])}")
        return last_impressions(items.astype(np.int64), clicks, self.history_length)

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """Predicted click probability of every item for users described by their features.

        Only the ``two_tower`` backbone scores users it has never seen.

        Args:
            features: Observed user features, shape (n, d_user).

        Returns:
            Shape (n, n_items).
        """
        self._check_fitted()
        if self.backbone != "two_tower":
            raise ConfigError(
                f"user_features: scoring by features needs backbone='two_tower'; this "
                f"{self.name} model uses {self.backbone!r} and scores known user ids only"
            )
        features = np.asarray(features, dtype=np.float32)
        width = self.network_.user_features.shape[1]
        if features.ndim != 2 or features.shape[1] != width:
            raise DataError(
                f"user_features: expected rows of {width} features; got shape {features.shape}"
            )
        if not np.isfinite(features).all():
            raise DataError("user_features: values must be finite")
        with torch.no_grad():
            tensor = torch.from_numpy(features).to(self.device_)
            return _probabilities(self.network_.all_items_from_features(tensor))

    # -- persistence --------------------------------------------------------------------------
    def _get_state(self) -> ModelState:
        """The scoring network's weights and buffers, and what else scoring reads.

        That is the feature tables of ``two_tower`` and each user's latest history of
        ``transformer``.
        """
        arrays = {
            name: tensor.detach().cpu().numpy()
            for name, tensor in self.network_.state_dict().items()
        }
        if self.backbone == "transformer":
            arrays["user_history_items"], arrays["user_history_clicks"] = self.user_history_
        return ModelState(arrays=arrays)

    def _set_state(self, state: ModelState, n_users: int, n_items: int) -> None:
        weights = {name: torch.from_numpy(np.array(value)) for name, value in state.arrays.items()}
        if self.backbone == "transformer":
            self.user_history_ = (
                weights.pop("user_history_items").numpy(),
                weights.pop("user_history_clicks").numpy(),
            )
        if self.backbone == "two_tower":
            self._feature_tables = (weights["user_features"], weights["item_features"])
        network = self._build_network(n_users, n_items, torch.Generator().manual_seed(0))
        network.load_state_dict(weights)
        self.network_ = network.to(self._torch_device()).eval()
        self.n_users_, self.n_items_, self.device_ = n_users, n_items, self._torch_device()
