"""Bad input to `esseg bench` exits with status 2 and one line on stderr."""

import pytest
import torch

from esseg.bench.commands import SUBCOMMANDS
from esseg.cli import main


@pytest.mark.parametrize("args, message", [
    (["memory", "--classes", "19,abc"], "--classes takes comma-separated integers"),
    (["memory", "--classes", "1,19"], "--classes must all be >= 2"),
    (["memory", "--max-batch", "4 lightyears"], "--max-batch takes a memory size"),
    (["memory", "--max-batch", "1GiB", "--min-batch", "8", "--max-batch-limit", "4"], "--min-batch"),
    (["memory", "--crop", "50"], "--crop 50 does not fit deeplabv3plus/mobilenet_v2"),
    (["speed", "--encoder", "no_such_encoder"], "unknown encoder"),
    (["speed", "--batch", "0"], "--batch must be >= 1"),
    (["speed", "--mem-limit", "lots"], "--mem-limit takes a memory size"),
    (["knn", "--strides", "1,2"], "--strides must all be >= 2"),
    (["knn", "--k", "50", "--classes", "19"], "--k 50 exceeds the smallest C=19"),
    (["loss", "--repeats", "0"], "--repeats must be >= 1"),
])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path, capsys):
    assert main(["bench", *args, "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("esseg: error:") and message in err and "\n" not in err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("sub", ["memory", "speed", "knn", "loss"])
def test_cuda_without_gpu_exits_2(sub, tmp_path, capsys):
    assert main(["bench", sub, "--quick", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err


def test_bench_without_subcommand_prints_help(capsys):
    assert main(["bench"]) == 2
    assert "memory" in capsys.readouterr().out


def test_accuracy_has_its_slot():
    assert SUBCOMMANDS["accuracy"] == "esseg.bench.accuracy"  # registered once that module exists
