"""Attack a138 on real Anvil + IPFS: round 1 opened under terms whose top-level fields are
known and canonical but whose nested values break the README's field list: a ``privacy``
block requiring DP as ``1`` (not ``true``), a repeated class name, an unknown field in
``windows``, an upper-case validation sha256, ``valuation.standing`` as ``1``. fedtrail's
parsers refuse each (``RoundTerms.from_bytes``, ``ValuationSettings.from_json``), so every
honest node skips the round and ``audit verify`` fails ``terms.hash`` ("matches its hash but
...") or ``terms.valuation``; here the aggregator's own nodes take it. The independent reader
checked only the top-level fields, the integer and float fields' types and the duplicate rule,
and passed ``terms.canonical`` on each: a round whose terms no fedtrail reader reads, read by
the reader one way of its own (``privacy.required`` and ``standing`` 1 taken as true). Now it
checks every field as the README's field list states it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedtrail.auditor.verify import verify_round
from fedtrail.protocol.terms import RoundTerms
from tests.fixtures.chain import ChainEnv
from tests.scripts.test_huge_reveal_cid import _federation
from tests.scripts.test_reader_round_one_fixed import _reader_results, _round

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]

EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "privacy required 1": lambda d: d.update(privacy={"delta": 1e-6, "required": 1}),
    "class name repeated": lambda d: d.update(class_names=["normal", "normal"]),
    "windows unknown field": lambda d: d["windows"].update(note="x"),
    "validation sha256 upper-case": lambda d: d["validation"].update(
        sha256=d["validation"]["sha256"].upper()
    ),
    # score windows in an aggregator round's terms (a139): RoundTerms refuses them
    "score windows without peers": lambda d: d["windows"].update(
        score_commit_seconds=30, score_reveal_seconds=30
    ),
    # the reader took 1 for true (standing on); fedtrail's nodes and verify refuse the block
    "standing 1": lambda d: d["valuation"].update(standing=int(bool(d["valuation"]["standing"]))),
}
VERIFY_SAYS = {kind: ("terms.hash", "matches its hash but") for kind in EDITS}
VERIFY_SAYS["standing 1"] = ("terms.valuation", "not a bool")


@pytest.mark.parametrize("kind", list(EDITS))
def test_terms_no_fedtrail_reader_reads_fail_for_both_readers(
    anvil: ChainEnv, ipfs_api: str, tmp_path: Path, kind: str
) -> None:
    fed = _federation(anvil, ipfs_api, tmp_path, honest=3)
    honest_to, honest_from = RoundTerms.to_bytes, RoundTerms.from_bytes.__func__  # type: ignore[attr-defined]
    originals: dict[bytes, bytes] = {}
    parsing = [False]

    def lying_to(self: RoundTerms) -> bytes:
        blob = honest_to(self)
        if parsing[0]:
            return blob
        doc = json.loads(blob)
        EDITS[kind](doc)
        lie = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        originals[lie] = blob
        return lie

    def lying_from(cls: type[RoundTerms], blob: bytes) -> RoundTerms:
        # the aggregator and its own nodes read the lie as the honest terms it was made from
        parsing[0] = True
        try:
            return honest_from(cls, originals.get(bytes(blob), blob))  # type: ignore[no-any-return]
        finally:
            parsing[0] = False

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RoundTerms, "to_bytes", lying_to)
        patch.setattr(RoundTerms, "from_bytes", classmethod(lying_from))
        _round(fed, 1)
    assert originals  # the chain committed the lie
    audit = verify_round(fed.ledger, fed.store, 1)
    failed = {c.name: c.detail for c in audit.checks if c.failed}
    check, says = VERIFY_SAYS[kind]
    assert says in failed.get(check, ""), failed
    bad = _reader_results(anvil, ipfs_api, tmp_path, fed, 1)
    assert "terms.canonical" in bad, bad
