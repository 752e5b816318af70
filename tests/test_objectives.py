"""The pure objective functions and the sparsity controllers."""
import pytest
import torch
import torch.nn.functional as F

from kmshc.train import objectives as obj
from kmshc.train.gates import HardConcreteGates
from kmshc.engine.probe import Probe


def test_pair_margin_loss_is_softplus_of_negative_margin():
    good, bad = torch.tensor([0.0, -1.0, -5.0]), torch.tensor([-2.0, -1.0, -1.0])
    want = torch.log1p(torch.exp(-(good - bad))).mean()
    assert torch.allclose(obj.pair_margin_loss(good, bad), want)
    # a larger margin costs less
    assert obj.pair_margin_loss(good + 1, bad) < obj.pair_margin_loss(good, bad)


def test_label_ce_loss_by_hand():
    logits, gold = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    want = -(logits.log_softmax(-1)[torch.arange(2), gold]).mean()
    assert torch.allclose(obj.label_ce_loss(logits, gold), want)


def test_kl_from_full_zero_iff_equal_and_respects_weights():
    torch.manual_seed(0)
    full = torch.randn(2, 3, 7)
    w = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert obj.kl_from_full(full, full, w).abs() < 1e-6
    other = full.clone()
    other[0, 2] += torch.randn(7) * 5  # a change at a padded position is ignored
    assert obj.kl_from_full(other, full, w).abs() < 1e-6
    other[1, 0] += torch.randn(7)
    kl = obj.kl_from_full(other, full, w)
    p, q = full[1, 0].log_softmax(-1), other[1, 0].log_softmax(-1)
    assert torch.allclose(kl, (p.exp() * (p - q)).sum() / 3, atol=1e-6)


def test_probe_ce_loss_through_a_fixed_probe():
    probe = Probe(mean=torch.zeros(2), components=torch.eye(2), scale=torch.ones(2),
                  weight=torch.tensor([[1.0, -1.0], [0.0, 0.0]]), bias=torch.zeros(2))
    x = torch.tensor([[3.0, 0.0], [-3.0, 0.0]], requires_grad=True)
    right, wrong = torch.tensor([0, 1]), torch.tensor([1, 0])
    assert obj.probe_ce_loss(probe, x, right) < obj.probe_ce_loss(probe, x, wrong)
    obj.probe_ce_loss(probe, x, right).backward()
    assert x.grad.abs().sum() > 0  # differentiable in the features


def test_ramped_target_and_target_fraction():
    assert obj.ramped_target(0, 100, 1.0, 0.1) == 1.0
    assert obj.ramped_target(50, 100, 1.0, 0.1) == pytest.approx(0.55)
    assert obj.ramped_target(500, 100, 1.0, 0.1) == pytest.approx(0.1)
    assert obj.ramped_target(0, 0, 1.0, 0.1) == pytest.approx(0.1)
    assert obj.target_fraction(27, 270) == pytest.approx(0.1)
    assert obj.target_fraction(0.25, 270) == 0.25
    with pytest.raises(ValueError, match="head count"):
        obj.target_fraction(300, 270)


def test_l0_penalty_scales_expected_l0():
    assert obj.l0_penalty(torch.tensor(10.0), 0.5) == 5.0


@pytest.mark.parametrize("s_hat,sign", [(0.8, 1), (0.2, -1)])
def test_lagrangian_multiplier_ascends(s_hat, sign):
    ctl = obj.LagrangianSparsity()
    opt = torch.optim.SGD(ctl.parameters(), lr=0.1)
    ctl(torch.tensor(s_hat), 0.5).backward()
    ctl.flip_gradients()
    opt.step()
    # λ1 rises when the circuit is too big, falls when too small; λ2 never falls
    assert torch.sign(ctl.lambda1.detach()) == sign
    assert ctl.lambda2.detach() > 0


@pytest.mark.parametrize("target", [20, 0.3])
def test_lagrangian_reaches_requested_size(target):
    """Gates that the 'task' wants open are squeezed until E[L0] sits at the target (±10%)."""
    torch.manual_seed(0)
    gates, ctl = HardConcreteGates(10, 10), obj.LagrangianSparsity()
    want = torch.linspace(0.2, 1.0, 100).view(10, 10)  # every head helps, some more than others
    opt = torch.optim.Adam([{"params": gates.parameters(), "lr": 0.05},
                            {"params": ctl.parameters(), "lr": 1.0}])
    frac = obj.target_fraction(target, 100)
    for step in range(600):
        opt.zero_grad()
        faith = -(gates.sample(8) * want).sum((1, 2)).mean() / 10
        t = obj.ramped_target(step, 300, 1.0, frac)
        (faith + ctl(gates.expected_l0() / 100, t)).backward()
        ctl.flip_gradients()
        opt.step()
    assert abs(float(gates.expected_l0()) - frac * 100) <= 0.1 * frac * 100
    kept = gates.deterministic() > 0.5
    assert 0 < int(kept.sum()) <= 1.1 * frac * 100
    assert want[kept].mean() > want.mean()  # it keeps the heads that matter most
