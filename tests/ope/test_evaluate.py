import warnings

import numpy as np
import pytest

from causalrec.methods.policy_spec import resolve_policy
from causalrec.ope import DR, IPS, OfflineEvaluator, OverlapWarning, evaluate
from causalrec.ope.policy_inputs import round_inputs
from causalrec.ope.reward_model import RewardModelConfig
from causalrec.platform.empirical_policy import EmpiricalPolicy
from causalrec.platform.errors import ConfigError, DataError, UnknownNameError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.policy import SoftmaxPolicy
from causalrec.simulators import generate_logs


@pytest.fixture(scope="module")
def logged(small_simulator):
    return generate_logs(small_simulator, n_rounds=30_000, seed=0)


def test_evaluate_table_and_accuracy(small_simulator, logged):
    target = SoftmaxPolicy(small_simulator.relevance_scorer, temperature=1.5)
    truth = small_simulator.policy_value(target)
    table = evaluate(logged, target, ["ips", "snips", "dr", "sndr", "dm"])
    assert list(table["estimator"]) == [
        "IPS(clip=inf)",
        "SNIPS()",
        "DR(clip=inf)",
        "SNDR()",
        "DM()",
    ]
    for column in ("low", "high", "ess", "max_weight", "unsupported_mass", "pscore", "warning"):
        assert column in table
    unbiased = table[table["estimator"] != "DM()"]
    assert ((unbiased["low"] < truth) & (truth < unbiased["high"])).all()
    assert (abs(unbiased["estimate"] - truth) / truth < 0.1).all()
    assert (table["pscore"] == "logged").all()
    assert (table["reward_model"] == "logistic").all()


def test_policy_protocol_path_equals_dense_arrays(small_simulator, logged):
    """evaluate() never builds (n, n_items) arrays; the array contract must give the same numbers."""
    target = SoftmaxPolicy(small_simulator.relevance_scorer, temperature=1.0)
    config = RewardModelConfig(n_folds=2)
    inputs, _ = round_inputs(logged, target, pscore=logged.pscore, reward_model=config)
    dist = target.action_distribution(logged.user_id)
    # Rebuild q_hat densely with the same folds and models the sparse path used.
    from causalrec.ope.cross_fit import feature_space, fold_ids
    from causalrec.ope.reward_model import make_reward_model

    folds = fold_ids(logged.round_id, 2, config.seed)
    q_hat = np.empty_like(dist)
    x = logged.user_features.astype(float)
    for fold in range(2):
        train = folds != fold
        model = make_reward_model(feature_space(logged), config).fit(
            x[train],
            logged.item_id[train],
            logged.position[train],
            logged.click[train].astype(float),
        )
        q_hat[~train] = model.predict_all(x[~train], logged.position[~train])
    arrays = dict(
        reward=logged.click,
        action=logged.item_id,
        pscore=logged.pscore,
        action_dist=dist,
        q_hat=q_hat,
    )
    for estimator in (IPS(), DR()):
        assert estimator.estimate_from_inputs(inputs) == pytest.approx(
            estimator.estimate(**arrays), rel=1e-9
        )


def test_estimated_pscore_when_log_has_none(small_simulator, logged):
    columns = {name: getattr(logged, name) for name in LoggedFeedback.ROW_FIELDS}
    columns["pscore"] = np.full(logged.n_rows, np.nan)
    blind = LoggedFeedback(**columns, n_items=logged.n_items, item_table=logged.item_table)
    target = small_simulator.logging_policy()
    table = evaluate(blind, target, ["ips", "snips"], reward_model=None)
    assert table["pscore"].str.startswith("estimated").all()
    truth = small_simulator.policy_value(target)
    assert abs(table.loc[1, "estimate"] - truth) / truth < 0.1


def test_poor_overlap_warns_and_reports_unsupported_mass(small_simulator, logged):
    never_shown = np.setdiff1d(np.arange(logged.n_items), np.unique(logged.item_id[:200]))
    narrow = logged.select(np.arange(200))
    marginals = np.zeros((logged.n_items, 1))
    marginals[never_shown, 0] = 1.0 / len(never_shown)
    target = EmpiricalPolicy(marginals)
    with pytest.warns(OverlapWarning, match="never shows"):
        table = evaluate(narrow, target, ["ips"], reward_model=None)
    assert table.loc[0, "unsupported_mass"] == pytest.approx(1.0)
    assert table.loc[0, "warning"].startswith("poor overlap")


