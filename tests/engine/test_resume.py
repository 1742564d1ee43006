"""Stopping half way and resuming ends with exactly the weights of an uninterrupted run (CPU)."""

import json

import pytest
import torch

from esseg.engine.checkpoint import load_checkpoint
from esseg.engine.config import load_config
from esseg.engine.train import train


def tiny_config(out, num_classes=8, extra=(), **train_keys):
    overrides = [
        f"data.options={{num_classes: {num_classes}, size: 40, length: 10}}", "data.val_options={length: 2}",
        "data.crop_size=32", "data.scale_range=[0.75, 1.25]",  # random scale/crop/flip: seeded per sample
        "model.embedding_dim=4", "loss.k=3", "train.batch_size=2", "train.accum_steps=2",
        "train.tensorboard=false", "train.device=cpu", "train.log_every=1", f"train.out_dir={out}",
    ]
    overrides += [f"train.{k}={v}" for k, v in train_keys.items()] + list(extra)
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


def _assert_same_final_model(a_dir, b_dir):
    a, b = load_checkpoint(a_dir / "last.pt"), load_checkpoint(b_dir / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    differ = [key for key in a["model"] if not torch.equal(a["model"][key], b["model"][key])]
    assert not differ, f"{len(differ)} tensors differ, first {differ[0]}"
    assert a["criterion"]["_extra_state"]["calls"] == b["criterion"]["_extra_state"]["calls"]


@pytest.mark.slow
def test_resume_is_exact_above_4096_classes(tmp_path):
    # Above 4096 classes ESSLoss refreshes the regulariser's nearest-other candidates every 16 calls
    # (2 per iteration here): the call counter and the cached candidates must survive the resume.
    c = 5000
    train(tiny_config(tmp_path / "full", num_classes=c, iters=20, eval_every=0, num_vis=0))
    train(tiny_config(tmp_path / "split", num_classes=c, iters=20, stop_at=10, num_vis=0))
    train(tiny_config(tmp_path / "split", num_classes=c, iters=20, resume="auto", num_vis=0))
    _assert_same_final_model(tmp_path / "full", tmp_path / "split")
    assert load_checkpoint(tmp_path / "split" / "last.pt")["criterion"]["_extra_state"]["calls"] == 40



def test_resume_is_exact_with_tail_draws(tmp_path):
    # loss.tail_samples draws classes from a generator seeded with the call counter: a resumed
    # run must draw what the uninterrupted one drew, else the final weights differ
    tail = ["loss.tail_samples=5"]
    train(tiny_config(tmp_path / "full", num_classes=30, extra=tail, iters=4, num_vis=0))
    train(tiny_config(tmp_path / "split", num_classes=30, extra=tail, iters=4, stop_at=2, num_vis=0))
    train(tiny_config(tmp_path / "split", num_classes=30, extra=tail, iters=4, resume="auto", num_vis=0))
    _assert_same_final_model(tmp_path / "full", tmp_path / "split")
    # the draws take part: without them the run ends with other weights
    train(tiny_config(tmp_path / "plain", num_classes=30, iters=4, num_vis=0))
    a, b = (load_checkpoint(tmp_path / name / "last.pt")["model"] for name in ("full", "plain"))
    assert any(not torch.equal(a[key], b[key]) for key in a)
