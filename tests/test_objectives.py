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


def controlled(target, steps: int = 150, settle_from: int | None = None, lambda_lr: float = 3.0):
    """Gates that a 'task' wants open (every head helps, some more than others), squeezed by the
    controller on the configs' schedule: Adam lr 0.2, ``log_alpha`` from 1, target ramped over 60."""
    torch.manual_seed(0)
    gates = HardConcreteGates(10, 10, init_log_alpha=1.0)
    ctl = obj.LagrangianSparsity(obj.target_fraction(target, 100), warmup_steps=60, lambda_lr=lambda_lr,
                                 gate_threshold=0.5)
    want = torch.linspace(0.2, 1.0, 100).view(10, 10)
    opt = torch.optim.Adam(gates.parameters(), lr=0.2)
    for step in range(steps):
        opt.zero_grad()
        faith = -(gates.sample(8) * want).sum((1, 2)).mean() / 10
        (faith + ctl(gates, step, settle_from)).backward()
        opt.step()
    return gates, ctl, want


def test_lagrangian_multipliers_step_with_the_reported_count_and_reset_on_a_crossing():
    gates = HardConcreteGates(10, 10, init_log_alpha=1.0)  # all 100 heads open
    ctl = obj.LagrangianSparsity(0.5, warmup_steps=0, lambda_lr=2.0, gate_threshold=0.5)
    ctl(gates, 0).backward()
    assert float(ctl.lambda1) == pytest.approx(2.0 * 0.5) and float(ctl.lambda2) == pytest.approx(2.0 * 0.25)
    assert (gates.log_alpha.grad > 0).all()  # descent closes gates
    ctl(gates, 1)  # still too many: λ1 integrates the gap
    assert float(ctl.lambda1) == pytest.approx(2.0)
    with torch.no_grad():
        gates.log_alpha[:8] = -1.0  # 20 heads open: below the target
    ctl(gates, 2)  # the crossing restarts λ1 from 0 (anti-windup) before the step on the new gap
    assert float(ctl.lambda1) == pytest.approx(2.0 * -0.3) and float(ctl.lambda2) == pytest.approx(1.0 + 2.0 * 0.09)
    gates.log_alpha.grad = None
    ctl(gates, 3).backward()
    assert float(ctl.lambda1) == pytest.approx(2.0 * -0.6)  # no crossing: no reset
    assert (gates.log_alpha.grad[:8] < 0).all()  # and too few heads: descent opens gates


def test_lagrangian_counts_the_heads_the_run_reports_not_expected_l0():
    gates = HardConcreteGates(1, 10, init_log_alpha=-0.5)  # deterministic gate 0.35: none in the circuit
    assert float(gates.expected_l0().detach()) > 7  # while E[L0] counts each as ~0.75 open
    ctl = obj.LagrangianSparsity(0.5, warmup_steps=0, lambda_lr=1.0, gate_threshold=0.5)
    ctl(gates, 0)
    assert float(ctl.lambda1) == pytest.approx(-0.5)  # the gap of the count (0 − 0.5), not of E[L0]


def test_settle_penalty_leaves_exactly_k_heads_above_the_cut_in_their_order():
    torch.manual_seed(0)
    la = torch.nn.Parameter(torch.randn(5, 6) * 3)
    first = la.detach().flatten().topk(7).indices
    opt = torch.optim.Adam([la], lr=0.2)
    for _ in range(60):
        opt.zero_grad()
        obj.settle_penalty(la, 7, cut=0.0).backward()
        opt.step()
    above = (la.detach().flatten() > 0).nonzero().flatten()
    assert sorted(above.tolist()) == sorted(first.tolist())


def test_threshold_log_alpha_inverts_the_deterministic_gate():
    gates = HardConcreteGates(1, 1)
    for t in (0.3, 0.5, 0.9):
        with torch.no_grad():
            gates.log_alpha.fill_(obj.threshold_log_alpha(gates, t))
        assert float(gates.deterministic().detach()) == pytest.approx(t, abs=1e-6)


@pytest.mark.parametrize("target", [5, 20, 0.3])
def test_lagrangian_reaches_requested_size_on_a_short_schedule(target):
    """150 steps, ramp over 60: the main phase alone lands on the reported count (±10%), and keeps
    the heads that matter most."""
    k = obj.target_fraction(target, 100) * 100
    gates, ctl, want = controlled(target)
    kept = gates.deterministic() > 0.5
    assert abs(int(kept.sum()) - k) <= 0.1 * k
    assert want[kept].mean() > want.mean() + 0.2


@pytest.mark.parametrize("target", [5, 20])
def test_lagrangian_settle_phase_leaves_exactly_the_target(target):
    gates, _, want = controlled(target, settle_from=120, lambda_lr=1.0)
    kept = gates.deterministic() > 0.5
    assert int(kept.sum()) == target and want[kept].mean() > want.mean() + 0.2


def test_margin_match_loss_charges_overshoot_like_shortfall_on_the_mean():
    full = torch.tensor([1.0, 3.0, 2.0])
    assert obj.margin_match_loss(full, full) == 0
    short, over = full - 0.5, full + 0.5
    torch.testing.assert_close(obj.margin_match_loss(short, full), torch.tensor(0.25))
    torch.testing.assert_close(obj.margin_match_loss(over, full), torch.tensor(0.25))
    # examples that miss in opposite directions cancel: the search judges the mean margin
    assert obj.margin_match_loss(torch.tensor([0.0, 6.0, 0.0]), full) == 0


def test_match_objective_is_zero_for_the_full_model_and_scores_the_scorer_margins():
    """GateModule's ``match`` loss with every gate open is 0, and with every gate closed it is the squared
    gap between the mean margins the scorer reports for the all-ablated and the full model."""
    from kmshc.experiment import Experiment
    from kmshc.train.datamodule import batch_of
    from kmshc.train.module import GateModule
    exp = Experiment(model="tiny-gpt2", task="grammar", n=20, ablation="mean")
    module = GateModule(exp, objective="match")
    examples = torch.tensor([0, 2, 5])
    batch = batch_of(module.train_data, examples)
    rows = batch.rows.numel()
    assert module.faithfulness(batch, torch.ones(rows, *exp.shape)) < 1e-10
    margins = exp.scorer_for("train").outcomes(torch.stack([torch.zeros(exp.shape), torch.ones(exp.shape)])).margin
    want = (margins[0, examples].mean() - margins[1, examples].mean()) ** 2
    got = module.faithfulness(batch, torch.zeros(rows, *exp.shape))
    assert got > 1e-6
    torch.testing.assert_close(got, want.float(), atol=1e-4, rtol=1e-3)
