"""Model tests run many tiny forward passes: one CPU thread each.

On a small shared machine, torch's intra-op thread pool spins against the other processes:
a 4-channel conv block took 27 ms per forward with 2 threads under load, 0.16 ms with one.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
