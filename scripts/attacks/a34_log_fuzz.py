"""A34: **aggregator**: `audit verify` against mutated round logs (crashes, and what passes).

A 2-round federation of 3 honest sites (100 images each) is built with the harness; then round
2's log is mutated N times (1-3 fields a time, each replaced by a value of the same JSON type:
a number by 0, -1, 1e308, 5e-324 ..., a string by "" or a near copy, a list or object cut), stored,
and the chain's round 2 is re-pointed at it, as a dishonest aggregator would finalize it. Each
``verify_round`` must end in checks, never in an exception that is not a ``FedtrailError``.
Prints the counts (refused by the schema, failed by other checks, passed), every crash with
the field that caused it, and the fields of the mutations that passed (the log's claims verify
does not check without the split: metrics, explanations, game values; or mutations that left
the value as it was).

Found: ``standing.after`` set to -1e308 crashed verify with ``OverflowError`` in
``demoted_score`` (``standing.scores``); fixed (the score is 0 at or below ``-demote_scale``).

usage: python attacks/a34_log_fuzz.py [N] [SEED] [report]   (default 400 1; about 3 minutes)
  report: render the HTML report (``collect`` + ``render_html``, no verify) of each mutated log
  instead, counting crashes only (held: 0 of 400 with seed 2, about 5 minutes)
"""

import collections
import dataclasses
import hashlib
import json
import random
import sys
import time
import traceback

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.auditor.report import collect, render_html
from fedtrail.auditor.verify import verify_round
from fedtrail.errors import FedtrailError

n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
report = len(sys.argv) > 3 and sys.argv[3] == "report"
ROUND = 2
res = run([Site(f"h{i}", 100) for i in range(3)], rounds=ROUND, verify=False, verbose=False)
fed, store = res["fed"], res["store"]
info = fed.ledger.get_round(ROUND)
base = json.loads(store.get(info.log_cid, info.log_sha256))
real_get_round = fed.ledger.get_round


def paths(doc, prefix=()):
    if isinstance(doc, dict):
        items = list(doc.items())
    elif isinstance(doc, list):
        items = list(enumerate(doc))
    else:
        items = []
    for k, v in items:
        yield (*prefix, k)
        yield from paths(v, (*prefix, k))


def mutated(old):
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return rng.choice([0, -1, 1, old + 1, old - 1, 2**63, 10**30, -old])
    if isinstance(old, float):
        return rng.choice([0.0, -0.0, 1e308, -1e308, 5e-324, old * 2, -old, 1.0, 1e-9])
    if isinstance(old, str):
        return rng.choice(["", "x", old[:-1], old + "0", "0x" + "00" * 20])
    if isinstance(old, list):
        return rng.choice([[], old[:-1], list(reversed(old))])
    if isinstance(old, dict):
        return rng.choice([{}, dict(list(old.items())[:-1])])
    return rng.choice([0, "", [], {}])


all_paths = list(paths(base))
crashes: collections.Counter = collections.Counter()
examples: dict = {}
passes: list = []
refused = failed = passed = 0
t0 = time.time()
for _ in range(n):
    doc = json.loads(json.dumps(base))
    changed = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        p = rng.choice(all_paths)
        target = doc
        try:
            for k in p[:-1]:
                target = target[k]
            target[p[-1]] = mutated(target[p[-1]])
            changed.append(p)
        except (KeyError, IndexError, TypeError):
            continue
    try:
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        continue
    forged = dataclasses.replace(
        info, log_cid=store.put(blob), log_sha256=hashlib.sha256(blob).hexdigest()
    )
    fed.ledger.get_round = lambda r, f=forged: f if r == ROUND else real_get_round(r)
    try:
        if report:
            render_html(collect(fed.ledger, store, []))
            passed += 1
            continue
        audit = verify_round(fed.ledger, store, ROUND)
        if any(c.name == "log.schema" and not c.passed for c in audit.checks):
            refused += 1
        elif audit.passed:
            passed += 1
            passes.append(changed)
        else:
            failed += 1
    except FedtrailError:
        failed += 1
    except Exception as exc:
        key = (type(exc).__name__, traceback.extract_tb(exc.__traceback__)[-1].name)
        crashes[key] += 1
        examples.setdefault(key, (changed, str(exc)[:200]))
    finally:
        fed.ledger.get_round = real_get_round
print(
    f"{n} mutations in {time.time() - t0:.0f} s: refused by the schema {refused}, failed by "
    f"other checks {failed}, passed {passed}, crashes {sum(crashes.values())}"
)
for key, count in crashes.items():
    print("CRASH", key, count, examples[key])
fields = collections.Counter(
    "/".join(str(x) for x in q if not isinstance(x, int)) for ch in passes for q in ch
)
print("fields of passing mutations:", fields.most_common(40))
