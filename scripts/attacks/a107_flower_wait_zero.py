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
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from harness import flower_outcome, flower_train, rewrite_for, three_site_federation

import fedtrail.flower.mod as mod_module
from fedtrail.flower.local import LocalGrid, context_for
from fedtrail.flower.mod import REQUEST
from fedtrail.flower.strategy import LedgerStrategy

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
        return rewrite_for(out, TARGET, REQUEST, {"wait-seconds": 0.0}) if MODE == "attack" else out


def main() -> int:
    tmp, fed, _ = three_site_federation("a107", ["a", "b", "t"])
    nodes = {101 + i: node for i, node in enumerate(fed.nodes)}
    names = {101: "a", 102: "b", 103: "t"}

    train = flower_train(fed, nodes, names, lambda msg, context: LR)

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

    target, held = flower_outcome(fed, nodes, names, TARGET, absent="nothing on chain")
    works = target is not None and not target.revealed and held
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
