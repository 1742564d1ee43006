"""Fixtures shared by the whole suite."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tests use tiny shapes: one torch thread runs them fastest and never spin-waits on a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
