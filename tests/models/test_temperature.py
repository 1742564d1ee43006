"""A learned temperature (``model.log_scale``) and the spread-out class-table init."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from esseg import build_optimizer, create_model
from esseg.engine.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from esseg.engine.config import load_config
from esseg.engine.train import train
from esseg.errors import ConfigError
from esseg.models.segmenter import spread_rows


def _mean_nn_cos(rows):
    cos = F.normalize(rows, dim=1) @ F.normalize(rows, dim=1).t()
    return float(cos.fill_diagonal_(-2).max(1).values.mean())


def test_temperature_starts_at_tau_is_bounded_and_off_by_default():
    plain = create_model(num_classes=6, embedding_dim=4)
    assert plain.temperature() is None and not hasattr(plain, "log_scale")
    model = create_model(num_classes=6, embedding_dim=4, learn_temperature=True, tau=0.1, max_scale=50.0)
    torch.testing.assert_close(model.temperature(), torch.tensor(0.1))
    with torch.no_grad():
        model.log_scale.fill_(math.log(1000.0))
    torch.testing.assert_close(model.temperature(), torch.tensor(1 / 50.0))
    with pytest.raises(ConfigError, match="max_scale >= 1 / tau"):
        create_model(num_classes=6, embedding_dim=4, learn_temperature=True, tau=0.1, max_scale=5.0)


def test_temperature_has_its_own_group_without_decay():
    model = create_model(num_classes=6, embedding_dim=4, learn_temperature=True, tau=0.1)
    opt = build_optimizer(model, lr=0.01, temperature_lr_mult=3.0, optimizer="adamw")
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["temperature"]["params"] == [model.log_scale]
    assert groups["temperature"]["lr"] == pytest.approx(0.03) and groups["temperature"]["weight_decay"] == 0
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    table = {g["name"]: g for g in build_optimizer(model, lr=0.01, class_embedding_lr_mult=4.0).param_groups}["class_embeddings"]
    assert table["params"] == [model.class_table] and table["lr"] == pytest.approx(0.04)
    assert "temperature" not in {g["name"] for g in build_optimizer(create_model(num_classes=6, embedding_dim=4), 0.01).param_groups}


def test_checkpoint_restores_the_learned_temperature(tmp_path):
    model = create_model(num_classes=6, embedding_dim=4, learn_temperature=True, tau=0.1, max_scale=100.0)
    with torch.no_grad():
        model.log_scale.fill_(3.3)
    path = save_checkpoint({"model": model.state_dict(), "model_config": dict(model.config)}, tmp_path / "m.pt")
    again = model_from_checkpoint(load_checkpoint(path), path)  # weights_only loading
    assert float(again.log_scale.detach()) == pytest.approx(3.3)
    torch.testing.assert_close(again.temperature(), torch.exp(torch.tensor(-3.3)))


def test_spread_init_is_more_spread_than_random_and_deterministic():
    c, d = 200, 64
    randoms = [_mean_nn_cos(F.normalize(torch.randn(c, d, generator=torch.Generator().manual_seed(s)), dim=1)) for s in range(3)]
    spreads = []
    for s in range(3):
        torch.manual_seed(s)
        spreads.append(_mean_nn_cos(spread_rows(c, d)))
    assert max(spreads) < min(randoms) - 0.1  # ~0.12 vs ~0.34
    torch.manual_seed(7)
    a = spread_rows(c, d)
    torch.manual_seed(7)
    torch.testing.assert_close(spread_rows(c, d), a, rtol=0, atol=0)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(c))


def test_spread_init_is_orthonormal_when_c_fits_in_d_and_reaches_the_model():
    torch.manual_seed(0)
    rows = spread_rows(5, 8)
    torch.testing.assert_close(rows @ rows.t(), torch.eye(5), atol=1e-5, rtol=0)
    torch.manual_seed(0)
    model = create_model(num_classes=30, embedding_dim=8, class_init="spread")
    assert model.config["class_init"] == "spread"
    torch.manual_seed(0)
    random = create_model(num_classes=30, embedding_dim=8)
    assert "class_init" not in random.config
    assert _mean_nn_cos(model.class_embeddings().detach()) < _mean_nn_cos(random.class_embeddings().detach())


def test_class_init_errors():
    with pytest.raises(ConfigError, match="class_init must be one of random, spread"):
        create_model(num_classes=6, embedding_dim=4, class_init="orthogonal")
    with pytest.raises(ConfigError, match="need an ESS model"):
        create_model(num_classes=6, embedding_dim=None, class_init="spread")
    with pytest.raises(ConfigError, match="at most 4096 classes"):
        spread_rows(5000, 4)


def _tiny(out, **train_keys):
    overrides = [
        "data.options={num_classes: 8, size: 32, length: 6}", "data.val_options={length: 2}",
        "model.embedding_dim=4", "loss.k=3", "loss.tau=0.1", "model.learn_temperature=true", "model.class_init=spread",
        "optim.temperature_lr_mult=10", "train.batch_size=2", "train.tensorboard=false", "train.device=cpu",
        "train.log_every=1", f"train.out_dir={out}",
    ]
    return load_config(None, overrides + [f"train.{k}={v}" for k, v in train_keys.items()])


def test_engine_trains_the_temperature_logs_it_and_resumes_exactly(tmp_path):
    train(_tiny(tmp_path / "full", iters=3))
    ckpt = load_checkpoint(tmp_path / "full" / "last.pt")
    assert ckpt["model_config"]["learn_temperature"] and ckpt["model_config"]["class_init"] == "spread"
    assert float(ckpt["model"]["log_scale"]) != pytest.approx(math.log(10.0), abs=1e-4)  # the gradient reached it
    log = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    taus = [r["tau"] for r in log if r["kind"] == "train"]
    assert taus[0] == pytest.approx(0.1, rel=1e-5) and len(set(taus)) == 3
    train(_tiny(tmp_path / "split", iters=3, stop_at=1))
    train(_tiny(tmp_path / "split", iters=3, resume="auto"))
    again = load_checkpoint(tmp_path / "split" / "last.pt")
    assert all(torch.equal(ckpt["model"][key], again["model"][key]) for key in ckpt["model"])


@pytest.mark.parametrize("mode", ["exact", "knn"])
def test_learned_temperature_gradient_matches_the_plain_formula(mode):
    # oracle: F.cross_entropy on -exp(s) ||x - mu||^2 over every class (k = C - 1 makes knn exact too),
    # differentiated by autograd and by gradcheck in float64; above max_scale the clamp stops the gradient.
    from esseg.losses.modules import ESSLoss

    gen = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64), dim=1)
    mu = F.normalize(torch.randn(5, 3, generator=gen, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 5, (2, 4, 4), generator=gen)
    loss = ESSLoss(k=4, tau=0.1, reg_weight=0.0, mode=mode, query_stride=1)
    model = create_model(num_classes=5, embedding_dim=3, learn_temperature=True, tau=0.1, max_scale=100.0).double()

    def ess(s):
        with torch.no_grad():
            model.log_scale.copy_(s)
        model.log_scale.grad = None
        value = loss(x, labels, mu, tau=model.temperature())
        value.backward()
        return value.detach(), model.log_scale.grad.clone()

    def plain(s):
        d2 = torch.cdist(x.permute(0, 2, 3, 1).reshape(-1, 3), mu).pow(2)
        return F.cross_entropy(-torch.exp(s) * d2, labels.reshape(-1))

    for s in (math.log(10.0), math.log(3.0)):
        s_ref = torch.tensor(s, dtype=torch.float64, requires_grad=True)
        ref = plain(s_ref)
        (grad,) = torch.autograd.grad(ref, s_ref)
        value, got = ess(torch.tensor(s, dtype=torch.float64))
        torch.testing.assert_close(value, ref.detach())
        torch.testing.assert_close(got, grad)
    assert torch.autograd.gradcheck(lambda t: loss(x, labels, mu, tau=torch.exp(-t)),
                                    torch.tensor(1.0, dtype=torch.float64, requires_grad=True))
    _, beyond = ess(torch.tensor(math.log(1000.0), dtype=torch.float64))  # 1 / tau clamped at 100
    assert float(beyond) == 0.0
