#!/usr/bin/env python3
"""Kill -9 soak of a scripted local testnet: SIGKILL the aggregator and site daemons at random
moments, restart them, and check from the chain that nothing was done twice.

    python scripts/bench/soak.py [--sites 3] [--rounds 3] [--kills 4] [--seed 0]
                                 [--round-seconds 20] [--reveal-seconds 12] [--pause 1.0]
                                 [--dir DIR] [--format table|json]

The real processes of scripts/testnet_demo.sh: Anvil (a block every second) and the js-ipfs
daemon on free loopback ports, `fedtrail chain deploy`, `fedtrail node init/register`, one
`fedtrail node run` per site and `fedtrail aggregator run --until-round ROUNDS` (counted on
chain, so a restarted aggregator does not overshoot). A seeded RNG draws each kill: a round, a
moment in it (seconds after the soak first sees the round open, within its commit window plus a
few seconds) and a target (the first two kills take one aggregator and one node, in random
order; the rest are random). The target is SIGKILLed, left down for --pause seconds and
restarted with the same command line.

Checks, from the ledger's events (not from any process's word):
  - every round 1..ROUNDS closed exactly once: one RoundFinalized, or one RoundCancelled
    (reported), never both; no round beyond ROUNDS was opened;
  - at most one UpdateCommitted and one UpdateSubmitted (reveal) per site per round, and no
    reveal without a commitment;
  - no daemon exited on its own, and a node killed in round r < ROUNDS revealed in a later round;
  - `fedtrail audit verify --all` exits 0.
Prints the figures (rounds, kills by role and phase, restarts, wall time) and exits 1 when a
check fails, 2 on bad arguments. Logs of every process go to DIR/logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import tomli_w

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedtrail.chain import connect, dev_account, fund, next_block_timestamp  # noqa: E402
from fedtrail.ledger import Ledger  # noqa: E402
from fedtrail.protocol.codes import Phase  # noqa: E402

BIN = ROOT / ".venv" / "bin"
FEDTRAIL = str(BIN / "fedtrail")
NAMES = [f"hospital-{c}" for c in "ABCDEFGH"]
AGGREGATOR = "aggregator"
WATCHING = "watching ledger"  # what a site daemon logs once it is up
SETTLE_SECONDS = 6
"""How long past its commit window a round is expected to last (reveal, valuation, finalize):
kill moments are drawn within the commit window plus this."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Kill:
    """One planned SIGKILL: ``at`` seconds after round ``round`` is first seen open."""

    round: int
    at: float
    target: str


@dataclass
class KillDone:
    target: str
    role: str
    planned_round: int
    round: int
    phase: str
    wall_s: float


@dataclass
class Daemon:
    """One restartable process: its command line, environment and log (appended across
    restarts)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    killed: bool = False

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n--- soak: start #{self.starts + 1} at {time.time():.1f}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        self.starts += 1
        self.killed = False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.killed = True

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the daemons finish or abandon their step), then SIGKILL."""
        if not self.running():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def exited_on_its_own(self) -> int | None:
        """The exit status when the process ended without being killed by the soak."""
        if self.proc is None or self.killed or self.proc.poll() is None:
            return None
        return int(self.proc.returncode)


def plan_kills(rng: random.Random, n: int, rounds: int, sites: int, span: float) -> list[Kill]:
    """``n`` kills, drawn by ``rng``: rounds uniform in 1..rounds, moments uniform in the first
    ``span`` seconds of the round; targets random, but the first two are one aggregator and one
    node so that a short soak covers both roles."""
    nodes = NAMES[:sites]
    targets = [rng.choice([AGGREGATOR, *nodes]) for _ in range(n)]
    if n >= 2:
        first = [AGGREGATOR, rng.choice(nodes)]
        rng.shuffle(first)
        targets[:2] = first
    plan = [Kill(rng.randint(1, rounds), round(rng.uniform(0.5, span), 2), t) for t in targets]
    return sorted(plan, key=lambda k: (k.round, k.at))


def _run(argv: Sequence[str], env: dict[str, str], log: IO[str] | None = None) -> str:
    proc = subprocess.run(list(argv), env=env, capture_output=True, text=True, cwd=ROOT)
    if log is not None:
        log.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:3])} failed ({proc.returncode}): {proc.stderr[-2000:]}"
        )
    return proc.stdout


def _max_samples() -> int:
    """Each site trains on a shard of the bundled training split: none can claim more."""
    from fedtrail.ml.datasets import load_bundled

    return len(load_bundled().train)


