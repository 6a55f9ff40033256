"""A125: **aggregator**: the "why" text of a round log that contradicts what the audit re-derives.

Each site's entry in a round log carries an ``explanation``: the sentence the report's table
*Reasons: why each site got its weight* and ``audit log``'s ``why`` line show beside the chain's
score, reason and weight. The aggregator writes it as ``"<reason label>: <detail>"``, the detail
giving the numbers that decided (``ok: shapley value 0.4455, accumulated 0.7188: not below, full
score``). The text is hash-pinned but nothing compared it with anything, so it was the
aggregator's word even where the audit re-derives every fact it states. The lies, in round 2's
log of three honest 150-image sites (schema-valid, every pinned field the chain's):

- ``label``: the best-paid site's explanation starts ``LOW_QUALITY:`` while the chain says OK
  (the reason column and the sentence beside it disagree); the other sites' start ``free
  rider:``. Judged by public ``audit verify``;
- ``alike``: the same with look-alike spellings (``Low-Quality`` with a Unicode hyphen, a
  Cyrillic ``\\u041e\\u041a`` beside a zero-weight site);
- ``detail``: the label kept (the chain's), the detail's numbers replaced: the best-paid site's
  game value written as ``-0.3000`` and "demoted to 1.0%", the others' inflated. Judged by
  ``audit verify --validation``, which re-runs the valuation and so holds every number the
  text states (``components.recomputed`` compares the ``value`` component; session 56 named
  each text that is not the re-run's in its detail, "noted, not failed", the wording not being
  versioned; since session 57 the terms name it, ``valuation.explanation_wording``, and such a
  text fails the check, naming the site; a log whose terms name none, an older writer's, is
  still only noted: ``tests/auditor/test_verify_components.py``);
- ``honest``: the logs as written (control), verify with ``--validation``.

usage: scripts/attacks/real.sh scripts/attacks/a125_explanation_text.py MODE
(MODE: label, alike, detail or honest)
Exits 1 when the judging verify passes a lying log (or fails the honest one), 0 otherwise.
"""

import json
import re
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.auditor.verify import verify_all
from fedtrail.ml.datasets import load_bundled
from fedtrail.protocol import roundlog
from fedtrail.protocol.roundlog import MAX_LOG_BYTES, RoundLog

MODE = sys.argv[1] if len(sys.argv) > 1 else "label"
if MODE not in ("label", "alike", "detail", "honest"):
    sys.exit(f"unknown mode {MODE!r}")
honest_bytes = roundlog.RoundLog.to_bytes
NUMBER = re.compile(r"-?\d+\.\d+")


def lie(sites: list[dict]) -> None:
    best = max(sites, key=lambda e: int(e["weight"]))
    for e in sites:
        text = e["explanation"]
        rest = text.split(":", 1)[1] if ":" in text else text
        if MODE == "label":
            e["explanation"] = ("LOW_QUALITY:" if e is best else "free rider:") + rest
        elif MODE == "alike":
            other = "\u041e\u041a:" if e["reason_label"] != "OK" else "Free\u2010Rider:"
            e["explanation"] = ("Low\u2010Quality:" if e is best else other) + rest
        elif MODE == "detail":
            if e is best:
                e["explanation"] = NUMBER.sub("-0.3000", text, count=2)
                e["explanation"] = e["explanation"].replace("full score", "demoted to 1.0%")
            else:
                e["explanation"] = NUMBER.sub("0.9000", text, count=2)


def lying_bytes(log: RoundLog) -> bytes:
    doc = json.loads(honest_bytes(log))
    if MODE != "honest" and log.round == 2:
        lie(doc["sites"])
    return roundlog.to_bytes(doc)


roundlog.RoundLog.to_bytes = lying_bytes
try:
    out = run(
        [Site("h0", 150), Site("h1", 150), Site("h2", 150)],
        2,
        real=True,
        verify=False,
        verbose=False,
    )
finally:
    roundlog.RoundLog.to_bytes = honest_bytes
fed, store = out["fed"], out["store"]
info = fed.ledger.get_round(2)
log = RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256, max_bytes=MAX_LOG_BYTES))
for e in log.sites:
    chain = f"chain {e.reason_label}, weight {e.weight_fraction:.3f}"
    print(f"round 2 {e.name}: {chain}; why: {e.explanation}")
with_split = MODE in ("detail", "honest")
validation = load_bundled().val if with_split else None
audits = verify_all(fed.ledger, store, validation=validation)
failed = [(a.round, c.name, c.detail[:200]) for a in audits for c in a.checks if c.failed]
judge = "audit verify --validation" if with_split else "public audit verify"
print(f"{judge}:", "PASS" if not failed else f"FAIL {failed}")
if MODE == "honest":
    if failed:
        print("ATTACK HARNESS BROKEN: the honest logs fail")
        sys.exit(1)
    print("control: the honest logs pass")
    sys.exit(0)
if not failed:
    noted = [c.detail for a in audits for c in a.checks if "noted, not failed: " in c.detail]
    print(f"ATTACK WORKS: {judge} passes a log whose 'why' text contradicts what it re-derives")
    for detail in noted:  # named, not failed (the detail mode since session 56)
        print("  named in the detail:", detail.split("noted, not failed: ", 1)[1][:300])
    sys.exit(1)
print(f"defence holds: {judge} fails the lying log")
