"""The CUDA paths of every benchmark in --quick mode (run where a GPU is: `pytest -m gpu`)."""

import pytest
import torch
from bench_helpers import read_outputs

from esseg.cli import main

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("sub", ["memory", "speed", "knn", "loss"])
def test_quick_on_cuda(sub, tmp_path):
    assert main(["bench", sub, "--quick", "--device", "cuda", "--out", str(tmp_path)]) == 0
    rows, data = read_outputs(tmp_path, sub)
    assert {r["device"] for r in rows} == {"cuda"} and data["environment"]["gpu"]
    assert {r["status"] for r in rows} <= {"ok", "unavailable"}
    if sub in ("memory", "loss"):
        assert {r["peak_method"] for r in rows} == {"cuda.max_memory_allocated"}
        assert all(int(r["peak_bytes"]) > 0 for r in rows)


def test_max_batch_on_cuda(tmp_path):
    args = ["bench", "memory", "--quick", "--device", "cuda", "--classes", "1284", "--max-batch", "256MiB",
            "--max-batch-limit", "8", "--out", str(tmp_path)]
    assert main(args) == 0
    rows, _ = read_outputs(tmp_path, "max_batch")
    assert {r["method"] for r in rows if r["measure"] == "max_batch"} == {"baseline", "ess"}


def test_bench_step_is_the_amp_step_of_esseg_train():
    from esseg.bench.common import Settings, build_training, make_batch, timed_step

    s = Settings(device="cuda", classes=[10], batch=2, crop=32, embedding_dim=4, k=3, repeats=1, warmup=0,
                 threads=None, seed=0, out="unused", quick=True)
    device = torch.device("cuda")
    t = build_training("ess", 10, s, device)
    assert t.amp and t.scaler.is_enabled()  # train.amp defaults to true: esseg train uses AMP on CUDA
    conv = next(m for m in t.model.modules() if isinstance(m, torch.nn.Conv2d))
    dtypes = []
    conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    times = timed_step(t, *make_batch(10, s, device))
    assert dtypes == [torch.float16] and times["seconds"] > 0
