"""Is an update blob the canonical encoding of its own content?

The codec writes one byte string for given tensors (``fedtrail.storage.codec``), but a decoder
accepts more: a safetensors header padded with spaces, for one, gives a new sha256 for the very
same tensors. A site could dress another site's update up that way; so an update counts only in
its canonical form: the blob's stored tensors and its metadata, serialized again by the codec's
rules, must give back the same bytes.

Only the header needs writing again. A safetensors blob is an 8-byte header length, the header
(JSON naming each tensor's dtype, shape and byte range, then spaces to a multiple of 8 bytes)
and the data section. The stored tensors were read from this very blob at the ranges its header
names, so once the header is byte for byte the one ``safetensors.torch.save`` writes for their
names, dtypes and shapes and the blob's metadata (which fixes every range), and the blob is as
long as that header plus the tensors' bytes, the data section is the bytes ``save`` would write
after it: the blob equals its re-encoding. :func:`canonical_header` writes that header as
safetensors 0.8 does (``fedtrail.storage.codec.safetensors_header``); a test compares it with
``save`` on every dtype a method stores and checks that a corpus of non-canonical blobs is
judged as a full re-encoding judges it. A dtype it does not know falls back to the full re-encoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from fedtrail.errors import InvalidUpdate
from fedtrail.ml.models import ModelSpec
from fedtrail.storage.codec import METADATA_KEY, BlobMeta, decode_update, safetensors_header

__all__ = ["canonical_header", "check_canonical_update"]

# safetensors' code of each torch dtype a compression method stores
_CODES: Final[Mapping[torch.dtype, str]] = {
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.uint16: "U16",
    torch.uint32: "U32",
    torch.float32: "F32",
}

_NOT_CANONICAL: Final = (
    "not the canonical encoding of its tensors (re-encoding gives other bytes, e.g. a padded "
    "header)"
)


def canonical_header(parts: Mapping[str, torch.Tensor], metadata: str) -> bytes | None:
    """The header (padding included, length prefix excluded) that ``safetensors.torch.save``
    writes for ``parts`` with metadata ``{METADATA_KEY: metadata}``, without copying any tensor
    data (:func:`~fedtrail.storage.codec.safetensors_header`); ``None`` when a tensor's dtype is
    not one a compression method stores."""
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, t in parts.items():
        code = _CODES.get(t.dtype)
        if code is None:
            return None
        tensors[name] = (code, tuple(t.shape))
    return safetensors_header(tensors, metadata)


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
    returned, not parsed from the blob a second time (they must be: the data section is judged
    by them)."""
    if meta is None:
        _, meta = decode_update(blob, spec=spec, expected_round=expected_round)
        parts = None
    if parts is None:
        parts = _st_load(blob)
    metadata = meta._json()
    header = canonical_header(parts, metadata)
    if header is None:  # not a dtype the header writer knows: the full re-encoding
        if _st_save(dict(parts), metadata={METADATA_KEY: metadata}) != blob:
            raise InvalidUpdate(_NOT_CANONICAL)
        return
    n = len(header)
    data = sum(t.numel() * t.element_size() for t in parts.values())
    if (
        len(blob) != 8 + n + data
        or int.from_bytes(blob[:8], "little") != n
        or blob[8 : 8 + n] != header
    ):
        raise InvalidUpdate(_NOT_CANONICAL)
