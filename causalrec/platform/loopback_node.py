r"""``ray start`` for a node that joins a cluster on 127.0.0.1 and listens on loopback only.

Usage::

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start --head --node-ip-address 127.0.0.1 --port 6379
    RAY_AUTH_MODE=token python -m causalrec.platform.loopback_node \
        --address 127.0.0.1:6379 --num-cpus 1 --temp-dir /tmp/ray-node2 --block

Ray 2.60 keeps 127.0.0.1 as a node's IP (so that its servers bind loopback) only with its
multi-node switch off (:data:`~causalrec.platform.runtime.LOOPBACK_ENV`), and with the switch
off ``ray start --address`` refuses to start a second node. This module runs Ray's own ``ray
start`` command with the switch on in this process only, so the refusal does not apply, and with
``services.resolve_ip_for_localhost`` keeping loopback addresses as they are, so 127.0.0.1 stays
the node IP. The node's processes (raylet, agents, workers) inherit ``LOOPBACK_ENV`` and resolve
addresses as on a loopback head. Such a cluster serves one machine: the nodes share nothing but
the machine, which is what a multi-node test or a demo needs. Give each node its own
``--temp-dir``: nodes sharing one session folder delete each other's unpacked ``working_dir``
(see the README's Ray section).
"""

from __future__ import annotations

import os
import sys

from causalrec.platform.runtime import LOOPBACK_ENV

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``ray start ARGV`` as a loopback node; returns its exit status.

    Args:
        argv: ``ray start`` arguments (default: this process's). ``--node-ip-address
            127.0.0.1`` is added when no node IP is given; another node IP is refused.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    node_ip = [a for i, a in enumerate(args) if i and args[i - 1] == "--node-ip-address"]
    node_ip += [a.split("=", 1)[1] for a in args if a.startswith("--node-ip-address=")]
    if not node_ip:
        args += ["--node-ip-address", "127.0.0.1"]
    elif node_ip != ["127.0.0.1"]:
        message = f"--node-ip-address: a loopback node runs on 127.0.0.1; got {node_ip}"
        print(message, file=sys.stderr)
        return 2
    os.environ.update(LOOPBACK_ENV)  # for the node's processes, started from this environment

    from ray._private import ray_constants, services
    from ray.scripts.scripts import cli

    ray_constants.ENABLE_RAY_CLUSTER = True  # this process only: `ray start --address` may run
    services.resolve_ip_for_localhost = lambda host: host  # 127.0.0.1 stays the node IP
    try:
        cli.main(args=["start", *args], prog_name="ray", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # click's usage errors and Ray's refusals
        print(f"ray start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
