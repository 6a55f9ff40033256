"""Is an update blob the canonical encoding of its own content?

The codec writes one byte string for given tensors (``fedtrail.storage.codec``), but a decoder
accepts more: a safetensors header padded with spaces, for one, gives a new sha256 for the very
same tensors. A site could dress another site's update up that way; so an update counts only in
its canonical form: the blob's stored tensors and its metadata, serialized again by the codec's
rules, must give back the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from fedtrail.errors import InvalidUpdate
from fedtrail.ml.models import ModelSpec
from fedtrail.storage.codec import METADATA_KEY, BlobMeta, decode_update

__all__ = ["check_canonical_update"]


def check_canonical_update(
    blob: bytes,
    *,
    spec: ModelSpec,
    expected_round: int,
    meta: BlobMeta | None = None,
    parts: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Raises :class:`InvalidUpdate` unless ``blob`` is a valid update for ``spec`` and round
    ``expected_round`` in canonical form (validated by ``decode_update`` first). ``meta``: what
    ``decode_update`` of this very blob (for this spec and round) returned, when the caller
    has already decoded it (a second decode is a third of a round's audit decode time).
    ``parts`` (with ``meta``): the stored tensors ``decode_update_stored`` of this very blob
    returned, not parsed from the blob a second time."""
    if meta is None:
        _, meta = decode_update(blob, spec=spec, expected_round=expected_round)
        parts = None
    if parts is None:
        parts = _st_load(blob)
    canonical = _st_save(dict(parts), metadata={METADATA_KEY: meta._json()})
    if canonical != blob:
        raise InvalidUpdate(
            "not the canonical encoding of its tensors (re-encoding gives other bytes, e.g. a "
            "padded header)"
        )
