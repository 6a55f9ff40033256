"""Attack harness: a federation on the embedded chain + LocalStore where every site submits by
hand (commit, pass the commit deadline, reveal), so an attacker controls its bytes, its sample
count and its timing. Honest sites train one local epoch from the round's start model exactly
as a node does (train_local), on an IID shard of the bundled pneumonia train split.

Each run prints, per round, every site's claimed samples, score, reason and on-chain weight,
next to the FedAvg weight (samples share over the sites that actually trained), and ends with
`audit verify` over every round.

Real daemons: with ``FEDTRAIL_ATTACK_RPC`` (an Anvil JSON-RPC URL) and ``FEDTRAIL_ATTACK_IPFS``
(an IPFS RPC API multiaddr) set, :func:`backends` gives a connection to that chain, its
development accounts and an ``IpfsStore`` instead of the embedded chain and a ``LocalStore``;
``scripts/attacks/real.sh SCRIPT [ARGS]`` starts both on free loopback ports (as
``scripts/run_tests.sh``), runs the script and stops them. a52 on use it through ``run``.

``SHARE_CLIP=C`` in the environment (an experiment, attack a19): the standing's round shares
with every |value| clipped at C x the round's median |value| (``scripts/bench/share_clip.py``),
for the aggregator and the audit's re-run alike; unset, the product's rule. ``ZEROED_OUT=1``
(another experiment, ``scripts/bench/zeroed_out.py``): updates the standing already zeroes are
left out of the other players' game.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

torch.set_num_threads(1)

if os.environ.get("SHARE_CLIP"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from scripts.bench import share_clip

    share_clip.install(float(os.environ["SHARE_CLIP"]))
    print(f"EXPERIMENT: shares with |values| clipped at {os.environ['SHARE_CLIP']} x the median")
if os.environ.get("ZEROED_OUT"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from scripts.bench import zeroed_out

    zeroed_out.install()
    print("EXPERIMENT: updates the standing already zeroes left out of the others' game")

from fedtrail.aggregator.service import AggregatorSettings  # noqa: E402
from fedtrail.auditor.verify import verify_all  # noqa: E402
from fedtrail.chain import advance_time, connect, funded_accounts, next_block_timestamp  # noqa: E402
from fedtrail.errors import InvalidUpdate, LedgerError, StoreError  # noqa: E402
from fedtrail.ledger import commitment  # noqa: E402
from fedtrail.ml.datasets import load_bundled  # noqa: E402
from fedtrail.ml.models import ModelSpec  # noqa: E402
from fedtrail.ml.training import TrainConfig, train_local  # noqa: E402
from fedtrail.node.daemon import CLOCK_SLACK, _unrunnable  # noqa: E402
from fedtrail.protocol.codes import Phase, Reason  # noqa: E402
from fedtrail.simulation.federation import SiteSetup, build_federation  # noqa: E402
from fedtrail.storage.codec import decode_model, decode_update, encode_update  # noqa: E402
from fedtrail.storage.store import LocalStore  # noqa: E402

SPEC = ModelSpec()
Delta = dict[str, torch.Tensor]


def backends(tmp: Path) -> tuple[Any, list[Any], Any]:
    """(web3, funded accounts, content store): Anvil + IPFS when ``FEDTRAIL_ATTACK_RPC`` and
    ``FEDTRAIL_ATTACK_IPFS`` are set (``scripts/attacks/real.sh``), else the embedded chain and
    a ``LocalStore`` under ``tmp``."""
    rpc, api = os.environ.get("FEDTRAIL_ATTACK_RPC"), os.environ.get("FEDTRAIL_ATTACK_IPFS")
    if rpc and api:
        from fedtrail.chain import dev_account
        from fedtrail.storage.store import IpfsStore

        print(f"backends: Anvil at {rpc}, IPFS at {api}")
        return connect(rpc), [dev_account(i) for i in range(10)], IpfsStore(api)
    w3 = connect("embedded")
    return w3, funded_accounts(w3), LocalStore(tmp / "store")


@dataclass
class Ctx:
    """What an attacker's strategy sees in round r: the honest updates of this round (only
    a colluder would have them before the commit deadline), every earlier round's revealed
    updates and global deltas, and the start model."""

    round: int
    start: Delta
    now: dict[str, Delta]  # site name -> this round's trained delta (honest + colluders)
    past: list[dict[str, Delta]] = field(default_factory=list)  # per finalized round: name -> delta
    past_global: list[Delta] = field(default_factory=list)  # per finalized round: global delta
    own_train: Callable[[], Delta] | None = None


# strategy(ctx) -> (delta or raw blob bytes, samples) or None to skip
Strategy = Callable[[Ctx], tuple[Any, int] | None]


@dataclass
class Site:
    name: str
    samples: int  # true training images (0: none, a pure free-rider)
    strategy: Strategy | None = None  # None: honest
    cap: int | None = None  # maxSamples on chain (default: samples, or 1000 for a free-rider)
    commit_first: bool = False  # commit before the honest sites (default: after)
    withhold: tuple[int, ...] = ()  # rounds whose blob it reveals but never publishes


def run(
    sites: list[Site],
    rounds: int,
    *,
    settings: AggregatorSettings | None = None,
    seed: int = 0,
    verbose: bool = True,
    verify: bool = True,
    setup: Callable[[Any, dict[str, Any]], None] | None = None,
    accept: Any = None,
    w3: Any = None,
    real: bool = False,
    between: Callable[[Any, dict[str, Any], int], None] | None = None,
    after_reveals: Callable[[Any, dict[str, Any], int], None] | None = None,
) -> dict[str, Any]:
    """``real``: on :func:`backends` (Anvil + IPFS when the environment names them).
    ``between(fed, accounts, round)``: called once every commitment of a round is mined and
    before anyone reveals (a coordinator's move in the round, a65); a reveal the chain then
    refuses is printed and skipped instead of ending the run. ``after_reveals(fed, accounts,
    round)``: called once the reveals are sent, before the aggregator values the round (a66)."""
    tmp = Path(tempfile.mkdtemp(prefix="fedtrail-attack-"))
    if real:
        w3, accts, store = backends(tmp)
    else:
        w3 = w3 or connect("embedded")
        accts = funded_accounts(w3)
        store = LocalStore(tmp / "store")
    coordinator, aggregator = accts[0], accts[1]
    site_accts = accts[2 : 2 + len(sites)]
    data = load_bundled()
    sum(s.samples for s in sites)
    perm = np.random.default_rng(seed).permutation(len(data.train.labels))
    trains = {}
    k = 0
    for s in sites:
        if s.samples:
            idx = perm[k : k + s.samples]
            k += s.samples
            trains[s.name] = data.train.subset(idx)
    fed = build_federation(
        w3=w3,
        coordinator=coordinator,
        aggregator=aggregator,
        sites=[
            SiteSetup(account=a, name=s.name, max_samples=s.cap or s.samples or 1000)
            for a, s in zip(site_accts, sites, strict=False)
        ],
        store=store,
        folder=tmp,
        validation=data.val,
        settings=settings
        or AggregatorSettings(explain_method=None, round_seconds=60, reveal_seconds=30),
    )
    acct = {s.name: a for a, s in zip(site_accts, sites, strict=False)}
    if setup is not None:
        setup(fed, acct)
    addr = {a.address: s.name for a, s in zip(site_accts, sites, strict=False)}
    past: list[dict[str, Delta]] = []
    past_global: list[Delta] = []
    results = []
    for _r_i in range(rounds):
        r = fed.service.open_next()
        info = fed.ledger.get_round(r)
        if verbose:
            # the harness commits for every site itself; what an honest site's own node would do
            # under these terms with the [accept] table given (None: the defaults)
            refusal = _unrunnable(fed.service.terms(r)[0], accept)
            print(
                f"round {r}: an honest node " + (f"refuses: {refusal}" if refusal else "takes part")
            )
        start, _ = decode_model(store.get(info.start_cid, info.start_sha256), spec=SPEC)
        trained: dict[str, Delta] = {}
        for j, s in enumerate(sites):
            if s.samples:
                trained[s.name] = train_local(
                    start,
                    trains[s.name],
                    spec=SPEC,
                    config=TrainConfig(epochs=1, seed=1000 * r + j),
                ).delta
        ctx = Ctx(round=r, start=start, now=trained, past=past, past_global=past_global)
        sent: dict[str, tuple[bytes, int]] = {}
        eps: dict[str, int] = {}
        for s in sites:
            if s.strategy is None:
                d, n = trained[s.name], s.samples
            else:
                out = s.strategy(ctx)
                if out is None:
                    continue
                d, n = out[0], out[1]
                if len(out) > 2:
                    eps[s.name] = out[2]
            blob = (
                d if isinstance(d, bytes | bytearray) else encode_update(d, spec=SPEC, round=r).blob
            )
            sent[s.name] = (bytes(blob), n)
        order = sorted(
            sent,
            key=lambda nm: (
                not next(s for s in sites if s.name == nm).commit_first,
                next(s for s in sites if s.name == nm).strategy is not None,
            ),
        )
        for nm in order:
            blob, n = sent[nm]
            sha = hashlib.sha256(blob).hexdigest()
            fed.ledger.commit_update(acct[nm], r, commitment(acct[nm].address, r, sha, n))
        if between is not None:
            between(fed, acct, r)
        now = next_block_timestamp(w3)
        if now <= info.commit_deadline:
            advance_time(w3, info.commit_deadline - now + 1 + CLOCK_SLACK)
        for nm in order:
            blob, n = sent[nm]
            cid = store.put(blob)
            if r in next(s for s in sites if s.name == nm).withhold:
                (store.root / "blobs" / cid).unlink()  # revealed, never published
            try:
                fed.ledger.reveal_update(
                    acct[nm], r, cid, hashlib.sha256(blob).hexdigest(), n, epsilon_micro=eps.get(nm)
                )
            except LedgerError as exc:
                if between is None:
                    raise
                print(f"round {r}: {nm}'s reveal refused: {str(exc)[:160]}")
        if after_reveals is not None:
            after_reveals(fed, acct, r)
        if not fed.service.ready_to_value(r):
            now = next_block_timestamp(w3)
            advance_time(w3, info.reveal_deadline - now + 1 + CLOCK_SLACK)
        out1 = fed.service.step()
        if out1 is None:
            fed.service.step()
        info = fed.ledger.get_round(r)
        subs = {addr[s.site]: s for s in fed.ledger.get_submissions(r)}
        honest_n = {s.name: s.samples for s in sites if s.strategy is None}
        hn = sum(honest_n.values())
        row = {}
        if verbose:
            print(f"round {r}: {info.phase.name}")
        for nm, sub in subs.items():
            w = sub.weight / 1e18
            fedavg = honest_n.get(nm, 0) / hn if hn else 0
            row[nm] = dict(
                samples=sub.num_samples,
                score=sub.score / 1e6,
                reason=Reason(sub.reason).name,
                weight=w,
            )
            if verbose:
                print(
                    f"  {nm:12s} n={sub.num_samples:5d} score={sub.score / 1e6:.3f} "
                    f"{Reason(sub.reason).name:20s} weight={w:.3f} (honest FedAvg {fedavg:.3f})"
                )
        results.append(row)
        if info.phase == Phase.FINALIZED and verbose:
            from fedtrail.protocol.roundlog import InvalidLog, from_bytes

            try:
                doc = from_bytes(store.get(info.log_cid, info.log_sha256))
            except (InvalidLog, StoreError) as exc:  # an attacking aggregator's log
                print(f"    the round's log is refused: {exc}")
                doc = {}
            for e in doc.get("sites", []):
                nm = addr.get(e.get("site") or e.get("address"), "?")
                print(f"    why {nm}: {str(e.get('explanation', ''))[:200]}")
        if info.phase == Phase.FINALIZED:
            readable = {}
            for s in fed.ledger.get_submissions(r):
                try:  # an attacker's undecodable blob is nobody's reference
                    readable[addr[s.site]] = decode_update(store.get(s.cid, s.sha256), spec=SPEC)[0]
                except (InvalidUpdate, StoreError):
                    continue
            past.append(readable)
            g, _ = decode_model(store.get(info.global_cid, info.global_sha256), spec=SPEC)
            past_global.append({k2: g[k2] - start[k2] for k2 in g})
    audit_ok = None
    failed: list[tuple[int, str, str]] = []
    if verify:
        # accept: the [accept] limits the sites agreed to (None: the defaults, as a new site's)
        audits = verify_all(fed.ledger, store, accept=accept)
        audit_ok = all(a.passed for a in audits)
        failed = [
            (a.round, c.name, c.detail[:200])
            for a in audits
            for c in a.checks
            if c.applicable and not c.passed
        ]
        print("audit verify:", "PASS" if audit_ok else "FAIL", failed)
    return dict(results=results, audit_ok=audit_ok, fed=fed, store=store, failed=failed)


def noisy(d, frac, seed):
    """``d`` plus seeded Gaussian noise whose L2 norm is ``frac`` of ``d``'s."""
    g = torch.Generator().manual_seed(seed)
    n = {k: torch.randn(v.shape, generator=g) for k, v in d.items()}
    dn = torch.sqrt(sum((v.double() ** 2).sum() for v in d.values()))
    nn_ = torch.sqrt(sum((v.double() ** 2).sum() for v in n.values()))
    return {k: d[k] + (frac * dn / nn_).float() * n[k] for k in d}


def audit_failures(fed, store) -> list[str]:
    """``audit verify`` over every round of ``fed``: each failed check as ``name: detail``
    (printed as one line, PASS or FAIL)."""
    audits = verify_all(fed.ledger, store)
    failed = [f"{c.name}: {c.detail[:160]}" for a in audits for c in a.checks if c.failed]
    print("audit verify:", "PASS" if not failed else f"FAIL {failed}")
    return failed


def print_audit(ledger: Any, store: Any) -> bool:
    """``audit verify`` of every round, printed (PASS/FAIL and each failed check); True when
    every round passes."""
    audits = verify_all(ledger, store)
    passed = all(a.passed for a in audits)
    print(f"audit verify: {'PASS' if passed else 'FAIL'}")
    for a in audits:
        for c in a.checks:
            if not c.passed:
                print(f"  round {a.round} {c.name}: {c.detail[:300]}")
    return passed


def explained_run(rounds: int, per_class: int) -> tuple[Any, Any]:
    """Three 30-image sites on Anvil + IPFS for ``rounds`` rounds with per-round heatmaps
    (Integrated Gradients, ``per_class`` probe images a class); verify is left to the caller.
    (federation, store)."""
    res = run(
        [Site(f"h{i}", 30) for i in range(3)],
        rounds=rounds,
        settings=AggregatorSettings(
            explain_method="integrated_gradients",
            probe_per_class=per_class,
            round_seconds=60,
            reveal_seconds=30,
        ),
        real=True,
        verify=False,
    )
    return res["fed"], res["store"]


def rebase_reader(reader: Any, here: Path) -> None:
    """Points a reader copied out of the tree (``read_independently``'s ``before``) at this
    tree's files: every module-level path under its own ``ROOT`` (the README, the contract
    artifact and, since h-312, the log's JSON Schema ``LOG_SCHEMA``) moves under ``here``.
    Setting only ``ROOT``, ``README`` and ``ARTIFACT`` left ``LOG_SCHEMA`` under the temporary
    folder's parents, so a base reader from h-312 on could not read any log (h-318)."""
    old = Path(reader.ROOT)
    for name, value in list(vars(reader).items()):
        if name.isupper() and isinstance(value, Path) and value.is_relative_to(old):
            setattr(reader, name, here / value.relative_to(old))


def load_reader(prefix: str, *, before: str | None = None) -> Any:
    """A fresh ``scripts/independent/reader.py`` module, or with ``before`` that commit's
    reader (copied to a temporary folder) reading this tree's README, contract artifact and
    log schema (:func:`rebase_reader`)."""
    import subprocess

    here = Path(__file__).resolve().parents[2]
    folder = here / "scripts" / "independent"
    if before:
        folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-before-"))
        old = subprocess.run(
            ["git", "show", f"{before}:scripts/independent/reader.py"],
            cwd=here,
            check=True,
            capture_output=True,
        ).stdout
        (folder / "reader.py").write_bytes(old)
        print(f"BEFORE=1: the independent reader of {before}")
    sys.path.insert(0, str(folder))
    # a fresh module each call: a cached one kept the results of earlier calls in its RESULTS
    # and was the same reader whatever ``before`` named
    sys.modules.pop("reader", None)
    import reader

    if before:
        rebase_reader(reader, here)
    return reader


def read_independently(fed, prefix: str, *, before: str | None = None) -> list[dict[str, Any]]:
    """``scripts/independent/reader.py`` over ``fed``'s chain and IPFS store (real daemons
    only: run through ``scripts/attacks/real.sh``); returns its results (``check``, ``result``,
    ``detail``). ``before``: a commit whose reader is used instead (the attack's base), with
    this tree's README, contract artifact and log schema (:func:`load_reader`)."""
    import contextlib
    import io

    reader = load_reader(prefix, before=before)
    rpc, api = os.environ.get("FEDTRAIL_ATTACK_RPC"), os.environ.get("FEDTRAIL_ATTACK_IPFS")
    if not (rpc and api):
        sys.exit("run through scripts/attacks/real.sh (the reader reads Anvil + IPFS)")
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}-")) / "deployment.json"
    path.write_text(fed.deployment.to_json())
    argv = ["--rpc-url", rpc, "--deployment", str(path), "--ipfs", "ipfs:" + api]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        reader.main(argv)
    return list(reader.RESULTS)


