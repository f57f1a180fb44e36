"""A recommender that crashes once, after its first epoch, to test retries from checkpoints."""

from pathlib import Path

from causalrec.methods.ips import NaiveMF


class FlakyMF(NaiveMF):
    """Naive MF that records each epoch it trains in ``journal`` and raises once after epoch 1."""

    name = "flaky"

    def __init__(self, *, journal: str = "", **kwargs):
        super().__init__(**kwargs)
        self.journal = journal

    def fit_epochs(self, logs, *, validation=None, state=None):
        journal = Path(self.journal)
        for epoch in super().fit_epochs(logs, validation=validation, state=state):
            with journal.open("a") as handle:
                handle.write(f"{epoch}\n")
            yield epoch
            crashed = journal.with_suffix(".crashed")
            if epoch == 1 and not crashed.exists():
                crashed.touch()
                raise RuntimeError("injected failure after epoch 1")
