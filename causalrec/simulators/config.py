"""Typed configuration of the confounded recommender simulator."""

from __future__ import annotations

from pydantic import Field, model_validator

from causalrec.platform.config import StrictConfig, load_preset, load_yaml_config

__all__ = ["DYNAMICS_FIELDS", "SimulatorConfig", "load_simulator_config"]

#: The fields that switch dynamics on when positive (``satiation_recovery`` only shapes one).
DYNAMICS_FIELDS = ("interest_drift", "satiation", "popularity_feedback", "leave_base")


class SimulatorConfig(StrictConfig):
    """Parameters of the structural causal model behind :class:`ConfoundedRecSimulator`.

    Each field has a one-line description (also shown by ``causalrec simulate --help``). Presets
    live in ``configs/simulators/``.
    """

    # --- population -------------------------------------------------------------------------
    n_users: int = Field(10_000, ge=1, description="Number of users.")
    n_items: int = Field(1_000, ge=1, description="Number of items in the catalogue.")
    latent_dim: int = Field(16, ge=1, description="Dimension of latent preferences θ_u and φ_i.")
    user_feature_dim: int = Field(
        8, ge=1, description="Observed user features that are a noisy view of part of θ_u."
    )
    item_feature_dim: int = Field(
        8, ge=1, description="Observed item features that are a noisy view of φ_i."
    )
    nuisance_feature_dim: int = Field(
        4, ge=0, description="Extra observed user and item features independent of relevance."
    )
    observed_latent_fraction: float = Field(
        0.5, gt=0.0, le=1.0, description="Share of θ_u's latent dimensions visible in x_u."
    )
    feature_noise: float = Field(0.3, ge=0.0, description="Std of Gaussian noise on features.")
    slate_size: int = Field(1, ge=1, description="Items shown per round (K); 1 is a single item.")
    seed: int = Field(0, ge=0, description="Seed of the world (users, items, popularity).")

    # --- outcome model ----------------------------------------------------------------------
    relevance_scale: float = Field(1.5, ge=0.0, description="Scale of θ_u·φ_i in the logit.")
    item_bias_std: float = Field(0.5, ge=0.0, description="Std of the per-item logit bias.")
    global_bias: float = Field(-3.0, description="Global logit bias (sets the base click rate).")
    conformity: float = Field(
        0.0, ge=0.0, description="Weight of centred log-popularity in the relevance logit."
    )
    zipf_exponent: float = Field(1.0, ge=0.0, description="Zipf exponent of item popularity.")
    position_bias: float = Field(
        1.0, ge=0.0, description="η in the examination probability e_k = k^(-η)."
    )

    # --- logging (exposure) policy ----------------------------------------------------------
    logging_beta: float = Field(
        2.0, ge=0.0, description="Inverse temperature of the logging softmax on the belief s_ui."
    )
    logging_gamma: float = Field(
        0.5, ge=0.0, description="Weight of log-popularity in the logging softmax."
    )
    logging_epsilon: float = Field(
        0.05, ge=0.0, le=1.0, description="Share of rounds the logger exposes uniformly at random."
    )
    confounding: float = Field(
        0.8, ge=0.0, le=1.0, description="How strongly the logger's belief tracks true relevance."
    )
    hidden_confounding: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of the belief from latent dims not in x_u."
    )
    uniform_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of logged rounds drawn by a uniform-random policy."
    )

    # --- environment ------------------------------------------------------------------------
    session_length: int = Field(10, ge=1, description="Steps per Gymnasium episode (one user).")
    history_window: int = Field(
        10, ge=1, description="Last L steps (items, clicks) in a dynamic world's observation."
    )

    # --- dynamics (all off by default: the world is then a contextual bandit) ---------------
    interest_drift: float = Field(
        0.0, ge=0.0, le=1.0, description="Rate at which θ_u moves towards a clicked item's φ_i."
    )
    satiation: float = Field(
        0.0, ge=0.0, description="Logit drop of a clicked item's latent cluster, per click."
    )
    satiation_recovery: float = Field(
        0.2, ge=0.0, le=1.0, description="Share of the satiation that wears off per step."
    )
    popularity_feedback: float = Field(
        0.0, ge=0.0, lt=1.0, description="Rate at which popularity moves to a step's click share."
    )
    leave_base: float = Field(
        0.0, ge=0.0, le=1.0, description="Chance of leaving after a step with no recent clicks."
    )
    leave_sensitivity: float = Field(
        0.0, ge=0.0, description="How fast recent clicks per step lower the leaving probability."
    )
    concurrent_sessions: int = Field(
        1_000, ge=1, description="Sessions sharing the world clock (pooled popularity feedback)."
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> SimulatorConfig:
        if self.slate_size > self.n_items:
            raise ValueError(
                f"slate_size must be <= n_items; got slate_size={self.slate_size}, "
                f"n_items={self.n_items}"
            )
        return self

    @property
    def dynamic(self) -> bool:
        """Whether any user or world dynamics is on (else every step is a fresh request)."""
        return any(getattr(self, name) > 0 for name in DYNAMICS_FIELDS)

    @property
    def n_visible_latent(self) -> int:
        """Number of latent dimensions of θ_u that the observed user features reveal."""
        return max(1, round(self.observed_latent_fraction * self.latent_dim))


def load_simulator_config(
    *, preset: str | None = None, path: str | None = None, **overrides: object
) -> SimulatorConfig:
    """Load a simulator config from a preset name or a YAML file, then apply overrides.

    Args:
        preset: Name of a preset in ``configs/simulators/`` (e.g. ``"confounded"``).
        path: Path to a YAML file with :class:`SimulatorConfig` fields.
        **overrides: Field values that replace the loaded ones (``None`` values are ignored).

    Returns:
        The validated config. With neither ``preset`` nor ``path`` the ``default`` preset is used.
    """
    if preset is not None and path is not None:
        from causalrec.platform.errors import ConfigError

        raise ConfigError("give either preset or path, not both")
    if path is not None:
        config = load_yaml_config(path, SimulatorConfig)
    else:
        config = load_preset("simulators", preset or "default", SimulatorConfig)
    changes = {key: value for key, value in overrides.items() if value is not None}
    return config.replace(**changes) if changes else config