def three_site_federation(prefix: str, names: list[str], **settings: Any) -> tuple[Path, Any, Any]:
    """Three sites of ~100 pneumonia images each (IID, seed 1) on :func:`backends`, valued by
    leave-one-out on a third of the validation split, the windows the sites' ``[accept]``
    minimums (commit 30 s, reveal 20 s); ``settings``: more :class:`AggregatorSettings`
    fields, ``site_poll_interval`` the nodes' poll. The Flower and node attacks (a106-a108)
    build their federation here. Returns the folder, the federation and the data source."""
    from fedtrail.ml.catalog import load_source
    from fedtrail.ml.datasets import partition_iid
    from fedtrail.node.config import DataConfig
    from fedtrail.simulation.federation import make_sites

    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    w3, accounts, store = backends(tmp)
    source = load_source("pneumonia")
    splits = source.splits()
    parts = partition_iid(splits.train.labels, 24, seed=1)  # ~100 images a site
    poll = settings.pop("site_poll_interval", None)
    sites = make_sites(
        accounts[2:5],
        [splits.train.subset(parts[i]) for i in range(3)],
        names=names,
        training=TrainConfig(epochs=1),
        data=DataConfig(class_names=source.class_names),
        **({"poll_interval": poll} if poll is not None else {}),
    )
    fed = build_federation(
        sites=sites,
        store=store,
        folder=tmp,
        validation=splits.val.subset(partition_iid(splits.val.labels, 3, seed=0)[0]),
        w3=w3,
        coordinator=accounts[0],
        aggregator=accounts[1],
        settings=AggregatorSettings(
            valuation="loo",  # as tests/flower/test_strategy.py (the sites consent to it)
            class_names=source.class_names,
            explain_method=None,
            round_seconds=30,  # the sites' [accept] min_commit_seconds
            reveal_seconds=20,  # ... min_reveal_seconds
            poll_interval=0.2,
            **settings,
        ),
    )
    return tmp, fed, source


