"""A31: **aggregator**: round terms holding a number that is not finite crash every reader.

After one honest round the aggregator opens round 2 under terms whose free-form ``valuation``
block holds ``1e999`` (or ``NaN`` / ``Infinity``) as a threshold. Python's JSON parser reads
``1e999`` as infinity, and ``RoundTerms.from_bytes`` then re-encodes the document to check that
it is canonical with ``allow_nan=False``, which raised ``ValueError``: not ``InvalidTerms``, so
every site's node (``_terms_refusal`` catches ``InvalidTerms``) crashed on the round instead of
skipping it, and so would ``audit verify`` on such terms in a finalized round (``_read_terms``)
or as round 1's terms, which every later round's ``terms.task_fixed`` reads (not run here: an
open round's terms are not read by verify, which passes it as "nothing to replay"). Now
``fedtrail.safejson`` refuses non-finite numbers: the node skips the round, and verify fails
such terms by name (``tests/fedtrail/test_huge_json_integers.py``).

usage: python attacks/a31_nonfinite_terms.py [LITERAL]   (default 1e999; NaN, Infinity)
"""

import hashlib
import json
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.auditor.verify import verify_round
from fedtrail.chain import next_block_timestamp
from fedtrail.errors import ContentTooLarge
from fedtrail.protocol.terms import MAX_TERMS_BYTES, InvalidTerms, RoundTerms

literal = sys.argv[1] if len(sys.argv) > 1 else "1e999"
res = run([Site(f"h{i}", 150) for i in range(3)], rounds=1, verify=False)
fed, store = res["fed"], res["store"]
honest = fed.service.round_terms(2)
doc = honest.to_json()
doc["valuation"]["combiner"]["max_norm_z"] = 987654321
blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
blob = blob.replace(b"987654321", literal.encode())
cid, sha = store.put(blob), hashlib.sha256(blob).hexdigest()
info = fed.ledger.get_round(1)
now = next_block_timestamp(fed.ledger.w3)
fed.ledger.open_round(
    fed.aggregator,
    info.global_cid,
    info.global_sha256,
    terms_cid=cid,
    terms_sha256=sha,
    commit_seconds=120,
    reveal_seconds=60,
)
print(f"round 2 opened under terms with max_norm_z {literal}")
try:
    RoundTerms.from_bytes(blob)
    print("RoundTerms.from_bytes: accepted")
except Exception as exc:
    print(f"RoundTerms.from_bytes: {type(exc).__name__}: {exc}")
try:  # what a site's node does first (SiteNode._terms_refusal catches exactly these)
    RoundTerms.from_bytes(store.get(cid, sha, max_bytes=MAX_TERMS_BYTES))
    print("a site's node: takes part")
except (InvalidTerms, ContentTooLarge) as exc:
    print(f"a site's node: skips the round: the committed terms are unusable ({exc})")
except Exception as exc:
    print(f"a site's node: CRASH {type(exc).__name__}: {exc}")
try:
    audit = verify_round(fed.ledger, store, 2)
    failed = [(c.name, c.detail[:120]) for c in audit.checks if c.applicable and not c.passed]
    print("audit verify round 2:", "PASS" if audit.passed else "FAIL", failed[:3])
except Exception as exc:
    print(f"audit verify round 2: CRASH {type(exc).__name__}: {exc}")
