"""`train_seconds`: the engine's time in training steps, in every metrics.jsonl record and the checkpoint,
summed across resumes and without evaluations."""

import json
import time

import pytest

import esseg.engine.train as engine
from esseg.engine.checkpoint import load_checkpoint
from esseg.engine.config import load_config


def _config(out, **train_keys):
    overrides = [
        "data.options={num_classes: 8, size: 32, length: 6}", "data.val_options={length: 2}", "model.embedding_dim=4",
        "loss.k=3", "train.batch_size=2", "train.tensorboard=false", "train.device=cpu", "train.num_threads=1",
        "train.log_every=1", "train.eval_every=2", "train.iters=4", "train.eval_batch_size=2", f"train.out_dir={out}",
    ]
    return load_config(None, overrides + [f"train.{k}={v}" for k, v in train_keys.items()])


@pytest.mark.slow
def test_train_seconds_sum_steps_across_resumes_without_evaluations(tmp_path, monkeypatch):
    steps = []
    real_step, real_evaluate = engine.train_step, engine.evaluate

    def slow_step(*args, **kwargs):
        t0 = time.perf_counter()
        out = real_step(*args, **kwargs)
        time.sleep(0.05)
        steps.append(time.perf_counter() - t0)
        return out

    def slow_evaluate(*args, **kwargs):
        time.sleep(0.3)  # never part of train_seconds
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(engine, "train_step", slow_step)
    monkeypatch.setattr(engine, "evaluate", slow_evaluate)
    first = engine.train(_config(tmp_path, stop_at=2))
    at_stop = load_checkpoint(tmp_path / "last.pt")["train_seconds"]
    assert at_stop == first["train_seconds"] and sum(steps) <= at_stop < sum(steps) + 0.1
    resumed = engine.train(_config(tmp_path, resume="auto"))
    assert len(steps) == 4 and sum(steps) <= resumed["train_seconds"] < sum(steps) + 0.2
    assert load_checkpoint(tmp_path / "last.pt")["train_seconds"] == resumed["train_seconds"]

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["iter"]) for r in records] == [("train", 1), ("train", 2), ("eval", 2),
                                                         ("train", 3), ("train", 4), ("eval", 4)]
    clock = [r["train_seconds"] for r in records]
    assert clock == sorted(clock) and clock[2] == clock[1] and clock[5] == clock[4]  # an eval record: the clock stopped
    assert clock[3] > round(at_stop, 3)  # the resumed run continues the saved clock
    assert clock[-1] == round(resumed["train_seconds"], 3)
