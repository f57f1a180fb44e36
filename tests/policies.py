"""Policies for tests that need a run to fail part-way (the writers' clean-up on failure)."""

from __future__ import annotations

from causalrec.platform.policy import Policy


class FailsOnSecondShard(Policy):
    """The inner policy, except that it raises on the rounds of the second shard.

    The tests that use it write 800 rounds in shards of 500, so the second shard is the only
    call with 300 users.
    """

    def __init__(self, inner: Policy):
        self.inner, self.name = inner, inner.name
        self.n_items, self.slate_size = inner.n_items, inner.slate_size

    def action_distribution(self, users):
        return self.inner.action_distribution(users)

    def prefix_probability(self, users, slates):
        return self.inner.prefix_probability(users, slates)

    def sample(self, users, rng):
        if len(users) == 300:
            raise RuntimeError("shard 1 failed")
        return self.inner.sample(users, rng)
