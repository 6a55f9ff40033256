"""`fedtrail audit privacy` (issue 16): every declared spend is recomputed from the DP
parameters in its update blob. An honest federation passes; a misreported epsilon, a DP update
revealed without its spend, a spend declared without parameters and an unreadable blob each
fail, naming the round and the site (an unreadable blob the chain scored 0 as unusable is named
and passes: it reached no model, a58); so do DP parameters accounted at another delta than the
round's terms fix, and an update without them when the terms require DP; exit 1 then."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from eth_account.signers.local import LocalAccount

from fedtrail.auditor.privacy import PrivacyAudit, Status, audit_privacy
from fedtrail.chain import connect
from fedtrail.cli import cli
from fedtrail.ledger import commitment
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.privacy import epsilon_composed, epsilon_spent
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.privacy import DpParams, to_micro
from fedtrail.protocol.terms import PrivacyTerms, RoundTerms
from fedtrail.storage.codec import encode_update, zero_state
from fedtrail.storage.store import LocalStore
from fedtrail.valuation.combine import Combiner
from tests.contracts.federation import Fed
from tests.fixtures.chain import _env

pytestmark = pytest.mark.anvil

SPEC = ModelSpec()
P1 = DpParams(noise_multiplier=1.1, max_grad_norm=1.0, sample_rate=0.05, steps=40, delta=1e-5)
P2 = DpParams(noise_multiplier=0.8, max_grad_norm=1.0, sample_rate=0.1, steps=20, delta=1e-5)


@dataclass
class World:
    fed: Fed
    store: LocalStore
    store_dir: Path
    rpc_url: str

    def open(self, privacy: PrivacyTerms | None = None) -> int:
        r = self.fed.ledger.current_round() + 1
        terms = RoundTerms(
            round=r,
            aggregation_rule={"name": "weighted"},
            valuation={"method": "loo", "metric": "balanced_loss", "combiner": asdict(Combiner())},
            model_spec=SPEC.to_json(),
            spec_hash=SPEC.spec_hash(),
            seed=0,
            validation_sha256="0" * 64,
            validation_images=1,
            commit_seconds=600,
            reveal_seconds=600,
            privacy=privacy,
        ).to_bytes()
        self.fed.w3.eth.get_block("latest")["timestamp"]
        round_id, _ = self.fed.ledger.open_round(
            self.fed.agg,
            self.store.put(b"start model"),
            hashlib.sha256(b"start model").hexdigest(),
            terms_cid=self.store.put(terms),
            terms_sha256=hashlib.sha256(terms).hexdigest(),
            commit_seconds=600,
            reveal_seconds=600,
        )
        assert round_id == r
        return r

    def submit(self, r: int, plan: list[tuple[LocalAccount, DpParams | None, int | None]]) -> None:
        """Each site encodes an update (with ``params`` in its metadata when given), commits,
        and after the commit window reveals declaring ``declared`` (None: a plain reveal)."""
        blobs = []
        for i, (site, params, _) in enumerate(plan):
            delta = {k: torch.full_like(v, 0.001 * (i + 1)) for k, v in zero_state(SPEC).items()}
            blob = encode_update(delta, spec=SPEC, round=r, dp=params).blob
            sha = hashlib.sha256(blob).hexdigest()
            blobs.append((self.store.put(blob), sha))
            self.fed.ledger.commit_update(site, r, commitment(site.address, r, sha, 100))
        self.fed.past_commit(r)
        for (site, _, declared), (cid, sha) in zip(plan, blobs, strict=True):
            self.fed.ledger.reveal_update(site, r, cid, sha, 100, epsilon_micro=declared)

    def close(self, r: int) -> None:
        self.fed.past_reveal(r)
        self.fed.ledger.cancel_round(self.fed.agg, r)

    def cli(self, *extra: str) -> Result:
        return CliRunner().invoke(
            cli,
            [
                "audit",
                "privacy",
                "--rpc-url",
                self.rpc_url,
                "--contract",
                self.fed.ledger.address,
                "--store",
                f"local:{self.store_dir}",
                *extra,
            ],
        )


def spend(params: DpParams) -> int:
    return to_micro(epsilon_spent(params))


def world(anvil_url: str, tmp: Path) -> World:
    store_dir = tmp / "store"
    fed = Fed(_env("anvil", connect(anvil_url)))
    return World(fed, LocalStore(store_dir), store_dir, anvil_url)


@pytest.fixture(scope="module")
def honest(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Two rounds: a site with a budget reveals DP updates declaring their exact spend; a
    site without DP reveals plain updates."""
    w = world(anvil_url, tmp_path_factory.mktemp("honest"))
    a, b = w.fed.sites[0], w.fed.sites[1]
    w.fed.ledger.set_privacy_budget(w.fed.coord, a.address, 40_000_000)
    for params in (P1, P2):
        r = w.open()
        w.submit(r, [(a, params, spend(params)), (b, None, None)])
        w.close(r)
    return w


