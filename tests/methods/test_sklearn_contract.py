"""Every recommender follows scikit-learn's estimator contract, so ``sklearn.base.clone`` works."""

import inspect
import re

import numpy as np
import pytest
from sklearn.base import clone

from causalrec.methods import TorchRecommender
from causalrec.methods.registry import RECOMMENDERS
from causalrec.platform.errors import CausalRecError, UnknownNameError
from causalrec.simulators import generate_logs

METHODS = sorted(RECOMMENDERS)
TORCH_METHODS = [name for name in METHODS if issubclass(RECOMMENDERS[name], TorchRecommender)]
SHARED = {
    name: p.default
    for name, p in inspect.signature(TorchRecommender.__init__).parameters.items()
    if name != "self"
}

#: A non-default value of every method's own parameters (torch: plus the shared ones).
_TORCH_SHARED = {
    "dim": 8,
    "lr": 0.05,
    "weight_decay": 0.0,
    "epochs": 1,
    "batch_size": 256,
    "negatives": 2,
    "device": "cpu",
    "seed": 7,
}
_IPS = {"propensity": "popularity", "propensity_floor": 0.05}
NON_DEFAULT = {
    "naive": {**_TORCH_SHARED, "feedback": "implicit", "backbone": "two_tower"},
    "ips": {**_TORCH_SHARED, **_IPS, "adversarial_gamma": 2.0, "augment": 2},
    "snips": {**_TORCH_SHARED, **_IPS, "adversarial_gamma": 1.5, "augment": 1},
    "dr_jl": {**_TORCH_SHARED, **_IPS, "imputation_samples": 2},
    "mrdr": {**_TORCH_SHARED, **_IPS, "imputation_samples": 3},
    "cause": {**_TORCH_SHARED, "distance_weight": 0.5},
    "causalnet": {
        **_TORCH_SHARED,
        "hidden": 8,
        "propensity_weight": 0.5,
        "targeted_weight": 0.0,
        "unexposed": 2,
    },
    "dice": {**_TORCH_SHARED, "alpha": 0.2, "beta": 0.05, "margin": 1.0, "score_with": "both"},
    "gboost": {
        "max_iter": 5,
        "learning_rate": 0.2,
        "max_leaf_nodes": 7,
        "l2": 1.0,
        "feedback": "implicit",  # unsupported, but __init__ does not validate
        "seed": 3,
    },
}


def _defaults(cls) -> dict:
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self"
    }


def _assert_unfitted(model) -> None:
    """No fitted (``name_``) or private training state, as scikit-learn's check_is_fitted sees."""
    leftovers = [key for key in vars(model) if key.endswith("_") or key.startswith("_")]
    assert leftovers == []
    with pytest.raises(CausalRecError, match="not fitted"):
        model.score(np.arange(2))


@pytest.mark.parametrize("method", METHODS)
def test_constructor_lists_every_parameter_explicitly(method):
    cls = RECOMMENDERS[method]
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert parameters, method
    kinds = {p.name: p.kind for p in parameters}
    assert all(kind is inspect.Parameter.KEYWORD_ONLY for kind in kinds.values()), kinds
    assert cls.param_names() == list(kinds)
    assert list(cls().get_params(deep=False)) == list(kinds)
    if issubclass(cls, TorchRecommender):
        defaults = _defaults(cls)
        expected = {**SHARED, "feedback": "implicit"} if method == "dice" else SHARED
        assert {name: defaults.get(name, "<missing>") for name in SHARED} == expected


@pytest.mark.parametrize("method", METHODS)
def test_docstring_documents_every_parameter(method):
    cls = RECOMMENDERS[method]
    doc = inspect.getdoc(cls)
    assert "Args:" in doc and "**kwargs" not in doc, method
    args = doc.split("Args:", 1)[1]
    names = re.findall(r"^ {4}(\w[\w, ]*):", args.split("\n\n", 1)[0], re.M)
    documented = {name.strip() for entry in names for name in entry.split(",")}
    assert set(cls.param_names()) <= documented, set(cls.param_names()) - documented


def test_param_names_refuses_variadic_constructors():
    class Loose(RECOMMENDERS["naive"]):
        def __init__(self, *, extra=1, **kwargs):
            super().__init__(**kwargs)
            self.extra = extra

    with pytest.raises(TypeError, match=r"Loose.__init__ must list its parameters"):
        Loose.param_names()


@pytest.mark.parametrize("method", METHODS)
def test_clone_of_defaults_is_an_equal_unfitted_model(method):
    model = RECOMMENDERS[method]()
    cloned = clone(model)
    assert type(cloned) is type(model) and cloned is not model
    assert cloned.get_params() == model.get_params() == _defaults(type(model))
    assert repr(cloned) == repr(model)
    _assert_unfitted(cloned)


@pytest.mark.parametrize("method", METHODS)
def test_clone_keeps_non_default_parameters(method):
    cls = RECOMMENDERS[method]
    params, defaults = NON_DEFAULT[method], _defaults(cls)
    own = set(defaults) - set(SHARED) if issubclass(cls, TorchRecommender) else set(defaults)
    assert own <= set(params), f"no non-default value for {sorted(own - set(params))}"
    assert all(params[name] != defaults[name] for name in params)
    model = cls(**params)
    # __init__ stores every parameter verbatim, under its own name.
    assert all(getattr(model, name) is value for name, value in params.items())
    cloned = clone(model)
    assert type(cloned) is cls
    assert cloned.get_params() == model.get_params() == {**defaults, **params}
    _assert_unfitted(cloned)


@pytest.mark.parametrize("method", METHODS)
def test_set_params_sets_and_returns_self(method):
    model = RECOMMENDERS[method]()
    name, value = next(iter(NON_DEFAULT[method].items()))
    assert model.set_params(**{name: value}) is model
    assert model.get_params()[name] == value
    assert clone(model).get_params()[name] == value
    assert model.set_params() is model


@pytest.mark.parametrize("method", METHODS)
def test_set_params_refuses_an_unknown_name(method):
    model = RECOMMENDERS[method]()
    before = model.get_params()
    name = next(iter(NON_DEFAULT[method]))
    with pytest.raises(UnknownNameError, match=r"unknown \w+ parameter 'not_a_param'") as info:
        model.set_params(**{name: NON_DEFAULT[method][name], "not_a_param": 1})
    assert isinstance(info.value, ValueError)  # as scikit-learn's set_params raises
    assert model.get_params() == before  # nothing was set


@pytest.fixture(scope="module")
def tiny_logs(small_simulator):
    return generate_logs(small_simulator, n_rounds=600, seed=1, uniform_fraction=0.2)


@pytest.mark.parametrize("method", [*TORCH_METHODS, "gboost"])
def test_clone_of_a_fitted_model_is_unfitted(method, tiny_logs):
    cls = RECOMMENDERS[method]
    params = {"max_iter": 3} if method == "gboost" else {"dim": 4, "epochs": 1, "device": "cpu"}
    model = cls(**params).fit(tiny_logs)
    assert model.score(np.arange(2)).shape == (2, tiny_logs.n_items)
    cloned = clone(model)
    assert type(cloned) is cls and cloned.get_params() == model.get_params()
    _assert_unfitted(cloned)
    assert clone(cloned.set_params(seed=1)).fit(tiny_logs).n_items_ == tiny_logs.n_items
