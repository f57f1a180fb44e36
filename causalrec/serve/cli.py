"""``causalrec serve``: deploy a saved recommender behind HTTP on Ray Serve."""

from __future__ import annotations

import argparse
import time

from causalrec.platform.cli_help import DefaultsHelpFormatter
from causalrec.platform.config import load_yaml_config

__all__ = ["app_args_from_options", "register", "serve_until_interrupted"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``causalrec serve``."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a saved recommender over HTTP (recommend, evaluate, feedback)",
        description=(
            "Deploy a model (e.g. causalrec tune's OUT/best) on Ray Serve: POST /recommend "
            "returns items with their exact propensities, POST /evaluate runs off-policy "
            "evaluation, POST /feedback appends clicks to a Parquet log; OpenAPI at /docs. "
            "Joins RAY_ADDRESS or starts a local Ray; runs until interrupted."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="saved model directory")
    parser.add_argument("--host", default="127.0.0.1", help="HTTP host to bind")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port")
    parser.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="recommender replicas (default: from --config, else 1)",
    )
    parser.add_argument("--data-root", default=None, help="directory /evaluate may read logs from")
    parser.add_argument("--feedback-dir", default=None, help="log directory /feedback writes to")
    parser.add_argument(
        "--config", default=None, help="YAML of application arguments (ServeAppArgs fields)"
    )
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
    parser.add_argument("--name", default="causalrec", help="Serve application name")
    parser.set_defaults(handler=run_serve)


def app_args_from_options(args: argparse.Namespace):
    """The application arguments: ``--config`` YAML, overridden by the command-line options."""
    from causalrec.serve.config import ServeAppArgs

    values = {}
    if args.config:
        values = load_yaml_config(args.config, ServeAppArgs).model_dump()
    values["model_dir"] = args.model
    for key, option in (("num_replicas", "replicas"), ("data_root", "data_root")):
        if getattr(args, option) is not None:
            values[key] = getattr(args, option)
    if args.feedback_dir is not None:
        values["feedback_dir"] = args.feedback_dir
    if args.experiment_model is not None:
        experiment = {**(values.get("experiment") or {}), "model_dir": args.experiment_model}
        values["experiment"] = experiment | ({"salt": args.salt} if args.salt else {})
    return ServeAppArgs.from_dict(values, source="causalrec serve options")


def run_serve(args: argparse.Namespace) -> int:
    """Handler of ``causalrec serve``: deploy, print the URL, block until Ctrl-C."""
    from ray import serve

    from causalrec.platform.runtime import init_ray
    from causalrec.serve.app import build_app

    app_args = app_args_from_options(args)
    application = build_app(app_args)  # checks the model before Ray starts
    init_ray()
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(application, name=args.name, route_prefix="/")
    print(f"serving {app_args.model_dir} at http://{args.host}:{args.port} (docs: /docs)")
    if app_args.experiment is not None:
        print(f"A/B test: arm b serves {app_args.experiment.model_dir} (GET /experiment)")
    serve_until_interrupted()
    return 0


def serve_until_interrupted() -> None:
    """Block while Serve runs in this process's Ray; on Ctrl-C shut Serve down."""
    from ray import serve

    print("press Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
        print("stopped")