@pytest.fixture(scope="module")
def cheating(anvil_url: str, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Round 1: a misreported epsilon (half the spend) and a DP update revealed plain; round 2:
    a spend declared for an update without DP parameters, and an honest update whose blob
    then disappears from the store."""
    w = world(anvil_url, tmp_path_factory.mktemp("cheating"))
    a, b, c = w.fed.sites
    r1 = w.open()
    w.submit(r1, [(a, P1, spend(P1) // 2), (b, P2, None), (c, None, None)])
    w.close(r1)
    r2 = w.open()
    w.submit(r2, [(a, P1, spend(P1)), (b, None, 1_000_000), (c, P2, spend(P2))])
    w.close(r2)
    sub = w.fed.ledger.get_submission(r2, c.address)
    assert sub is not None
    (w.store_dir / "blobs" / sub.cid).unlink()  # LocalStore's layout: blobs/<cid>
    return w


def statuses(result: PrivacyAudit) -> dict[tuple[int, str], str]:
    return {(u.round, u.site): u.status for u in result.updates}


def test_an_honest_federation_passes_with_every_spend_recomputed(honest: World) -> None:
    a, b = honest.fed.sites[0].address, honest.fed.sites[1].address
    result = audit_privacy(honest.fed.ledger, honest.store)
    assert result.passed, result.problems
    assert statuses(result) == {
        (1, a): Status.AGREES,
        (1, b): Status.NOT_PRIVATE,
        (2, a): Status.AGREES,
        (2, b): Status.NOT_PRIVATE,
    }
    mine = [u for u in result.updates if u.site == a]
    assert [u.recomputed_micro for u in mine] == [spend(P1), spend(P2)]
    assert [u.total_micro for u in mine] == [spend(P1), spend(P1) + spend(P2)]
    (site_a,) = [s for s in result.sites if s.site == a]
    assert (site_a.budget_micro, site_a.spent_micro) == (40_000_000, spend(P1) + spend(P2))
    assert site_a.composed_epsilon == epsilon_composed([P1, P2])
    assert site_a.composed_epsilon < (spend(P1) + spend(P2)) / 1e6  # RDP is tighter
    (site_b,) = [s for s in result.sites if s.site == b]
    assert (site_b.spent_micro, site_b.composed_epsilon) == (0, None)


def test_the_cli_prints_the_accounts_and_exits_0_when_honest(honest: World) -> None:
    r = honest.cli()
    assert r.exit_code == 0, r.output
    assert "PASS: 4 update(s) (2 agrees, 2 not private)" in r.output
    assert "hospital-0" in r.output and "40.0000" in r.output
    r = honest.cli("--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["passed"] and doc["read_blobs"] and doc["problems"] == []
    assert doc["updates"][0]["params"] == P1.to_json()
    assert doc["sites"][0]["budget_epsilon"] == 40.0


def test_each_misreport_fails_naming_round_and_site(cheating: World) -> None:
    a, b, c = (s.address for s in cheating.fed.sites)
    result = audit_privacy(cheating.fed.ledger, cheating.store)
    assert not result.passed
    assert statuses(result) == {
        (1, a): Status.DIFFERS,  # declared half its spend
        (1, b): Status.DIFFERS,  # a DP update revealed without its spend
        (1, c): Status.NOT_PRIVATE,
        (2, a): Status.AGREES,
        (2, b): Status.NO_PARAMETERS,  # a spend nothing backs
        (2, c): Status.UNREADABLE,  # the blob is gone: the spend cannot be checked
    }
    details = {(u.round, u.site): u.detail for u in result.updates}
    assert details[(1, a)] == (
        f"its DP parameters spend {spend(P1)} micro-epsilon; declared {spend(P1) // 2}"
    )
    assert details[(1, b)] == f"its DP parameters spend {spend(P2)} micro-epsilon; a plain reveal"
    assert len(result.problems) == 4
    assert all(s.problems == () for s in result.sites)  # the accounts match their events


def test_the_cli_exits_1_on_a_misreport(cheating: World) -> None:
    r = cheating.cli()
    assert r.exit_code == 1, r.output
    assert "FAIL: 6 update(s)" in r.output and "DIFFERS" in r.output
    doc = json.loads(cheating.cli("--format", "json").output)
    assert doc["passed"] is False and len(doc["problems"]) == 4


def test_declared_only_shows_the_chain_without_reading_blobs(cheating: World) -> None:
    result = audit_privacy(cheating.fed.ledger, None)
    assert result.passed and not result.read_blobs
    assert set(statuses(result).values()) == {Status.NOT_READ}
    declared = {(u.round, u.site): u.declared_micro for u in result.updates}
    assert declared[(2, cheating.fed.sites[1].address)] == 1_000_000
    r = cheating.cli("--declared-only")
    assert r.exit_code == 0 and "blobs not read (--declared-only)" in r.output


def test_a_terms_delta_above_one_over_n_is_flagged(anvil_url: str, tmp_path: Path) -> None:
    """The terms' delta is the aggregator's choice: parameters that agree with terms of delta
    0.05 still do not pass for a site of 100 samples (a delta above 1/n lets an image leak)."""
    w = world(anvil_url, tmp_path)
    a = w.fed.sites[0]
    loose = DpParams(
        noise_multiplier=1.1, max_grad_norm=1.0, sample_rate=0.05, steps=40, delta=0.05
    )
    r = w.open(PrivacyTerms(delta=0.05))
    w.submit(r, [(a, loose, spend(loose))])
    result = audit_privacy(w.fed.ledger, w.store)
    assert statuses(result) == {(r, a.address): Status.LOOSE_DELTA}
    assert result.updates[0].detail == "accounted at delta 0.05 > 1 / its 100 samples"
    assert not result.passed


def test_the_terms_delta_and_required_dp_are_enforced(anvil_url: str, tmp_path: Path) -> None:
    """A larger delta buys a smaller epsilon for the same training: parameters accounted at
    another delta than the terms' fail even when the declared spend matches them."""
    w = world(anvil_url, tmp_path)
    a, b, c = w.fed.sites
    loose = DpParams(noise_multiplier=1.1, max_grad_norm=1.0, sample_rate=0.05, steps=40, delta=0.1)
    assert spend(loose) < spend(P1)
    r = w.open(PrivacyTerms(delta=1e-5, required=True))
    w.submit(r, [(a, P1, spend(P1)), (b, loose, spend(loose)), (c, None, None)])
    result = audit_privacy(w.fed.ledger, w.store)
    assert statuses(result) == {
        (r, a.address): Status.AGREES,
        (r, b.address): Status.WRONG_DELTA,
        (r, c.address): Status.DP_REQUIRED,
    }
    details = {u.site: u.detail for u in result.updates}
    assert details[b.address] == "accounted at delta 0.1; the terms fix 1e-05"
    assert not result.passed and len(result.problems) == 2


def _valued_with_a_lost_blob(
    anvil_url: str, tmp: Path, *, lost_reason: Reason, a_declares: int, c_private: bool = False
) -> tuple[World, PrivacyAudit]:
    """One round: a (DP, declaring ``a_declares``), b (plain) and c (plain, or DP declaring its
    spend with ``c_private``) reveal; c's blob then disappears from the store (a58: a reveal
    under a CID no store gives) and the aggregator values the round, c under ``lost_reason``
    (weight 0 unless OK)."""
    w = world(anvil_url, tmp)
    a, b, c = w.fed.sites
    r = w.open()
    c_plan = (c, P2, spend(P2)) if c_private else (c, None, None)
    w.submit(r, [(a, P1, a_declares), (b, None, None), c_plan])
    sub = w.fed.ledger.get_submission(r, c.address)
    assert sub is not None
    (w.store_dir / "blobs" / sub.cid).unlink()
    w.fed.past_reveal(r)
    ok = int(Reason.OK)
    score_c = 900_000 if lost_reason == Reason.OK else 0
    w.fed.value(r, [900_000, 900_000, score_c], [ok, ok, int(lost_reason)])
    return w, audit_privacy(w.fed.ledger, w.store)


def test_an_unreadable_update_scored_unusable_is_named_and_the_rest_checked(
    anvil_url: str, tmp_path: Path
) -> None:
    w, result = _valued_with_a_lost_blob(
        anvil_url, tmp_path / "honest", lost_reason=Reason.MALFORMED, a_declares=spend(P1)
    )
    a, b, c = (s.address for s in w.fed.sites)
    assert statuses(result) == {
        (1, a): Status.AGREES,
        (1, b): Status.NOT_PRIVATE,
        (1, c): Status.UNUSED,  # was UNREADABLE: the whole audit failed on it
    }
    assert result.passed, result.problems
    (lost,) = [u for u in result.updates if u.site == c]
    assert "scored MALFORMED with weight 0 on chain" in lost.detail
    assert "it declared no spend" in lost.detail
    r = w.cli()
    assert r.exit_code == 0 and Status.UNUSED in r.output, r.output
    # the other sites' spends are still checked: a misreport beside the lost blob fails alone
    _, result = _valued_with_a_lost_blob(
        anvil_url, tmp_path / "misreport", lost_reason=Reason.MALFORMED, a_declares=1
    )
    assert statuses(result)[(1, a)] == Status.DIFFERS
    assert statuses(result)[(1, c)] == Status.UNUSED
    assert [p.split(":")[0] for p in result.problems] == [f"round 1 {a}"]


def test_an_unreadable_update_the_chain_weighted_or_that_declared_a_spend_still_fails(
    anvil_url: str, tmp_path: Path
) -> None:
    """The aggregator read it (weight > 0): the blob is missing from this store only, so its
    spend is unchecked, and that fails as before; so does an unpaid one declaring a spend."""
    w, result = _valued_with_a_lost_blob(
        anvil_url, tmp_path, lost_reason=Reason.OK, a_declares=spend(P1)
    )
    c = w.fed.sites[2].address
    assert statuses(result)[(1, c)] == Status.UNREADABLE and not result.passed
    # a spend declared for a blob no one can read fails even when unpaid (as verify's
    # privacy.spend does: a11's withheld DP blob)
    w, result = _valued_with_a_lost_blob(
        anvil_url, tmp_path / "declared", lost_reason=Reason.MALFORMED, a_declares=spend(P1),
        c_private=True,
    )  # fmt: skip
    c = w.fed.sites[2].address
    assert statuses(result)[(1, c)] == Status.UNREADABLE and not result.passed
