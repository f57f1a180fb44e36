"""Serve replicas' inter-deployment gRPC server on the node's loopback address.

Ray Serve 2.60 starts a gRPC server in every replica for calls between deployments (the
ingress → recommender hop) and binds it to ``[::]:0`` — every interface — whatever the node IP
(``ray/serve/_private/replica.py``: ``add_port_to_grpc_server(self._server, "[::]:0")``); no
setting or environment variable changes that address. Other nodes reach the replica at the
node IP, so on a node whose IP is loopback (the local Ray of
:func:`causalrec.platform.runtime.init_ray`, or a ``ray start --head`` with
:data:`~causalrec.platform.runtime.LOOPBACK_ENV`) nothing but loopback can ever use it, and
binding it to loopback loses nothing.

:func:`bind_replica_grpc_to_loopback_node` wraps the function the replica calls so that, on such
a node only, ``[::]:0`` becomes ``127.0.0.1:0``; on any other node the address passes through
unchanged. Every deployment of :mod:`causalrec.serve.app` calls it first in its constructor,
which Serve runs before it starts the server (a deployment class reaches its replica by value,
so a module-level call would not run there). The server keeps Ray's token
authentication interceptor either way. If a Ray release moves the call, the wrapper is not
installed and the listener test (``tests/serve/test_loopback.py``) fails.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["bind_replica_grpc_to_loopback_node"]

_ALL_INTERFACES = "[::]:"


def bind_replica_grpc_to_loopback_node() -> bool:
    """Install the wrapper (once per process); returns whether it is installed."""
    try:
        from ray.serve._private import replica
    except ImportError:  # pragma: no cover - Serve is a dependency
        return False
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None:
        return False
    if getattr(original, "_causalrec_loopback", False):
        return True

    @functools.wraps(original)
    def add_port(server: Any, address: str) -> int:
        if address.startswith(_ALL_INTERFACES):
            node_ip = _node_ip()
            if node_ip is not None:
                address = f"{node_ip}:{address[len(_ALL_INTERFACES) :]}"
        return original(server, address)

    add_port._causalrec_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_port
    return True


def _node_ip() -> str | None:
    """This node's IP when it is a loopback address (``None`` otherwise or outside Ray)."""
    import ray

    from causalrec.platform.runtime import is_loopback

    if not ray.is_initialized():
        return None
    node_ip = ray.util.get_node_ip_address()
    return node_ip if is_loopback(node_ip) else None
