"""The Ray runtime: one way to start or join a cluster, the same code everywhere.

With no address and no ``RAY_ADDRESS`` a new local Ray is started in-process (the embedded
default) — even when a ``ray start`` cluster runs on the same machine, which plain ``ray.init()``
would join; with either, the process joins that cluster. Clusters started with
``ray start --head`` on Ray >= 2.60 use token authentication: clients need
``RAY_AUTH_MODE=token`` (the token is read from ``~/.ray/auth_token``).

The local Ray listens on loopback only (:func:`loopback_only`): its node IP is 127.0.0.1, so
the GCS, the raylet, every worker's gRPC server, the runtime-env and dashboard agents and the
metrics exporters bind 127.0.0.1, and :mod:`causalrec.serve._loopback` binds Serve replicas'
inter-deployment gRPC servers there too. Nothing of it is reachable from another machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = [
    "LOOPBACK_ENV",
    "SERVE_LATENCY_ENV",
    "free_port",
    "init_ray",
    "is_loopback",
    "loopback_only",
    "output_to_file",
]

#: Ray Serve settings of the local Ray that :func:`init_ray` starts, for low latency on small
#: machines (each is a process-wide Serve constant read when Ray's processes start; a value
#: already in the environment wins). User code runs on the replica's own event loop and
#: requests travel between replicas over gRPC instead of through Ray's task path. Ray's own
#: ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` sets these and more (direct ingress, which moves the
#: HTTP ports); on a cluster, export the same variables before ``ray start``.
SERVE_LATENCY_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
}


#: Environment of the processes of a loopback-only local Ray. With Ray's cluster switch off
#: (``ray_constants.ENABLE_RAY_CLUSTER``, on by default on Linux), ``127.0.0.1`` is not rewritten
#: to the machine's address (``services.resolve_ip_for_localhost``) and becomes the node IP, and
#: Ray's servers bind the node IP. Export it before ``ray start --head --node-ip-address
#: 127.0.0.1`` for a single-node cluster on loopback; ``ray start --address`` (a second node)
#: refuses to run with it, since a node on loopback cannot be reached from another machine:
#: ``python -m causalrec.platform.loopback_node`` starts one on the same machine.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

_LOOPBACK_IP = "127.0.0.1"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IPv4/IPv6 address, possibly IPv4-mapped) is a loopback address."""
    import ipaddress

    try:
        address = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return host == "localhost"
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


@contextlib.contextmanager
def loopback_only() -> Iterator[str]:
    """A block in which a new local Ray starts on 127.0.0.1; yields the node IP to pass.

    Ray starts its processes (GCS, raylet, agents, workers) from this process's environment, so
    :data:`LOOPBACK_ENV` is set for the block and inherited by them; this process's own view of
    the switch was read when ``ray`` was imported, so it is set for the block too. Both are
    restored after it: later subprocesses (``ray start`` of a real cluster) see the caller's
    environment.
    """
    from ray._private import ray_constants

    saved_env = {name: os.environ.get(name) for name in LOOPBACK_ENV}
    saved_switch = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(LOOPBACK_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield _LOOPBACK_IP
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_switch
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def init_ray(
    address: str | None = None, *, num_cpus: int | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Start or join Ray once per process.

    Args:
        address: Cluster address (``"auto"``, ``"ray://host:port"``, ``"host:port"``); defaults
            to ``RAY_ADDRESS`` when set, otherwise a local cluster is started, listening on
            loopback only (:func:`loopback_only`).
        num_cpus: CPUs of a local cluster (ignored when joining one).
        **kwargs: Passed to ``ray.init``.

    Returns:
        The cluster's resources (``ray.cluster_resources()``).
    """
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, **kwargs}
        if address is not None:
            if not _joins_loopback(address):
                ray.init(address=address, **options)
                return ray.cluster_resources()
            # A cluster on loopback (another process's local Ray, or a ``ray start --head``
            # with LOOPBACK_ENV): this driver's node IP must be loopback too, to find its raylet.
            with loopback_only() as node_ip:
                ray.init(address=address, _node_ip_address=node_ip, **options)
            return ray.cluster_resources()
        for name, value in SERVE_LATENCY_ENV.items():
            os.environ.setdefault(name, value)
        with loopback_only() as node_ip:
            ray.init(address="local", num_cpus=num_cpus, _node_ip_address=node_ip, **options)
    return ray.cluster_resources()


def _joins_loopback(address: str) -> bool:
    """Whether ``address`` (``host:port``) names a GCS on a loopback address."""
    host, _, port = address.rpartition(":")
    return "://" not in address and port.isdigit() and is_loopback(host)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now (for Serve's HTTP proxy, test heads)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def output_to_file(log: TextIO) -> Iterator[None]:
    """Send what Ray, Tune, Serve and the libraries under them print to ``log`` in the block.

    Covers the driver's Python-level output: ``sys.stdout``/``sys.stderr`` (Tune's tables and
    hints, tqdm bars, Python warnings, the errors and worker logs Ray forwards to the driver)
    and every logging ``StreamHandler`` that writes to the console (``ray``, ``ray.tune``,
    ``ray.serve``, ``optuna`` and ``mlflow`` install their own). Handlers created in the block
    (Serve configures its logger on first use) are pointed back to the console after it. Ray's
    worker processes write their own logs under the session directory
    (``/tmp/ray/session_latest/logs``); :func:`init_ray` does not forward them to the driver.

    Args:
        log: An open text file (line-buffered, so a crash leaves what was written).
    """
    console_out, console_err = sys.stdout, sys.stderr
    consoles = {id(console_out), id(console_err), id(sys.__stdout__), id(sys.__stderr__)}
    moved = [(handler, handler.stream) for handler in _stream_handlers()]
    moved = [(handler, stream) for handler, stream in moved if id(stream) in consoles]
    for handler, _ in moved:
        handler.setStream(log)
    sys.stdout = sys.stderr = log
    try:
        yield
    finally:
        sys.stdout, sys.stderr = console_out, console_err
        for handler, stream in moved:
            handler.setStream(stream)
        for handler in _stream_handlers():
            if handler.stream is log:
                handler.setStream(console_err)
        log.flush()


def _stream_handlers() -> list[logging.StreamHandler]:
    """Every console-like logging handler (file handlers excluded) of every logger."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    return [
        handler
        for logger in loggers
        if isinstance(logger, logging.Logger)
        for handler in logger.handlers
        if isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
    ]
