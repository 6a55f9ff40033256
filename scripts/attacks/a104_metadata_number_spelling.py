"""A104: **site**: an update whose header metadata writes a float field as a JSON integer,
in bytes that are canonical for that text, that ``scripts/independent/reader.py`` read as valid.

README *Wire format of models and updates*: the metadata text is
``json.dumps(doc, sort_keys=True, separators=(",", ":"))`` with ``F`` "a JSON number"; the
codec (``audit verify``, the aggregator) rebuilds the text from the typed fields (``fraction``
and the DP parameters' ``noise_multiplier``, ``max_grad_norm``, ``sample_rate``, ``delta`` are
floats, written ``1.0``) and refuses a blob whose bytes differ (``MALFORMED``); the reader
checked only that the text re-dumps to itself, which ``"fraction":1`` does. So one site sends
its honest delta through ``topk8`` at fraction 1 with ``1`` for ``1.0``: an honest aggregator
zeroes it ``MALFORMED``, ``audit verify`` passes, the reader read a good update and failed
the honest round (the round terms had this rule already: ``float_integers``).

Modes: ``int`` (``"fraction":1``), ``honest`` (``"fraction":1.0``, control).
``BEFORE=1``: the reader of 0d5b5d8 (before the fix), on the same chain and store.

usage: scripts/attacks/real.sh scripts/attacks/a104_metadata_number_spelling.py MODE
Exits 1 when verify and the reader disagree on the round (or the blob is paid, or the honest
control fails either), else 0.
"""

import json
import os
import sys

from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import SPEC, Site, audit_failures, read_independently, run

from fedtrail.storage.codec import Compression, encode_update

MODES = ("int", "honest")
MODE = sys.argv[1] if len(sys.argv) > 1 else "int"
if MODE not in MODES:
    sys.exit(f"unknown mode {MODE!r}: one of {', '.join(MODES)}")


def send(ctx):
    blob = encode_update(
        ctx.now["h2"],
        spec=SPEC,
        round=ctx.round,
        compression=Compression(method="topk8", fraction=1.0),
    ).blob
    if MODE == "honest":
        return blob, 150
    n = int.from_bytes(blob[:8], "little")
    text = json.loads(blob[8 : 8 + n])["__metadata__"]["fedtrail"]
    spelled = text.replace('"fraction":1.0,', '"fraction":1,')
    assert (
        spelled != text
        and json.dumps(json.loads(spelled), sort_keys=True, separators=(",", ":")) == spelled
    )
    return st_save(dict(st_load(blob)), metadata={"fedtrail": spelled}), 150


out = run(
    [Site("h0", 150), Site("h1", 150), Site("h2", 150, strategy=send)],
    1,
    real=True,
    verify=False,
    verbose=False,
)
fed, store = out["fed"], out["store"]
row = out["results"][0]
print(
    f"round 1 ({MODE}): "
    + ", ".join(f"{n} {v['reason']} {v['weight']:.3f}" for n, v in row.items())
)
failed = audit_failures(fed, store)
results = read_independently(fed, "a104", before="0d5b5d8" if os.environ.get("BEFORE") else None)
reader_failed = [f"{x['check']}: {x['detail'][:160]}" for x in results if x["result"] == "FAIL"]
for x in results:  # h2's row: the only topk8 blob
    if x["check"].startswith("update.") and ("topk8" in x["detail"] or "decode" in x["detail"]):
        print(f"reader {x['check'][:17]}: {x['result']} {x['detail'][:150]}")
print("independent reader:", "PASS" if not reader_failed else f"FAIL {reader_failed}")
problems = []
if bool(failed) != bool(reader_failed):
    problems.append("verify and the reader disagree")
if MODE == "honest":
    if failed or reader_failed:
        problems.append("the honest round fails")
elif row["h2"]["weight"] > 0 or row["h2"]["reason"] != "MALFORMED":
    problems.append(f"h2's blob is {row['h2']['reason']}, weight {row['h2']['weight']:.3f}")
if problems:
    print(f"ATTACK WORKS ({MODE}): " + "; ".join(problems))
    sys.exit(1)
print("defence holds" if MODE != "honest" else "control: both pass the honest round")
