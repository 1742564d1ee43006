"""Shared fixtures of the engine tests: one tiny trained run per session."""

import pytest
import torch
from engine_tiny import tiny_args

from esseg.cli import main


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A run folder from `esseg train` with the tiny settings (TensorBoard on)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *tiny_args(out), "--set", "train.tensorboard=true", "train.num_vis=1"]) == 0
    finally:
        torch.set_num_threads(before)
    return out
