"""Every value a user sees is in clicks per round, the unit of the simulator's truth.

The issue's reproduction: on K = 3 logs the standard estimators reported per impression (DR 0.198
against an exact 0.607, a paired lift of 0.141 against an exact 0.437), and nothing said so.
"""

import numpy as np
import pytest

from causalrec.abtest.arms import resolve_arm
from causalrec.abtest.runner import run_abtest
from causalrec.ope import OfflineEvaluator, evaluate
from causalrec.platform.errors import DataError
from causalrec.platform.policy import SoftmaxPolicy, TopKPolicy
from causalrec.platform.units import CLICKS_PER_ROUND, PolicyValue, check_same_unit
from causalrec.simulators import generate_logs


@pytest.fixture(scope="module")
def slate_log(slate_simulator):
    return generate_logs(slate_simulator, n_rounds=20_000, seed=7)


def test_standard_estimators_report_clicks_per_round_on_slates(slate_simulator, slate_log):
    target = SoftmaxPolicy(slate_simulator.relevance_scorer, temperature=2.0, slate_size=3)
    truth = slate_simulator.policy_value(target)
    table = evaluate(slate_log, target, ["ips", "snips", "dr", "sndr", "iips"])
    assert (table["unit"] == CLICKS_PER_ROUND).all()
    assert (table["n_rounds"] == 20_000).all() and (table["n_rows"] == 60_000).all()
    for row in table.itertuples():
        assert row.low < truth < row.high, (row.estimator, row.estimate, float(truth))
    # Per impression, the old unit, is a third of it and far outside the intervals.
    dr = table.set_index("estimator").loc["DR(clip=inf)"]
    assert truth / 3 < dr.low


def test_paired_lift_is_in_clicks_per_round(slate_simulator, slate_log):
    a = SoftmaxPolicy(slate_simulator.relevance_scorer, temperature=2.0, slate_size=3)
    b = TopKPolicy(slate_simulator.relevance_scorer, slate_size=3, epsilon=0.3)
    exact = slate_simulator.policy_value(b) - slate_simulator.policy_value(a)
    lift = OfflineEvaluator(slate_log, ["dr"]).difference(a, b, "dr")
    assert lift["unit"] == CLICKS_PER_ROUND
    assert lift["low"] < exact < lift["high"]
    assert lift["estimate"] == pytest.approx(lift["value_b"] - lift["value_a"])


def test_one_row_per_round_is_unchanged(small_simulator):
    """K = 1 (and Open Bandit) logs: per round is per impression, to the last digit."""
    log = generate_logs(small_simulator, n_rounds=3000, seed=2)
    target = SoftmaxPolicy(small_simulator.relevance_scorer, temperature=1.5)
    table = evaluate(log, target, ["ips", "snips"], reward_model=None)
    weight = target.action_distribution(log.user_id)[np.arange(log.n_rows), log.item_id]
    weight = weight / log.pscore
    assert table.loc[0, "estimate"] == pytest.approx(np.mean(weight * log.click), rel=1e-12)
    assert table.loc[1, "estimate"] == pytest.approx(
        np.sum(weight * log.click) / np.sum(weight), rel=1e-12
    )


def test_comparisons_across_units_are_refused():
    check_same_unit("an estimate", CLICKS_PER_ROUND)
    with pytest.raises(DataError, match="clicks_per_impression; it can only be compared in"):
        check_same_unit("the offline lift", "clicks_per_impression")
    value = PolicyValue(0.5, standard_error=0.01, exact=False)
    assert value.unit == CLICKS_PER_ROUND and value.to_dict()["exact"] is False
    with pytest.raises(DataError, match="standard_error 0"):
        PolicyValue(0.5, standard_error=0.01)


def test_ab_offline_lift_on_slates_agrees_with_the_exact_lift(slate_simulator, slate_log, tmp_path):
    arms = {
        "a": resolve_arm("a", "softmax:2", slate_log, slate_simulator),
        "b": resolve_arm("b", "epsilon_greedy:0.3", slate_log, slate_simulator),
    }
    result = run_abtest(arms, slate_simulator, 4000, tmp_path / "ab", logs=slate_log, seed=0)
    assert result.offline["unit"] == CLICKS_PER_ROUND
    assert result.offline["low"] < result.exact_lift < result.offline["high"]
    assert result.agreement["same_sign"]
