"""A 2-process gloo run under torchrun (CPU): training works and its evaluation equals a single process."""

import json
import os
import subprocess
import sys

import pytest
from engine_tiny import tiny_args

from esseg.engine.evaluate import evaluate_checkpoint


@pytest.mark.slow
def test_two_process_gloo_train_and_eval_match_single_process(tmp_path):
    out = tmp_path / "ddp"
    # 5 validation scenes: uneven shards (3 + 2), which DistributedSampler would pad with a duplicate
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "esseg", "train", *tiny_args(out), "--set", "data.val_options={length: 5}", "train.eval_batch_size=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained to iteration") == 1 and proc.stdout.count("iter 2:") == 1  # rank 0 only
    assert "\r" not in proc.stderr  # not a terminal: plain progress lines
    distributed = json.loads((out / "eval_val.json").read_text())
    assert distributed["num_pixels"] == 5 * 32 * 32

    single = evaluate_checkpoint(out / "last.pt", device="cpu", batch_size=1, progress=False)
    assert single == distributed
