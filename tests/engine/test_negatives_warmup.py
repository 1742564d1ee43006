"""The negatives warm-up: loss.warmup_k falling linearly to loss.k over loss.warmup_steps."""

import json

import pytest
from engine_tiny import tiny_args

from esseg.cli import main
from esseg.engine.config import config_from_dict
from esseg.engine.train import build_criterion, negatives_schedule
from esseg.errors import ConfigError


def test_schedule_is_linear_from_warmup_k_to_k_then_constant():
    # oracle: the formula evaluated directly
    got = [negatives_schedule(t, 32, 512, 10) for t in range(14)]
    assert got == [round(512 + (32 - 512) * t / 10) for t in range(10)] + [32] * 4
    assert got[0] == 512 and all(a >= b for a, b in zip(got, got[1:]))
    assert [negatives_schedule(t, 7, None, 10) for t in range(3)] == [7, 7, 7]  # off
    assert negatives_schedule(0, 7, 64, 0) == 7


@pytest.mark.parametrize("loss, message", [
    ({"k": 8, "warmup_k": 4, "warmup_steps": 10}, r"loss\.warmup_k=4 must be >= loss\.k=8"),
    ({"warmup_steps": 10}, r"loss\.warmup_steps needs loss\.warmup_k"),
    ({"warmup_k": 16, "warmup_steps": -1}, r"loss\.warmup_steps must be >= 0"),
])
def test_bad_warmup_keys_are_one_line_errors(loss, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"loss": loss})


def test_warmup_k_beyond_the_classes_is_refused_like_k():
    cfg = config_from_dict({"loss": {"k": 3, "warmup_k": 50, "warmup_steps": 4}})
    with pytest.raises(ConfigError, match=r"loss\.warmup_k=50 exceeds the 7 negatives"):
        build_criterion(cfg, num_classes=8, ignore_index=255)


def test_engine_follows_the_schedule_and_logs_k(tmp_path):
    out = tmp_path / "run"
    args = tiny_args(out, "--iters", "4", "--set", "loss.warmup_k=7", "loss.warmup_steps=3")
    assert main(["train", *args]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ks = {r["iter"]: r["k"] for r in records if r["kind"] == "train"}
    # the step numbered i (1-based) ran with the schedule at 0-based step i - 1: 7, 6, 4, then loss.k = 3
    assert ks == {i: negatives_schedule(i - 1, 3, 7, 3) for i in range(1, 5)} == {1: 7, 2: 6, 3: 4, 4: 3}