def chain_phase(ledger: Ledger) -> tuple[int, str]:
    """The ledger's latest round and where it stands: commit or reveal window, valuation (past
    the reveal window or every site revealed), valued, closed; "none" before round 1."""
    current = ledger.current_round()
    if current == 0:
        return 0, "none"
    info = ledger.get_round(current)
    if info.phase == Phase.OPEN:
        now = next_block_timestamp(ledger.w3)
        if info.submission_count >= info.active_at_open > 0 or now > info.reveal_deadline:
            return current, "valuation"
        return current, "commit" if now <= info.commit_deadline else "reveal"
    if info.phase == Phase.VALUED:
        return current, "valued"
    return current, "closed"


def check_chain(
    ledger: Ledger, rounds: int, kills: Sequence[KillDone]
) -> tuple[dict[str, Any], list[str]]:
    """The soak's verdict from the ledger's events: per-round figures and the failed checks."""
    failures: list[str] = []
    finalized = Counter(int(e.args["round"]) for e in ledger.events("RoundFinalized"))
    cancelled = Counter(int(e.args["round"]) for e in ledger.events("RoundCancelled"))
    commits = Counter(
        (int(e.args["round"]), str(e.args["site"])) for e in ledger.events("UpdateCommitted")
    )
    reveals = Counter(
        (int(e.args["round"]), str(e.args["site"])) for e in ledger.events("UpdateSubmitted")
    )
    current = ledger.current_round()
    if current != rounds:
        failures.append(f"the ledger's latest round is {current}, expected {rounds}")
    per_round = []
    for r in range(1, max(current, rounds) + 1):
        f, c = finalized[r], cancelled[r]
        if (f, c) not in ((1, 0), (0, 1)):
            failures.append(f"round {r}: {f} RoundFinalized and {c} RoundCancelled events")
        per_round.append(
            {
                "round": r,
                "closed": "finalized" if (f, c) == (1, 0) else "cancelled" if c else "open",
                "commits": sum(n for (rr, _), n in commits.items() if rr == r),
                "reveals": sum(n for (rr, _), n in reveals.items() if rr == r),
            }
        )
    for (r, site), n in sorted(commits.items()):
        if n > 1:
            failures.append(f"round {r}: {n} commitments from {site}")
    for (r, site), n in sorted(reveals.items()):
        if n > 1:
            failures.append(f"round {r}: {n} reveals from {site}")
        if commits[(r, site)] == 0:
            failures.append(f"round {r}: {site} revealed without a commitment")
    names = {s.name: s.address for s in ledger.get_sites()}
    for k in kills:
        if k.role != "node" or k.round >= rounds or k.round == 0:
            continue
        site = names[k.target]
        if not any(reveals[(r, site)] for r in range(k.round + 1, rounds + 1)):
            failures.append(f"{k.target} killed in round {k.round} never revealed again")
    return {"rounds": per_round, "current_round": current}, failures


