"""Optimizer parameter groups, gradient clipping and the learning-rate schedule, against direct formulas."""
import math

import pytest
import torch
from torch import nn

from fastreid.config import get_cfg
from fastreid.solver import build_lr_scheduler, build_optimizer, clip_gradients, get_param_groups


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
        self.heads = nn.Linear(4, 2)


def _cfg(**kv):
    cfg = get_cfg()
    flat = []
    for k, v in kv.items():
        flat += [k.replace("__", "."), repr(v) if not isinstance(v, str) else v]
    cfg.merge_from_list(flat)
    return cfg


def _lrs_over(cfg, iters_per_epoch, n, skipped=()):
    """Learning rate used at iterations 0..n-1 (the scheduler is stepped after each)."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=cfg.SOLVER.BASE_LR)
    sched = build_lr_scheduler(cfg, opt, iters_per_epoch)
    out = []
    for it in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(warmup_skipped=it in skipped)
    return out


def _original_lrs(base, ipe, epochs, warmup, wf, sched, max_epoch, delay, steps=(), gamma=0.1, eta=0.0,
                  skipped=()):
    """The challenge code's mechanics as a plain loop: torch's own epoch scheduler (built first, T_max
    from the original formula), a warmup that sets ``base * factor(count)`` after every non-skipped
    iteration among the first ``warmup``, and the epoch scheduler stepped after each epoch once
    ``iteration + 1 > warmup`` and ``epoch + 1 > delay``."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    if sched == "CosineAnnealingLR":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max_epoch - max(math.ceil(warmup / ipe), delay), eta_min=eta)
    else:
        main = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(steps), gamma=gamma)
    count = 0

    def set_warmup():
        alpha = count / warmup
        opt.param_groups[0]["lr"] = base * (1.0 if count >= warmup else wf * (1 - alpha) + alpha)

    if warmup > 0:
        set_warmup()
    out, it = [], 0
    for epoch in range(epochs):
        for _ in range(ipe):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            if it + 1 <= warmup and it not in skipped:
                count += 1
                set_warmup()
            it += 1
        if it + 1 > warmup and epoch + 1 > delay:
            main.step()
    return out


def test_linear_warmup_then_cosine_after_delay():
    base, eta, wf = 0.1, 0.001, 0.1
    cfg = _cfg(SOLVER__BASE_LR=base, SOLVER__ETA_MIN_LR=eta, SOLVER__WARMUP_FACTOR=wf, SOLVER__WARMUP_ITERS=4,
               SOLVER__WARMUP_METHOD="linear", SOLVER__SCHED="CosineAnnealingLR", SOLVER__MAX_EPOCH=6,
               SOLVER__DELAY_EPOCHS=2)
    lrs = _lrs_over(cfg, iters_per_epoch=3, n=18)
    # Warmup: factor goes linearly from 0.1 at iteration 0 to 1 at iteration 4.
    assert lrs[0] == pytest.approx(base * 0.1)
    assert lrs[1] == pytest.approx(base * (0.1 * 0.75 + 0.25))
    assert lrs[3] == pytest.approx(base * (0.1 * 0.25 + 0.75))
    assert lrs[4] == pytest.approx(base)
    # Epochs 0-2 (iterations 0-8): constant after warmup (delay of 2 epochs; epoch 2 is t = 0).
    assert lrs[8] == pytest.approx(base)
    # Epoch 3 (t=1 of 6 - max(ceil(4/3), 2) = 4): eta + (base - eta) * (1 + cos(pi/4)) / 2.
    assert lrs[9] == pytest.approx(eta + (base - eta) * (1 + math.cos(math.pi / 4)) / 2)
    assert lrs[11] == lrs[9]
    assert lrs[15] == pytest.approx(eta + (base - eta) * (1 + math.cos(math.pi * 3 / 4)) / 2)


