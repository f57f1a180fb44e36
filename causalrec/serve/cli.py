"""``causalrec serve``: deploy a saved recommender behind HTTP on Ray Serve, and update it.

``causalrec serve --model DIR`` deploys the application and blocks until Ctrl-C, which drains
the in-flight requests (Serve's graceful shutdown) and flushes the feedback journal. ``causalrec
serve update --model NEW`` swaps the served model of a running application without dropping a
request: it redeploys the application with the same arguments and the new model, which Serve
applies in place to the running replicas (see :func:`causalrec.serve.app.build_app`). It finds
the application's Ray through ``--address``, ``RAY_ADDRESS``, or the record that ``causalrec
serve`` keeps while it runs (:func:`control_record_path`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from causalrec.platform.cli_help import DefaultsHelpFormatter
from causalrec.platform.config import load_yaml_config
from causalrec.platform.errors import ConfigError

__all__ = [
    "app_args_from_options",
    "control_record_path",
    "register",
    "run_update",
    "serve_until_interrupted",
]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``causalrec serve`` and ``causalrec serve update``."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a saved recommender over HTTP (recommend, evaluate, feedback); update it",
        description=(
            "Deploy a model (e.g. causalrec tune's OUT/best) on Ray Serve: POST /recommend "
            "returns items with their exact propensities, POST /evaluate runs off-policy "
            "evaluation, POST /feedback appends clicks to a Parquet log; OpenAPI at /docs. "
            "Joins RAY_ADDRESS or starts a local Ray (listening on loopback only); runs until "
            "interrupted. 'causalrec serve update --model NEW' swaps the model of a running "
            "application without dropping requests."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--model", help="saved model directory (required)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="HTTP host to bind; another address (0.0.0.0) exposes the API, which has no "
        "authentication, to the network (Ray itself stays on loopback)",
    )
    parser.add_argument("--port", type=int, default=8000, help="HTTP port")
    parser.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="replicas that score (default: from --config, else 1)",
    )
    parser.add_argument(
        "--scoring",
        choices=["ingress", "replicas"],
        default=None,
        help="score in the HTTP ingress (lowest latency) or in recommender replicas behind it "
        "(a request whose replica dies is retried on another; default: from --config, else "
        "ingress)",
    )
    parser.add_argument("--data-root", default=None, help="directory /evaluate may read logs from")
    parser.add_argument("--feedback-dir", default=None, help="log directory /feedback writes to")
    parser.add_argument(
        "--feedback-replicas",
        type=int,
        default=None,
        help="feedback sinks, each writing its own FEEDBACK_DIR/replica-NN (requests routed by a "
        "hash of their id; default: from --config, else 1: FEEDBACK_DIR/logs)",
    )
    parser.add_argument(
        "--config", default=None, help="YAML of application arguments (ServeAppArgs fields)"
    )
    _experiment_options(parser)
    parser.add_argument("--name", default="causalrec", help="Serve application name")
    parser.set_defaults(handler=run_serve)

    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    update = actions.add_parser(
        "update",
        help="swap the model of a running application in place (no dropped request)",
        description=(
            "Redeploy a running causalrec application with the same arguments and a new model "
            "of the same catalogue. Serve applies it in place: each running replica loads the "
            "new model while it answers with the old one, then swaps it in. Every request is "
            "answered by the old or the new model, never a mix within one slate."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    update.add_argument("--model", required=True, help="the new saved model directory")
    _experiment_options(update)
    update.add_argument("--name", default="causalrec", help="Serve application name")
    update.add_argument(
        "--address",
        default=None,
        help="Ray address of the application (default: RAY_ADDRESS, else the record of a "
        "running 'causalrec serve --name NAME' on this machine)",
    )
    update.set_defaults(handler=run_update)


def _experiment_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experiment-model",
        default=None,
        help="A/B test: serve this model to arm b (users split by a hash of their id)",
    )
    parser.add_argument(
        "--salt",
        default=None,
        help="salt of the A/B split (default: from --config, else causalrec-ab)",
    )


def app_args_from_options(args: argparse.Namespace):
    """The application arguments: ``--config`` YAML, overridden by the command-line options."""
    from causalrec.serve.config import ServeAppArgs

    if not args.model:
        raise ConfigError("--model: a saved model directory is required")
    values = {}
    if args.config:
        values = load_yaml_config(args.config, ServeAppArgs).model_dump()
    values["model_dir"] = args.model
    for key, option in (
        ("num_replicas", "replicas"),
        ("scoring", "scoring"),
        ("data_root", "data_root"),
        ("feedback_replicas", "feedback_replicas"),
    ):
        if getattr(args, option) is not None:
            values[key] = getattr(args, option)
    if args.feedback_dir is not None:
        values["feedback_dir"] = args.feedback_dir
    return ServeAppArgs.from_dict(_with_experiment(values, args), source="causalrec serve options")


def _with_experiment(values: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``values`` with ``--experiment-model`` / ``--salt`` applied."""
    if args.experiment_model is not None:
        experiment = {**(values.get("experiment") or {}), "model_dir": args.experiment_model}
        values["experiment"] = experiment | ({"salt": args.salt} if args.salt else {})
    return values


