"""The A/B split: deterministic, order-independent, salted, with the configured share."""

import numpy as np
import pytest

from causalrec.platform.errors import ConfigError
from causalrec.serve.routing import ExperimentSplit


def test_assignment_is_deterministic_and_order_independent():
    split = ExperimentSplit("exp-1", 0.5)
    users = np.arange(5_000)
    arms = split.arms(users)
    shuffled = np.random.default_rng(0).permutation(users)
    np.testing.assert_array_equal(split.arms(shuffled), arms[shuffled])
    np.testing.assert_array_equal(ExperimentSplit("exp-1", 0.5).arms(users), arms)
    assert set(arms) == {"a", "b"}


@pytest.mark.parametrize("share", [0.1, 0.5, 0.8])
def test_share_of_users_in_b(share):
    in_b = ExperimentSplit("s", share).in_b(np.arange(100_000))
    assert abs(in_b.mean() - share) < 4 * np.sqrt(share * (1 - share) / 100_000)


def test_a_new_salt_reshuffles_users_independently():
    users = np.arange(20_000)
    first, second = ExperimentSplit("one").in_b(users), ExperimentSplit("two").in_b(users)
    agreement = (first == second).mean()
    assert abs(agreement - 0.5) < 0.03  # independent splits agree half of the time


def test_bucket_is_uniform():
    buckets = ExperimentSplit("u").buckets(np.arange(50_000))
    counts = np.histogram(buckets, bins=10, range=(0, 1))[0]
    assert counts.min() > 4_600 and counts.max() < 5_400


@pytest.mark.parametrize("share", [0.0, 1.0, -0.2])
def test_bad_share_is_refused(share):
    with pytest.raises(ConfigError, match="share_b"):
        ExperimentSplit("s", share)


def test_negative_user_ids_are_refused():
    with pytest.raises(ConfigError, match="user ids"):
        ExperimentSplit().arms(np.array([3, -1]))


def test_serve_cli_options_make_an_experiment(tmp_path):
    from causalrec.platform.cli import build_parser
    from causalrec.serve.cli import app_args_from_options

    config = tmp_path / "app.yaml"
    config.write_text("model_dir: ignored\nexperiment: {model_dir: old, share_b: 0.2}\n")
    base = ["serve", "--model", "a", "--config", str(config)]
    args = app_args_from_options(build_parser().parse_args(base))
    assert args.model_dir == "a" and args.experiment.model_dir == "old"
    options = [*base, "--experiment-model", "b", "--salt", "s2", "--replicas", "3"]
    args = app_args_from_options(build_parser().parse_args(options))
    assert (args.experiment.model_dir, args.experiment.salt, args.experiment.share_b) == (
        "b",
        "s2",
        0.2,
    )
    assert args.num_replicas == 3


def test_serve_cli_scoring_option_overrides_the_config_and_is_checked(tmp_path, capsys):
    from causalrec.platform.cli import build_parser
    from causalrec.serve.cli import app_args_from_options

    config = tmp_path / "app.yaml"
    config.write_text("model_dir: ignored\nscoring: replicas\nnum_replicas: 2\n")
    base = ["serve", "--model", "a", "--config", str(config)]
    assert app_args_from_options(build_parser().parse_args(base)).scoring == "replicas"
    args = app_args_from_options(build_parser().parse_args([*base, "--scoring", "ingress"]))
    assert (args.scoring, args.num_replicas) == ("ingress", 2)
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--scoring", "gpu"])
    assert "invalid choice: 'gpu'" in capsys.readouterr().err
