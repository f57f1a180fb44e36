"""Every pipeline field is checked before any stage runs: ``serve.app`` and ``ope.estimators``."""

import json

import pytest
import yaml

from causalrec.pipeline import stages
from causalrec.pipeline.config import PipelineConfig, load_pipeline_config
from causalrec.pipeline.runner import check_config, run_pipeline
from causalrec.platform.cli import main
from causalrec.platform.errors import ConfigError

from .test_pipeline import TINY

#: A deployed run (port 0: no port check), so ``serve.app`` is what the deploy stage would use.
DEPLOYED = {**TINY, "serve": {"deploy": True, "port": 0}}


def _write(tmp_path, serve_app=None, estimators=None):
    values = json.loads(json.dumps(DEPLOYED))
    if serve_app is not None:
        values["serve"]["app"] = serve_app
    if estimators is not None:
        values["ope"]["estimators"] = estimators
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture
def no_stage_runs(monkeypatch):
    def refuse(ctx):
        raise AssertionError("a stage ran before the config was refused")

    for name in list(stages.STAGES):
        monkeypatch.setitem(stages.STAGES, name, refuse)


# fmt: off
BAD = [
    ({"num_replica": 2}, None, r"serve\.app\.num_replica: unknown ServeAppArgs field 'num_replica'; did you mean 'num_replicas'\?"),
    ({"max_batch_size": 0}, None, r"serve\.app\.max_batch_size: Input should be greater than or equal to 1; got 0"),
    ({"recommender_cpus": "half"}, None, r"serve\.app\.recommender_cpus: Input should be a valid number.*; got 'half'"),
    ({"autoscaling": [1, 4]}, None, r"serve\.app\.autoscaling: Input should be a valid dictionary; got \[1, 4\]"),
    ({"model_dir": "runs/mine"}, None, r"serve\.app\.model_dir: set by the pipeline"),
    ({"experiment": {"model_dir": "runs/b"}}, None, r"serve\.app\.experiment: set by the pipeline"),
    (None, ["ips", "snipz"], r"ope\.estimators: unknown estimator 'snipz'; did you mean 'snips'\?"),
    (None, ["dros:lamda_=10"], r"ope\.estimators: unknown dros hyperparameter 'lamda_'; did you mean 'lambda_'\?"),
    (None, ["ips:clip=high"], r"ope\.estimators: ips: clip must be a number; got 'high'"),
    (None, [], r"ope\.estimators: estimators must name at least one estimator"),
]
# fmt: on


@pytest.mark.parametrize(("serve_app", "estimators", "message"), BAD)
def test_bad_serve_app_or_estimator_is_refused_before_any_stage(
    tmp_path, capsys, no_stage_runs, serve_app, estimators, message
):
    path = _write(tmp_path, serve_app, estimators)
    out = tmp_path / "run"
    config, tuning = load_pipeline_config(path)
    with pytest.raises(ConfigError, match=message):
        check_config(config, tuning, address="127.0.0.1:6379")
    with pytest.raises(ConfigError, match=message):
        run_pipeline(config, tuning, out)
    assert not (out / "logs").exists() and not out.exists()
    assert main(["pipeline", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("causalrec pipeline: error: ")
    assert ("serve.app." if serve_app is not None else "ope.estimators: ") in err
    assert not out.exists()


def test_serve_app_is_what_the_deploy_stage_deploys(tmp_path):
    config = PipelineConfig.from_dict(
        {**DEPLOYED, "serve": {"port": 0, "app": {"num_replicas": 2, "feedback_dir": "fb"}}}
    )
    tuning = config.resolved_tuning()
    check_config(config, tuning, address=None)
    args = config.serve.app_args(
        tmp_path, baseline_dir=tmp_path / "a", treatment_dir=tmp_path / "b", salt="s"
    )
    assert (args.num_replicas, args.feedback_dir) == (2, "fb")  # the user's values win
    assert args.data_root == str(tmp_path)  # the pipeline's default where the user says nothing
    assert args.model_dir == str(tmp_path / "a")
    assert (args.experiment.model_dir, args.experiment.salt) == (str(tmp_path / "b"), "s")
