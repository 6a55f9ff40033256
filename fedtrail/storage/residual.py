"""The node's error-feedback residual on disk.

A compressed update (``topk8``) leaves behind what it did not send; the node keeps that residual
and adds it to the next round's delta, so nothing is lost over rounds, only delayed. The residual
must survive a restart, so it lives in a file next to the node's state, in the codec's canonical
format (kind ``"residual"``). It never leaves the node and is never recorded on chain.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from fedtrail.errors import InvalidUpdate
from fedtrail.fsutil import atomic_write
from fedtrail.ml.models import ModelSpec
from fedtrail.storage.codec import decode_residual, encode_residual, zero_state

__all__ = ["load_residual", "save_residual"]


def save_residual(
    path: str | os.PathLike[str],
    residual: Mapping[str, torch.Tensor],
    *,
    spec: ModelSpec,
    round: int,
) -> None:
    """Persist the node's error-feedback memory (after the update of ``round``), atomically.

    Written to a temporary file and renamed, so a crash never leaves a torn residual behind.
    """
    atomic_write(path, encode_residual(residual, spec=spec, round=round))


def load_residual(
    path: str | os.PathLike[str],
    spec: ModelSpec,
    *,
    expected_round: int | None = None,
) -> dict[str, torch.Tensor]:
    """The residual saved at ``path``; zeros when there is none yet (a node's first round).

    A corrupt file or one for another model raises ``InvalidUpdate``.
    """
    p = Path(path)
    if not p.exists():
        return zero_state(spec)
    blob = p.read_bytes()
    try:
        return decode_residual(blob, spec=spec, expected_round=expected_round)
    except InvalidUpdate as e:
        raise InvalidUpdate(f"residual file {p}: {e.reason}") from None
