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
