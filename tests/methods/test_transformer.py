"""The sequential Transformer backbone: it learns from histories, never sees the future, keeps
the recommender contract (score by id or by history, policies, save/load) and refuses misuse."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from causalrec.methods import make_recommender
from causalrec.methods.artifact import SavedModel
from causalrec.platform.errors import ConfigError, DataError
from causalrec.platform.feedback import LoggedFeedback
from causalrec.platform.session import NO_ITEM, SessionContext
from causalrec.simulators import ConfoundedRecSimulator, SimulatorConfig
from causalrec.simulators.session_logs import generate_session_logs

SMALL = {"dim": 16, "heads": 2, "layers": 1, "history_length": 6, "device": "cpu"}


def _successor_log(n_users: int = 300, steps: int = 12, n_items: int = 8, seed: int = 0):
    """Users with no preference of their own: after clicking j, a user clicks j + 1 (mod n) only.

    Uniform random items are shown; the item after the user's last click is clicked with
    probability 0.9, any other with 0.05. Only a model that reads the history can rank well.
    """
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), steps)
    shown = rng.integers(n_items, size=n_users * steps)
    clicks = np.zeros(n_users * steps, dtype=np.int64)
    for user in range(n_users):
        last = rng.integers(n_items)
        for t in range(steps):
            row = user * steps + t
            p = 0.9 if shown[row] == (last + 1) % n_items else 0.05
            clicks[row] = rng.random() < p
            if clicks[row]:
                last = shown[row]
    n = len(users)
    return LoggedFeedback.from_slates(
        users=users,
        slates=shown[:, None],
        clicks=clicks[:, None],
        pscore=np.full((n, 1), 1 / n_items),
        pscore_prefix=np.full((n, 1), 1 / n_items),
        user_features=np.zeros((n, 1), dtype=np.float32),
        policy="uniform",
        n_items=n_items,
        session_id=users,
        step=np.tile(np.arange(steps), n_users),
        timestamp=np.tile(np.arange(steps), n_users),
    )


@pytest.fixture(scope="module")
def successor():
    logs, held_out = _successor_log(seed=0), _successor_log(seed=1)
    model = make_recommender("ips", backbone="transformer", epochs=30, batch_size=256, lr=0.01,
                             dropout=0.0, seed=0, **SMALL)  # fmt: skip
    return logs, model.fit(logs, validation=held_out), held_out


def test_it_learns_what_only_the_history_tells(successor):
    """After a click on j the best next item is j + 1: ranked first for every j."""
    logs, model, held_out = successor
    n_items = logs.n_items
    last_clicked = np.arange(n_items)
    history = (last_clicked[:, None], np.ones((n_items, 1), dtype=np.int8))
    scores = model.score(np.zeros(n_items, dtype=np.int64), history=history)
    assert (scores.argmax(axis=1) == (last_clicked + 1) % n_items).all()
    # On held-out users, MF (no history) can only learn the items' mean click rates.
    mf = make_recommender("ips", epochs=30, batch_size=256, dim=16, device="cpu")
    mf.fit(logs, validation=held_out)
    assert model.validation_history_[-1] < 0.8 * min(mf.validation_history_)


def test_training_histories_never_hold_the_scored_round_or_later(successor):
    """A sentinel item in each user's last round: in no training history, in the latest one."""
    logs, _, _ = successor
    last_row = np.r_[logs.user_id[1:] != logs.user_id[:-1], True]
    sentinel = logs.n_items  # a new item id, shown only in each user's last round
    marked = dataclasses.replace(
        logs, item_id=np.where(last_row, sentinel, logs.item_id), n_items=logs.n_items + 1
    )
    model = make_recommender("naive", backbone="transformer", epochs=1, **SMALL).fit(marked)
    contexts, _ = model._train_contexts
    assert not (contexts == sentinel).any()
    latest, _ = model.user_history_
    assert (latest[:, -1] == sentinel).all()
    # Scores of a history end at what it holds: a sentinel after it changes nothing.
    history = (contexts[:5], np.zeros_like(contexts[:5], dtype=np.int8))
    users = np.arange(5, dtype=np.int64)
    longer = (
        np.concatenate([history[0], np.full((5, 1), NO_ITEM)], axis=1),
        np.concatenate([history[1], np.zeros((5, 1), dtype=np.int8)], axis=1),
    )
    np.testing.assert_array_equal(
        model.score(users, history=history), model.score(users, history=longer)
    )


