import optuna
import pytest

from causalrec.methods import RECOMMENDERS
from causalrec.platform.config import list_presets, load_preset
from causalrec.platform.errors import ConfigError, UnknownNameError
from causalrec.tuning.config import TuningConfig
from causalrec.tuning.space import define_by_run, max_epochs, trial_params, validate_space


def config(methods, **extra):
    return TuningConfig.from_dict({"methods": methods, **extra})


@pytest.mark.parametrize("name", list_presets("tuning"))
def test_shipped_configs_validate(name):
    spaces = validate_space(load_preset("tuning", name, TuningConfig), RECOMMENDERS)
    assert spaces


@pytest.mark.parametrize(
    ("methods", "error", "pattern"),
    [
        ({"ipss": {}}, UnknownNameError, r"method .*'ipss'.*did you mean 'ips'"),
        ({"ips": {"lrr": 0.1}}, UnknownNameError, r"methods\.ips.*'lrr'.*did you mean 'lr'"),
        (
            {"ips": {"lr": {"loguniform": [0.1, 0.01]}}},
            ConfigError,
            r"methods\.ips\.lr: loguniform has an empty range",
        ),
        (
            {"ips": {"lr": {"uniform": [0.1, 0.1]}}},
            ConfigError,
            r"methods\.ips\.lr: uniform has an empty range",
        ),
        (
            {"ips": {"dim": {"choice": []}}},
            ConfigError,
            r"methods\.ips\.dim: choice needs a non-empty list",
        ),
        (
            {"ips": {"lr": {"loguniform": [0, 0.1]}}},
            ConfigError,
            r"methods\.ips\.lr: loguniform needs low > 0",
        ),
        (
            {"ips": {"dim": {"int": [1.5, 8]}}},
            ConfigError,
            r"methods\.ips\.dim: int needs integer bounds",
        ),
        (
            {"ips": {"lr": {"normal": [0, 1]}}},
            UnknownNameError,
            r"distribution of methods\.ips\.lr.*'normal'",
        ),
        (
            {"ips": {"lr": {"uniform": [0.01, 0.1], "log": True}}},
            ConfigError,
            r"methods\.ips\.lr: a distribution is a mapping with one key",
        ),
        ({"ips": {"dim": {"int": [0, 8]}}}, ConfigError, r"methods\.ips\.dim=0: dim must be >= 1"),
        (
            {"snips": {"feedback": {"choice": ["exposed", "implicit"]}}},
            ConfigError,
            r"methods\.snips\.feedback='implicit'",
        ),
        ({"ips": {"device": "cuda"}}, ConfigError, r"methods\.ips\.device: set by the tuner"),
        (
            {"dr_jl": {"imputation_samples": 0}},
            ConfigError,
            r"methods\.dr_jl: imputation_samples must be >= 1",
        ),
    ],
)
def test_space_errors_name_the_offending_key(methods, error, pattern):
    with pytest.raises(error, match=pattern):
        validate_space(config(methods), RECOMMENDERS)


def test_config_level_errors():
    with pytest.raises(ConfigError, match="methods"):
        TuningConfig.from_dict({"methods": {}})
    with pytest.raises(ConfigError, match=r"search\.num_samples=0"):
        config({"naive": {}}, search={"num_samples": 0})
    with pytest.raises(UnknownNameError, match="did you mean 'search'"):
        TuningConfig.from_dict({"methods": {"naive": {}}, "serach": {}})


def test_conditional_space_draws_only_the_chosen_methods_parameters():
    tuning = config(
        {
            "naive": {"lr": {"loguniform": [0.001, 0.1]}, "epochs": 3},
            "ips": {"propensity_floor": {"uniform": [0.01, 0.3]}, "dim": {"choice": [8, 16]}},
            "gboost": {"max_iter": {"int": [10, 20]}},
        }
    )
    spaces = validate_space(tuning, RECOMMENDERS)
    space_fn = define_by_run(spaces, RECOMMENDERS, seed=7)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        constants = space_fn(trial)
        method, params = trial_params({**trial.params, **constants})
        seen.add(method)
        assert all(
            not key.startswith(("naive.", "ips.", "gboost.")) or key.startswith(method)
            for key in trial.params
            if key != "method"
        )
        model = RECOMMENDERS[method](**params)  # a complete, valid parameter set
        if method == "naive":
            assert (
                set(params) == {"lr", "epochs", "seed"}
                and params["epochs"] == 3
                and params["seed"] == 7
            )
        elif method == "ips":
            assert (
                set(params) == {"propensity_floor", "dim", "seed"}
                and 0.01 <= model.propensity_floor <= 0.3
            )
        else:
            assert set(params) == {"max_iter", "seed"} and 10 <= params["max_iter"] <= 20
        study.tell(trial, 0.0)
    assert seen == {"naive", "ips", "gboost"}
    assert max_epochs(spaces, RECOMMENDERS) == 10  # ips's default epochs beats naive's 3


def test_max_epochs_follows_a_searched_range():
    spaces = validate_space(config({"naive": {"epochs": {"int": [2, 17]}}}), RECOMMENDERS)
    assert max_epochs(spaces, RECOMMENDERS) == 17
    assert max_epochs(validate_space(config({"gboost": {}}), RECOMMENDERS), RECOMMENDERS) == 1