def soak(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the soak; returns the figures and the failed checks (``failures``)."""
    t0 = time.monotonic()
    rng = random.Random(args.seed)
    run_dir = Path(args.dir or tempfile.mkdtemp(prefix="fedtrail-soak-")).resolve()
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    anvil_port, ipfs_port = free_port(), free_port()
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FEDTRAIL_ANVIL", "FEDTRAIL_IPFS", "IPFS_PATH", "FEDTRAIL_TEST"))
    }
    env = {
        **base_env,
        "FEDTRAIL_ANVIL_PORT": str(anvil_port),
        "FEDTRAIL_ANVIL_DIR": str(run_dir / "anvil"),
        # A block every second: deadlines are chain time (see scripts/testnet_demo.sh).
        "FEDTRAIL_ANVIL_ARGS": "--block-time 1",
        "FEDTRAIL_IPFS_PORT": str(ipfs_port),
        "IPFS_PATH": str(run_dir / "ipfs"),
        "FEDTRAIL_IPFS_LOGFILE": str(logs / "ipfs.log"),
    }
    rpc = f"http://127.0.0.1:{anvil_port}"
    store = f"ipfs:/ip4/127.0.0.1/tcp/{ipfs_port}/http"
    deployment = run_dir / "deployment.json"
    names = NAMES[: args.sites]
    daemons: dict[str, Daemon] = {}
    done: list[KillDone] = []
    failures: list[str] = []
    plan = plan_kills(rng, args.kills, args.rounds, args.sites, args.round_seconds + SETTLE_SECONDS)
    setup = logs / "setup.log"
    verify_rc: int | None = None
    try:
        with setup.open("w") as slog:
            # js-ipfs takes seconds to start: it does so while the ledger is deployed and the
            # sites created (which need no store).
            ipfs_start = ThreadPoolExecutor(1)
            ipfs_started = ipfs_start.submit(
                _run, [str(ROOT / "scripts" / "ipfs_daemon.sh"), "start"], env
            )
            ipfs_start.shutdown(wait=False)
            try:
                _run([str(ROOT / "scripts" / "anvil.sh"), "start"], env, slog)
                # The coordinator's part in-process (as scripts/bench/gas.py does): the soak is
                # about the daemons, and each CLI call costs seconds of imports.
                w3 = connect(rpc)
                coordinator = dev_account(0)
                ledger, dep = Ledger.deploy(w3, coordinator, rpc_url=rpc)
                deployment.write_text(dep.to_json(), encoding="utf-8")
                slog.write(f"deployed the ledger at {ledger.address}\n")

                def init(i: int) -> str:
                    name = names[i]
                    _run(
                        [
                            *(FEDTRAIL, "node", "init", str(run_dir / name), "--name", name),
                            *("--deployment", str(deployment), "--store", store),
                            *("--shard", f"{i}/{args.sites}", "--fast-kdf"),
                        ],
                        {**env, "FEDTRAIL_PASSPHRASE": f"soak-{name}"},
                    )
                    _accept_windows(
                        run_dir / name / "config.toml", args.round_seconds, args.reveal_seconds
                    )
                    keystore = json.loads((run_dir / name / "keystore.json").read_text())
                    return "0x" + str(keystore["address"])

                with ThreadPoolExecutor(args.sites) as pool:
                    created = pool.map(init, range(args.sites))
                    max_samples = _max_samples()
                    addresses = list(created)
                for name, address in zip(names, addresses, strict=True):
                    ledger.register_site(coordinator, address, name, max_samples)
                    fund(w3, coordinator, address, 10**19)
                    slog.write(f"registered {address} as {name}, at most {max_samples} samples\n")
            finally:
                slog.write(ipfs_started.result())
        for name in names:
            daemons[name] = Daemon(
                name,
                [FEDTRAIL, "node", "run", str(run_dir / name), "--threads", "1"],
                {**env, "FEDTRAIL_PASSPHRASE": f"soak-{name}"},
                logs / f"{name}.log",
            )
        daemons[AGGREGATOR] = Daemon(
            AGGREGATOR,
            [
                *(FEDTRAIL, "aggregator", "run", "--rpc-url", rpc),
                *("--deployment", str(deployment), "--dev-account", "0", "--store", store),
                *("--until-round", str(args.rounds), "--round-seconds", str(args.round_seconds)),
                *("--reveal-seconds", str(args.reveal_seconds), "--poll-interval", "1"),
                *("--threads", "1", "--folder", str(run_dir / "aggregator")),
            ],
            env,
            logs / "aggregator.log",
        )
        for name in names:
            daemons[name].start()
        # Round 1 opens when the aggregator starts: the sites first, so that each one's start
        # (imports, data, keystore) does not eat into its first commit window.
        ready_by = time.monotonic() + 120
        while not all(WATCHING in daemons[n].log.read_text(errors="replace") for n in names):
            if time.monotonic() > ready_by or not all(daemons[n].running() for n in names):
                raise RuntimeError(f"a site daemon did not start; see {logs}")
            time.sleep(0.25)
        daemons[AGGREGATOR].start()
        setup_s = time.monotonic() - t0

        seen_open: dict[int, float] = {}
        gone: set[str] = set()
        pending = list(plan)
        agg = daemons[AGGREGATOR]
        deadline = (
            time.monotonic() + args.rounds * (args.round_seconds + args.reveal_seconds + 60) + 60
        )
        while time.monotonic() < deadline:
            current = ledger.current_round()
            if current and current not in seen_open:
                seen_open[current] = time.monotonic()
            for d in daemons.values():
                status = d.exited_on_its_own()
                if d.name != AGGREGATOR and status is not None and d.name not in gone:
                    gone.add(d.name)
                    failures.append(f"{d.name} exited on its own (status {status})")
            if agg.exited_on_its_own() is not None:
                break  # the aggregator closed round ROUNDS and exited (or failed: see below)
            while pending and pending[0].round in seen_open:
                kill = pending[0]
                if time.monotonic() < seen_open[kill.round] + kill.at:
                    break
                pending.pop(0)
                target = daemons[kill.target]
                if not target.running():
                    continue  # the aggregator is done: the run is over
                rnd, phase = chain_phase(ledger)
                target.kill()
                done.append(
                    KillDone(
                        kill.target,
                        AGGREGATOR if kill.target == AGGREGATOR else "node",
                        kill.round,
                        rnd,
                        phase,
                        round(time.monotonic() - t0, 1),
                    )
                )
                print(
                    f"soak: t={done[-1].wall_s:.0f}s SIGKILL {kill.target} in round {rnd} "
                    f"({phase}); restart in {args.pause} s",
                    file=sys.stderr,
                )
                time.sleep(args.pause)
                target.start()
            time.sleep(0.25)
        else:
            failures.append(f"the aggregator did not close round {args.rounds} in time")
        run_s = time.monotonic() - t0 - setup_s
        if agg.proc is not None and agg.proc.poll() not in (None, 0):
            failures.append(f"the aggregator exited with status {agg.proc.returncode}")
        figures, chain_failures = check_chain(ledger, args.rounds, done)
        failures += chain_failures
        with (logs / "verify.log").open("w") as vlog:
            verify = subprocess.run(
                [
                    *(FEDTRAIL, "audit", "verify", "--all", "--rpc-url", rpc),
                    *("--deployment", str(deployment), "--store", store),
                    # the sites' table: they took the soak's short windows
                    *("--accept", str(run_dir / names[0] / "config.toml")),
                ],
                env=env,
                stdout=vlog,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        verify_rc = verify.returncode
        if verify_rc != 0:
            failures.append(f"audit verify --all exited {verify_rc} (see {logs / 'verify.log'})")
    finally:
        for d in daemons.values():
            d.stop()
        for script in ("ipfs_daemon.sh", "anvil.sh"):
            subprocess.run(
                [str(ROOT / "scripts" / script), "stop"], env=env, capture_output=True, check=False
            )
    return {
        "sites": args.sites,
        "rounds_requested": args.rounds,
        "seed": args.seed,
        "round_seconds": args.round_seconds,
        "reveal_seconds": args.reveal_seconds,
        **figures,
        "kills_planned": args.kills,
        "kills_done": len(done),
        "kills_by_role": dict(Counter(k.role for k in done)),
        "kills_by_phase": dict(Counter(k.phase for k in done)),
        "kills": [asdict(k) for k in done],
        "restarts": {d.name: d.starts - 1 for d in daemons.values() if d.starts > 1},
        "audit_verify_exit": verify_rc,
        "setup_s": round(setup_s, 1),
        "run_s": round(run_s, 1),
        "wall_s": round(time.monotonic() - t0, 1),
        "dir": str(run_dir),
        "failures": failures,
    }


def print_table(doc: dict[str, Any]) -> None:
    print(
        f"soak: {doc['sites']} sites, {doc['rounds_requested']} rounds "
        f"(commit {doc['round_seconds']} s, reveal {doc['reveal_seconds']} s), seed {doc['seed']}"
    )
    for r in doc["rounds"]:
        print(
            f"  round {r['round']}: {r['closed']}, {r['commits']} commits, {r['reveals']} reveals"
        )
    print(f"  kills: {doc['kills_done']} of {doc['kills_planned']} planned")
    for k in doc["kills"]:
        print(f"    t={k['wall_s']:>6.1f}s  {k['target']:<11} round {k['round']} ({k['phase']})")
    print(f"  by role: {doc['kills_by_role']}; by phase: {doc['kills_by_phase']}")
    print(f"  restarts: {doc['restarts']}")
    print(f"  audit verify --all: exit {doc['audit_verify_exit']}")
    print(f"  wall {doc['wall_s']} s (setup {doc['setup_s']} s, rounds {doc['run_s']} s)")
    print(f"  logs: {doc['dir']}/logs")
    if doc["failures"]:
        print("FAIL:")
        for f in doc["failures"]:
            print(f"  - {f}")
    else:
        print("PASS: every round closed once, one commit and one reveal per site per round")


def _accept_windows(config: Path, seconds: int, reveal: int) -> None:
    """The site takes commit windows down to ``seconds`` and reveal windows down to
    ``reveal`` (the soak's are shorter than a node's default ``[accept] min_commit_seconds``,
    30 s, and ``min_reveal_seconds``, 20 s), as a federation that agreed to them writes into
    each site's config.toml."""
    doc = tomllib.loads(config.read_text(encoding="utf-8"))
    table = doc.setdefault("accept", {})
    for key, value in (("min_commit_seconds", seconds), ("min_reveal_seconds", reveal)):
        table[key] = min(value, table.get(key, value))
    config.write_text(tomli_w.dumps(doc), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument(
        "--sites", type=int, default=3, choices=range(1, len(NAMES) + 1), metavar="1..8"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kills", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--round-seconds", type=int, default=20, help="commit window (chain s)")
    ap.add_argument("--reveal-seconds", type=int, default=12, help="reveal window (chain s)")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds a killed process stays down")
    ap.add_argument("--dir", default=None, help="run folder (default: a new temporary one)")
    ap.add_argument("--format", choices=("table", "json"), default="table")
    args = ap.parse_args(argv)
    for name, low in (("rounds", 1), ("kills", 0), ("seed", 0), ("round_seconds", 10)):
        if getattr(args, name) < low:
            ap.error(f"--{name.replace('_', '-')} must be at least {low}")
    if args.reveal_seconds < 10:
        ap.error("--reveal-seconds must be at least 10 (the ledger's default minimum window)")
    if args.pause < 0:
        ap.error("--pause must be non-negative")
    doc = soak(args)
    if args.format == "json":
        print(json.dumps(doc, indent=2))
    else:
        print_table(doc)
    return 1 if doc["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
