"""`ray start` clusters of the tests: loopback only, token auth, each node in its own group.

Each node runs with ``--block`` in its own process group, so stopping it (SIGTERM to the group,
SIGKILL after a minute) never touches the test session's own Ray, which ``ray stop`` would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from causalrec.platform.runtime import LOOPBACK_ENV, free_port


def ray_cli(env: dict[str, str], *args: str, check: bool = True, timeout: float = 300) -> str:
    """``ray ARGS``' output (stdout and stderr); raises on a failure when ``check``."""
    done = subprocess.run(
        ["ray", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"ray {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def client_env() -> dict[str, str]:
    """This environment without ``RAY_ADDRESS``, with ``RAY_AUTH_MODE=token``.

    Nodes started with it stop at once on SIGTERM: Ray 2.60 drains a node for up to
    ``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S`` (30 s) first, for Serve proxies of rolling
    upgrades, which a test's teardown does not have.
    """
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    return env


def start_head(env: dict[str, str], num_cpus: int) -> tuple[subprocess.Popen, int, str]:
    """A head on 127.0.0.1 with ``LOOPBACK_ENV``; (process, GCS port, job server address).

    Returns once the job server answers (at most 120 s). Generates ``~/.ray/auth_token`` when it
    is missing: on a fresh machine ``ray start --head`` in token mode refuses to start without it
    (and without token mode it starts with authentication off).
    """
    ray_cli(env, "get-auth-token", "--generate")
    dashboard, gcs = free_port(), free_port()
    head = subprocess.Popen(
        ["ray", "start", "--head", "--node-ip-address", "127.0.0.1",
         "--port", str(gcs), "--dashboard-port", str(dashboard),
         "--ray-client-server-port", str(free_port()),
         "--dashboard-agent-listen-port", str(free_port()), "--num-cpus", str(num_cpus),
         "--block"],
        env={**env, **LOOPBACK_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while "Job submission server address" not in ray_cli(
        env, "job", "list", "--address", address, check=False
    ):
        if head.poll() is not None or time.monotonic() > deadline:
            stop_node(head)
            raise AssertionError("the head's job server did not come up")
        time.sleep(2)
    return head, gcs, address


def stop_process_group(process: subprocess.Popen, signal_number: int = signal.SIGTERM) -> None:
    """Signal ``process``'s group; SIGKILL it if the process has not ended within 60 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal_number)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def stop_node(node: subprocess.Popen, gcs: int | None = None) -> None:
    """Stop a ``--block`` node by its process group; forget it as the current cluster."""
    stop_process_group(node)
    # `ray start` recorded the head as the machine's current cluster; `ray stop` would forget
    # it, killing the process does not, and a later `ray.init()` or `serve run` without an
    # address would try to join the dead head.
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if gcs is not None and current.is_file() and current.read_text().strip().endswith(f":{gcs}"):
        current.unlink()
