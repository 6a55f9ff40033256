#!/usr/bin/env python3
"""Gas of every FederationLedger function on a real Anvil, and of a full round of N sites.

    python scripts/bench/gas.py [--rpc-url URL] [--sites 10] [--out .run/bench/gas.json]

Starts its own Anvil on a free loopback port unless --rpc-url is given. A submission is
commit-then-reveal: two transactions per site. Targets (issue 13): commitUpdate + revealUpdate
<= 100,000 gas per site (stretch 80,000, reported only); a full round of 10 sites (open + 10
commits + 10 reveals + valuation + finalize) <= 1,800,000 gas. Exit 1 when a target is missed.
Last, after every row above (so they stay comparable), a round of private reveals (issue 16):
setPrivacyBudget for half the sites, revealPrivateUpdate by each, with and without a budget; a
DP site's round (commitUpdate + revealPrivateUpdate) has the same 100,000 target.
Then peer rounds (issue 14) on a second ledger with the same sites: a round where 5 sites
submit and validate, and two where all 10 do (commitScores + revealScores per validator,
recordPeerValuation at 5 and 10 sites). Target: a whole peer round of 10 sites (open + commits +
reveals + score commits + score reveals + peer valuation + finalize) <= 3,000,000 gas, every
round it can be: last, rounds with the drops that may follow a valuation, each measured as one
round (DROP_ROUNDS: one dropScreened, one dropWithheld, both in one dropUpdates, dropScreened of
two, and both as two calls), and the dearest of the rounds fedtrail's aggregator makes is the
figure held against the target. Both kinds in one round go in one dropUpdates since session 59
(h-271); the two-call round (dropWithheld then dropScreened) is what an aggregator before it, or
any aggregator on a ledger deployed before dropUpdates, sends: reported, not held (it stays
over 3,000,000).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedtrail.chain import advance_time, connect, dev_account, fund  # noqa: E402
from fedtrail.ledger import Ledger, Valuation, commitment, score_commitment  # noqa: E402
from fedtrail.protocol.codes import Reason  # noqa: E402
from fedtrail.protocol.peers import PeerVote, address_key  # noqa: E402

CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"  # a real 46-character CIDv0
PER_SITE_TARGET, PER_SITE_STRETCH, ROUND10_TARGET = 100_000, 80_000, 1_800_000
PEER_ROUND10_TARGET = 3_000_000
# Before issue 13 (commit a20e121, one submitUpdate per site), measured by this script:
BEFORE = {"per_site": 79_803, "round10": 1_400_052}
COMMIT_WINDOW = REVEAL_WINDOW = 60


def h(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(rpc_url: str, n_sites: int) -> dict[str, object]:
    w3 = connect(rpc_url)
    coord, agg = dev_account(0), dev_account(1)
    sites = [dev_account(100 + i) for i in range(n_sites)]
    for s in [*sites, dev_account(98)]:
        fund(w3, coord, s.address, 10**18)
    ledger, dep = Ledger.deploy(w3, coord, aggregator=agg.address)
    deploy_gas = int(w3.eth.get_transaction_receipt("0x" + dep.tx_hash)["gasUsed"])
    rows: dict[str, list[int]] = {"deploy": [deploy_gas]}

    def add(name: str, gas: int) -> int:
        rows.setdefault(name, []).append(gas)
        return gas

    for i, s in enumerate(sites):
        add("registerSite", ledger.register_site(coord, s.address, f"hospital-{i}", 10**6).gas_used)
    extra, heir = dev_account(99), dev_account(98)
    add("registerSite", ledger.register_site(coord, extra.address, "extra", 10).gas_used)
    add("setMaxSamples", ledger.set_max_samples(coord, extra.address, 20).gas_used)
    add("removeSite", ledger.remove_site(coord, extra.address).gas_used)
    add("setAggregator", ledger.set_aggregator(coord, agg.address).gas_used)
    add("transferCoordinator", ledger.transfer_coordinator(coord, heir.address).gas_used)
    add("acceptCoordinator", ledger.accept_coordinator(heir).gas_used)

    rounds: list[int] = []
    per_site: list[int] = []
    model = "g0"
    for rnd in range(2):
        r, res = ledger.open_round(
            agg,
            CID,
            h(model),
            terms_cid=CID,
            terms_sha256=h(f"terms{rnd}"),
            commit_seconds=COMMIT_WINDOW,
            reveal_seconds=REVEAL_WINDOW,
        )
        total = add("openRound", res.gas_used)
        commits = []
        for i, s in enumerate(sites):
            c = commitment(s.address, r, h(f"{r}-{i}"), 100 + i)
            commits.append(add("commitUpdate", ledger.commit_update(s, r, c).gas_used))
        advance_time(w3, COMMIT_WINDOW + 1)
        for i, s in enumerate(sites):
            gas = ledger.reveal_update(s, r, CID, h(f"{r}-{i}"), 100 + i).gas_used
            per_site.append(commits[i] + add("revealUpdate", gas))
        total += sum(rows["commitUpdate"][-n_sites:]) + sum(rows["revealUpdate"][-n_sites:])
        vals = []
        for i, s in enumerate(sites):
            score = (i * 97_001) % 1_000_001
            vals.append(Valuation(s.address, score, Reason.OK if score else Reason.LOW_GAIN))
        total += add(
            f"recordValuation({n_sites} sites)", ledger.record_valuation(agg, r, vals).gas_used
        )
        model = f"g{rnd + 1}"
        total += add(
            "finalizeRound",
            ledger.finalize_round(
                agg, r, global_cid=CID, global_sha256=h(model), log_cid=CID, log_sha256=h("log")
            ).gas_used,
        )
        rounds.append(total)
    r, _ = ledger.open_round(
        agg,
        CID,
        h(model),
        terms_cid=CID,
        terms_sha256=h("terms"),
        commit_seconds=COMMIT_WINDOW,
        reveal_seconds=REVEAL_WINDOW,
    )
    advance_time(w3, COMMIT_WINDOW + REVEAL_WINDOW + 1)
    add(f"cancelRound({n_sites} sites)", ledger.cancel_round(agg, r).gas_used)

    # differential privacy (issue 16), after the rows above so they stay comparable: half the
    # sites get a budget, every site reveals privately (a spend the same size as one epsilon)
    for s in sites[: n_sites // 2]:
        add("setPrivacyBudget", ledger.set_privacy_budget(heir, s.address, 8_000_000).gas_used)
    r, _ = ledger.open_round(
        agg,
        CID,
        h(model),
        terms_cid=CID,
        terms_sha256=h("terms-dp"),
        commit_seconds=COMMIT_WINDOW,
        reveal_seconds=REVEAL_WINDOW,
    )
    for i, s in enumerate(sites):
        ledger.commit_update(s, r, commitment(s.address, r, h(f"{r}-{i}"), 100 + i))
    advance_time(w3, COMMIT_WINDOW + 1)
    for i, s in enumerate(sites):
        name = "revealPrivateUpdate" + (" (budget)" if i < n_sites // 2 else " (no budget)")
        res = ledger.reveal_update(s, r, CID, h(f"{r}-{i}"), 100 + i, epsilon_micro=1_000_000)
        add(name, res.gas_used)

    peer_rounds, per_validator, drop_rounds = _peer_rounds(w3, coord, agg, sites, rows, add)
    return {
        "sites": n_sites,
        "functions": rows,
        "per_site": per_site,
        "full_round": rounds,
        "per_validator": per_validator,
        "peer_round": peer_rounds,
        "peer_round_drops": drop_rounds,
    }


# The 10-site peer rounds measured whole, each after the rounds above, every site validating:
# a round with nothing dropped, then the drops that follow a valuation (issue 14's bar counts
# the round they belong to): the public screen's drop of one update (dropScreened, the default
# since session 57), one unreadable update (dropWithheld), both in one round as fedtrail's
# aggregator sends them since session 59 (one dropUpdates: the most weighted update withheld,
# the next screened), the screen marking two updates (one call), and both as two calls (the
# same two updates: what an aggregator before dropUpdates sends, or any on a ledger without it).
# Each: (name, drops, held against the target). A drop is (kind, how many of the most weighted
# updates); kind "updates" withholds the first and screens the rest in one dropUpdates.
DROP_ROUNDS: tuple[tuple[str, tuple[tuple[str, int], ...], bool], ...] = (
    ("nothing dropped", (), True),
    ("1 dropScreened", (("screened", 1),), True),
    ("1 dropWithheld", (("withheld", 1),), True),
    ("dropUpdates (1 withheld + 1 screened)", (("updates", 2),), True),
    ("dropScreened of 2", (("screened", 2),), True),
    (
        "dropWithheld + dropScreened (2 calls)",
        (("withheld", 1), ("screened", 1)),
        False,
    ),
)


def _peer_round(
    w3: Any,
    ledger: Ledger,
    agg: Any,
    members: list[Any],
    rnd: int,
    add: Callable[[str, int], int],
    *,
    withholder: Any = None,
    drops: tuple[tuple[str, int], ...] = (),
    wait: bool = False,
) -> int:
    """One peer round on ``ledger`` with ``members`` submitting and validating (every one of
    them reveals; ``withholder`` also commits a vector it never reveals), then ``drops`` (kind
    "withheld" or "screened", how many of the most weighted updates); ``wait``: not every site
    registered validates, so the valuation waits for the score reveal deadline. Returns its
    whole gas: open, commits, reveals, score commits and reveals, recordPeerValuation, the drops,
    finalize.
    Rows go to ``add`` for commitScores, revealScores, recordPeerValuation and the drops."""
    r, res = ledger.open_peer_round(
        agg,
        model_cid=CID,
        model_sha256=h(f"p{rnd}"),
        terms_cid=CID,
        terms_sha256=h(f"peer-terms{rnd}"),
        commit_seconds=COMMIT_WINDOW,
        reveal_seconds=REVEAL_WINDOW,
        score_commit_seconds=COMMIT_WINDOW,
        score_reveal_seconds=REVEAL_WINDOW,
        quorum=len(members),
    )
    total = add("openPeerRound", res.gas_used)
    for i, s in enumerate(members):
        c = commitment(s.address, r, h(f"p{r}-{i}"), 100 + i)
        total += ledger.commit_update(s, r, c).gas_used
    advance_time(w3, COMMIT_WINDOW + 1)
    for i, s in enumerate(members):
        total += ledger.reveal_update(s, r, CID, h(f"p{r}-{i}"), 100 + i).gas_used
    advance_time(w3, REVEAL_WINDOW + 1)
    order = sorted((s.address for s in members), key=address_key)
    votes = [
        PeerVote(
            validator=v.address,
            scores=tuple((i * 97_001 + k * 13_001 + 50_000) % 1_000_001 for i in range(len(order))),
        )
        for k, v in enumerate(members)
    ]
    salts = {v.address: bytes.fromhex(h(f"salt{r}{v.address}")) for v in members}
    for v, vote in zip(members, votes, strict=True):
        digest = score_commitment(v.address, r, vote.scores, salts[v.address])
        total += add("commitScores", ledger.commit_scores(v, r, digest).gas_used)
    if withholder is not None:
        digest = score_commitment(withholder.address, r, votes[0].scores, salts[v.address])
        ledger.commit_scores(withholder, r, digest)
    advance_time(w3, COMMIT_WINDOW + 1)
    for v, vote in zip(members, votes, strict=True):
        res = ledger.reveal_scores(v, r, vote.scores, salts[v.address])
        total += add(f"revealScores({len(order)} sites)", res.gas_used)
    if wait:  # not every site validates: wait for the deadline
        advance_time(w3, REVEAL_WINDOW + 1)
    res = ledger.record_peer_valuation(agg, r, order, votes)
    withheld = ", 1 withheld" if withholder is not None else ""
    total += add(f"recordPeerValuation({len(order)} sites{withheld})", res.gas_used)
    for kind, n in drops:
        weighted = sorted(ledger.get_submissions(r), key=lambda sub: -sub.weight)
        marked = [sub.site for sub in weighted[:n]]
        if kind != "screened":  # a withheld drop only past the score reveal deadline
            advance_time(w3, REVEAL_WINDOW + 1)
        if kind == "withheld":
            res = ledger.drop_withheld(agg, r, order, marked)
            name = f"dropWithheld({len(order)} sites, {n} dropped)"
        elif kind == "screened":
            res = ledger.drop_screened(agg, r, order, marked)
            name = f"dropScreened({len(order)} sites, {n} dropped)"
        else:  # the service's call when both kinds drop in one round
            (res,) = ledger.drop_updates(agg, r, order, withheld=marked[:1], screened=marked[1:])
            name = f"dropUpdates({len(order)} sites, 1 withheld + {n - 1} screened)"
        total += add(name, res.gas_used)
    total += ledger.finalize_round(
        agg, r, global_cid=CID, global_sha256=h(f"p{rnd + 1}"), log_cid=CID, log_sha256=h("log")
    ).gas_used
    return total


def _peer_rounds(
    w3: Any,
    coord: Any,
    agg: Any,
    sites: list[Any],
    rows: dict[str, list[int]],
    add: Callable[[str, int], int],
) -> tuple[list[int], list[int], dict[str, list[int]]]:
    """Peer rounds on a fresh ledger (so the rows above are untouched): 5 sites, then all the
    sites twice, then 5 sites again with one more site committing a vector it never reveals (a
    withheld vector, rated by recordPeerValuation; then the most weighted update is dropped as
    unreadable, dropWithheld, and the next as the public screen's free-rider, dropScreened).
    Then, with every site, each round of DROP_ROUNDS twice, measured whole. Returns the
    whole-round totals of the two all-site rounds, every validator's commitScores +
    revealScores in them, and the DROP_ROUNDS totals by name."""
    ledger, _ = Ledger.deploy(w3, coord, aggregator=agg.address)
    for i, s in enumerate(sites):
        ledger.register_site(coord, s.address, f"hospital-{i}", 10**6)
    totals: list[int] = []
    per_validator: list[int] = []
    half = sites[: len(sites) // 2]
    rnd = 0
    for members in [half, sites, sites, half]:
        withholder = sites[len(half)] if rnd == 3 else None
        drops = (("withheld", 1), ("screened", 1)) if withholder is not None else ()
        before = {k: len(v) for k, v in rows.items()}
        total = _peer_round(
            w3,
            ledger,
            agg,
            members,
            rnd,
            add,
            withholder=withholder,
            drops=drops,
            wait=len(members) < len(sites),
        )
        if len(members) == len(sites):
            totals.append(total)
            commits = rows["commitScores"][before.get("commitScores", 0) :]
            name = f"revealScores({len(sites)} sites)"
            reveals = rows[name][before.get(name, 0) :]
            per_validator += [c + g for c, g in zip(commits, reveals, strict=True)]
        rnd += 1

    # the whole rounds against the bar, after every row above (so those stay comparable); only
    # their drops become rows
    def drops_only(name: str, gas: int) -> int:
        return add(name, gas) if name.startswith("drop") else gas

    dropped: dict[str, list[int]] = {name: [] for name, _, _ in DROP_ROUNDS}
    for _ in range(2):
        for name, drops, _ in DROP_ROUNDS:
            dropped[name].append(_peer_round(w3, ledger, agg, sites, rnd, drops_only, drops=drops))
            rnd += 1
    return totals, per_validator, dropped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rpc-url", default=None)
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / ".run" / "bench" / "gas.json")
    args = ap.parse_args()
    proc = None
    url = args.rpc_url
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "FEDTRAIL_ANVIL_PORT": str(port)}
        subprocess.run([str(ROOT / "scripts" / "anvil.sh"), "start"], check=True, env=env)
        proc = env
    try:
        result = measure(url, args.sites)
    finally:
        if proc is not None:
            subprocess.run([str(ROOT / "scripts" / "anvil.sh"), "stop"], env=proc, check=False)
    print(f"\nFederationLedger gas on Anvil ({url})\n")
    print(f"{'function':<28}{'calls':>6}{'min':>10}{'max':>10}")
    funcs: dict[str, list[int]] = result["functions"]  # type: ignore[assignment]
    for name, gas in funcs.items():
        print(f"{name:<28}{len(gas):>6}{min(gas):>10,}{max(gas):>10,}")
    per_site: list[int] = result["per_site"]  # type: ignore[assignment]
    full: list[int] = result["full_round"]  # type: ignore[assignment]
    site_max, round_max = max(per_site), max(full)
    print(
        f"\nper site per round (commitUpdate + revealUpdate): max {site_max:,} "
        f"(commit {max(funcs['commitUpdate']):,} + reveal {max(funcs['revealUpdate']):,})"
    )
    print(
        f"full round, {args.sites} sites (open + commits + reveals + valuation + finalize): "
        + ", ".join(f"{g:,}" for g in full)
    )
    private = [g for n, gs in funcs.items() if n.startswith("revealPrivateUpdate") for g in gs]
    dp_site = max(funcs["commitUpdate"]) + max(private)
    print(
        f"private reveal (issue 16): max {max(private):,}, "
        f"{max(private) - max(funcs['revealUpdate']):+,} gas vs revealUpdate; a DP site's round "
        f"(commitUpdate + revealPrivateUpdate) {dp_site:,}"
    )
    print(
        f"before issue 13 (one submitUpdate per site): per site {BEFORE['per_site']:,}, "
        f"round of 10 {BEFORE['round10']:,}"
    )
    per_validator: list[int] = result["per_validator"]  # type: ignore[assignment]
    peer: list[int] = result["peer_round"]  # type: ignore[assignment]
    peer_max = max(peer)
    print(
        f"peer round (issue 14): per validator per round (commitScores + revealScores, "
        f"{args.sites} sites) max {max(per_validator):,}; whole round, {args.sites} sites (open + "
        "commits + reveals + score commits + score reveals + recordPeerValuation + finalize): "
        + ", ".join(f"{g:,}" for g in peer)
    )
    drop_rounds: dict[str, list[int]] = result["peer_round_drops"]  # type: ignore[assignment]
    print(
        f"whole peer rounds of {args.sites} sites, each measured as one round (open to finalize, "
        "the drops included), two of each:"
    )
    held = {name for name, _, is_held in DROP_ROUNDS if is_held}
    width = max(len(name) for name in drop_rounds) + 2
    for name, gas in drop_rounds.items():
        print(f"  {name:<{width}}" + ", ".join(f"{g:,}" for g in gas))
    peer_max = max(peer_max, *(g for n, gas in drop_rounds.items() if n in held for g in gas))
    peer_ok = args.sites != 10 or peer_max <= PEER_ROUND10_TARGET
    if args.sites == 10:
        print(
            f"peer round of 10, the dearest of the rounds fedtrail's aggregator makes {peer_max:,}"
            f" <= {PEER_ROUND10_TARGET:,} -> {'met' if peer_ok else 'MISSED'}"
        )
        for name, gas in drop_rounds.items():
            if name not in held:
                over = "over" if max(gas) > PEER_ROUND10_TARGET else "under"
                print(
                    f"  not held: {name} {max(gas):,} ({over} {PEER_ROUND10_TARGET:,}; what an "
                    "aggregator before dropUpdates sends, or any on a ledger without it)"
                )
    else:
        print(f"peer round of {args.sites} {peer_max:,} (the 3,000,000 target is for 10 sites)")
    ok = (
        site_max <= PER_SITE_TARGET
        and dp_site <= PER_SITE_TARGET
        and (args.sites != 10 or round_max <= ROUND10_TARGET)
        and peer_ok
    )
    stretch = "met" if site_max <= PER_SITE_STRETCH else "not met"
    print(
        f"targets: per site {site_max:,} <= {PER_SITE_TARGET:,} (stretch {PER_SITE_STRETCH:,}: "
        f"{stretch}); DP site {dp_site:,} <= {PER_SITE_TARGET:,}; round of 10 {round_max:,} <= "
        f"{ROUND10_TARGET:,}; peer round of 10 {peer_max:,} <= {PEER_ROUND10_TARGET:,} "
        f"-> {'met' if ok else 'MISSED'}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
