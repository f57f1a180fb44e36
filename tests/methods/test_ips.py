import json

import numpy as np
import pytest
import torch
from scipy import special, stats

from causalrec.methods import (
    IPSMF,
    MODEL_SCHEMA_VERSION,
    NaiveMF,
    TrainingError,
    load_recommender,
    make_recommender,
)
from causalrec.platform.errors import CausalRecError, ConfigError, UnknownNameError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.simulators import generate_logs


@pytest.fixture(scope="module")
def small_logs(small_simulator):
    return generate_logs(small_simulator, n_rounds=5_000, seed=1)


def test_rel_mf_beats_naive_when_exposure_follows_popularity(popularity_world):
    """Naive implicit MF learns popularity (what was exposed); Rel-MF corrects for exposure."""
    simulator, logs = popularity_world
    values = {}
    for name in ("naive", "ips"):
        values[name] = [
            simulator.policy_value(
                make_recommender(name, feedback="implicit", epochs=15, seed=seed)
                .fit(logs)
                .policy(1)
            )
            for seed in range(2)
        ]
    spread = max(np.std(values["naive"]), np.std(values["ips"]))
    assert np.mean(values["ips"]) - np.mean(values["naive"]) > max(3 * spread, 0.02), values


def test_training_is_deterministic_under_a_seed(small_logs):
    a = make_recommender("ips", epochs=2, seed=3).fit(small_logs)
    b = make_recommender("ips", epochs=2, seed=3).fit(small_logs)
    c = make_recommender("ips", epochs=2, seed=4).fit(small_logs)
    users = np.arange(20)
    np.testing.assert_array_equal(a.score(users), b.score(users))
    assert not np.allclose(a.score(users), c.score(users))
    assert a.history_ == b.history_


def test_score_and_policies(small_simulator, small_logs):
    model = make_recommender("naive", epochs=2).fit(small_logs)
    users = np.array([0, 5, 9])
    scores = model.score(users)
    assert scores.shape == (3, small_simulator.n_items) and ((scores > 0) & (scores < 1)).all()
    np.testing.assert_allclose(model.score(users, np.array([3, 1])), scores[:, [3, 1]])
    top = model.policy(k=3).deterministic_slates(users)
    np.testing.assert_array_equal(top, np.argsort(-scores, axis=1)[:, :3])
    # ε-greedy: closed-form marginals, (1 − ε) on the greedy item of each position, + ε / n.
    policy = model.policy(2, "epsilon", epsilon=0.2)
    sample = policy.sample(np.repeat(users, 200), np.random.default_rng(0))
    greedy = np.repeat(top[:, :2], 200, axis=0)
    n_items = small_simulator.n_items
    np.testing.assert_allclose(
        sample.marginal_pscore, 0.8 * (sample.actions == greedy) + 0.2 / n_items, rtol=1e-12
    )
    assert 0 < small_simulator.policy_value(model.policy(1)) <= small_simulator.oracle_value()
    with pytest.raises(ConfigError, match="exploration must be"):
        model.policy(1, "boltzmann")


def test_softmax_policy_is_plackett_luce_over_logits(small_logs):
    model = make_recommender("naive", epochs=2).fit(small_logs)
    users = np.array([0, 5, 9])
    logits = special.logit(model.score(users).astype(np.float64)) / 0.5
    p = special.softmax(logits, axis=1)
    # K = 2 by hand: P(i first) = p_i; P(i second) = p_i Σ_{a ≠ i} p_a / (1 − p_a).
    ratio = p / (1 - p)
    second = p * (ratio.sum(axis=1, keepdims=True) - ratio)
    dist = model.policy(2, "softmax", temperature=0.5).action_distribution(users)
    np.testing.assert_allclose(dist, np.stack([p, second], axis=-1), rtol=1e-5)


def test_save_and_load_round_trip(small_logs, tmp_path):
    model = make_recommender("ips", epochs=1, propensity="popularity", dim=8).fit(small_logs)
    model.save(tmp_path / "model")
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert manifest["method"] == "ips" and manifest["params"]["propensity"] == "popularity"
    assert manifest["schema_version"] == MODEL_SCHEMA_VERSION
    loaded = load_recommender(tmp_path / "model")
    assert isinstance(loaded, IPSMF) and loaded.get_params() == model.get_params()
    np.testing.assert_allclose(loaded.score(np.arange(10)), model.score(np.arange(10)))
    manifest["schema_version"] = 99
    (tmp_path / "model" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="schema version 99"):
        load_recommender(tmp_path / "model")


def test_unknown_method_and_parameter_suggest_closest():
    with pytest.raises(UnknownNameError, match="did you mean 'snips'"):
        make_recommender("snipz")
    with pytest.raises(UnknownNameError, match="did you mean 'propensity'"):
        make_recommender("ips", propensty="logged")


