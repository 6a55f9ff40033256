"""Torch's intra-op thread count, pinned where bits must not depend on the machine.

Sums inside torch's kernels split their work by thread, so their last bits change with
``torch.get_num_threads()``. Where an auditor on another machine must recompute a value bit for
bit (an explanation's attributions, the directions a valuation projects out), the work runs on
one thread whatever the caller set."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["one_thread"]


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one intra-op thread inside the block, the caller's count restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