def test_warmup_longer_than_delay_sets_span_and_start():
    # 10 iterations per epoch, warmup 25 > 1 delay epoch: T_max = 8 - max(ceil(2.5), 1) = 5, and the
    # first cosine step comes after epoch 2 (the first epoch end past iteration 25), not after epoch 1.
    base, eta = 1.0, 0.0
    cfg = _cfg(SOLVER__BASE_LR=base, SOLVER__ETA_MIN_LR=eta, SOLVER__WARMUP_ITERS=25, SOLVER__MAX_EPOCH=8,
               SOLVER__SCHED="CosineAnnealingLR", SOLVER__DELAY_EPOCHS=1)
    lrs = _lrs_over(cfg, iters_per_epoch=10, n=80)
    assert lrs[25:30] == pytest.approx([base] * 5)  # epoch 2 still at the base rate
    assert lrs[30] == pytest.approx((1 + math.cos(math.pi / 5)) / 2)  # epoch 3: cosine step 1 of 5
    assert lrs[79] == pytest.approx((1 + math.cos(math.pi * 5 / 5)) / 2)  # epoch 7: step 5 of 5 = eta


def test_constant_warmup_and_multistep_milestones_count_from_the_schedule_start():
    cfg = _cfg(SOLVER__BASE_LR=1.0, SOLVER__WARMUP_FACTOR=0.01, SOLVER__WARMUP_ITERS=3,
               SOLVER__WARMUP_METHOD="constant", SOLVER__SCHED="MultiStepLR", SOLVER__STEPS=[2, 4],
               SOLVER__GAMMA=0.5, SOLVER__MAX_EPOCH=6)
    lrs = _lrs_over(cfg, iters_per_epoch=2, n=12)
    assert lrs[:3] == pytest.approx([0.01] * 3)
    # The schedule's first step is after epoch 1 (iteration 4 > 3), so epoch e is step e - 1.
    assert lrs[3:6] == pytest.approx([1.0] * 3)  # epochs 1-2: steps 0-1
    assert lrs[6:10] == pytest.approx([0.5] * 4)  # epochs 3-4: steps 2-3
    assert lrs[10:12] == pytest.approx([0.25] * 2)  # epoch 5: step 4


@pytest.mark.parametrize("ipe,warmup,delay,sched,skipped", [
    (7, 10, 2, "CosineAnnealingLR", ()),
    (7, 10, 0, "CosineAnnealingLR", ()),
    (4, 13, 1, "CosineAnnealingLR", (0, 5, 12)),  # skipped warmup steps: the cosine starts lower
    (5, 0, 3, "CosineAnnealingLR", ()),
    (6, 20, 0, "MultiStepLR", (3,)),
    (3, 3, 2, "MultiStepLR", ()),
])
def test_schedule_equals_the_original_mechanics(ipe, warmup, delay, sched, skipped):
    epochs, base, eta, wf = 9, 0.02, 1e-4, 0.1
    cfg = _cfg(SOLVER__BASE_LR=base, SOLVER__ETA_MIN_LR=eta, SOLVER__WARMUP_FACTOR=wf,
               SOLVER__WARMUP_ITERS=warmup, SOLVER__SCHED=sched, SOLVER__MAX_EPOCH=epochs,
               SOLVER__DELAY_EPOCHS=delay, SOLVER__STEPS=[2, 4], SOLVER__GAMMA=0.3)
    ours = _lrs_over(cfg, ipe, ipe * epochs, skipped=skipped)
    ref = _original_lrs(base, ipe, epochs, warmup, wf, sched, epochs, delay, steps=(2, 4), gamma=0.3, eta=eta,
                        skipped=skipped)
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)
    if skipped:
        assert max(ours[warmup:]) < base  # the warmup never reached the base rate


def test_scheduler_state_round_trip_resumes_same_rates():
    cfg = _cfg(SOLVER__BASE_LR=0.1, SOLVER__WARMUP_ITERS=5, SOLVER__SCHED="CosineAnnealingLR",
               SOLVER__MAX_EPOCH=4)
    full = _lrs_over(cfg, 3, 12, skipped=(1,))
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = build_lr_scheduler(cfg, opt, 3)
    for it in range(7):
        opt.step()
        sched.step(warmup_skipped=it == 1)
    state_o, state_s = opt.state_dict(), sched.state_dict()
    p2 = nn.Parameter(torch.zeros(1))
    opt2 = torch.optim.SGD([p2], lr=0.1)
    sched2 = build_lr_scheduler(cfg, opt2, 3)
    opt2.load_state_dict(state_o)
    sched2.load_state_dict(state_s)
    rest = []
    for _ in range(5):
        rest.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert rest == pytest.approx(full[7:])


