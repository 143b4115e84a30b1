"""Objective tests run on tiny tensors: one intra-op thread avoids thread hand-off costs
that dominate such ops on a busy machine (restored after each module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
