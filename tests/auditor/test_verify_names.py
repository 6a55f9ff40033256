"""``sites.names``: verify fails a round whose registry holds two names that read alike (a
coordinator registered ``hospital-\\u0430``, a Cyrillic ``a``, beside ``hospital-a``), naming both
addresses with the mixed-script name escaped; every other check is unmoved."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import check_names, verify_round
from fedtrail.chain import connect, dev_account
from fedtrail.ml.datasets import load_bundled, partition_iid
from fedtrail.ml.training import TrainConfig
from fedtrail.simulation.federation import build_federation, make_sites
from fedtrail.storage.store import LocalStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LATIN, CYRILLIC = "hospital-a", "hospital-\u0430"


def test_check_names_names_each_lookalike_pair() -> None:
    name, passed, detail = check_names({"0xB": CYRILLIC, "0xA": LATIN, "0xC": "clinic"})
    assert (name, passed) == ("sites.names", False)
    assert "'hospital-a' (0xA) ~ 'hospital-\\u0430' (0xB)" in detail
    assert "clinic" not in detail
    _, _, detail = check_names({"0xA": "H\u00f4pital", "0xB": "Ho\u0302pital"})  # NFC, NFD
    assert "'H\\u00f4pital' (0xA) ~ 'Ho\\u0302pital' (0xB)" in detail
    name, passed, detail = check_names({"0xA": LATIN, "0xC": "clinic", "0xD": ""})
    assert passed and "3 registered name(s) read apart" in detail


@pytest.mark.anvil
def test_verify_fails_a_round_registered_with_a_lookalike(anvil_url: str, tmp_path: Path) -> None:
    w3 = connect(anvil_url)
    accounts = [dev_account(i) for i in (0, 5, 6, 7)]
    splits = load_bundled()
    parts = partition_iid(splits.train.labels, 10, seed=0)
    store = LocalStore(tmp_path / "store")
    fed = build_federation(
        w3=w3,
        coordinator=accounts[0],
        sites=make_sites(
            accounts[1:],
            [splits.train.subset(parts[i]) for i in range(3)],
            names=[LATIN, CYRILLIC, "plain"],
            training=TrainConfig(epochs=1),
        ),
        store=store,
        folder=tmp_path,
        validation=splits.val,
        settings=AggregatorSettings(valuation="loo"),
    )
    fed.run_round()
    audit = verify_round(fed.ledger, store, 1)
    failed = [c for c in audit.checks if c.failed]
    assert [c.name for c in failed] == ["sites.names"], [(c.name, c.detail) for c in failed]
    latin, cyrillic = accounts[1].address, accounts[2].address
    assert f"'hospital-a' ({latin})" in failed[0].detail
    assert f"'hospital-\\u0430' ({cyrillic})" in failed[0].detail


@pytest.mark.anvil
def test_a_lookalike_registered_late_is_flagged_where_no_round_holds_it(
    anvil_url: str, tmp_path: Path
) -> None:
    """a62: registered while round 1 is open, the look-alike fails that round's sites.names;
    ``audit verify`` warns about the registry as it stands (exit 1 here: round 1 fails)."""
    from click.testing import CliRunner

    from fedtrail.cli import cli
    from fedtrail.ledger import Ledger

    ledger, _ = Ledger.deploy(connect(anvil_url), dev_account(0))
    latin, cyrillic = dev_account(5).address, dev_account(6).address
    ledger.register_site(dev_account(0), latin, LATIN, 100)
    store = LocalStore(tmp_path / "store")
    terms = store.put(b"{}")
    ledger.open_round(
        dev_account(0),
        store.put(b"model"),
        "ab" * 32,
        terms_cid=terms,
        terms_sha256="cd" * 32,
        commit_seconds=600,
        reveal_seconds=600,
    )
    before = verify_round(ledger, store, 1)
    assert not any(c.failed for c in before.checks if c.name == "sites.names")
    ledger.register_site(dev_account(0), cyrillic, CYRILLIC, 100)
    after = {c.name: c for c in verify_round(ledger, store, 1).checks}
    assert after["sites.names"].failed
    r = CliRunner().invoke(
        cli,
        [
            "audit", "verify", "--rpc-url", anvil_url, "--contract", ledger.address,
            "--store", f"local:{tmp_path / 'store'}",
        ],
    )  # fmt: skip
    assert r.exit_code == 1
    assert r.stderr.startswith("warning: registered names read alike: ")
    assert f"'hospital-a' ({latin})" in r.stderr
    assert f"'hospital-\\u0430' ({cyrillic})" in r.stderr
