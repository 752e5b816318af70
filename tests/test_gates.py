"""HardConcreteGates: shapes, ranges, the closed forms of the hard-concrete distribution, gradients."""
import math

import pytest
import torch

from kmshc.train.gates import HardConcreteGates


def test_sample_shapes_and_range():
    g = HardConcreteGates(3, 4, init_log_alpha=0.0)
    torch.manual_seed(0)
    one, many = g.sample(), g.sample(5)
    assert one.shape == (3, 4) and many.shape == (5, 3, 4)
    assert many.min() >= 0 and many.max() <= 1
    # stretched-and-clamped: with log_alpha = 0 some draws hit exactly 0 and some exactly 1
    big = g.sample(2000)
    assert (big == 0).any() and (big == 1).any() and ((big > 0) & (big < 1)).any()
    assert not torch.equal(many[0], many[1])  # one independent draw per row


def test_deterministic_formula():
    g = HardConcreteGates(2, 3)
    with torch.no_grad():
        g.log_alpha.copy_(torch.tensor([[-5.0, 0.0, 5.0], [0.3, -0.3, 1.0]]))
    want = (torch.sigmoid(g.log_alpha) * 1.2 - 0.1).clamp(0, 1)
    assert torch.allclose(g.deterministic(), want)
    assert g.deterministic()[0, 0] == 0 and g.deterministic()[0, 2] == 1


def test_expected_l0_matches_monte_carlo():
    g = HardConcreteGates(2, 5)
    with torch.no_grad():
        g.log_alpha.copy_(torch.linspace(-3, 3, 10).view(2, 5))
    torch.manual_seed(1)
    frac_open = (g.sample(20000) > 0).float().mean(0)
    assert torch.allclose(frac_open, g.prob_open(), atol=0.02)
    closed_form = torch.sigmoid(g.log_alpha - (2 / 3) * math.log(0.1 / 1.1)).sum()
    assert torch.allclose(g.expected_l0(), closed_form)


def test_gradients_reach_log_alpha():
    g = HardConcreteGates(2, 2, init_log_alpha=0.0)
    torch.manual_seed(0)
    (g.sample(64).sum() + g.expected_l0()).backward()
    assert g.log_alpha.grad is not None and (g.log_alpha.grad > 0).all()


def test_train_eval_switch_changes_forward():
    g = HardConcreteGates(2, 2, init_log_alpha=0.0)
    g.eval()
    assert torch.equal(g(), g.deterministic())
    g.train()
    torch.manual_seed(0)
    assert not torch.equal(g(), g.deterministic())


def test_rejects_bad_stretch():
    with pytest.raises(ValueError, match="gamma"):
        HardConcreteGates(1, 1, gamma=0.1)
