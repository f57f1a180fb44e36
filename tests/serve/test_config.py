"""The shipped Serve configs (`serve deploy` format) hold valid application arguments."""

import pytest
import yaml

from causalrec.platform.config import config_dir
from causalrec.serve.config import ServeAppArgs

CONFIGS = sorted((config_dir() / "serve").glob("*.yaml"))


def test_serve_configs_are_shipped():
    assert {path.name for path in CONFIGS} >= {"default.yaml", "experiment.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_every_application_validates(path):
    config = yaml.safe_load(path.read_text())
    assert config["http_options"]["host"] == "127.0.0.1"
    for application in config["applications"]:
        assert application["import_path"] == "causalrec.serve.app:build_app"
        ServeAppArgs.from_dict(application["args"], source=path.name)
