"""scripts/flower_demo.sh end to end on the real runtime: Anvil + IPFS, a Flower SuperLink and 3
SuperNodes on 127.0.0.1, `flwr run` for 3 rounds, every round finalized on chain and `audit
verify --all` passing. One SuperNode runs a ClientApp that lies in its Flower replies (another
CID, ten times its samples; tests/flower/liar_app) and signs the lie with the site's key: in
every round it revealed, the signed lie is evidence, the site gets weight 0 with reason
CONTRADICTED, the signed reply is in the round's log, and `audit verify --all` passes."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.flower.liar_app.liar import OTHER_CID

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.anvil
@pytest.mark.ipfs
@pytest.mark.timeout(900)
def test_flower_demo_finalizes_every_round_verifies_and_a_signed_liar_gets_no_weight(
    tmp_path: Path,
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FEDTRAIL_ANVIL", "FEDTRAIL_IPFS", "IPFS_PATH", "FLWR_HOME"))
    }
    work = tmp_path / "flower"
    proc = subprocess.run(
        [
            str(ROOT / "scripts" / "flower_demo.sh"),
            "--sites",
            "3",
            "--rounds",
            "3",
            "--dir",
            str(work),
            "--round-seconds",
            "40",
            "--app",
            str(ROOT / "tests" / "flower" / "liar_app"),
            "--node-config-extra",
            "2",
            'lie="cid,num_samples"',
        ],
        capture_output=True,
        text=True,
        timeout=850,
        env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert re.search(r"PASS: \d+ checks over 3 round\(s\)", proc.stdout), out[-3000:]
    for r in (1, 2, 3):
        assert re.search(rf"^round {r}: finalized", proc.stdout, re.M), out[-3000:]
    assert "stopped everything" in proc.stdout
    liar = json.loads((work / "hospital-C" / "keystore.json").read_text())["address"].lower()
    lies = 0
    for r in (1, 2, 3):
        report = json.loads((work / "aggregator" / f"flower-round-{r}.json").read_text())
        assert report["phase"] == "finalized"
        weights = {k.lower(): int(v) for k, v in report["weights"].items()}
        for check in report["replies"]:
            site = check["reply"]["site"].lower().removeprefix("0x")
            assert check["chain_weight"] == weights.get("0x" + site, 0)
            assert check["attributable"], check  # every reply is signed by its site
            if site != liar or check["reply"]["phase"] != "revealed":
                assert check["truthful"], check
                continue
            lies += 1
            assert check["mismatches"] == ["cid", "num_samples"]
            assert check["reply"]["cid"] == OTHER_CID
            assert check["reply"]["num_samples"] == 10 * check["chain_num_samples"]
            assert check["chain_weight"] == weights["0x" + liar] == 0
            assert check["attributable"] and check["evidence"]
            assert [e["reply"]["site"].lower() for e in report["evidence"]] == ["0x" + liar]
    # the liar was in time for at least one round, so its lie was made and caught
    assert lies >= 1, "the lying site never revealed in time"
    # Nothing Flower started outlives the script.
    left = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True)
    assert left.stdout.strip() == "", left.stdout
