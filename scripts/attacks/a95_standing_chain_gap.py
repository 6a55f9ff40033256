"""A95: **aggregator**: an honest site demoted through the standing block's chain or shares,
which one of the two public readers does not replay.

The standing block of a round log is chained: ``before`` must be the ``after`` of the latest
earlier finalized round's log that has one (``previous`` names that log, ``valued_rounds`` is
one more than its own), ``after`` is ``before`` plus ``normalised``, and ``normalised`` holds
the shares of the round's values (the log's ``components.value``: ``phi_i / fsum |phi_j|``, a
positive share withheld below ``credit_cosine``; README *The public rules, exactly*,
*Standing*). ``audit verify`` checked the chain (``standing.chain``) and ``after = before +
normalised`` (``standing.accumulated``) but not that ``normalised`` are the shares of the
values the same log shows; ``scripts/independent/reader.py`` recomputed the shares from the
values but took ``before`` from the log (README *Not given here*) and compared ``after`` only
for the sites with a share. Three honest sites of 150, standing, two rounds (round 1 is the
warm-up); the production service with one step patched, every score on chain following from
the log it writes.

Modes:
- ``before``: round 2 is valued with h0's carried record forged to -2.0 (round 1's log says
  nothing), so h0 is LOW_QUALITY, weight 0; the log writes the forged ``before``.
- ``warmup``: round 1's (warm-up) log writes ``before`` and ``after`` {h0: -2.0}; round 2 is
  valued honestly from that log, so h0 is LOW_QUALITY in round 2.
- ``shares``: round 2's log keeps h0's honest, positive value but writes its share as -0.9
  (the others' 0.05), ``after`` (raised to the terms' record floor, as the product raises it:
  h0 at -0.5, which still scores 0) and the scores following: h0 LOW_QUALITY, weight 0.
- ``lowq``: round 1 (the warm-up, no shares: ``normalised`` null) posts h0's honest update
  as LOW_QUALITY, score 0, the log's standing block honest (``before`` and ``after`` empty),
  where every passed update's score is 10**6.
- ``honest``: control.

usage: scripts/attacks/real.sh scripts/attacks/a95_standing_chain_gap.py MODE
Exits 1 when verify or the reader passes a forged round (or fails the honest run), else 0.
"""

import contextlib
import dataclasses
import io
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

import fedtrail.aggregator.service as service_module
from fedtrail.auditor.verify import verify_all
from fedtrail.protocol.codes import Reason
from fedtrail.valuation.standing import accumulate, floored_records

MODE = sys.argv[1] if len(sys.argv) > 1 else "before"
if MODE not in ("before", "warmup", "shares", "lowq", "honest"):
    sys.exit(f"unknown mode {MODE!r}")
FORGED = -2.0
target: dict[str, str] = {}
honest_carried = service_module.carried_history


def carried_history(ledger, store, round_id, spec, **kw):
    carried = honest_carried(ledger, store, round_id, spec, **kw)
    forge = (MODE == "before" and round_id == 2) or (MODE == "warmup" and round_id == 1)
    if not forge:
        return carried
    accumulated = {**carried.history.accumulated, target["h0"]: FORGED}
    history = dataclasses.replace(carried.history, accumulated=accumulated)
    return dataclasses.replace(carried, history=history)


def setup(fed, acct) -> None:
    target["h0"] = acct["h0"].address
    service_module.carried_history = carried_history
    honest = fed.service._valuate

    def valuate(round_id, global_state, pairs):
        report, standing = honest(round_id, global_state, pairs)
        if MODE == "lowq" and round_id == 1:
            sites = [
                dataclasses.replace(v, score=0, reason=Reason.LOW_QUALITY)
                if v.site == target["h0"]
                else v
                for v in report.sites
            ]
            return dataclasses.replace(report, sites=sites), standing
        if MODE != "shares" or round_id != 2 or standing is None or report.normalised is None:
            return report, standing
        shares = {s: (-0.9 if s == target["h0"] else 0.05) for s in report.normalised}
        comb = report.combiner  # the forged after follows the terms' record floor, as the
        after = floored_records(  # product's does: only the shares are false
            accumulate(standing.before, shares),
            {
                v.site: v.cosine if v.robust_checked else None
                for v in report.sites
                if v.site in shares
            },
            record_floor=comb.record_floor,
            demote_scale=comb.demote_scale,
            relief_cosine=comb.relief_cosine,
        )
        sites = [
            dataclasses.replace(v, score=0, reason=Reason.LOW_QUALITY)
            if v.site == target["h0"]
            else v
            for v in report.sites
        ]
        report = dataclasses.replace(report, sites=sites, normalised=shares, accumulated=after)
        standing = dataclasses.replace(standing, normalised=shares, after=after)
        return report, standing

    fed.service._valuate = valuate


out = run(
    [Site("h0", 150), Site("h1", 150), Site("h2", 150)],
    2,
    real=True,
    verify=False,
    verbose=False,
    setup=setup,
)
fed, store = out["fed"], out["store"]
for r, row in enumerate(out["results"], 1):
    shown = ", ".join(f"{n} {v['reason']} {v['weight']:.3f}" for n, v in row.items())
    print(f"round {r} ({MODE}): {shown}")
audits = verify_all(fed.ledger, store)
failed = [f"{a.round}:{c.name}" for a in audits for c in a.checks if c.failed]
print("public audit verify:", "PASS" if not failed else f"FAIL {failed}")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "independent"))
import reader  # noqa: E402

rpc, api = os.environ.get("FEDTRAIL_ATTACK_RPC"), os.environ.get("FEDTRAIL_ATTACK_IPFS")
reader_failed: list[str] | None = None
if rpc and api:
    path = Path(tempfile.mkdtemp(prefix="a95-")) / "deployment.json"
    path.write_text(fed.deployment.to_json())
    argv = ["--rpc-url", rpc, "--deployment", str(path), "--ipfs", "ipfs:" + api]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        reader.main(argv)
    reader_failed = [f"{x['round']}:{x['check']}" for x in reader.RESULTS if x["result"] == "FAIL"]
    details = [x["detail"][:200] for x in reader.RESULTS if x["result"] == "FAIL"]
    print("independent reader:", "PASS" if not reader_failed else f"FAIL {reader_failed}")
    for d in details:
        print("   ", d)
problems = []
if MODE == "honest":
    if failed or reader_failed:
        problems.append("the honest run fails")
else:
    if not failed:
        problems.append("verify passes")
    if reader_failed == []:
        problems.append("the independent reader passes")
if problems:
    print(f"ATTACK WORKS ({MODE}): " + "; ".join(problems))
    sys.exit(1)
print("defence holds" if MODE != "honest" else "control: both pass the honest run")