def flower_train(
    fed: Any, nodes: dict[int, Any], names: dict[int, str], lr_of: Callable[[Any, Any], float]
) -> Callable[[Any, Any], Any]:
    """A Flower project's own train function (the Flower attacks a106, a107): from the
    message's model, one pass of SGD at the learning rate ``lr_of(msg, context)`` over the
    node's training data (batches of 32, shuffled by its node id), replying the model and
    ``num-examples``. ``nodes``, ``names``: the federation's nodes and site names by node id."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    def train(msg: Message, context: Any) -> Message:
        lr = lr_of(msg, context)
        model = fed.service.spec.build()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        data = nodes[context.node_id].train
        x, y = torch.from_numpy(np.array(data.images)), torch.from_numpy(np.array(data.labels))
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(context.node_id))
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        model.train()
        for batch in order.split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
        print(f"  site {names[context.node_id]} trains with lr = {lr}")
        content = RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "metrics": MetricRecord({"num-examples": len(y)}),
            }
        )
        return Message(content, reply_to=msg)

    return train


def flower_outcome(
    fed: Any, nodes: dict[int, Any], names: dict[int, str], target: int, *, absent: str
) -> tuple[Any, bool]:
    """Round 1 of a Flower attack as the chain has it (a106, a107): each site's commitment
    printed (``absent``: the line of a site with none), ``audit verify`` run over every round.
    Returns the ``target`` node's submission (None: none on chain) and whether verify passes
    with every other site paid."""
    ledger = fed.ledger
    subs = {}  # every site's commitment, revealed or not
    for node in nodes.values():
        sub = ledger.get_submission(1, node.address)
        if sub is not None:
            subs[node.address] = sub
    print(f"round 1: {ledger.get_round(1).phase.label}")
    for node_id, node in nodes.items():
        s = subs.get(node.address)
        if s is None:
            print(f"  {names[node_id]}: {absent}")
        elif not s.revealed:
            print(f"  {names[node_id]}: committed, never revealed")
        else:
            print(
                f"  {names[node_id]}: samples {s.num_samples}, score {s.score}, "
                f"reason {Reason(s.reason).name}, weight {s.weight / 1e18:.3f}"
            )
    passed = print_audit(ledger, fed.store)
    others_paid = all(
        subs[n.address].weight > 0 for i, n in nodes.items() if i != target and n.address in subs
    )
    return subs.get(nodes[target].address), passed and others_paid


def rewrite_for(
    messages: list[Any], node_id: int, record: str, values: dict[str, Any]
) -> list[Any]:
    """A ServerApp's train ``messages`` with the one to ``node_id`` rewritten (the Flower
    attacks a106, a107): its ConfigRecord ``record`` with ``values`` set, in a content of its
    own (FedAvg's messages share one RecordDict)."""
    from flwr.app import ConfigRecord, RecordDict

    for msg in messages:
        if int(msg.metadata.dst_node_id) == node_id:
            content = RecordDict(dict(msg.content.items()))
            content[record] = ConfigRecord({**dict(msg.content[record]), **values})
            msg.content = content
    return messages
