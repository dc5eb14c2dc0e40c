"""Each preference loss against its formula, written out in plain Python on hand-chosen
log-probabilities (no torch in the reference), and the rewards the metrics report."""

from __future__ import annotations

import math

import pytest
import torch

from tuneterm.engine.pref_loss import Logps, pair_losses, sft_loss, sft_weight_of

# two pairs: summed log-probs (policy, reference) and completion lengths
PC, PR = [-10.0, -7.5], [-14.0, -6.0]
RC, RR = [-11.0, -8.0], [-12.0, -6.5]
NC, NR = [4, 3], [5, 2]
BETA = 0.1


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def lp() -> Logps:
    return Logps(torch.tensor(PC), torch.tensor(PR), torch.tensor(NC, dtype=torch.float32),
                 torch.tensor(NR, dtype=torch.float32))


def ref() -> tuple:
    return torch.tensor(RC), torch.tensor(RR)


def dpo(i, beta=BETA, eps=0.0):
    d = (PC[i] - RC[i]) - (PR[i] - RR[i])
    return -(1 - eps) * logsig(beta * d) - eps * logsig(-beta * d)


def ipo(i, beta=BETA):
    d = (PC[i] - RC[i]) / NC[i] - (PR[i] - RR[i]) / NR[i]
    return (d - 1 / (2 * beta)) ** 2


def hinge(i, beta=BETA):
    d = (PC[i] - RC[i]) - (PR[i] - RR[i])
    return max(0.0, 1 - beta * d)


def simpo(i, beta=BETA, gamma=0.5, eps=0.0):
    z = beta * (PC[i] / NC[i] - PR[i] / NR[i] - gamma)
    return -(1 - eps) * logsig(z) - eps * logsig(-z)


def orpo(i, beta=BETA):
    pc, pr = math.exp(PC[i] / NC[i]), math.exp(PR[i] / NR[i])
    log_odds = math.log(pc / (1 - pc)) - math.log(pr / (1 - pr))
    return -beta * logsig(log_odds)


def test_dpo_by_hand():
    # pair 0: delta = (-10 + 11) - (-14 + 12) = 3; -log sigmoid(0.3) = log(1 + e^-0.3)
    assert dpo(0) == pytest.approx(math.log(1 + math.exp(-0.3)))
    assert dpo(0) == pytest.approx(0.5543552, abs=1e-7)


@pytest.mark.parametrize("name,formula,kw", [
    ("dpo", dpo, {}), ("dpo", dpo, {"eps": 0.1}), ("ipo", ipo, {}), ("hinge", hinge, {}),
    ("simpo", simpo, {}), ("simpo", simpo, {"eps": 0.2, "gamma": 1.0}), ("orpo", orpo, {}),
    ("dpo", dpo, {"beta": 2.0}), ("hinge", hinge, {"beta": 0.5}),
])
def test_each_loss_equals_its_formula(name, formula, kw):
    beta = kw.get("beta", BETA)
    extra = {"label_smoothing": kw.get("eps", 0.0), "simpo_gamma": kw.get("gamma", 0.5)}
    r = ref() if name not in ("simpo", "orpo") else (None, None)
    out, rc, rr = pair_losses(name, lp(), *r, beta=beta, **extra)
    want = [formula(i, **kw) for i in range(2)]
    assert out.tolist() == pytest.approx(want, rel=1e-6, abs=1e-7)
    if name in ("simpo", "orpo"):  # beta times the mean per-token log-prob
        assert rc.tolist() == pytest.approx([beta * PC[i] / NC[i] for i in range(2)], rel=1e-6)
        assert rr.tolist() == pytest.approx([beta * PR[i] / NR[i] for i in range(2)], rel=1e-6)
    else:  # beta times the log ratio against the reference
        assert rc.tolist() == pytest.approx([beta * (PC[i] - RC[i]) for i in range(2)], rel=1e-6)
        assert rr.tolist() == pytest.approx([beta * (PR[i] - RR[i]) for i in range(2)], rel=1e-6)


def test_the_hinge_is_zero_past_the_margin():
    out, _, _ = pair_losses("hinge", lp(), *ref(), beta=1.0)
    assert out[0].item() == 0.0  # beta * delta = 3 > 1


def test_the_sft_term_is_the_chosen_mean_nll_and_orpo_always_has_it():
    assert sft_loss(lp()).tolist() == pytest.approx([10 / 4, 7.5 / 3])
    assert sft_weight_of("orpo", 0.0) == 1.0 and sft_weight_of("orpo", 0.5) == 1.5
    assert sft_weight_of("dpo", 0.0) == 0.0 and sft_weight_of("dpo", 0.3) == 0.3


def test_the_gradient_of_dpo_is_the_textbook_one():
    # d/d chosen of -log sigmoid(beta * delta) = -beta * sigmoid(-beta * delta)
    x = lp()
    x.chosen.requires_grad_(True)
    out, _, _ = pair_losses("dpo", x, *ref(), beta=BETA)
    out.sum().backward()
    d = [(PC[i] - RC[i]) - (PR[i] - RR[i]) for i in range(2)]
    want = [-BETA / (1 + math.exp(BETA * di)) for di in d]
    assert x.chosen.grad.tolist() == pytest.approx(want, rel=1e-6)


def test_a_loss_with_a_reference_refuses_to_run_without_one():
    with pytest.raises(ValueError, match="needs the reference"):
        pair_losses("dpo", lp(), None, None, beta=BETA)
