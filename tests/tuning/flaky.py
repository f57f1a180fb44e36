"""A recommender that crashes once, after its first epoch, to test retries from checkpoints."""

from pathlib import Path

from causalrec.methods.ips import NaiveMF


class FlakyMF(NaiveMF):
    """Naive MF that records each epoch it trains in ``journal`` and raises once after epoch 1."""

    name = "flaky"

    def __init__(
        self,
        *,
        journal: str = "",
        epochs: int = 10,
        batch_size: int = 16_384,
        device: str = "auto",
        seed: int = 0,
    ):
        # Explicit parameters: the recommender contract refuses **kwargs (scikit-learn's).
        super().__init__(epochs=epochs, batch_size=batch_size, device=device, seed=seed)
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