def test_eta_min_is_absolute_for_every_param_group():
    cfg = _cfg(SOLVER__BASE_LR=1.0, SOLVER__ETA_MIN_LR=0.1, SOLVER__WARMUP_ITERS=0, SOLVER__MAX_EPOCH=2,
               SOLVER__SCHED="CosineAnnealingLR")
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 10.0}], lr=1.0)
    sched = build_lr_scheduler(cfg, opt, 1)
    sched.step()
    sched.step()  # epoch 2 of a 2-epoch cosine: both groups at eta_min
    assert sched.get_last_lr() == pytest.approx([0.1, 0.1])


def test_unknown_schedule_fails_at_build():
    with pytest.raises(ValueError, match="SOLVER.SCHED"):
        _lrs_over(_cfg(SOLVER__SCHED="Poly"), 2, 1)


def test_param_groups_factors_and_norm_decay():
    net = Net()
    built = get_param_groups(net, base_lr=1.0, weight_decay=0.5, weight_decay_norm=0.0, bias_lr_factor=2.0,
                             heads_lr_factor=10.0)
    assert len(built) == len({(g["lr"], g["weight_decay"]) for g in built})
    # One group per distinct (lr, weight decay): two convolutions and a BN give 2 groups of 4 parameters.
    two = get_param_groups(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.Conv2d(4, 4, 3, bias=False),
                                         nn.BatchNorm2d(4)), base_lr=1.0, weight_decay=0.5, weight_decay_norm=0.0)
    assert [g["names"] for g in two] == [["0.weight", "1.weight"], ["2.weight", "2.bias"]]
    groups = {n: g for g in built for n in g["names"]}
    assert set(groups) == {"backbone.0.weight", "backbone.1.weight", "backbone.1.bias", "heads.weight",
                           "heads.bias"}
    assert (groups["backbone.0.weight"]["lr"], groups["backbone.0.weight"]["weight_decay"]) == (1.0, 0.5)
    assert (groups["backbone.1.weight"]["lr"], groups["backbone.1.weight"]["weight_decay"]) == (1.0, 0.0)
    assert (groups["backbone.1.bias"]["lr"], groups["backbone.1.bias"]["weight_decay"]) == (2.0, 0.0)
    assert groups["heads.weight"]["lr"] == 10.0
    assert groups["heads.bias"]["lr"] == 20.0


@pytest.mark.parametrize("name,cls", [("Adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW),
                                      ("SGD", torch.optim.SGD)])
def test_build_optimizer_kinds(name, cls):
    cfg = _cfg(SOLVER__OPT=name, SOLVER__NESTEROV=True, SOLVER__MOMENTUM=0.8)
    opt = build_optimizer(cfg, Net())
    assert isinstance(opt, cls)
    if name == "SGD":
        assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.8
    with pytest.raises(ValueError, match="SOLVER.OPT"):
        build_optimizer(_cfg(SOLVER__OPT="Lion"), Net())


def test_clip_gradients_norm_and_value():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(3))]
    for p in params:
        p.grad = torch.randn_like(p) * 10
    clip_gradients(_cfg(SOLVER__CLIP_GRADIENTS__ENABLED=True, SOLVER__CLIP_GRADIENTS__CLIP_TYPE="norm",
                        SOLVER__CLIP_GRADIENTS__CLIP_VALUE=1.5), params)
    total = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params))
    assert total == pytest.approx(1.5, rel=1e-4)
    clip_gradients(_cfg(SOLVER__CLIP_GRADIENTS__ENABLED=True, SOLVER__CLIP_GRADIENTS__CLIP_TYPE="value",
                        SOLVER__CLIP_GRADIENTS__CLIP_VALUE=0.1), params)
    assert max(float(p.grad.abs().max()) for p in params) <= 0.1 + 1e-7
