"""``audit verify`` never passes by silence: a document the chain names that the store does not
hold, or holds damaged, fails the check that fetches it, and every check that needs it is
listed as failed ("not checked: ..." naming that check) instead of being left out, so an
aggregator (or a site) that withholds a document cannot shrink the audit to the checks it
passes. One test per input class, each on a copy of an honest federation's store (two rounds
valued with standing, on Anvil): the input deleted or altered fails, naming the checks; the
same store with it present passes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fedtrail.auditor.verify import RoundAudit, verify_round
from fedtrail.cli import cli
from fedtrail.simulation.federation import Federation
from fedtrail.storage.store import LocalStore
from tests.auditor.peer_federation import PeerFed, new_peer_federation, peer_round
from tests.auditor.test_verify_components import fed

__all__ = ["fed"]  # the module-scoped honest federation of the components tests

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]

NEEDS_LOG_AGGREGATOR = {
    "log.schema",
    "log.agrees",
    "terms.rule",
    "terms.valuation",
    "terms.validation",
    "terms.model",
    "terms.reference",
    "log.model_spec",
    "log.status",
    "log.components",
    "reasons.screen",
    "reasons.public",
    "reasons.oversized",
    "reasons.free_rider",
    "standing.chain",
    "standing.accumulated",
    "standing.scores",
}
"""What needs the round's log in an aggregator round valued with standing."""


def _copy(fed: Federation, tmp_path: Path) -> LocalStore:
    shutil.copytree(Path(fed.store.root), tmp_path / "store")
    return LocalStore(tmp_path / "store")


def _blob(store: LocalStore, cid: str) -> Path:
    path = Path(store.root) / "blobs" / cid
    path.chmod(0o644)
    return path


def _withhold(store: LocalStore, cid: str) -> None:
    _blob(store, cid).unlink()


def _alter(store: LocalStore, cid: str) -> None:
    path = _blob(store, cid)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _failed(audit: RoundAudit) -> dict[str, str]:
    return {c.name: c.detail for c in audit.checks if c.failed}


def _unchecked(bad: dict[str, str]) -> set[str]:
    return {name for name, detail in bad.items() if detail.startswith("not checked: ")}


def test_the_honest_copy_passes(fed: Federation, tmp_path: Path) -> None:
    """The baseline every test below breaks one input of: both rounds pass on the copy, with
    the checks the withheld inputs would take away."""
    store = _copy(fed, tmp_path)
    for r in (1, 2):
        audit = verify_round(fed.ledger, store, r)
        assert audit.passed, _failed(audit)
        names = {c.name for c in audit.checks}
        assert NEEDS_LOG_AGGREGATOR | {"log.heatmaps", "global.recomputed"} <= names, names


@pytest.mark.parametrize("damage", ["withheld", "altered"])
def test_withheld_terms_fail_every_check_that_needs_them(
    fed: Federation, tmp_path: Path, damage: str
) -> None:
    store = _copy(fed, tmp_path)
    info = fed.ledger.get_round(1)  # round 1: start_model.initial needs the terms too
    (_withhold if damage == "withheld" else _alter)(store, info.terms_cid)
    bad = _failed(verify_round(fed.ledger, store, 1))
    want = "(missing)" if damage == "withheld" else "do not match the on-chain sha256"
    assert want in bad["terms.hash"] and info.terms_cid in bad["terms.hash"], bad
    needs_terms = {
        "terms.rule",
        "terms.valuation",
        "terms.validation",
        "terms.model",
        "terms.task_fixed",
        "terms.windows",
        "terms.limits",
        "duplicates",
        "start_model.initial",
    }
    assert set(bad) == {"terms.hash"} | needs_terms, bad
    assert _unchecked(bad) == needs_terms
    assert bad["duplicates"] == "not checked: the round's terms are unreadable (terms.hash)"
    # round 2 fixes its task against round 1's terms: those withheld fail it by name
    second = _failed(verify_round(fed.ledger, store, 2))
    assert set(second) == {"terms.task_fixed"}, second
    assert second["terms.task_fixed"].startswith("round 1's terms are unreadable"), second


