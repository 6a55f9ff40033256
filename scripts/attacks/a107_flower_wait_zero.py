"""A107: **aggregator** on Flower: one chosen site told to wait 0 seconds, so it commits and never
reveals.

A Flower round is one ``train`` message per site; its ``fedtrail`` request carries the round and
``wait-seconds``, how long the site keeps at the round (the ServerApp sends the time left to the
reveal deadline). The site's node commits, waits for the commit deadline and reveals, step by
step, retrying for up to that wait (bounded above by the chain's reveal deadline, so a ServerApp
cannot hold a site). Nothing bounded it below: a ServerApp that sends one site ``wait-seconds``
0 (or leaves it out: the default was 0) has it commit and answer ``committed`` at once, and its
update is never revealed. On chain the site committed and withheld its update, its own failure;
``audit verify`` passes, naming "1 other commitment(s) never revealed". Unlike leaving a site
out of a round (README *Still trusted*), the record blames the site.

Three honest sites of ~100 images (``a``, ``b`` and the target ``t``) run the README's Flower
example (FedAvg wrapped in ``LedgerStrategy``, the mod on each ClientApp), one round, in process
over ``LocalGrid`` on Anvil + IPFS; the ServerApp rewrites ``t``'s request to wait 0.

- ``attack``: with ``BEFORE=1`` the site waits as the message says (the code before this change).
- ``honest``: control, every site gets the ServerApp's wait.

usage: scripts/attacks/real.sh scripts/attacks/a107_flower_wait_zero.py attack|honest
Exits 1 when the target committed, never revealed, and verify passes the round, else 0.
"""

import os
import sys
from collections.abc import Iterable

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from harness import three_site_federation
from torch import nn

import fedtrail.flower.mod as mod_module
from fedtrail.auditor.verify import verify_all
from fedtrail.flower.local import LocalGrid, context_for
from fedtrail.flower.mod import REQUEST
from fedtrail.flower.strategy import LedgerStrategy
from fedtrail.protocol.codes import Reason

MODE = sys.argv[1] if len(sys.argv) > 1 else "attack"
if MODE not in ("attack", "honest"):
    sys.exit(f"unknown mode {MODE!r}: attack or honest")
BEFORE = os.environ.get("BEFORE") == "1"
LR = 0.05
TARGET = 103  # node id of site t

if BEFORE:
    mod_module.site_wait = lambda node, round_id, asked: asked  # the code before a107
    print("BEFORE=1: the site waits as the message says")


class Targeting(LedgerStrategy):
    """The wrapper whose request to one node says wait-seconds 0."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        out = list(super().configure_train(server_round, arrays, config, grid))
        if MODE == "attack":
            for msg in out:
                if int(msg.metadata.dst_node_id) == TARGET:
                    # the messages share one RecordDict: the target's gets its own
                    content = RecordDict(dict(msg.content.items()))
                    content[REQUEST] = ConfigRecord(
                        {**dict(msg.content[REQUEST]), "wait-seconds": 0.0}
                    )
                    msg.content = content
        return out


def main() -> int:
    tmp, fed, _ = three_site_federation("a107", ["a", "b", "t"])
    nodes = {101 + i: node for i, node in enumerate(fed.nodes)}
    names = {101: "a", 102: "b", 103: "t"}

    def train(msg: Message, context: Context) -> Message:
        """The project's own train function: the learning rate from the ServerApp's config."""
        lr = LR
        model = fed.service.spec.build()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        data = nodes[context.node_id].train
        x, y = torch.from_numpy(np.array(data.images)), torch.from_numpy(np.array(data.labels))
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(context.node_id))
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        model.train()
        for batch in order.split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
        print(f"  site {names[context.node_id]} trains with lr = {lr}")
        content = RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "metrics": MetricRecord({"num-examples": len(y)}),
            }
        )
        return Message(content, reply_to=msg)

    apps: dict[int, tuple[ClientApp, Context]] = {}
    for node_id in nodes:
        mod = mod_module.make_ledger_mod(lambda ctx: nodes[ctx.node_id])
        app = ClientApp(mods=[mod])
        app.train()(train)
        apps[node_id] = (app, context_for(node_id))
    grid = LocalGrid(apps)
    strategy = Targeting(FedAvg(fraction_evaluate=0.0), service=fed.service, folder=tmp / "flower")
    strategy.start(
        grid,
        strategy.start_arrays(),
        num_rounds=1,
        timeout=strategy.timeout(),
    )
    grid.close()

    ledger = fed.ledger
    subs = {}  # every site's commitment, revealed or not
    for node in nodes.values():
        sub = ledger.get_submission(1, node.address)
        if sub is not None:
            subs[node.address] = sub
    info = ledger.get_round(1)
    print(f"round 1: {info.phase.label}")
    for node_id, node in nodes.items():
        s = subs.get(node.address)
        if s is None:
            print(f"  {names[node_id]}: nothing on chain")
        elif not s.revealed:
            print(f"  {names[node_id]}: committed, never revealed")
        else:
            print(
                f"  {names[node_id]}: samples {s.num_samples}, score {s.score}, "
                f"reason {Reason(s.reason).name}, weight {s.weight / 1e18:.3f}"
            )
    audits = verify_all(ledger, fed.store)
    passed = all(a.passed for a in audits)
    print(f"audit verify: {'PASS' if passed else 'FAIL'}")
    for a in audits:
        for c in a.checks:
            if not c.passed:
                print(f"  round {a.round} {c.name}: {c.detail[:300]}")
    target = subs.get(nodes[TARGET].address)
    others_paid = all(
        subs[n.address].weight > 0 for i, n in nodes.items() if i != TARGET and n.address in subs
    )
    works = target is not None and not target.revealed and others_paid and passed
    print(
        "RESULT: "
        + (
            "the attack works: t committed and never revealed, audit verify passes"
            if works
            else "the target revealed its update"
        )
    )
    return 1 if works else 0


if __name__ == "__main__":
    sys.exit(main())
