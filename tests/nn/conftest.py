"""Shared settings for the neural-network tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run on one intra-op thread: these tensors are tiny, and on a shared 2-core machine torch's spinning worker
    threads slowed small convolutions down a hundredfold (measured) when another process held a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
