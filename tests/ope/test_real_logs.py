"""Real-data check on the shipped Open Bandit Dataset sample (runs in CI, no ../shared needed).

Estimate the value of the Bernoulli-TS policy (its own empirical item-position distribution)
from the uniform-random log and compare with the CTR the Bernoulli-TS log actually observed.
"""

import numpy as np
import pytest

from causalrec.ope import EmpiricalPolicy, evaluate
from causalrec.platform.obd import load_obd_sample


@pytest.fixture(scope="module")
def obd():
    return load_obd_sample("random"), load_obd_sample("bts")


def test_offline_estimate_of_bts_agrees_with_its_online_ctr(obd):
    random_log, bts_log = obd
    target = EmpiricalPolicy.from_log(bts_log, n_items=random_log.n_items, name="bts")
    observed = bts_log.click.mean()
    observed_se = bts_log.click.std(ddof=1) / np.sqrt(bts_log.n_rows)
    table = evaluate(random_log, target, ["ips", "snips", "dr", "sndr"])
    for _, row in table.iterrows():
        se = (row["high"] - row["low"]) / (2 * 1.96)
        z = (row["estimate"] - observed) / np.hypot(se, observed_se)
        assert abs(z) < 3, (
            f"{row['estimator']}: offline {row['estimate']:.5f} vs online {observed:.5f}"
        )
        assert row["estimate"] > 0
    assert (table["pscore"] == "logged").all()
    assert (table["unsupported_mass"] == 0).all()  # the uniform logger shows every item


def test_uniform_target_on_uniform_log_is_the_observed_ctr(obd):
    random_log, _ = obd
    target = EmpiricalPolicy(np.full((random_log.n_items, 3), 1 / random_log.n_items))
    table = evaluate(random_log, target, ["ips", "snips"], reward_model=None)
    # Every weight is 1 when target and logger are both uniform.
    assert table["estimate"].to_numpy() == pytest.approx([random_log.click.mean()] * 2)
    assert table.loc[0, "max_weight"] == pytest.approx(1.0)


def test_estimated_pscore_recovers_uniform_logging(obd):
    random_log, _ = obd
    from causalrec.ope.propensity import estimate_pscore

    pscore = estimate_pscore(random_log)
    # The true logger is uniform over 80 items: estimates should hover around 1/80.
    assert np.median(pscore) == pytest.approx(1 / 80, rel=0.25)