def test_no_warning_when_overlap_is_fine(small_simulator, logged):
    with warnings.catch_warnings():
        warnings.simplefilter("error", OverlapWarning)
        evaluate(logged, small_simulator.logging_policy(), ["ips"], reward_model=None)


def test_bad_requests(small_simulator, logged):
    target = small_simulator.logging_policy()
    with pytest.raises(UnknownNameError, match="did you mean 'snips'"):
        evaluate(logged, target, ["snipz"])
    with pytest.raises(UnknownNameError, match="did you mean 'clip'"):
        evaluate(logged, target, ["ips:clipp=3"])
    with pytest.raises(DataError, match="need a reward model"):
        evaluate(logged, target, ["dr"], reward_model=None)
    with pytest.raises(ConfigError, match="kind"):
        evaluate(logged, target, ["dr"], reward_model={"kind": "forest"})
    with pytest.raises(UnknownNameError, match="did you mean 'oracle'"):
        resolve_policy("oracel", logs=logged)
    with pytest.raises(ConfigError, match="needs a number"):
        resolve_policy("softmax:hot", logs=logged)


@pytest.mark.parametrize("kind", ["hgb", "mlp"])
def test_other_reward_models_give_sane_dr(small_simulator, kind):
    log = generate_logs(small_simulator, n_rounds=6_000, seed=2)
    target = small_simulator.logging_policy()
    truth = small_simulator.policy_value(target)
    config = RewardModelConfig(kind=kind, n_folds=2, max_iter=30)
    table = evaluate(log, target, ["dm", "dr"], reward_model=config)
    assert (table["reward_model"] == kind).all()
    assert abs(table.loc[1, "estimate"] - truth) / truth < 0.1
    assert abs(table.loc[0, "estimate"] - truth) / truth < 0.25


def test_slate_logs_get_slate_estimators(slate_simulator):
    log = generate_logs(slate_simulator, n_rounds=20_000, seed=4)
    target = SoftmaxPolicy(slate_simulator.relevance_scorer, temperature=2.0, slate_size=3)
    truth = slate_simulator.policy_value(target)
    table = evaluate(log, target, reward_model=None)
    assert (table["unit"] == "clicks_per_round").all()
    slates = table[table["estimator"].str.startswith("Slate")]
    assert set(slates["estimator"]) == {
        "SlateIndependentIPS(clip=inf)",
        "SlateRewardInteractionIPS(clip=inf)",
        "SlateStandardIPS(clip=inf)",
    }
    assert ((slates["low"] < truth) & (truth < slates["high"])).all()


def test_deterministic_policies_take_the_fast_path(small_simulator, logged):
    """Top-k targets skip the distribution; the result must equal the generic path's."""
    from causalrec.platform.policy import TopKPolicy

    greedy = small_simulator.oracle_policy()
    assert greedy.deterministic_slates(np.arange(3)) is not None
    config = RewardModelConfig(n_folds=2)
    fast, fast_diag = round_inputs(logged, greedy, pscore=logged.pscore, reward_model=config)

    class Generic(TopKPolicy):
        def deterministic_slates(self, users):
            return None

    slow_policy = Generic(small_simulator.relevance_scorer, name="generic")
    slow, slow_diag = round_inputs(logged, slow_policy, pscore=logged.pscore, reward_model=config)
    np.testing.assert_allclose(fast.weight, slow.weight)
    np.testing.assert_allclose(fast.q_factual, slow.q_factual, rtol=1e-10)
    np.testing.assert_allclose(fast.q_policy, slow.q_policy, rtol=1e-10)
    assert fast_diag == slow_diag


def test_a_repeated_estimator_gives_one_row_per_request(small_simulator, logged):
    # The serve fuzzer's /evaluate request listed snips and dm three times each; the terms were
    # once kept by name, so the table lost rows and evaluate failed (a 500). Each request is a row.
    target = SoftmaxPolicy(small_simulator.relevance_scorer, temperature=1.5)
    table = evaluate(logged, target, ["snips", "dm", "snips", "ips:clip=10", "dm"])
    assert list(table["estimator"]) == ["SNIPS()", "DM()", "SNIPS()", "IPS(clip=10.0)", "DM()"]
    assert table["estimate"].iloc[0] == table["estimate"].iloc[2]
    assert table["estimate"].iloc[1] == table["estimate"].iloc[4]
    selection = OfflineEvaluator(logged, ["snips", "dr", "snips"]).select(target)
    assert sorted(selection.table["candidate"]) == ["DR(clip=inf)", "SNIPS()"]
