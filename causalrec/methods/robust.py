"""Worst-case (adversarial) reweighting for propensities trusted only up to a factor Γ.

With nominal inverse-propensity weights w_i, the true weights may lie anywhere in
[w_i / Γ, w_i · Γ] (a marginal sensitivity model, Γ >= 1). The worst-case self-normalised loss

    max_{w̃_i ∈ [w_i/Γ, w_i Γ]}  Σ w̃_i ℓ_i / Σ w̃_i

is attained by giving the upper weight to the examples with the largest losses and the lower
weight to the rest, the cut being where the running ratio peaks: sort by loss, one cumulative
sum, an argmax — closed form per mini-batch.

References:
    Tan, "A Distributional Approach for Causal Inference Using Propensity Scores", JASA 2006.
    Kallus & Zhou, "Confounding-Robust Policy Improvement", NeurIPS 2018.
"""

from __future__ import annotations

import torch

__all__ = ["worst_case_weights"]


def worst_case_weights(losses: torch.Tensor, weights: torch.Tensor, gamma: float) -> torch.Tensor:
    """Weights in [w/Γ, wΓ] that maximise the self-normalised weighted loss.

    Args:
        losses: Per-example losses, shape (b,) (treated as constants).
        weights: Nominal weights w > 0, shape (b,).
        gamma: Γ >= 1; Γ = 1 returns ``weights``.

    Returns:
        The adversarial weights, shape (b,), detached from the graph.
    """
    losses, weights = losses.detach(), weights.detach()
    if gamma == 1.0:
        return weights
    order = torch.argsort(losses, descending=True)
    sorted_losses, sorted_weights = losses[order], weights[order]
    low, high = sorted_weights / gamma, sorted_weights * gamma
    # Cut after position k: the first k examples get `high`, the rest `low`.
    high_num = torch.cumsum(high * sorted_losses, 0)
    high_den = torch.cumsum(high, 0)
    low_num = torch.cumsum((low * sorted_losses).flip(0), 0).flip(0)
    low_den = torch.cumsum(low.flip(0), 0).flip(0)
    zero = torch.zeros(1, dtype=losses.dtype, device=losses.device)
    numerators = torch.cat([zero, high_num]) + torch.cat([low_num, zero])
    denominators = torch.cat([zero, high_den]) + torch.cat([low_den, zero])
    cut = int(torch.argmax(numerators / denominators))
    adversarial = torch.where(torch.arange(len(losses), device=losses.device) < cut, high, low)
    out = torch.empty_like(weights)
    out[order] = adversarial
    return out