def test_logged_propensity_needs_pscore(small_logs):
    columns = {name: getattr(small_logs, name) for name in LoggedFeedback.ROW_FIELDS}
    columns["pscore"] = np.full(small_logs.n_rows, np.nan)
    blind = LoggedFeedback(**columns, n_items=small_logs.n_items)
    with pytest.raises(
        ConfigError, match="use an estimated propensity: 'popularity' or 'logistic'"
    ):
        make_recommender("ips", propensity="logged", epochs=1).fit(blind)
    make_recommender("ips", propensity="logistic", epochs=1).fit(blind)  # estimated instead
    with pytest.raises(ConfigError, match="not available in the implicit setting"):
        make_recommender("ips", propensity="logistic", feedback="implicit", epochs=1).fit(
            small_logs
        )


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({"lr": 0.0}, r"lr must be > 0; got 0.0"),
        ({"epochs": 0}, r"epochs must be >= 1; got 0"),
        ({"feedback": "explicit"}, r"feedback in \['exposed', 'implicit'\]; got 'explicit'"),
        ({"propensity_floor": 1.5}, r"propensity_floor must be in \[0, 1\); got 1.5"),
    ],
)
def test_bad_parameters(small_logs, params, pattern):
    with pytest.raises(ConfigError, match=pattern):
        make_recommender("ips", **params).fit(small_logs)


def test_snips_is_exposed_only(small_logs):
    with pytest.raises(ConfigError, match="snips supports feedback in \\['exposed'\\]"):
        make_recommender("snips", feedback="implicit").fit(small_logs)


def test_non_finite_loss_stops_training_and_nothing_is_fitted(small_logs, tmp_path):
    class Exploding(NaiveMF):
        def _loss(self, batch):
            return super()._loss(batch) * torch.tensor(float("inf"))

    model = Exploding(epochs=3, lr=0.05, batch_size=1000)
    with pytest.raises(
        TrainingError, match=r"non-finite main loss .* epoch 0, step 0 with lr=0.05"
    ):
        model.fit(small_logs)
    with pytest.raises(CausalRecError, match="not fitted"):
        model.save(tmp_path / "nan-model")
    assert not (tmp_path / "nan-model").exists()


class _Bilinear(torch.nn.Module):
    """A stand-in scoring network with known logits: scale · (a·user + b·item + c)."""

    def __init__(self, a: float, b: float, c: float):
        super().__init__()
        self.a, self.b, self.c = a, b, c
        self.scale = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

    def forward(self, users, items):
        return self.scale * (self.a * users.double() + self.b * items.double() + self.c)

    def logits(self, users, items) -> np.ndarray:
        return self.a * users + self.b * items + self.c


