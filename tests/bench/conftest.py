"""Benchmark tests run torch on one thread."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny shapes run fastest on one thread, and do not crawl when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

