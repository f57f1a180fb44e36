"""Off-policy evaluation over Parquet shards with Ray Data equals the in-memory evaluation.

Each test would fail if a batch's sums were merged wrongly (a plain average of batch means, a
variance without the between-batch term), if a round split by a batch boundary were dropped or
counted twice, if the Poisson counts depended on the partition, or if the reward model's sample
were not the rounds it claims.
"""

import numpy as np
import pandas as pd
import pytest

from causalrec.ope.cross_fit import feature_space
from causalrec.ope.evaluate import OfflineEvaluator
from causalrec.ope.reward_model import RewardModelConfig, make_reward_model
from causalrec.ope.sharded import evaluate_dataset, poisson_weights
from causalrec.platform import storage
from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.policy import SoftmaxPolicy
from causalrec.simulators.logs import write_logs

ESTIMATORS = ["dm", "ips", "snips", "dr", "sndr", "switch_dr:tau=100", "dros:lambda_=100"]
SLATE = ["sips", "iips", "rips"]
#: The sharded and in-memory results differ only by floating-point rounding.
EXACT = 1e-12


@pytest.fixture(scope="module")
def slate_log(slate_simulator, tmp_path_factory):
    """3,000 rounds of slates of 3 in parts of 1,000 rows: parts end in the middle of rounds."""
    out = tmp_path_factory.mktemp("sharded") / "slates"
    write_logs(slate_simulator, out, 3_000, seed=4, chunk_rounds=700, rows_per_file=1_000,
               workers=0)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def single_log(small_simulator, tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded") / "single"
    write_logs(small_simulator, out, 4_000, seed=5, chunk_rounds=1_500, workers=0)
    return out


def _fitted(logs):
    """A logistic reward model fitted on the whole log, in log order."""
    model = make_reward_model(feature_space(logs), RewardModelConfig(kind="logistic"))
    return model.fit(logs.user_features.astype(np.float64), logs.item_id,
                     logs.position, logs.click.astype(np.float64))  # fmt: skip


def _in_memory(path, policy, estimators, model):
    logs = storage.read_logs(path)
    return OfflineEvaluator(logs, estimators, reward_model=model).evaluate(policy, warn=False)


def _close(sharded: pd.DataFrame, memory: pd.DataFrame) -> None:
    assert list(sharded.estimator) == list(memory.estimator)
    for column in ("estimate", "low", "high"):
        np.testing.assert_allclose(sharded[column], memory[column], rtol=0, atol=EXACT,
                                   err_msg=column)  # fmt: skip
    np.testing.assert_allclose(sharded.ess, memory.ess, rtol=1e-12)
    np.testing.assert_allclose(sharded.max_weight, memory.max_weight, rtol=0)
    assert (sharded.n_rows == memory.n_rows).all() and (sharded.n_rounds == memory.n_rounds).all()


@pytest.mark.parametrize("batch_rows", [262_144, 500])
def test_slate_estimates_and_intervals_equal_the_in_memory_ones(slate_simulator, slate_log,
                                                                ray_session, batch_rows):  # fmt: skip
    policy = SoftmaxPolicy(slate_simulator.relevance_scorer, temperature=2.0, slate_size=3)
    model = _fitted(storage.read_logs(slate_log))
    estimators = ESTIMATORS + SLATE
    sharded = evaluate_dataset(slate_log, policy, estimators, reward_model=model,
                               batch_rows=batch_rows, workers=2)  # fmt: skip
    _close(sharded, _in_memory(slate_log, policy, estimators, model))
    assert (sharded.n_rounds == 3_000).all()


def test_single_item_estimates_equal_the_in_memory_ones_with_one_worker(small_simulator,
                                                                        single_log, ray_session):  # fmt: skip
    policy = SoftmaxPolicy(small_simulator.relevance_scorer, temperature=1.0)
    model = _fitted(storage.read_logs(single_log))
    sharded = evaluate_dataset(single_log, policy, ESTIMATORS, reward_model=model,
                               batch_rows=999, workers=1)  # fmt: skip
    _close(sharded, _in_memory(single_log, policy, ESTIMATORS, model))


def test_the_reward_model_is_fitted_on_the_sampled_rounds(small_simulator, single_log,
                                                          ray_session):  # fmt: skip
    """With a sample as large as the log, the model is the one fitted on the whole log."""
    policy = SoftmaxPolicy(small_simulator.relevance_scorer, temperature=1.0)
    whole = evaluate_dataset(single_log, policy, ["dm", "dr"], reward_sample_rounds=10**6,
                             batch_rows=1_300)  # fmt: skip
    model = _fitted(storage.read_logs(single_log))
    _close(whole, _in_memory(single_log, policy, ["dm", "dr"], model))
    assert (whole.reward_sample_rounds == 4_000).all()
    sampled = evaluate_dataset(single_log, policy, ["dm"], reward_sample_rounds=1_000)
    # About a quarter of the rounds (a hash decides each round: binomial, sd ~ 27).
    assert 850 < sampled.reward_sample_rounds.iloc[0] < 1_150
    assert sampled.estimate.iloc[0] != whole.estimate.iloc[0]


def test_the_poisson_bootstrap_does_not_depend_on_the_partition(slate_simulator, slate_log,
                                                                ray_session):  # fmt: skip
    policy = SoftmaxPolicy(slate_simulator.relevance_scorer, temperature=2.0, slate_size=3)
    runs = [
        evaluate_dataset(slate_log, policy, ["ips", "snips", "sips"], reward_model=None,
                         n_bootstrap=400, seed=3, batch_rows=rows, workers=workers)
        for rows, workers in ((262_144, 2), (700, 1))
    ]  # fmt: skip
    for column in ("boot_low", "boot_high"):
        np.testing.assert_allclose(runs[0][column], runs[1][column], rtol=0, atol=EXACT)
    # The replicates' spread is the estimate's: 400 replicates know an SD to about 3.5%.
    width = (runs[0].boot_high - runs[0].boot_low) / (runs[0].high - runs[0].low)
    assert ((width > 0.85) & (width < 1.15)).all(), width
    other_seed = evaluate_dataset(slate_log, policy, ["ips"], reward_model=None, n_bootstrap=400,
                                  seed=4)  # fmt: skip
    assert other_seed.boot_low.iloc[0] != runs[0].boot_low.iloc[0]


def test_poisson_counts_are_poisson_and_keyed_by_round():
    rounds = np.arange(50_000, dtype=np.int64)
    counts = poisson_weights(rounds, 8, seed=1)
    assert counts.shape == (50_000, 8)
    # Poisson(1): mean 1, variance 1; 400,000 draws give each to about 0.002 (1 SE).
    assert abs(counts.mean() - 1) < 0.01 and abs(counts.var() - 1) < 0.02
    assert abs(np.mean(counts == 0) - np.exp(-1)) < 0.005
    # Independent across replicates and rounds (no correlation above noise).
    assert abs(np.corrcoef(counts[:, 0], counts[:, 1])[0, 1]) < 0.02
    assert abs(np.corrcoef(counts[:-1, 0], counts[1:, 0])[0, 1]) < 0.02
    # A shard sees the same counts for its rounds, whatever else it holds.
    np.testing.assert_array_equal(poisson_weights(rounds[1234:1240], 8, seed=1),
                                  counts[1234:1240])  # fmt: skip
    assert not np.array_equal(poisson_weights(rounds[:100], 8, seed=2), counts[:100])


def test_estimators_that_need_the_whole_log_are_refused(slate_simulator, slate_log):
    policy = SoftmaxPolicy(slate_simulator.relevance_scorer, temperature=2.0, slate_size=3)
    with pytest.raises(ConfigError, match="ips_slope"):
        evaluate_dataset(slate_log, policy, ["ips", "ips_slope"])


@pytest.mark.parametrize(
    ("options", "field"),
    [({"workers": 0}, "workers"), ({"n_bootstrap": -1}, "n_bootstrap"),
     ({"batch_rows": 0}, "batch_rows"), ({"alpha": 1.5}, "alpha")],
)  # fmt: skip
def test_bad_options_are_refused_naming_them(slate_simulator, slate_log, options, field):
    policy = SoftmaxPolicy(slate_simulator.relevance_scorer, temperature=2.0, slate_size=3)
    with pytest.raises(ConfigError, match=field):
        evaluate_dataset(slate_log, policy, ["ips"], **options)


def test_a_round_without_its_whole_slate_is_refused(slate_simulator, tmp_path, ray_session):
    out = tmp_path / "log"
    write_logs(slate_simulator, out, 300, seed=1, workers=0)
    part = storage.log_files(out)[0]
    import pyarrow.parquet as pq

    table = pq.read_table(part)
    pq.write_table(table.slice(1), part)  # round 0 loses its first row
    policy = SoftmaxPolicy(slate_simulator.relevance_scorer, temperature=2.0, slate_size=3)
    with pytest.raises(DataError, match="rounds of 2 and of 3 rows"):
        evaluate_dataset(out, policy, ["ips"], reward_model=None)
