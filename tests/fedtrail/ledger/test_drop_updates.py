"""The ledger client's drop_updates: one ``dropUpdates`` transaction when a valued peer round
drops withheld and screened updates together, the old single functions for one kind, refusals
before anything is sent, and the two calls on a ledger deployed before ``dropUpdates`` (the
contract's rules are in tests/contracts/test_drop_updates.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from web3 import Web3

from fedtrail.errors import ConfigError
from fedtrail.ledger import Ledger
from fedtrail.ledger.artifact import Artifact
from fedtrail.protocol.codes import Reason
from tests.contracts.federation import MAX_SAMPLES, Fed
from tests.contracts.test_peer_scoring import _valued_peer_round
from tests.fixtures.chain import ChainEnv

ROOT = Path(__file__).resolve().parents[3]
BEFORE_DROP_UPDATES = "2ff914533a129bdde53f2c190aac4411967504b1"
"""main before dropUpdates (session 59): its committed artifact is a ledger without it."""


def _selector(signature: str) -> bytes:
    return bytes(Web3.keccak(text=signature))[:4]


DROP_UPDATES = _selector("dropUpdates(uint256,address[],address[],address[])")
DROP_WITHHELD = _selector("dropWithheld(uint256,address[],address[])")
DROP_SCREENED = _selector("dropScreened(uint256,address[],address[])")


def _sent(fed: Fed, tx_hash: str) -> bytes:
    """The selector of the transaction ``tx_hash``."""
    return bytes(fed.w3.eth.get_transaction(tx_hash)["input"])[:4]  # type: ignore[arg-type]


def _dropped(fed: Fed, round_id: int) -> dict[str, Reason]:
    return {s.site: s.reason for s in fed.ledger.get_submissions(round_id) if s.score == 0}


@pytest.fixture
def fed(embedded: ChainEnv) -> Fed:
    return Fed(embedded)


def test_both_kinds_go_in_one_drop_updates_transaction(fed: Fed) -> None:
    round_id, sites = _valued_peer_round(fed)
    fed.past_score_reveal(round_id)
    assert fed.ledger.has_drop_updates()
    results = fed.ledger.drop_updates(
        fed.agg, round_id, sites[::-1], withheld=[sites[2]], screened=[sites[0].lower()]
    )
    assert len(results) == 1 and _sent(fed, results[0].tx_hash) == DROP_UPDATES
    assert _dropped(fed, round_id) == {sites[0]: Reason.FREE_RIDER, sites[2]: Reason.WITHHELD}


@pytest.mark.parametrize(
    ("kind", "selector"),
    [("withheld", DROP_WITHHELD), ("screened", DROP_SCREENED)],
    ids=["withheld", "screened"],
)
def test_one_kind_is_the_single_function_an_old_ledger_has_too(
    fed: Fed, kind: str, selector: bytes
) -> None:
    round_id, sites = _valued_peer_round(fed)
    fed.past_score_reveal(round_id)
    results = fed.ledger.drop_updates(fed.agg, round_id, sites, **{kind: [sites[1]]})
    assert [_sent(fed, r.tx_hash) for r in results] == [selector]
    reason = Reason.WITHHELD if kind == "withheld" else Reason.FREE_RIDER
    assert _dropped(fed, round_id) == {sites[1]: reason}


def test_nothing_to_drop_or_a_site_in_both_lists_is_refused_before_sending(fed: Fed) -> None:
    round_id, sites = _valued_peer_round(fed)
    fed.past_score_reveal(round_id)
    nonce = fed.w3.eth.get_transaction_count(fed.agg.address)
    with pytest.raises(ConfigError, match="no update to drop"):
        fed.ledger.drop_updates(fed.agg, round_id, sites)
    with pytest.raises(ConfigError, match="both as withheld and as screened"):
        fed.ledger.drop_updates(
            fed.agg, round_id, sites, withheld=[sites[1]], screened=[sites[0], sites[1].lower()]
        )
    assert fed.w3.eth.get_transaction_count(fed.agg.address) == nonce
    assert _dropped(fed, round_id) == {}


def _old_artifact(tmp_path: Path) -> Artifact:
    """The artifact committed at :data:`BEFORE_DROP_UPDATES` (from this clone's history)."""
    try:
        raw = subprocess.run(
            ["git", "show", f"{BEFORE_DROP_UPDATES}:contracts/build/FederationLedger.json"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the artifact before dropUpdates is not in this clone's history: {exc}")
    path = tmp_path / "FederationLedger.json"
    path.write_bytes(raw)
    return Artifact.load(path)


def test_a_ledger_deployed_before_drop_updates_gets_the_two_calls(fed: Fed, tmp_path: Path) -> None:
    """The real contract before the change, deployed from its own artifact: no dropUpdates in
    its ABI nor its code, so drop_updates sends dropWithheld then dropScreened and the round
    ends as with dropUpdates. A client holding the new artifact but made directly on the old
    address (connect refuses it) reads the code and finds no selector either."""
    old = _old_artifact(tmp_path)
    assert not any(item.get("name") == "dropUpdates" for item in old.abi)
    ledger, _ = Ledger.deploy(
        fed.w3, fed.coord, aggregator=fed.agg.address, min_round_window=10, artifact=old
    )
    for i, site in enumerate(fed.sites):
        ledger.register_site(fed.coord, site.address, f"hospital-{i}", MAX_SAMPLES)
    fed.ledger = ledger
    round_id, sites = _valued_peer_round(fed)
    fed.past_score_reveal(round_id)
    assert not ledger.has_drop_updates()
    current = Ledger(fed.w3, ledger.address, ledger.chain_id, Artifact.load())
    assert not current.has_drop_updates()
    results = ledger.drop_updates(
        fed.agg, round_id, sites, withheld=[sites[2]], screened=[sites[0]]
    )
    assert [_sent(fed, r.tx_hash) for r in results] == [DROP_WITHHELD, DROP_SCREENED]
    assert _dropped(fed, round_id) == {sites[0]: Reason.FREE_RIDER, sites[2]: Reason.WITHHELD}
    assert [s.weight for s in ledger.get_submissions(round_id)] == [0, 10**18, 0]
