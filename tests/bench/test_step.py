"""The benchmarks' training step is the engine's: same config, accumulation, loss and phases."""

import argparse

import pytest
import torch

import esseg.bench.common as common
import esseg.engine.train as engine
from esseg.bench.common import FULL, QUICK, Settings, build_training, make_batch, resolve_settings, timed_step
from esseg.errors import EssegError
from esseg.losses import ESSLoss


def _settings(**config):
    s = Settings(device="cpu", classes=[10], batch=2, crop=32, embedding_dim=4, k=3, repeats=1, warmup=0,
                 threads=1, seed=0, out="unused", quick=True)
    s.config = config
    return s


def _args(*overrides):
    p = argparse.ArgumentParser()
    common.add_common_arguments(p, FULL, QUICK)
    return p.parse_args(["--quick", *[a for o in overrides for a in ("--set", o)]])


def test_the_step_is_the_engines_and_accumulates():
    assert common.train_step is engine.train_step  # no copy of the step in the benchmarks
    s = _settings(train={"accum_steps": 3}, loss={"tau": 0.2}, optim={"optimizer": "adamw"})
    torch.manual_seed(0)
    t = build_training("ess", 10, s, torch.device("cpu"))
    assert isinstance(t.criterion, ESSLoss) and t.criterion.k == 3 and t.criterion.tau == 0.2
    assert isinstance(t.optimizer, torch.optim.AdamW) and not t.amp and not t.scaler.is_enabled()
    calls = []
    t.model.register_forward_hook(lambda *a: calls.append("forward"))
    t.optimizer.register_step_post_hook(lambda *a: calls.append("step"))
    images, labels = make_batch(10, s, torch.device("cpu"), torch.Generator().manual_seed(0))
    times = timed_step(t, images, labels)
    assert calls == ["forward"] * 3 + ["step"]  # train.accum_steps micro-batches, one optimiser step
    phases = [times[p] for p in common.PHASES]
    assert min(phases) >= 0 and sum(phases) == pytest.approx(times["seconds"], rel=1e-6)
    assert times["forward"] > 0 and times["loss"] > 0 and times["optimizer"] > 0
    # the hooks are gone afterwards: a plain step records nothing new
    before = dict(times)
    t.step(images, labels)
    assert times == before


def test_baseline_step_uses_the_softmax_loss():
    t = build_training("baseline", 10, _settings(), torch.device("cpu"))
    assert type(t.criterion).__name__ == "SoftmaxCrossEntropyLoss" and not t.model.is_embedding
    assert isinstance(t.optimizer, torch.optim.SGD) and t.cfg.train.accum_steps == 1


def test_set_reaches_the_step_and_owned_keys_are_refused():
    s = resolve_settings(_args("train.accum_steps=2", "loss.mode=random"), FULL, QUICK)
    assert s.config["train"]["accum_steps"] == 2 and common.step_config("ess", s).loss.mode == "random"
    with pytest.raises(EssegError, match="--set loss.k is set per configuration by the benchmark; use --k"):
        resolve_settings(_args("loss.k=3"), FULL, QUICK)
    with pytest.raises(EssegError, match="unknown config key 'loss.nope'"):
        resolve_settings(_args("loss.nope=1"), FULL, QUICK)


def test_the_step_builder_sets_the_backbone_bn_momentum_as_the_engine_does():
    assert common.build_optimizer_step is engine.build_optimizer_step  # one named step, shared
    t = build_training("ess", 10, _settings(optim={"backbone_bn_momentum": 0.05}), torch.device("cpu"))
    backbone = [m for m in t.model.net.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    head = [m for m in t.model.net.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert backbone and all(m.momentum == 0.05 for m in backbone)
    assert head and all(m.momentum == 0.1 for m in head)
