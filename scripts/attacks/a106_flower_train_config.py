"""A106: **aggregator** on Flower: one chosen site handed a learning rate of 0 in its train message.

An existing Flower project runs on the ledger with ``LedgerStrategy`` (the aggregator's
ServerApp) and ``ledger_mod`` (each site's ClientApp). The mod checks the model in a train
message against the chain's start model and keeps the sample-count key the site's own (Flower's
messages are not signed), but until this change it passed every other setting of the message to
the project's train function untouched, and a Flower project reads its learning rate, epochs or
batch size from there (``msg.content["config"]["lr"]``, as Flower's own quickstarts do). The
ServerApp builds one message per node, so it can send one site alone ``lr = 0.0``: that site
trains nothing, and its node commits and reveals, under the site's own key, an update of zeros
that the valuation scores 0. On chain the site sent a worthless update; nothing says the
ServerApp chose it, and ``audit verify`` passes (the valuation of what was sent is right).

Three honest sites of ~100 images (``a``, ``b`` and the target ``t``) run the README's Flower
example (FedAvg wrapped in ``LedgerStrategy``, the mod on each ClientApp, whose train function
takes ``lr`` from the message), one round, in process over ``LocalGrid`` on Anvil + IPFS; the
ServerApp's FedAvg config is ``lr = 0.05`` and it rewrites the target's message to ``0.0``.

- ``attack``: each site fixes ``lr = 0.05`` (``make_ledger_mod(train_config={"lr": 0.05})``);
  with ``BEFORE=1`` the mod's settings check is switched off (the code before this change).
- ``run-config``: the same through ``context.run_config`` (``flwr run --run-config 'lr=0'``; the
  train function reads ``context.run_config["lr"]``, as Flower's templates read
  ``local-epochs``). Flower's run config is one per run, for every site alike; the demo sets it
  on the target's context alone, to keep the exit criterion below. With ``BEFORE=1`` the mod
  hands the app the aggregator's run config (the code before the reviewer's finding); now it
  hands it the site's ``train_config``.
- ``honest``: control, every site gets ``lr = 0.05``.

usage: scripts/attacks/real.sh scripts/attacks/a106_flower_train_config.py attack|run-config|honest
Exits 1 when the target revealed an update and was scored 0 while verify passes the round (the
attack works), else 0.
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
from fedtrail.flower.strategy import LedgerStrategy

MODE = sys.argv[1] if len(sys.argv) > 1 else "attack"
if MODE not in ("attack", "run-config", "honest"):
    sys.exit(f"unknown mode {MODE!r}: attack, run-config or honest")
BEFORE = os.environ.get("BEFORE") == "1"
LR = 0.05
TARGET = 103  # node id of site t

if BEFORE:
    if MODE == "run-config":  # the code before the run-config finding
        mod_module.site_context = lambda context, train_config: context
        print("BEFORE=1: the app gets the aggregator's run config")
    else:
        mod_module.check_settings = lambda content, fixed, round_id: None  # the code before a106
        print("BEFORE=1: the mod's settings check switched off")


class Targeting(FedAvg):
    """FedAvg whose train message to one node says lr = 0 (a ServerApp builds each message)."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        out = list(super().configure_train(server_round, arrays, config, grid))
        return rewrite_for(out, TARGET, "config", {"lr": 0.0}) if MODE == "attack" else out


def main() -> int:
    tmp, fed, _ = three_site_federation("a106", ["a", "b", "t"])
    nodes = {101 + i: node for i, node in enumerate(fed.nodes)}
    names = {101: "a", 102: "b", 103: "t"}

    def lr_of(msg: Message, context: Context) -> float:
        """The project's own setting: the learning rate from the ServerApp's config."""
        if MODE == "run-config":
            return float(context.run_config["lr"])
        return float(msg.content["config"]["lr"])  # type: ignore[arg-type]

    train = flower_train(fed, nodes, names, lr_of)

    apps: dict[int, tuple[ClientApp, Context]] = {}
    for node_id in nodes:
        mod = mod_module.make_ledger_mod(lambda ctx: nodes[ctx.node_id], train_config={"lr": LR})
        app = ClientApp(mods=[mod])
        app.train()(train)
        context = context_for(node_id)
        if MODE == "run-config":  # the aggregator's flwr run --run-config
            context.run_config = {"lr": 0.0 if node_id == TARGET else LR}
        apps[node_id] = (app, context)
    grid = LocalGrid(apps)
    strategy = LedgerStrategy(
        Targeting(fraction_evaluate=0.0), service=fed.service, folder=tmp / "flower"
    )
    strategy.start(
        grid,
        strategy.start_arrays(),
        num_rounds=1,
        timeout=strategy.timeout(),
        train_config=ConfigRecord({"lr": LR}),
    )
    grid.close()

    target, held = flower_outcome(
        fed, nodes, names, TARGET, absent="nothing on chain (its node refused the message)"
    )
    works = target is not None and target.weight == 0 and held
    print(
        "RESULT: "
        + (
            "the attack works: t revealed an update it trained at lr 0 and was scored 0, "
            "audit verify passes"
            if works
            else "the target was not made to submit a worthless update"
        )
    )
    return 1 if works else 0


if __name__ == "__main__":
    sys.exit(main())
