"""A59: **aggregator**: site names that read alike (Unicode-normalization equivalents).

The coordinator registered two sites under names that render identically: ``Hôpital Nord``
with a precomposed ô (NFC, U+00F4) and with o + U+0302 (NFD). The round log repeats each
site's registered name beside its address; verify compares them (``log.agrees``). Modes:

- ``swap``: the aggregator writes the two sites' names swapped in its log (on screen the log
  is unchanged; a reader who matches sites by name would credit one with the other's weight);
- ``nfc``: the aggregator normalizes every name to NFC in its log (a writer that "cleans" text);
- ``honest``: the control.

Holds when verify fails ``swap`` and ``nfc`` (exact comparison with the chain's names, no
normalization anywhere) and passes ``honest``. Three sites of 150 images (one plain), one round.

usage: scripts/attacks/real.sh scripts/attacks/a59_confusable_names.py swap|nfc|honest
Exits 1 when verify passes a log whose names are not the chain's, 0 otherwise.
"""

import json
import sys
import unicodedata

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.protocol import roundlog

MODE = sys.argv[1] if len(sys.argv) > 1 else "swap"
NFC, NFD = "H\u00f4pital Nord", "Ho\u0302pital Nord"
assert NFC != NFD and unicodedata.normalize("NFC", NFD) == NFC
honest_bytes = roundlog.RoundLog.to_bytes


def lying_bytes(log):
    doc = json.loads(honest_bytes(log))
    for entry in doc["sites"]:
        if MODE == "swap":
            entry["name"] = {NFC: NFD, NFD: NFC}.get(entry["name"], entry["name"])
        else:
            entry["name"] = unicodedata.normalize("NFC", entry["name"])
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


if MODE != "honest":
    roundlog.RoundLog.to_bytes = lying_bytes
try:
    out = run([Site(NFC, 150), Site(NFD, 150), Site("plain", 150)], 1, real=True)
finally:
    roundlog.RoundLog.to_bytes = honest_bytes
fed = out["fed"]
info = fed.ledger.get_round(1)
doc = json.loads(out["store"].get(info.log_cid, info.log_sha256))
print("log names:", [ascii(e["name"]) for e in doc["sites"]])
print("chain names:", sorted(ascii(s.name) for s in fed.ledger.get_sites()))
if MODE == "honest":
    print("control:", "PASS" if out["audit_ok"] else "FAIL")
    sys.exit(0 if out["audit_ok"] else 1)
if out["audit_ok"]:
    print(f"ATTACK WORKS: verify passes a log whose names are not the chain's ({MODE})")
    sys.exit(1)
print(f"defence holds: verify fails the {MODE} log")