def _bce(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """−y log σ(x) − (1 − y) log(1 − σ(x)), in plain numpy (soft labels allowed)."""
    return np.logaddexp(0.0, logits) - labels * logits


def test_augmentation_draws_k_uniform_pairs_per_exposed_pair(small_logs):
    from causalrec.methods.data import InteractionData

    data = InteractionData.from_logs(small_logs, "exposed")
    model = make_recommender("ips", augment=3)
    samples = model._sample(data, 20_000, np.random.default_rng(0), "cpu")
    users, items = samples["augment_users"].numpy(), samples["augment_items"].numpy()
    assert users.shape == items.shape == (60_000,)
    # Uniform over users and over items, and independent of each other (coarse 4 x 4 table).
    counts_u = np.bincount(users, minlength=data.n_users)
    counts_i = np.bincount(items, minlength=data.n_items)
    assert len(counts_u) == data.n_users and len(counts_i) == data.n_items
    assert stats.chisquare(counts_u).pvalue > 1e-3 and stats.chisquare(counts_i).pvalue > 1e-3
    table = np.bincount((users % 4) * 4 + items % 4, minlength=16).reshape(4, 4)
    assert stats.chi2_contingency(table).pvalue > 1e-3
    # Not the logged pairs: the share that was exposed is the share of all pairs exposed.
    exposed = np.zeros((data.n_users, data.n_items), dtype=bool)
    exposed[data.users, data.items] = True
    share, expected = exposed[users, items].mean(), exposed.mean()
    assert abs(share - expected) < 4.5 * np.sqrt(expected * (1 - expected) / len(users))
    assert make_recommender("ips")._sample(data, 10, np.random.default_rng(0), "cpu") == {}


def test_augmented_loss_labels_pseudo_pairs_with_the_imputation_model():
    """Each pseudo pair weighs as an exposed pair, with label σ(imputation logit), detached."""
    rng = np.random.default_rng(1)
    b, k = 5, 3
    users, items = rng.integers(0, 10, size=b), rng.integers(0, 8, size=b)
    labels, weights = rng.integers(0, 2, size=b).astype(float), rng.uniform(0.5, 2.0, size=b)
    aug_users, aug_items = rng.integers(0, 10, size=b * k), rng.integers(0, 8, size=b * k)
    main, imputation = _Bilinear(0.2, -0.3, 0.1), _Bilinear(-0.15, 0.25, -0.4)
    model = make_recommender("ips", augment=k)
    model.imputation_network_ = imputation
    batch = {
        "users": torch.from_numpy(users),
        "items": torch.from_numpy(items),
        "labels": torch.from_numpy(labels),
        "weight": torch.from_numpy(weights),
        "augment_users": torch.from_numpy(aug_users),
        "augment_items": torch.from_numpy(aug_items),
    }
    loss = model._losses(batch, {"main": main})["main"]
    exposed = weights * _bce(main.logits(users, items), labels)
    pseudo_labels = 1 / (1 + np.exp(-imputation.logits(aug_users, aug_items)))
    pseudo = _bce(main.logits(aug_users, aug_items), pseudo_labels)
    expected = (exposed.sum() + pseudo.sum()) / (b + b * k)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert main.scale.grad is not None and imputation.scale.grad is None


def test_augmentation_pulls_predictions_towards_the_imputation_model(small_logs):
    params = dict(epochs=2, batch_size=1000, lr=0.05, seed=0, device="cpu")
    plain = make_recommender("ips", **params).fit(small_logs)
    augmented = make_recommender("ips", augment=8, **params).fit(small_logs)
    assert not hasattr(plain, "imputation_network_")
    n_users, n_items = augmented.n_users_, augmented.n_items_
    users = torch.arange(n_users).repeat_interleave(n_items)
    items = torch.arange(n_items).repeat(n_users)
    with torch.no_grad():
        imputed = torch.sigmoid(augmented.imputation_network_(users, items)).numpy()
    # The imputation model was fitted on the log: it scores logged clicks above logged non-clicks.
    logged = imputed.reshape(n_users, n_items)[small_logs.user_id, small_logs.item_id]
    assert logged[small_logs.click == 1].mean() > logged[small_logs.click == 0].mean()
    # Over all user–item pairs, the augmented model sits much closer to the imputation model.
    every = np.arange(n_users)
    gap_plain = np.abs(plain.score(every).ravel() - imputed).mean()
    gap_augmented = np.abs(augmented.score(every).ravel() - imputed).mean()
    assert gap_augmented < 0.5 * gap_plain
    with pytest.raises(ConfigError, match="augment must be an integer >= 0; got -1"):
        make_recommender("ips", augment=-1).fit(small_logs)
    with pytest.raises(ConfigError, match="exposed setting only"):
        make_recommender("ips", augment=2, feedback="implicit").fit(small_logs)


def test_validation_loss_is_tracked(small_simulator, small_logs):
    validation = generate_logs(small_simulator, n_rounds=2_000, seed=9)
    model = make_recommender("naive", epochs=4, batch_size=1000, lr=0.05).fit(
        small_logs, validation=validation
    )
    assert len(model.validation_history_) == 4
    # The last entry is the final model's logistic loss on the validation log.
    p = model.score(validation.user_id)[np.arange(validation.n_rows), validation.item_id]
    expected = -np.mean(validation.click * np.log(p) + (1 - validation.click) * np.log(1 - p))
    assert model.validation_history_[-1] == pytest.approx(expected, rel=1e-4)
    boosted = make_recommender("gboost", max_iter=20).fit(small_logs, validation=validation)
    assert 0 < boosted.validation_loss_ < np.log(2)


@pytest.mark.parametrize("method", ["ips", "dr_jl"])
def test_resumed_training_matches_uninterrupted_training(small_logs, method):
    params = dict(epochs=4, batch_size=1024, seed=3, device="cpu")
    reference = make_recommender(method, **params).fit(small_logs)
    first = make_recommender(method, **params)
    epochs = first.fit_epochs(small_logs)
    assert [next(epochs), next(epochs)] == [1, 2]
    state = first.training_state()
    resumed = make_recommender(method, **params)
    assert list(resumed.fit_epochs(small_logs, state=state)) == [3, 4]
    assert resumed.history_ == reference.history_
    users = np.arange(50)
    np.testing.assert_array_equal(resumed.score(users), reference.score(users))
    # The first run, continued, reaches the same weights too.
    assert list(epochs) == [3, 4]
    np.testing.assert_array_equal(first.score(users), reference.score(users))


def test_training_state_of_another_method_is_rejected(small_logs):
    model = make_recommender("dr_jl", epochs=1, device="cpu")
    source = make_recommender("ips", epochs=1, device="cpu").fit(small_logs)
    state = source.training_state()
    with pytest.raises(ConfigError, match="networks"):
        list(model.fit_epochs(small_logs, state=state))
