"""A46: **aggregator**: round terms that repeat a key, so that one on-chain hash reads two ways.

The terms are hash-pinned at ``openRound`` and every fedtrail reader parses the same bytes with
Python's ``json``, which keeps the *last* of a repeated key. Other parsers keep the first or
refuse (the explanation log is refused for exactly this: ``roundlog._unique_keys``). An
aggregator that writes ``"combiner": {"boost_clip": 0.0, ..., "boost_clip": 1.0}`` or
``"windows": {"commit_seconds": 600, "commit_seconds": 8}`` shows a first-key reader (a site's
own tooling, a person reading the document top to bottom, another language's auditor) the
off / long value, while the nodes, the aggregator's replay and ``audit verify`` run the last.
Holds: ``RoundTerms.from_bytes`` re-encodes what it parsed and refuses bytes that are not that
canonical form, and a repeated key never is (``InvalidTerms``: a node declines the round as
``TERMS_UNUSABLE``, verify fails ``terms.hash``). Kept as a regression attack.

No chain, no training (as a35): the bundled real terms with one key repeated in each of five
places, each parsed as a node and verify parse them.

usage: python attacks/a46_terms_duplicate_key.py
Exits 1 while any repeated key is accepted (the hole), 0 when every one is refused.
"""

import json
import sys
from pathlib import Path

from fedtrail.protocol.terms import InvalidTerms, RoundTerms

REPO = Path(__file__).resolve().parents[2]
base = json.loads((REPO / "tests/fedtrail/protocol/data/round-terms-real.json").read_text())
canonical = json.dumps(base, sort_keys=True, separators=(",", ":"))
RoundTerms.from_bytes(canonical.encode())  # the real terms parse

# (what the first reader sees, what the last-key reader runs), spliced into the canonical text
CASES = [
    ('"windows":{', '"commit_seconds":600,', "windows.commit_seconds 600 then 60"),
    ('"combiner":{', '"boost_clip":0.0,"boost_clip":1.0,', "combiner.boost_clip 0 then 1"),
    ('"combiner":{', '"min_cosine":-1.0,', "combiner.min_cosine -1 then the real value"),
    ('"valuation":{', '"standing":true,', "valuation.standing true then the real value"),
    ("{", '"round":7,', "round 7 then the real round"),
]
accepted = []
for anchor, extra, label in CASES:
    at = canonical.index(anchor) + len(anchor)
    text = canonical[:at] + extra + canonical[at:]
    try:
        terms = RoundTerms.from_bytes(text.encode())
    except InvalidTerms as exc:
        print(f"{label}: refused ({str(exc)[:90]})")
        continue
    first = json.loads(text, object_pairs_hook=lambda kv: dict(reversed(kv)))  # first key wins
    print(
        f"{label}: ACCEPTED; the node runs windows {terms.commit_seconds} s, round "
        f"{terms.round}, combiner {dict(terms.valuation.get('combiner', {})).get('boost_clip')}"
        f"; a first-key reader sees windows {first['windows']['commit_seconds']} s, round "
        f"{first['round']}"
    )
    accepted.append(label)
if accepted:
    print(f"HOLE OPEN: {len(accepted)} of {len(CASES)} terms with a repeated key accepted")
    sys.exit(1)
print(f"defence holds: all {len(CASES)} terms with a repeated key refused")
