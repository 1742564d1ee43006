"""Stopping half way and resuming ends with exactly the weights of an uninterrupted run (CPU)."""

import json

import torch

from esseg.engine.checkpoint import load_checkpoint
from esseg.engine.config import load_config
from esseg.engine.train import train


def tiny_config(out, **train_keys):
    overrides = [
        "data.options={num_classes: 8, size: 40, length: 10}", "data.val_options={length: 2}",
        "data.crop_size=32", "data.scale_range=[0.75, 1.25]",  # random scale/crop/flip: seeded per sample
        "model.embedding_dim=4", "loss.k=3", "train.batch_size=2", "train.accum_steps=2",
        "train.tensorboard=false", "train.device=cpu", "train.log_every=1", f"train.out_dir={out}",
    ]
    overrides += [f"train.{k}={v}" for k, v in train_keys.items()]
    return load_config(None, overrides)


def test_resume_equals_uninterrupted_run(tmp_path):
    full = train(tiny_config(tmp_path / "full", iters=4))
    first = train(tiny_config(tmp_path / "split", iters=4, stop_at=2))
    assert first["iterations"] == 2 and first["metrics"] is None
    assert load_checkpoint(tmp_path / "split" / "last.pt")["iteration"] == 2
    resumed = train(tiny_config(tmp_path / "split", iters=4, resume="auto"))
    assert resumed["iterations"] == 4

    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 4
    assert full["metrics"] == resumed["metrics"]

    log = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4]