def control_record_path(name: str) -> Path:
    """Where a running ``causalrec serve --name NAME`` records its Ray address and URL."""
    return Path(tempfile.gettempdir()) / "causalrec" / f"serve-{name}.json"


def run_serve(args: argparse.Namespace) -> int:
    """Handler of ``causalrec serve``: deploy, print the URL, block until Ctrl-C."""
    import ray
    from ray import serve

    from causalrec.platform.runtime import init_ray, is_loopback
    from causalrec.serve.app import build_app

    app_args = app_args_from_options(args)
    application = build_app(app_args)  # checks the model before Ray starts
    if not is_loopback(args.host):
        print(
            f"warning: --host {args.host} exposes the HTTP API to the network; it has no "
            "authentication (Ray's token covers Ray's own ports, not Serve's HTTP)",
            file=sys.stderr,
        )
    # Ctrl-C in a terminal signals the whole process group, and the local Ray's processes
    # (GCS, raylet, workers, replicas) are in this one: started with SIGINT ignored (kept across
    # exec), they stay up while this process drains them through serve.shutdown().
    with _sigint_ignored_by_children():
        init_ray()
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(application, name=args.name, route_prefix="/")
    url = f"http://{args.host}:{args.port}"
    record = control_record_path(args.name)
    record.parent.mkdir(parents=True, exist_ok=True)
    gcs = ray.get_runtime_context().gcs_address
    record.write_text(json.dumps({"address": gcs, "pid": os.getpid(), "url": url}))
    print(f"serving {app_args.model_dir} at {url} (docs: /docs)")
    if app_args.experiment is not None:
        print(f"A/B test: arm b serves {app_args.experiment.model_dir} (GET /experiment)")
    print(f"update the model with: causalrec serve update --name {args.name} --model DIR")
    try:
        serve_until_interrupted()
    finally:
        with contextlib.suppress(OSError):
            record.unlink()
    return 0


def run_update(args: argparse.Namespace) -> int:
    """Handler of ``causalrec serve update``: redeploy the running application's new model."""
    # Ray >= 2.60 clusters (a local one of `causalrec serve`, or `ray start --head`) use token
    # authentication; a client presents the token of ~/.ray/auth_token only in token mode.
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from ray import serve

    from causalrec.platform.runtime import init_ray
    from causalrec.serve.app import build_app
    from causalrec.serve.config import ServeAppArgs

    init_ray(_update_address(args))
    status = serve.status().applications.get(args.name)
    if status is None:
        raise ConfigError(f"--name: no Serve application {args.name!r} runs on that Ray")
    current = asyncio.run(_app_args(args.name))
    values = _with_experiment({**current, "model_dir": args.model}, args)
    new_args = ServeAppArgs.from_dict(values, source="causalrec serve update options")
    _check_same_catalogue(current["model_dir"], new_args.model_dir)
    started = time.monotonic()
    serve.run(build_app(new_args), name=args.name, route_prefix="/")
    print(f"{args.name}: serving {new_args.model_dir} ({time.monotonic() - started:.1f} s)")
    return 0


async def _app_args(name: str) -> dict[str, Any]:
    """The running application's arguments, asked of its ingress.

    Awaited inside an event loop: with Serve's latency settings
    (``RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0``) a handle cannot be used outside one.
    """
    from ray import serve

    return await serve.get_app_handle(name).app_args.remote()


def _check_same_catalogue(served_dir: str, new_dir: str) -> None:
    """Refuse a model of another catalogue (the feedback log and clients assume one)."""
    from causalrec.methods.artifact import SavedModel, is_saved_model

    if not is_saved_model(new_dir):
        raise ConfigError(f"--model: {new_dir!r} holds no saved model (manifest.json)")
    served = SavedModel.open(served_dir)
    SavedModel.open(new_dir).check_catalogue(
        "--model", n_users=served.n_users, n_items=served.n_items, other="the served model"
    )


def _update_address(args: argparse.Namespace) -> str:
    """The Ray address of the application to update (option, environment, or the record)."""
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        return address
    record = control_record_path(args.name)
    try:
        values = json.loads(record.read_text())
    except (OSError, ValueError):
        raise ConfigError(
            f"--address: not given, RAY_ADDRESS is unset and no 'causalrec serve --name "
            f"{args.name}' runs on this machine ({record} is missing)"
        ) from None
    try:
        os.kill(values["pid"], 0)
    except (OSError, KeyError):
        raise ConfigError(
            f"--address: the 'causalrec serve' recorded in {record} is no longer running"
        ) from None
    return values["address"]


def serve_until_interrupted() -> None:
    """Block while Serve runs in this process's Ray; on Ctrl-C (or SIGTERM) drain and stop.

    The applications are deleted first, while the HTTP proxies still run: each replica stops
    gracefully, answering the requests it holds (up to ``graceful_shutdown_timeout_s``), and
    the feedback sink writes what it buffered. Only then are the proxies shut down
    (``serve.shutdown()`` alone stops the proxies at once and cuts the in-flight requests' HTTP
    connections).
    """
    from ray import serve

    print("press Ctrl-C to stop", flush=True)
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("draining in-flight requests and stopping", flush=True)
        for name in serve.status().applications:
            serve.delete(name)
        serve.shutdown()
        print("stopped", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _sigint_ignored_by_children():
    """A block whose child processes start with SIGINT ignored (this process's handler after)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
