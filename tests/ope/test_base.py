"""The estimator interface: any family implementing it is evaluated, with no change to evaluate."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from causalrec.ope import (
    DM,
    IPS,
    Estimator,
    EvaluationInputs,
    OfflineEvaluator,
    SlateIndependentIPS,
    SlateStandardIPS,
    evaluate,
)
from causalrec.ope.intervals import EstimatorTerms
from causalrec.ope.slate import slate_pscores
from causalrec.platform.errors import DataError
from causalrec.platform.policy import SoftmaxPolicy
from causalrec.simulators import generate_logs


@dataclass(frozen=True)
class LoggedClicks(Estimator):
    """The logging policy's own value: clicks per round as logged (ignores the target)."""

    name: ClassVar[str] = "logged_clicks"

    def policy_terms(self, inputs: EvaluationInputs) -> EstimatorTerms:
        return inputs.per_round(EstimatorTerms(baseline=None, correction=inputs.impressions.reward))


@dataclass(frozen=True)
class HalfDM(Estimator):
    """Half the direct method's value; needs the reward model, clips everything."""

    name: ClassVar[str] = "half_dm"
    needs_reward_model: ClassVar[bool] = True

    def policy_terms(self, inputs: EvaluationInputs) -> EstimatorTerms:
        q_policy = inputs.impressions.q_policy
        return inputs.per_round(EstimatorTerms(baseline=None, correction=0.5 * q_policy))

    def policy_clipped_share(self, inputs: EvaluationInputs) -> float:
        return 1.0


@pytest.fixture(scope="module")
def slate_log(slate_simulator):
    return generate_logs(slate_simulator, n_rounds=3_000, seed=11)


@pytest.fixture(scope="module")
def target(slate_simulator):
    return SoftmaxPolicy(slate_simulator.relevance_scorer, temperature=2.0, slate_size=3)


def test_custom_family_is_evaluated_through_the_interface(slate_log, target):
    table = evaluate(slate_log, target, [LoggedClicks(), "ips"], reward_model=None)
    assert list(table["estimator"]) == ["LoggedClicks()", "IPS(clip=inf)"]
    row = table.iloc[0]
    clicks_per_round = slate_log.click.sum() / slate_log.n_rounds
    assert row["estimate"] == pytest.approx(clicks_per_round, rel=1e-12)
    # Rounds are the units: the normal interval's half-width is 1.96 * sd(round clicks) / sqrt(n).
    per_round = slate_log.click.reshape(-1, 3).sum(axis=1)
    half = 1.959964 * per_round.std(ddof=1) / np.sqrt(slate_log.n_rounds)
    assert row["high"] - row["estimate"] == pytest.approx(half, rel=1e-5)
    assert row["clipped_share"] == 0.0
    assert row["n_rounds"] == slate_log.n_rounds


def test_custom_family_gets_the_reward_model_it_declares(slate_log, target):
    table = evaluate(slate_log, target, ["dm", HalfDM()], reward_model={"n_folds": 2})
    dm, half = table["estimate"]
    assert half == pytest.approx(dm / 2, rel=1e-12)
    assert list(table["clipped_share"]) == [0.0, 1.0]
    # Without a reward model it is dropped beside estimators that need none, rejected alone.
    assert list(OfflineEvaluator(slate_log, [HalfDM(), IPS()], reward_model=None).estimators) == [
        IPS()
    ]
    with pytest.raises(DataError, match=r"\['half_dm'\] need a reward model"):
        OfflineEvaluator(slate_log, [HalfDM()], reward_model=None)


def test_betting_interval_is_nan_for_non_ips_terms_of_a_custom_family(slate_log, target):
    table = evaluate(
        slate_log, target, [LoggedClicks(), "ips"], reward_model=None, interval="betting"
    )
    assert np.isnan(table.loc[0, ["low", "high"]].astype(float)).all()
    assert table.loc[1, "low"] < table.loc[1, "estimate"] < table.loc[1, "high"]


def test_each_family_declares_what_it_needs():
    assert DM.needs_reward_model and not IPS.needs_reward_model
    assert not SlateStandardIPS.needs_reward_model
    assert IPS.pscore_kind == "impression"
    assert SlateStandardIPS.pscore_kind == "joint"
    assert DM.supports_difference and not SlateStandardIPS.supports_difference
    assert LoggedClicks.pscore_kind == "impression" and not LoggedClicks.supports_difference


def test_slate_terms_from_inputs_equal_the_array_path(slate_log, target):
    evaluator = OfflineEvaluator(slate_log, ["iips"], reward_model=None)
    inputs, _ = evaluator.policy_inputs(target)
    estimator = SlateIndependentIPS(clip=5.0)
    logging, evaluation = slate_pscores(slate_log, target, estimator)
    arrays = dict(
        reward=slate_log.click,
        slate_id=slate_log.round_id,
        position=slate_log.position,
        pscore=logging,
        evaluation_pscore=evaluation,
    )
    assert estimator.policy_terms(inputs).value() == estimator.estimate(**arrays)
    assert estimator.policy_clipped_share(inputs) == pytest.approx(
        np.mean(evaluation / logging > 5.0)
    )


def test_standard_terms_are_summed_within_rounds(slate_log, target):
    inputs, _ = OfflineEvaluator(slate_log, ["ips"], reward_model=None).policy_inputs(target)
    per_impression = IPS().terms_from_inputs(inputs.impressions)
    per_round = IPS().policy_terms(inputs)
    assert per_round.n == slate_log.n_rounds
    assert per_round.value() == pytest.approx(3 * per_impression.value(), rel=1e-12)


def test_evaluation_inputs_compute_shared_values_once(slate_log, target):
    inputs, _ = OfflineEvaluator(slate_log, ["ips"], reward_model=None).policy_inputs(target)
    calls = []
    for _ in range(3):
        assert inputs.cached("key", lambda: calls.append(1) or 42) == 42
    assert calls == [1]
