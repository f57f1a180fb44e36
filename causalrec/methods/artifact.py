"""The saved model: one directory layout, written and read only here.

A saved model is a directory that every later stage can use without knowing how it was made:
``causalrec train`` and Ray Tune write it, Serve, A/B tests and the pipeline read it.

Layout (schema version 2):

* ``manifest.json`` — method, constructor parameters, catalogue size, schema version, causalrec
  version, and the state files with their SHA-256;
* ``state.safetensors`` — every array of the fitted model (torch weights and buffers, feature
  tables), in the safetensors format (no code runs on load);
* ``ESTIMATOR.skops`` — scikit-learn estimators of the model (gradient boosting's), in the skops
  format, loaded with an explicit list of trusted types;
* ``model.json`` — the training record (search, trial, metrics, the training log's fingerprint),
  written by Ray Tune's export; ``metrics.json`` — the report of ``causalrec train``;
* ``users.parquet`` / ``items.parquet`` — the training log's feature tables (Serve logs its
  traffic with these user features).

The model's :attr:`SavedModel.version` hashes the manifest and state files only, so the same
weights exported by two searches (different trial records) have the same version.

Version 1 directories (``weights.pt``, or ``model.pkl`` for gradient boosting) are still read:
``weights.pt`` with ``torch.load(weights_only=True)``, and ``model.pkl`` by an unpickler that
admits only the numpy and scikit-learn types such a model holds. Nothing else is ever
unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import causalrec
from causalrec.methods.base import ModelState
from causalrec.platform import storage
from causalrec.platform.errors import ConfigError, LogFormatError, UnsafeModelError

if TYPE_CHECKING:
    from causalrec.methods.base import Recommender
    from causalrec.platform.policy import Exploration, ExplorationKind, Policy

__all__ = [
    "MANIFEST_FILE",
    "MODEL_SCHEMA_VERSION",
    "READABLE_SCHEMA_VERSIONS",
    "TRUSTED_SKOPS_TYPES",
    "SavedModel",
    "is_saved_model",
]

#: Version of the saved-model layout this causalrec writes.
MODEL_SCHEMA_VERSION = 2
#: Layout versions this causalrec reads (1: ``weights.pt`` / ``model.pkl``).
READABLE_SCHEMA_VERSIONS = (1, 2)
#: The model's self-description.
MANIFEST_FILE = "manifest.json"
#: The training record written by Ray Tune's export.
TRAINING_FILE = "model.json"
#: The report of ``causalrec train``.
METRICS_FILE = "metrics.json"
#: Every array of the fitted model.
STATE_FILE = "state.safetensors"
_SKOPS_SUFFIX = ".skops"
_V1_TORCH_FILE = "weights.pt"
_V1_PICKLE_FILE = "model.pkl"
#: Files beside the model that describe it; :attr:`SavedModel.version` ignores them.
_DESCRIPTIVE_FILES = frozenset(
    {TRAINING_FILE, METRICS_FILE, storage.USERS_FILE, storage.ITEMS_FILE}
)

#: Types skops may construct beyond its own defaults: the tree predictors of
#: ``HistGradientBoostingClassifier`` (``gboost``). Anything else in a ``.skops`` file is refused.
TRUSTED_SKOPS_TYPES = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)


def is_saved_model(path: str | Path) -> bool:
    """Whether ``path`` is a saved-model directory (it holds a manifest)."""
    return (Path(path) / MANIFEST_FILE).is_file()


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LogFormatError(f"cannot read {str(path)!r}: {exc}") from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class SavedModel:
    """A saved-model directory (see the module docstring).

    Use :meth:`open` to read one and :meth:`write` to create one.

    Attributes:
        path: The directory (absolute).
        manifest: ``manifest.json``: ``method``, ``params``, ``n_users``, ``n_items``,
            ``schema_version``, ``causalrec_version`` (and ``state_files`` from version 2).
    """

    path: Path
    manifest: dict[str, Any]

    # -- writing ------------------------------------------------------------------------------
    @classmethod
    def write(
        cls,
        directory: str | Path,
        model: Recommender,
        *,
        training: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        feature_tables: tuple[np.ndarray, np.ndarray] | None = None,
        overwrite: bool = False,
    ) -> SavedModel:
        """Save a fitted ``model`` into ``directory``, atomically.

        Args:
            directory: Target directory; it must be empty or missing unless ``overwrite``.
            model: A fitted recommender.
            training: The training record (``model.json``).
            metrics: The training report (``metrics.json``).
            feature_tables: The training log's user and item feature tables, shapes
                (n_users, d_user) and (n_items, d_item).
            overwrite: Replace a non-empty ``directory``.

        Raises:
            CausalRecError: If ``model`` is not fitted.
            OutputExistsError: If ``directory`` is not empty and ``overwrite`` is not set.
        """
        model._check_fitted()
        state = model._get_state()
        with storage.atomic_output_dir(directory, overwrite=overwrite) as staging:
            files = _write_state(staging, state)
            manifest = {
                "method": model.name,
                "params": model.get_params(),
                "schema_version": MODEL_SCHEMA_VERSION,
                "n_users": int(model.n_users_),
                "n_items": int(model.n_items_),
                "causalrec_version": causalrec.__version__,
                "state_files": {name: _sha256(staging / name) for name in files},
            }
            storage.write_json_atomic(staging / MANIFEST_FILE, manifest)
            _write_descriptions(staging, training, metrics, feature_tables)
        return cls.open(directory)

    def copy_to(
        self,
        directory: str | Path,
        *,
        training: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        feature_tables: tuple[np.ndarray, np.ndarray] | None = None,
        overwrite: bool = False,
    ) -> SavedModel:
        """Copy the model's own files byte for byte to ``directory``, with new descriptions.

        The copy has the same :attr:`version`. Arguments as in :meth:`write`.
        """
        with storage.atomic_output_dir(directory, overwrite=overwrite) as staging:
            for path in self.path.iterdir():
                if path.is_file() and path.name not in _DESCRIPTIVE_FILES:
                    shutil.copy2(path, staging / path.name)
            _write_descriptions(staging, training, metrics, feature_tables)
        return SavedModel.open(directory)

    # -- reading ------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | Path) -> SavedModel:
        """The saved model in ``directory`` (its manifest is read and checked; nothing loads).

        Raises:
            LogFormatError: If the directory holds no readable manifest.
            ConfigError: If the manifest's schema version is not one this causalrec reads.
        """
        path = Path(directory).absolute()
        manifest = _read_json(path / MANIFEST_FILE)
        if manifest is None:
            raise LogFormatError(
                f"{str(directory)!r} holds no saved model (no {MANIFEST_FILE}); save one with "
                "causalrec train or causalrec tune"
            )
        version = manifest.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise ConfigError(
                f"{str(path / MANIFEST_FILE)!r} was saved with model schema version {version}; "
                f"this causalrec loads versions {list(READABLE_SCHEMA_VERSIONS)}"
            )
        for key in ("method", "params", "n_users", "n_items"):
            if key not in manifest:
                raise LogFormatError(f"{str(path / MANIFEST_FILE)!r} has no {key!r}")
        return cls(path, manifest)

    @property
    def method(self) -> str:
        """Registry name of the model's method."""
        return self.manifest["method"]

    @property
    def n_users(self) -> int:
        """Users the model knows."""
        return int(self.manifest["n_users"])

    @property
    def n_items(self) -> int:
        """Catalogue size."""
        return int(self.manifest["n_items"])

    @property
    def schema_version(self) -> int:
        """Layout version of the directory."""
        return int(self.manifest["schema_version"])

    @property
    def training_record(self) -> dict[str, Any] | None:
        """``model.json``: the Tune export's record (``None`` when not exported by a search)."""
        return _read_json(self.path / TRAINING_FILE)

    @property
    def metrics(self) -> dict[str, Any] | None:
        """``metrics.json``: the report of ``causalrec train`` (``None`` when absent)."""
        return _read_json(self.path / METRICS_FILE)

    @cached_property
    def version(self) -> str:
        """A short SHA-256 of the model's own files (manifest and state, not descriptions)."""
        digest = hashlib.sha256()
        for path in sorted(self.path.iterdir()):
            if path.is_file() and path.name not in _DESCRIPTIVE_FILES:
                digest.update(path.name.encode())
                digest.update(path.read_bytes())
        return digest.hexdigest()[:12]

    @property
    def user_features(self) -> np.ndarray | None:
        """``users.parquet``, shape (n_users, d_user), or ``None``."""
        return storage.read_user_features(self.path)

    @property
    def item_features(self) -> np.ndarray | None:
        """``items.parquet``, shape (n_items, d_item), or ``None``."""
        return storage.read_item_features(self.path)

    @property
    def feature_tables(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The user and item feature tables saved beside the model, or ``None``."""
        users, items = self.user_features, self.item_features
        return None if users is None or items is None else (users, items)

    def describe(self) -> dict[str, Any]:
        """The manifest plus the training record (``tuning``) and ``model_version``."""
        description = dict(self.manifest)
        record = self.training_record
        if record is not None:
            description["tuning"] = record
        description["model_version"] = self.version
        return description

    def check_catalogue(self, field: str, *, n_users: int, n_items: int, other: str) -> None:
        """Refuse a model whose catalogue differs from ``other``'s (errors name ``field``).

        Raises:
            ConfigError: If ``n_users`` or ``n_items`` differ.
        """
        for key, expected in (("n_users", n_users), ("n_items", n_items)):
            if self.manifest[key] != expected:
                raise ConfigError(
                    f"{field}: model {str(self.path)!r} has {key}={self.manifest[key]}; {other} "
                    f"has {key}={expected}"
                )

    def load(self) -> Recommender:
        """The fitted recommender.

        Raises:
            UnsafeModelError: If a state file holds types causalrec does not trust.
            LogFormatError: If a state file is missing, corrupt or was altered.
            UnknownNameError: For a method this causalrec does not know.
        """
        from causalrec.methods.registry import make_recommender

        model = make_recommender(self.method, **self.manifest["params"])
        state = self._read_state_v1() if self.schema_version == 1 else self._read_state()
        model._set_state(state, self.n_users, self.n_items)
        return model

    def policy(
        self,
        k: int = 1,
        exploration: Exploration | ExplorationKind = "none",
        *,
        epsilon: float = 0.1,
        temperature: float = 1.0,
    ) -> Policy:
        """The loaded model as a policy (see :meth:`Recommender.policy`)."""
        return self.load().policy(k, exploration, epsilon=epsilon, temperature=temperature)

    def _read_state(self) -> ModelState:
        # Each file is read once: the bytes checked against the manifest are the bytes loaded.
        contents = {
            name: self._checked_bytes(name, digest)
            for name, digest in self.manifest.get("state_files", {}).items()
        }
        arrays = (
            _read_arrays(self.path / STATE_FILE, contents[STATE_FILE])
            if STATE_FILE in contents
            else {}
        )
        estimators = {
            name.removesuffix(_SKOPS_SUFFIX): _read_skops(self.path / name, data)
            for name, data in contents.items()
            if name.endswith(_SKOPS_SUFFIX)
        }
        return ModelState(arrays=arrays, estimators=estimators)

    def _checked_bytes(self, name: str, digest: str) -> bytes:
        """The content of state file ``name``, refused unless its SHA-256 is ``digest``."""
        path = self.path / name
        if not path.is_file():
            raise LogFormatError(f"{str(path)!r} is missing from the saved model")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise LogFormatError(
                f"{str(path)!r} does not match its SHA-256 in {MANIFEST_FILE}: the file was "
                "altered or truncated after saving"
            )
        return data

    def _read_state_v1(self) -> ModelState:
        """Version 1: ``weights.pt`` (torch state dict) or ``model.pkl`` (gradient boosting)."""
        torch_file, pickle_file = self.path / _V1_TORCH_FILE, self.path / _V1_PICKLE_FILE
        if torch_file.is_file():
            import torch

            try:
                weights = torch.load(torch_file, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                raise UnsafeModelError(
                    f"{str(torch_file)!r} holds more than tensors; refused ({exc})"
                ) from None
            return ModelState(arrays={k: v.numpy() for k, v in weights.items()})
        if pickle_file.is_file():
            payload = _RestrictedUnpickler.loads(pickle_file)
            return ModelState(
                arrays={"users": payload["users"], "items": payload["items"]},
                estimators={"model": payload["model"]},
            )
        raise LogFormatError(
            f"{str(self.path)!r} is a version-1 saved model without {_V1_TORCH_FILE} or "
            f"{_V1_PICKLE_FILE}"
        )


def _write_state(directory: Path, state: ModelState) -> list[str]:
    """Write ``state`` as safetensors and skops files; returns their names."""
    import skops.io
    from safetensors.numpy import save_file

    files = []
    if state.arrays:
        save_file(
            {name: np.ascontiguousarray(value) for name, value in state.arrays.items()},
            str(directory / STATE_FILE),
        )
        files.append(STATE_FILE)
    for name, estimator in state.estimators.items():
        filename = f"{name}{_SKOPS_SUFFIX}"
        skops.io.dump(estimator, directory / filename)
        files.append(filename)
    return files


def _write_descriptions(
    directory: Path,
    training: dict[str, Any] | None,
    metrics: dict[str, Any] | None,
    feature_tables: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    if training is not None:
        storage.write_json_atomic(directory / TRAINING_FILE, training)
    if metrics is not None:
        storage.write_json_atomic(directory / METRICS_FILE, metrics)
    if feature_tables is not None:
        storage.write_feature_tables(directory, *feature_tables)


def _read_arrays(path: Path, data: bytes) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file's content ``data`` (``path`` names it in errors)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        return load(data)
    except SafetensorError as exc:
        raise LogFormatError(f"cannot read {str(path)!r}: {exc}") from None


def _read_skops(path: Path, data: bytes) -> Any:
    """A skops file's content, refused when it holds a type outside skops' defaults and the list."""
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises assorted errors on corrupt zip files
        raise LogFormatError(f"cannot read {str(path)!r}: {exc}") from None
    refused = sorted(set(untrusted) - set(TRUSTED_SKOPS_TYPES))
    if refused:
        raise UnsafeModelError(
            f"{str(path)!r} holds types causalrec does not trust: {refused}; refused (trusted: "
            f"skops' defaults and {list(TRUSTED_SKOPS_TYPES)})"
        )
    return skops.io.loads(data, trusted=list(untrusted))


class _RestrictedUnpickler(pickle.Unpickler):
    """Reads a version-1 ``model.pkl``: numpy arrays and scikit-learn classes, nothing else.

    The only objects such a file holds are a ``HistGradientBoostingClassifier`` (with its
    binner, loss, predictors and random state) and two float32 tables. ``find_class`` admits
    the numpy reconstructors those need and scikit-learn *classes*; any other global (``os.system``,
    ``builtins.eval``, ``subprocess.Popen``, a scikit-learn function) is refused before it is
    called. See "Restricting Globals" in Python's ``pickle`` documentation.
    """

    _NUMPY_GLOBALS = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy.random._pickle", "__generator_ctor"),
            ("numpy.random._pickle", "__bit_generator_ctor"),
            ("numpy.random._pickle", "__randomstate_ctor"),
            ("numpy.random._pcg64", "PCG64"),
            ("numpy.random._mt19937", "MT19937"),
            ("numpy.random.bit_generator", "SeedSequence"),
            ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._NUMPY_GLOBALS:
            return super().find_class(module, name)
        if module == "sklearn" or module.startswith("sklearn."):
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise UnsafeModelError(
            f"model.pkl references {module}.{name}, which a causalrec model never holds; refused "
            "without running it"
        )

    @classmethod
    def loads(cls, path: Path) -> dict[str, Any]:
        try:
            payload = cls(io.BytesIO(path.read_bytes())).load()
        except UnsafeModelError as exc:
            raise UnsafeModelError(f"{str(path)!r}: {exc}") from None
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
            raise LogFormatError(f"cannot read {str(path)!r}: {exc}") from None
        if not isinstance(payload, dict) or not {"model", "users", "items"} <= set(payload):
            raise LogFormatError(f"{str(path)!r} is not a causalrec gboost model")
        return payload