def test_a_seed_fixes_the_run_and_a_resumed_run_matches_an_uninterrupted_one():
    """The layers' initial weights and the dropout masks come from the seed, not from torch's
    global stream: two runs agree bit for bit, resuming mid-way changes nothing, and the
    caller's global stream is left as it was."""
    world = ConfoundedRecSimulator(
        SimulatorConfig(n_users=40, n_items=25, session_length=4, satiation=1.0, seed=1)
    )
    logs = generate_session_logs(world, n_sessions=60, seed=2)
    params = dict(backbone="transformer", epochs=4, batch_size=64, dropout=0.3, seed=5, **SMALL)
    users = np.arange(20)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    reference = make_recommender("ips", **params).fit(logs)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)  # another global stream must not matter
    again = make_recommender("ips", **params).fit(logs)
    assert again.history_ == reference.history_
    np.testing.assert_array_equal(again.score(users), reference.score(users))
    first = make_recommender("ips", **params)
    epochs = first.fit_epochs(logs)
    assert [next(epochs), next(epochs)] == [1, 2]
    resumed = make_recommender("ips", **params)
    assert list(resumed.fit_epochs(logs, state=first.training_state())) == [3, 4]
    assert resumed.history_ == reference.history_
    np.testing.assert_array_equal(resumed.score(users), reference.score(users))
    other = make_recommender("ips", **{**params, "seed": 6}).fit(logs)
    assert not np.array_equal(other.score(users), reference.score(users))


def test_bf16_runs_the_training_passes_in_bfloat16_and_keeps_float32_weights():
    """precision='bf16' changes the arithmetic (the losses move off the float32 run's) but not
    the result's dtype, and lands close to float32; 'auto' on CPU is float32 bit for bit."""
    world = ConfoundedRecSimulator(
        SimulatorConfig(n_users=40, n_items=25, session_length=4, satiation=1.0, seed=1)
    )
    logs = generate_session_logs(world, n_sessions=60, seed=2)
    params = dict(backbone="transformer", epochs=4, batch_size=64, **SMALL)
    fp32 = make_recommender("ips", precision="fp32", **params).fit(logs)
    auto = make_recommender("ips", precision="auto", **params).fit(logs)
    bf16 = make_recommender("ips", precision="bf16", **params).fit(logs)
    assert auto.history_ == fp32.history_
    assert bf16.history_ != fp32.history_
    np.testing.assert_allclose(bf16.history_, fp32.history_, rtol=0.02)
    assert {value.dtype for value in bf16.network_.state_dict().values()} == {torch.float32}
    assert bf16.score(np.arange(5)).dtype == fp32.score(np.arange(5)).dtype


def test_compiled_training_goes_through_torch_compile_and_matches_eager(monkeypatch):
    """compile=True traces the encoder with torch.compile while training (a recording backend
    that runs the captured graph as it is, so no C++ compiler is needed) and trains the same
    weights; the fitted model keeps no compiled function (it pickles and saves as before)."""
    import pickle

    from causalrec.methods import torch_base

    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    monkeypatch.setattr(torch_base, "COMPILE_BACKEND", recording_backend)
    world = ConfoundedRecSimulator(
        SimulatorConfig(n_users=40, n_items=25, session_length=4, satiation=1.0, seed=1)
    )
    logs = generate_session_logs(world, n_sessions=60, seed=2)
    params = dict(backbone="transformer", epochs=3, batch_size=64, dropout=0.0, **SMALL)
    eager = make_recommender("ips", **params).fit(logs)
    compiled = make_recommender("ips", compile=True, **params).fit(logs)
    assert graphs  # the encoder went through torch.compile
    np.testing.assert_allclose(compiled.history_, eager.history_, rtol=1e-5)
    users = np.arange(10)
    np.testing.assert_allclose(compiled.score(users), eager.score(users), atol=1e-5)
    assert "encode" not in vars(compiled.network_)
    pickle.loads(pickle.dumps(compiled))
    with pytest.raises(ConfigError, match="compile=True compiles the transformer's encoder"):
        make_recommender("ips", compile=True).fit(logs)


