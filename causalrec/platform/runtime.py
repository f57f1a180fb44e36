"""The Ray runtime: one way to start or join a cluster, the same code everywhere.

With no address and no ``RAY_ADDRESS`` a new local Ray is started in-process (the embedded
default) — even when a ``ray start`` cluster runs on the same machine, which plain ``ray.init()``
would join; with either, the process joins that cluster. Clusters started with
``ray start --head`` on Ray >= 2.60 use token authentication: clients need
``RAY_AUTH_MODE=token`` (the token is read from ``~/.ray/auth_token``).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["init_ray"]


def init_ray(
    address: str | None = None, *, num_cpus: int | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Start or join Ray once per process.

    Args:
        address: Cluster address (``"auto"``, ``"ray://host:port"``, ``"host:port"``); defaults
            to ``RAY_ADDRESS`` when set, otherwise a local cluster is started.
        num_cpus: CPUs of a local cluster (ignored when joining one).
        **kwargs: Passed to ``ray.init``.

    Returns:
        The cluster's resources (``ray.cluster_resources()``).
    """
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, **kwargs}
        if address is None:
            address, options["num_cpus"] = "local", num_cpus
        ray.init(address=address, **options)
    return ray.cluster_resources()
