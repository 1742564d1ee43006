"""The Sec. 4.1 optimiser groups and the poly schedule."""

import pytest
import torch
from torch import nn

from esseg import PolyLR, build_optimizer, create_model
from esseg.engine.config import load_config
from esseg.engine.train import build_model, build_optimizer_step
from esseg.optim import set_backbone_bn_momentum


def test_groups_follow_the_paper():
    model = create_model(num_classes=10, embedding_dim=6)
    opt = build_optimizer(model, lr=0.01)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"backbone", "head", "class_embeddings"}
    assert groups["backbone"]["lr"] == pytest.approx(0.001)
    assert groups["head"]["lr"] == 0.01 and groups["class_embeddings"]["lr"] == 0.01
    assert groups["backbone"]["momentum"] == 0.9 and groups["head"]["momentum"] == 0.9
    assert groups["class_embeddings"]["momentum"] == 0.95 and groups["class_embeddings"]["poly_power"] == 0.95
    assert groups["head"]["weight_decay"] == 1e-4 and groups["class_embeddings"]["weight_decay"] == 0
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))


def test_build_optimizer_leaves_the_model_unchanged():
    model = create_model(num_classes=10, embedding_dim=6)
    before = {name: m.momentum for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    build_optimizer(model, lr=0.01)
    assert before and {name: m.momentum for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)} == before


def test_set_backbone_bn_momentum_changes_the_backbone_only():
    model = create_model(num_classes=10, embedding_dim=6)
    bns = [m for m in model.net.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert set_backbone_bn_momentum(model, 0.01) == len(bns) > 0
    assert all(m.momentum == 0.01 for m in bns)
    head_bns = [m for m in model.net.decoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert head_bns and all(m.momentum == 0.1 for m in head_bns)
    assert set_backbone_bn_momentum(model, None) == 0 and all(m.momentum == 0.01 for m in bns)
    assert set_backbone_bn_momentum(nn.Sequential(nn.BatchNorm2d(3)), 0.5) == 0  # no net.encoder: nothing to do
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        set_backbone_bn_momentum(model, 1.5)


def test_engine_sets_the_configured_bn_momentum_then_builds_the_optimizer():
    cfg = load_config(None, ["optim.backbone_bn_momentum=0.05", "optim.lr=0.02"])
    model = build_model(cfg, 5)
    opt = build_optimizer_step(cfg, model)
    assert all(m.momentum == 0.05 for m in model.net.encoder.modules() if isinstance(m, nn.BatchNorm2d))
    assert {g["name"]: g["lr"] for g in opt.param_groups}["head"] == 0.02


def test_baseline_has_no_class_group():
    opt = build_optimizer(create_model(num_classes=10), lr=0.1)
    assert [g["name"] for g in opt.param_groups] == ["backbone", "head"]


def test_poly_schedule_values():
    model = create_model(num_classes=10, embedding_dim=6)
    opt = build_optimizer(model, lr=0.01)
    sched = PolyLR(opt, total_iters=100)
    seen = []
    for it in range(101):
        seen.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    for it in (0, 1, 50, 99, 100):
        frac = 1 - it / 100
        assert seen[it]["head"] == pytest.approx(0.01 * frac**0.9)
        assert seen[it]["backbone"] == pytest.approx(0.001 * frac**0.9)
        assert seen[it]["class_embeddings"] == pytest.approx(0.01 * frac**0.95)
    state = sched.state_dict()
    resumed = PolyLR(build_optimizer(create_model(num_classes=10, embedding_dim=6), lr=0.01), total_iters=100)
    resumed.load_state_dict(state)
    assert resumed.last_epoch == 101


def test_poly_rejects_bad_total():
    with pytest.raises(ValueError, match="total_iters"):
        PolyLR(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), total_iters=0)


def test_adamw_keeps_groups_and_uses_momentum_as_beta1():
    model = create_model(num_classes=10, embedding_dim=6)
    opt = build_optimizer(model, lr=1e-3, optimizer="adamw")
    assert isinstance(opt, torch.optim.AdamW)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["backbone"]["lr"] == pytest.approx(1e-4) and groups["head"]["lr"] == 1e-3
    assert groups["head"]["betas"] == (0.9, 0.999) and groups["class_embeddings"]["betas"] == (0.95, 0.999)
    assert groups["class_embeddings"]["weight_decay"] == 0 and groups["head"]["weight_decay"] == 1e-4
    sched = PolyLR(opt, total_iters=10)
    opt.step()
    sched.step()
    assert groups["class_embeddings"]["lr"] == pytest.approx(1e-3 * 0.9**0.95)
    with pytest.raises(ValueError, match="optimizer must be"):
        build_optimizer(model, lr=1e-3, optimizer="lamb")


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("key, value, message", [
    ("momentum", -0.1, r"momentum must be in \[0, 1\)"),
    ("momentum", 1.0, r"momentum must be in \[0, 1\)"),
    ("class_embedding_momentum", 1.5, r"class_embedding_momentum must be in \[0, 1\)"),
    ("poly_power", 0.0, "poly_power must be > 0"),
    ("class_embedding_poly_power", -1.0, "class_embedding_poly_power must be > 0"),
])
def test_build_optimizer_refuses_bad_momentum_and_poly_power(optimizer, key, value, message):
    with pytest.raises(ValueError, match=message):
        build_optimizer(nn.Linear(2, 2), lr=0.1, optimizer=optimizer, **{key: value})


def test_adamw_refuses_beta1_of_one_with_a_hint():
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\) \(Adam's beta1"):
        build_optimizer(nn.Linear(2, 2), lr=0.1, optimizer="adamw", momentum=1.0)


def test_poly_rejects_non_positive_powers():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="power must be > 0"):
        PolyLR(opt, total_iters=5, power=0.0)
    opt.param_groups[0]["poly_power"] = -0.5
    with pytest.raises(ValueError, match="poly_power of group '\\?' must be > 0"):
        PolyLR(opt, total_iters=5)
