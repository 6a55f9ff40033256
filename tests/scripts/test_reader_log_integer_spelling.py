"""Attack a137 on real Anvil + IPFS: the aggregator finalizes an honest round under a log whose
chain-pinned integers are spelled as other JSON values: a paid site's ``num_samples`` and
``score`` as floats (``60.0``), its ``reason`` (0, OK) as ``false``, a weight as a number
rather than the schema's digit string. ``audit verify`` fails ``log.schema`` on each
(``RoundLog.from_json``: "is not an integer"; the log schema's types). The independent reader
compared each with the chain's integer by Python's ``==`` (``60.0 == 60``, ``False == 0``) and
passed every check (so too the settings' ``seed`` and the validation split's ``images``
against the terms'): one pinned log, a PASS beside verify's FAIL, the a105 spelling class in the
log. Now it compares the chain-pinned log fields by JSON type and value, as verify reads them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedtrail.auditor.verify import verify_round
from tests.fixtures.chain import ChainEnv
from tests.scripts.test_reader_log_repeated_key import _read, _run_round

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]


def _paid(doc: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in doc["sites"] if int(e["weight"]) > 0)


def _edit(kind: str) -> Callable[[bytes], bytes]:
    def edit(blob: bytes) -> bytes:
        doc = json.loads(blob)
        if kind in WHOLE:
            WHOLE[kind](doc)
        else:
            EDITS[kind](_paid(doc))
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    return edit


EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "samples as a float": lambda e: e["update"].update(
        num_samples=float(e["update"]["num_samples"])
    ),
    "score as a float": lambda e: e.update(score=float(e["score"])),
    "reason as false": lambda e: e.update(reason=False),
    "weight as a number": lambda e: e.update(weight=int(e["weight"])),
}
WHOLE: dict[str, Callable[[dict[str, Any]], None]] = {
    "seed as a float": lambda d: d["settings"].update(seed=float(d["settings"]["seed"])),
    "images as a float": lambda d: d["validation"].update(images=float(d["validation"]["images"])),
}


@pytest.mark.parametrize("kind", [*EDITS, *WHOLE])
def test_a_log_integer_spelled_otherwise_fails_for_both_readers(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path, kind: str
) -> None:
    fed = _run_round(anvil, ipfs_api, tmp_path, _edit(kind))
    audit = verify_round(fed.ledger, fed.store, 1)
    assert "log.schema" in {c.name for c in audit.checks if c.failed}
    bad = _read(anvil, ipfs_api, tmp_path, fed)
    # a spelling the log's JSON Schema refuses (false for a reason code, an integer where the
    # weight's decimal string belongs) fails log.schema and the reader reads that log no further
    assert {"log.agrees", "log.weights", "log.schema"} & set(bad), bad
    if kind in WHOLE:  # the round's seed and split, against the terms
        assert "log.agrees" in bad, bad