@pytest.mark.parametrize("damage", ["withheld", "altered"])
def test_a_withheld_log_fails_every_check_that_needs_it(
    fed: Federation, tmp_path: Path, damage: str
) -> None:
    """Without the log the round still replays from the chain and the terms: the weights and
    the global model pass (global.recomputed replays the terms' rule and spec), every check
    of the log fails as not checked."""
    store = _copy(fed, tmp_path)
    info = fed.ledger.get_round(2)
    (_withhold if damage == "withheld" else _alter)(store, info.log_cid)
    audit = verify_round(fed.ledger, store, 2)
    bad = _failed(audit)
    want = "(missing)" if damage == "withheld" else "do not match the on-chain sha256"
    assert want in bad["log.hash"], bad
    assert set(bad) == {"log.hash"} | NEEDS_LOG_AGGREGATOR, bad
    assert _unchecked(bad) == NEEDS_LOG_AGGREGATOR
    assert bad["log.agrees"] == "not checked: the round's log is unavailable (log.hash)"
    assert bad["terms.rule"] == "not checked: the round's log is unavailable (log.hash)"
    passed = {c.name for c in audit.checks if c.status == "PASS"}
    assert {"terms.hash", "weights", "duplicates", "global.recomputed", "global.hash"} <= passed


def test_a_log_that_is_no_round_log_fails_like_a_withheld_one(
    fed: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes that match the chain's sha256 but are no explanation log: log.schema fails, and
    the log's checks are not checked, naming it."""
    store = _copy(fed, tmp_path)
    junk = b'{"format":"not-a-log"}'
    info = fed.ledger.get_round(2)
    forged = dataclasses.replace(
        info, log_cid=store.put(junk), log_sha256=hashlib.sha256(junk).hexdigest()
    )
    real = fed.ledger.get_round
    monkeypatch.setattr(fed.ledger, "get_round", lambda r: forged if r == 2 else real(r))
    bad = _failed(verify_round(fed.ledger, store, 2))
    assert set(bad) == NEEDS_LOG_AGGREGATOR, bad
    assert not bad["log.schema"].startswith("not checked")
    assert bad["log.status"] == (
        "not checked: the round's log is not a valid explanation log (log.schema)"
    )


def test_a_withheld_previous_log_fails_the_standing_chain(fed: Federation, tmp_path: Path) -> None:
    """Round 2's standing continues round 1's log: with that log withheld, round 2 fails
    standing.chain, and reasons.free_rider (whose history the same log carries), naming the
    log they could not read (round 1 fails log.hash)."""
    store = _copy(fed, tmp_path)
    first = fed.ledger.get_round(1)
    _withhold(store, first.log_cid)
    bad = _failed(verify_round(fed.ledger, store, 2))
    assert set(bad) == {"standing.chain", "reasons.free_rider"}, bad
    assert bad["standing.chain"].startswith("cannot read the previous round's log"), bad
    assert bad["reasons.free_rider"].startswith("cannot read the history"), bad
    assert all(first.log_cid in detail for detail in bad.values()), bad


def test_a_withheld_start_model_fails_every_check_that_needs_it(
    fed: Federation, tmp_path: Path
) -> None:
    """Round 1's start model (the seeded initial one) withheld: start_model.hash fails, and the
    replay, the initial-model check and the size and free-rider bounds are not checked."""
    store = _copy(fed, tmp_path)
    info = fed.ledger.get_round(1)
    _withhold(store, info.start_cid)
    bad = _failed(verify_round(fed.ledger, store, 1))
    needs_start = {
        "start_model.initial",
        "global.recomputed",
        "reasons.oversized",
        "reasons.free_rider",
    }
    assert set(bad) == {"start_model.hash"} | needs_start, bad
    assert _unchecked(bad) == needs_start
    why = "not checked: the start model is unavailable (start_model.hash)"
    assert all(bad[name] == why for name in needs_start), bad


def test_a_withheld_global_model_fails_global_hash(fed: Federation, tmp_path: Path) -> None:
    """Round 2's global model withheld: global.hash fails; the replay still passes (it compares
    the recomputed digest with the chain's, without the blob)."""
    store = _copy(fed, tmp_path)
    info = fed.ledger.get_round(2)
    _withhold(store, info.global_cid)
    audit = verify_round(fed.ledger, store, 2)
    bad = _failed(audit)
    assert set(bad) == {"global.hash"}, bad
    assert "(missing)" in bad["global.hash"]
    assert "global.recomputed" in {c.name for c in audit.checks if c.status == "PASS"}


def test_a_withheld_weighted_update_fails_its_update_check(fed: Federation, tmp_path: Path) -> None:
    """An update the round weighted, withheld: its update check fails (only an update the chain
    already scores 0 as unusable may be missing), and so does every check that needs it."""
    store = _copy(fed, tmp_path)
    sub = next(s for s in fed.ledger.get_submissions(2) if s.weight > 0)
    _withhold(store, sub.cid)
    bad = _failed(verify_round(fed.ledger, store, 2))
    check = f"update.{sub.site[:10]}"
    assert "(missing)" in bad[check] and f"weight {sub.weight}" in bad[check], bad
    assert "an update with weight > 0 is unavailable" in bad["global.recomputed"]
    assert "unreadable update(s)" in bad["log.components"]
    assert bad["reasons.screen"].startswith("not checked: "), bad


def test_withheld_heatmaps_fail_log_heatmaps(fed: Federation, tmp_path: Path) -> None:
    """The log names its explanation heatmaps by CID and sha256: one withheld, or altered,
    fails log.heatmaps naming it; all present pass."""
    store = _copy(fed, tmp_path)
    info = fed.ledger.get_round(2)
    doc: dict[str, Any] = json.loads(store.get(info.log_cid, info.log_sha256))
    images = doc["explanations"]["images"]
    assert len(images) >= 2
    ok = {c.name: c for c in verify_round(fed.ledger, store, 2).checks}["log.heatmaps"]
    assert ok.status == "PASS" and ok.detail.startswith(f"{len(images)} heatmap(s)"), ok
    _withhold(store, images[0]["cid"])
    _alter(store, images[1]["cid"])
    bad = _failed(verify_round(fed.ledger, store, 2))
    assert set(bad) == {"log.heatmaps"}, bad
    assert f"image 1: cannot fetch {images[0]['cid']} (missing)" in bad["log.heatmaps"]
    want = f"image 2: {images[1]['cid']}'s bytes do not match the sha256 the log names"
    assert want in bad["log.heatmaps"], bad


def test_the_cli_names_the_checks_and_exits_1(
    fed: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``audit verify --format json`` on a store that lacks round 2's terms: exit 1, and the
    JSON names terms.hash and each check not checked, as FAIL; with the terms present, exit
    0."""
    import fedtrail.auditor.commands as commands

    store = _copy(fed, tmp_path)
    monkeypatch.setattr(commands, "_open", lambda *_: fed.ledger)
    monkeypatch.setattr(commands, "open_checked_store", lambda *_, **__: store)
    args = ["audit", "verify", "--round", "2", "--format", "json"]
    honest = CliRunner().invoke(cli, args)
    assert honest.exit_code == 0, honest.output
    assert json.loads(honest.stdout)["passed"] is True
    _withhold(store, fed.ledger.get_round(2).terms_cid)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["passed"] is False
    failed = {c["check"]: c["detail"] for c in doc["checks"] if c["result"] == "FAIL"}
    assert "terms.hash" in failed and "(missing)" in failed["terms.hash"]
    assert failed["terms.limits"] == "not checked: the round's terms are unreadable (terms.hash)"
    assert {"terms.windows", "terms.task_fixed", "duplicates"} <= set(failed), failed


@pytest.fixture(scope="module")
def peer_fed(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> PeerFed:
    """Round 1 valued by the aggregator, round 2 by the sites (hand-run, a local store)."""
    tmp = tmp_path_factory.mktemp("peers-withheld")
    pf = new_peer_federation(tmp, anvil_url, LocalStore(tmp / "store"))
    peer_round(pf, seed=2)
    return pf


def test_a_withheld_peer_log_or_terms_fail_the_peer_checks(
    peer_fed: PeerFed, tmp_path: Path
) -> None:
    """A peer round's scores follow from the revealed vectors on chain, which no store can
    withhold; its log (which must repeat them) and its terms (which fix the quorum) can be.
    Withheld log: peers.votes and peers.median fail saying so, and the log's checks are not
    checked (no aggregator valuation checks: the sites scored the round). Withheld terms:
    peers.quorum fails for want of them. Present: the round passes."""
    ledger = peer_fed.fed.ledger
    shutil.copytree(Path(peer_fed.fed.store.root), tmp_path / "store")
    store = LocalStore(tmp_path / "store")
    honest = verify_round(ledger, store, 2)
    assert honest.passed, _failed(honest)
    info = ledger.get_round(2)
    _withhold(store, info.log_cid)
    bad = _failed(verify_round(ledger, store, 2))
    assert "the log has no peers block" in bad["peers.votes"], bad
    assert "no log to compare" in bad["peers.median"], bad
    needs_log = {
        "log.schema",
        "log.agrees",
        "terms.rule",
        "terms.valuation",
        "terms.validation",
        "terms.model",
        "terms.reference",
        "log.model_spec",
        "log.status",
    }
    assert _unchecked(bad) == needs_log, bad
    assert set(bad) == {"log.hash", "peers.votes", "peers.median"} | needs_log, bad
    shutil.rmtree(tmp_path / "store")
    shutil.copytree(Path(peer_fed.fed.store.root), tmp_path / "store")
    _withhold(store, info.terms_cid)
    bad = _failed(verify_round(ledger, store, 2))
    assert "no readable terms" in bad["peers.quorum"], bad
    assert "terms.hash" in bad and "terms.limits" in _unchecked(bad), bad
