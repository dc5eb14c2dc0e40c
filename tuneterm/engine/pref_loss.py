"""The preference losses, per pair, on the log-probabilities of a pair's two completions.

Inputs per pair: ``chosen``/``rejected``, the policy's summed log-probabilities of each
completion's tokens; ``n_chosen``/``n_rejected``, their token counts; ``ref_chosen``/
``ref_rejected``, the reference model's summed log-probabilities (``None`` for the
reference-free losses). With Δ = (chosen - ref_chosen) - (rejected - ref_rejected), β =
``beta`` and ε = ``label_smoothing``:

  dpo     -(1-ε) logσ(βΔ) - ε logσ(-βΔ)              (Rafailov et al.; ε: conservative DPO)
  ipo     (Δ_avg - 1/(2β))²                          Δ_avg from per-token means of the log ratios,
                                                    as TRL computes it (Azar et al., eq. 17)
  hinge   max(0, 1 - βΔ)                             (SLiC)
  simpo   -(1-ε) logσ(β(a_c - a_r - γ)) - ε logσ(-…)  a = mean per-token log-prob, γ = simpo_gamma
                                                    (TRL's gamma/beta ratio; Meng et al.)
  orpo    -β logσ(log odds_c - log odds_r)           odds = p/(1-p), p = exp(a) (Hong et al.);
                                                    its SFT term comes from ``sft_loss``, weight 1

Rewards (the metrics): β·(logp - ref logp) for the losses with a reference, β·a for simpo and
orpo (as TRL's CPO/ORPO trainers report them). The SFT term (RPO: Pang et al.; ORPO's NLL)
is the chosen completion's mean per-token negative log-likelihood, per pair — so a step's
loss is a mean over pairs whatever the micro-batching.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSSES = ("dpo", "ipo", "hinge", "simpo", "orpo")
REFERENCE_FREE = ("simpo", "orpo")


@dataclass
class Logps:
    """Per pair (1-D tensors of the batch's pairs)."""
    chosen: torch.Tensor  # summed log-probs of the chosen completion
    rejected: torch.Tensor
    n_chosen: torch.Tensor  # its tokens
    n_rejected: torch.Tensor

    @property
    def mean_chosen(self) -> torch.Tensor:
        return self.chosen / self.n_chosen.clamp(min=1)

    @property
    def mean_rejected(self) -> torch.Tensor:
        return self.rejected / self.n_rejected.clamp(min=1)


def _smoothed(z: torch.Tensor, eps: float) -> torch.Tensor:
    out = -F.logsigmoid(z)
    return out if eps == 0.0 else (1.0 - eps) * out - eps * F.logsigmoid(-z)


def _log1m_exp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a < 0, stable near 0 (a completion the model is certain of would
    make it -inf: a is kept below -1e-6)."""
    return torch.log(-torch.expm1(a.clamp(max=-1e-6)))


def pair_losses(loss: str, lp: Logps, ref_chosen: torch.Tensor | None, ref_rejected: torch.Tensor | None, *,
                beta: float, label_smoothing: float = 0.0,
                simpo_gamma: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss per pair, reward of the chosen, reward of the rejected), fp32 [pairs]."""
    if loss in REFERENCE_FREE:
        a_c, a_r = lp.mean_chosen, lp.mean_rejected
        if loss == "simpo":
            out = _smoothed(beta * (a_c - a_r - simpo_gamma), label_smoothing)
        else:
            log_odds = (a_c - a_r) - (_log1m_exp(a_c) - _log1m_exp(a_r))
            out = -beta * F.logsigmoid(log_odds)
        return out, (beta * a_c).detach(), (beta * a_r).detach()
    if loss not in LOSSES:
        raise ValueError(f"unknown preference loss {loss!r}; one of {', '.join(LOSSES)}")
    if ref_chosen is None or ref_rejected is None:
        raise ValueError(f"the {loss} loss needs the reference log-probabilities")
    ratio_c, ratio_r = lp.chosen - ref_chosen, lp.rejected - ref_rejected
    delta = ratio_c - ratio_r
    if loss == "dpo":
        out = _smoothed(beta * delta, label_smoothing)
    elif loss == "hinge":
        out = torch.relu(1.0 - beta * delta)
    else:  # ipo
        avg = ratio_c / lp.n_chosen.clamp(min=1) - ratio_r / lp.n_rejected.clamp(min=1)
        out = (avg - 1.0 / (2.0 * beta)) ** 2
    return out, (beta * ratio_c).detach(), (beta * ratio_r).detach()


def sft_loss(lp: Logps) -> torch.Tensor:
    """The chosen completion's mean per-token negative log-likelihood, per pair."""
    return -lp.mean_chosen


def sft_weight_of(loss: str, sft_weight: float) -> float:
    """The SFT term's weight: ORPO's own NLL term (weight 1) plus ``sft_weight``."""
    return sft_weight + (1.0 if loss == "orpo" else 0.0)