@pytest.mark.parametrize("method", ["naive", "ips", "snips", "dr_jl", "mrdr"])
def test_every_loss_weighting_method_trains_it_and_saves_it(method, tmp_path):
    world = ConfoundedRecSimulator(
        SimulatorConfig(n_users=40, n_items=25, session_length=4, satiation=1.0, seed=1)
    )
    logs = generate_session_logs(world, n_sessions=60, seed=2)
    model = make_recommender(method, backbone="transformer", epochs=2, **SMALL).fit(logs)
    assert np.isfinite(model.history_).all()
    users = np.arange(10, dtype=np.int64)
    loaded = SavedModel.open(model.save(tmp_path / method)).load()
    np.testing.assert_array_equal(loaded.score(users), model.score(users))
    history = (np.array([[3, 4, NO_ITEM]] * 10), np.array([[1, 0, 0]] * 10))
    np.testing.assert_array_equal(
        loaded.score(users, history=history), model.score(users, history=history)
    )
    assert not np.array_equal(model.score(users, history=history), model.score(users))


def test_a_session_policy_scores_each_session_from_its_own_steps(successor):
    logs, model, _ = successor
    n_items = logs.n_items
    policy = model.session_policy(1)
    steps = np.full((n_items, 2, 1), NO_ITEM)
    clicks = np.zeros((n_items, 2, 1), dtype=np.int8)
    steps[:, 1, 0], clicks[:, 1, 0] = np.arange(n_items), 1  # each session clicked item j last
    users = np.full(n_items, logs.user_id.max() + 5)  # a user the model has never seen
    context = SessionContext(users, np.full(n_items, 2), steps, clicks)
    sample = policy.sample_session(context, np.random.default_rng(0))
    np.testing.assert_array_equal(sample.actions[:, 0], (np.arange(n_items) + 1) % n_items)
    np.testing.assert_array_equal(sample.marginal_pscore, 1.0)
    soft = model.session_policy(1, "softmax", temperature=0.5).session_action_distribution(context)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-12)


def test_misuse_is_refused_with_the_field_named(successor):
    logs, model, _ = successor
    with pytest.raises(ConfigError, match=r"cause supports backbone in \['mf'\]"):
        make_recommender("cause", backbone="transformer").fit(logs)
    with pytest.raises(ConfigError, match="feedback='implicit'"):
        make_recommender("ips", backbone="transformer", feedback="implicit").fit(logs)
    with pytest.raises(ConfigError, match=r"precision must be one of .*; got 'fp16'"):
        make_recommender("ips", backbone="transformer", precision="fp16").fit(logs)
    with pytest.raises(ConfigError, match="heads must divide dim"):
        make_recommender("ips", backbone="transformer", dim=10, heads=3).fit(logs)
    with pytest.raises(ConfigError, match=r"augment > 0 .* backbone='transformer'"):
        make_recommender("ips", backbone="transformer", augment=1).fit(logs)
    mf = make_recommender("naive", epochs=1, device="cpu").fit(logs)
    with pytest.raises(ConfigError, match="history: scoring a history needs backbone"):
        mf.score(np.array([0]), history=(np.array([[1]]), np.array([[0]])))
    users = np.array([0])
    with pytest.raises(DataError, match=r"history: item 99 is not in the catalogue \[0, 8\)"):
        model.score(users, history=(np.array([[99]]), np.array([[0]])))
    with pytest.raises(DataError, match="history: clicks must be 0 or 1; got 2"):
        model.score(users, history=(np.array([[1]]), np.array([[2]])))
    with pytest.raises(DataError, match=r"history: items and clicks must both have shape"):
        model.score(users, history=(np.array([[1, 2]]), np.array([[0]])))
    with pytest.raises(DataError, match="users must be in"):
        model.score(np.array([10_000]))


def test_a_loop_arm_deploys_a_transformer_as_a_policy_that_reads_the_session(successor, tmp_path):
    """The closed loop serves a transformer arm through its session policy, so each generation's
    slates follow the session's own steps (an id-only policy would ignore them)."""
    from causalrec.loop.arms import model_deployment
    from causalrec.loop.config import ArmConfig
    from causalrec.methods.session_policy import HistoryPolicy

    _, model, _ = successor
    model.save(tmp_path / "model")
    arm = ArmConfig(name="sasrec", method="ips", params={"backbone": "transformer"})
    deployment = model_deployment(arm, tmp_path / "model", slate_size=1)
    assert isinstance(deployment.policy, HistoryPolicy)
    mf = make_recommender("naive", epochs=1, device="cpu").fit(_successor_log(seed=2))
    mf.save(tmp_path / "mf")
    assert not isinstance(model_deployment(arm, tmp_path / "mf", 1).policy, HistoryPolicy)
