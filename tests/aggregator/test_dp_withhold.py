"""Attack a11 ``withhold`` through the aggregator service on the embedded chain: a DP site
reveals a composed-rule update declaring 1 micro-epsilon in round 1 and never publishes it, then
declares 1 micro-epsilon for every later update.

The round-1 update is scored 0 as MALFORMED (not retrievable); that verdict is on chain, so
from round 2 on its composed spend is ``EARLIER SPEND UNAVAILABLE`` (binding) for every reader
whose store lacks the blob: the aggregator zeroes it with the check in the log, and ``audit
verify`` replays the verdict (only the site's own declarations fail, ``privacy.spend``). An
honest DP site under the composed rule is weighted every round. Round 4 has a dishonest
aggregator: it calls the honest DP site's readable round-3 update unavailable again to zero it
(as in round 3) and pays the withholder; ``audit verify`` with a store that gives the blob
fails both rounds.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from eth_account.signers.local import LocalAccount

from fedtrail.aggregator.service import AggregatorSettings
from fedtrail.auditor.verify import RoundAudit, verify_round
from fedtrail.chain import advance_time, connect, funded_accounts, next_block_timestamp
from fedtrail.errors import ContentNotFound
from fedtrail.ledger import Ledger, Submission, commitment
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.dp_noise import allowed_signal
from fedtrail.ml.models import ModelSpec
from fedtrail.ml.training import TrainConfig, train_local
from fedtrail.node.daemon import CLOCK_SLACK
from fedtrail.protocol.codes import Phase, Reason
from fedtrail.protocol.privacy import COMPOSED, DpParams
from fedtrail.protocol.roundlog import RoundLog
from fedtrail.simulation.federation import Federation, SiteSetup, build_federation
from fedtrail.storage.codec import decode_model, encode_update
from fedtrail.storage.privacy_history import PrivacyHistory
from fedtrail.storage.store import LocalStore
from fedtrail.valuation.candidates import SpendChecker

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = ModelSpec()
SAMPLES = 150
PARAMS = DpParams(
    noise_multiplier=1.0,
    max_grad_norm=1.0,
    sample_rate=32 / SAMPLES,
    steps=5,
    delta=1e-5,
    accounting=COMPOSED,
)
NAMES = ("plain-0", "plain-1", "dp-honest", "dp-withhold")
WITHHELD: dict[str, bytes] = {}
"""The bytes of every blob the withholder revealed and never published, by CID."""


def _federation(tmp: Path) -> tuple[Federation, dict[str, LocalAccount]]:
    w3 = connect("embedded")
    accounts = funded_accounts(w3)
    sites = dict(zip(NAMES, accounts[2:6], strict=True))
    fed = build_federation(
        w3=w3,
        coordinator=accounts[0],
        aggregator=accounts[1],
        sites=[SiteSetup(account=a, name=n, max_samples=SAMPLES) for n, a in sites.items()],
        store=LocalStore(tmp / "store"),
        folder=tmp,
        validation=load_bundled().val,
        settings=AggregatorSettings(
            explain_method=None, round_seconds=60, reveal_seconds=30, dp_delta=1e-5
        ),
    )
    return fed, sites


def _with_noise(delta: dict[str, torch.Tensor], *, seed: int) -> dict[str, torch.Tensor]:
    """``delta`` with i.i.d. Gaussian noise at the ratio ``PARAMS`` declare (its norm at most
    0.8 of the signal the noise check allows): the noise check passes, the spend rule decides."""
    norm = math.sqrt(sum(float((v.double() ** 2).sum()) for v in delta.values()))
    s = norm / (0.8 * allowed_signal(PARAMS, SAMPLES))
    gen = torch.Generator().manual_seed(seed)
    return {k: v + s * torch.randn(v.shape, generator=gen) for k, v in delta.items()}


def _blobs(fed: Federation, r: int) -> dict[str, bytes]:
    """One local epoch each on the site's own shard of the bundled training split; the DP
    sites' blobs carry ``PARAMS`` (the composed rule)."""
    info = fed.ledger.get_round(r)
    start, _ = decode_model(fed.store.get(info.start_cid, info.start_sha256), spec=SPEC)
    train = load_bundled().train
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).numpy()
    out = {}
    for j, name in enumerate(NAMES):
        shard = train.subset(order[j * SAMPLES : (j + 1) * SAMPLES])
        delta = train_local(
            start, shard, spec=SPEC, config=TrainConfig(epochs=1, seed=1000 * r + j)
        ).delta
        dp = PARAMS if name.startswith("dp") else None
        if dp is not None:
            delta = _with_noise(delta, seed=1000 * r + j)
        out[name] = encode_update(delta, spec=SPEC, round=r, dp=dp).blob
    return out


def _round(
    fed: Federation,
    sites: dict[str, LocalAccount],
    *,
    withhold: bool = False,
    refused: tuple[str, ...] = (),
    hidden: frozenset[str] = frozenset(),
    pays: str | None = None,
) -> tuple[int, dict[str, str]]:
    """One round: every site commits, then reveals; the honest DP site declares the composed
    spend it computes from public data (as a node does), the withholder 1 micro-epsilon, and
    with ``withhold`` its blob is never published. ``refused`` (site names) and ``hidden``
    (earlier CIDs): updates the aggregator's store refuses while it values this round, and
    ``pays``: a site whose update it pays whatever its spend (a dishonest aggregator, or an
    unlucky one for ``refused``). Returns the round and each site's CID."""
    r = fed.service.open_next()
    blobs = _blobs(fed, r)
    for name, blob in blobs.items():
        sha = hashlib.sha256(blob).hexdigest()
        fed.ledger.commit_update(sites[name], r, commitment(sites[name].address, r, sha, SAMPLES))
    deadline = fed.ledger.get_round(r).commit_deadline
    advance_time(fed.ledger.w3, deadline - next_block_timestamp(fed.ledger.w3) + 1 + CLOCK_SLACK)
    honest = PrivacyHistory(fed.ledger, fed.store).expected_micro(
        sites["dp-honest"].address, r, PARAMS
    )
    declared = {"dp-honest": honest, "dp-withhold": 1}
    cids = {}
    for name, blob in blobs.items():
        cids[name] = cid = fed.store.put(blob)
        if withhold and name == "dp-withhold":
            store: Any = fed.store
            (store.root / "blobs" / cid).unlink()  # revealed, never published
            WITHHELD[cid] = blob
        fed.ledger.reveal_update(
            sites[name],
            r,
            cid,
            hashlib.sha256(blob).hexdigest(),
            SAMPLES,
            epsilon_micro=declared.get(name),
        )
    hidden = hidden | {cids[name] for name in refused}
    get, breach = LocalStore.get, SpendChecker.breach

    def refusing(self: LocalStore, cid: str, sha256: str, **kw: Any) -> bytes:
        if cid in hidden:
            raise ContentNotFound(f"no content {cid} (the aggregator says)")
        return get(self, cid, sha256, **kw)

    def paying(self: SpendChecker, sub: Submission, params: DpParams | None) -> str | None:
        return None if pays == sub.site else breach(self, sub, params)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LocalStore, "get", refusing)
        mp.setattr(SpendChecker, "breach", paying)
        assert fed.service.step() is None and fed.ledger.get_round(r).phase == Phase.VALUED
        outcome = fed.service.step()
    assert outcome is not None and outcome.phase == Phase.FINALIZED
    return r, cids


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Ledger, LocalStore, dict[str, str], dict[int, dict[str, str]]]]:
    """Rounds 1-3 as the attack runs them (round 3's aggregator also refuses the honest DP
    update, as if unavailable); round 4 a dishonest aggregator refuses that round-3 update
    again (zeroing the honest DP site by its history) and pays the withholder."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fed, sites = _federation(tmp_path_factory.mktemp("dp-withhold"))
        cids = {}
        _, cids[1] = _round(fed, sites, withhold=True)
        _, cids[2] = _round(fed, sites)
        _, cids[3] = _round(fed, sites, refused=("dp-honest",))
        _, cids[4] = _round(
            fed, sites, hidden=frozenset({cids[3]["dp-honest"]}), pays=sites["dp-withhold"].address
        )
        store: Any = fed.store
        yield fed.ledger, store, {n: a.address for n, a in sites.items()}, cids
    finally:
        torch.set_num_threads(before)


def _subs(ledger: Ledger, r: int, names: dict[str, str]) -> dict[str, Submission]:
    by_site = {s.site: s for s in ledger.get_submissions(r)}
    return {n: by_site[a] for n, a in names.items()}


def _failed(audit: RoundAudit) -> dict[str, str]:
    return {c.name: c.detail for c in audit.checks if c.applicable and not c.passed}


def _explanation(ledger: Ledger, store: LocalStore, r: int, site: str) -> str:
    info = ledger.get_round(r)
    entry = RoundLog.from_bytes(store.get(info.log_cid, info.log_sha256)).site(site)
    assert entry is not None and entry.status == "malformed"
    return entry.explanation


def test_the_withholder_is_zeroed_in_every_round_with_the_reason_in_the_log(
    federation: Any,
) -> None:
    ledger, store, names, cids = federation
    withholder = names["dp-withhold"]
    first = _subs(ledger, 1, names)["dp-withhold"]
    assert (first.score, first.weight, first.reason) == (0, 0, Reason.MALFORMED)
    assert "update not retrievable" in _explanation(ledger, store, 1, withholder)
    for r in (2, 3):
        subs = _subs(ledger, r, names)
        assert (subs["dp-withhold"].weight, subs["dp-withhold"].reason) == (0, Reason.MALFORMED)
        assert _explanation(ledger, store, r, withholder) == (
            f"malformed: privacy spend EARLIER SPEND UNAVAILABLE: round 1's update "
            f"{cids[1]['dp-withhold']} of {withholder} declared a spend, was scored 0 as "
            f"MALFORMED on chain and cannot be read here (no content {cids[1]['dp-withhold']} "
            f"in {store.root}): the DP parameters it claims were never shown"
        )
    # the contract charged what it declared: 1 micro-epsilon a round
    assert ledger.privacy(withholder).spent_micro == 4


def test_verify_replays_the_verdict_and_fails_only_the_withholders_declarations(
    federation: Any,
) -> None:
    ledger, store, names, _ = federation
    for r in (1, 2):
        failed = _failed(verify_round(ledger, store, r))
        assert set(failed) == {"privacy.spend"}, failed
        assert names["dp-withhold"][:10] in failed["privacy.spend"]
        assert names["dp-honest"][:10] not in failed["privacy.spend"]
    scored = next(c for c in verify_round(ledger, store, 2).checks if c.name == "privacy.scored")
    assert scored.passed and scored.detail.startswith("1 update(s)")


def test_an_honest_composed_dp_site_is_weighted_and_its_rounds_verify(federation: Any) -> None:
    ledger, store, names, _ = federation
    for r in (1, 2):
        subs = _subs(ledger, r, names)
        assert all(subs[n].reason == Reason.OK and subs[n].weight > 0 for n in NAMES[:3])
    spends = {s.site: s.epsilon_micro for s in ledger.privacy_spends(2)}
    history = PrivacyHistory(ledger, store)
    assert spends[names["dp-honest"]] == history.expected_micro(names["dp-honest"], 2, PARAMS) > 1


def test_an_aggregator_that_calls_a_readable_update_unavailable_fails_verify_every_round(
    federation: Any,
) -> None:
    """Round 3: the aggregator's store refused the honest DP update (log: not retrievable);
    round 4: it refused it again as history, zeroing the honest site's next update too. An
    auditor whose store gives the blob reads it in round 3 (``log.status``) and composes over
    it in round 4, where the honest declaration agrees (``privacy.scored``): a false
    "unavailable" is caught in the round it is claimed and in every round it is used."""
    ledger, store, names, _ = federation
    honest = names["dp-honest"]
    for r in (3, 4):
        sub = _subs(ledger, r, names)["dp-honest"]
        assert (sub.weight, sub.reason) == (0, Reason.MALFORMED)
    assert "update not retrievable" in _explanation(ledger, store, 3, honest)
    assert "EARLIER SPEND UNAVAILABLE: round 3's" in _explanation(ledger, store, 4, honest)
    three = _failed(verify_round(ledger, store, 3))
    assert f"{honest[:10]} status 'malformed', read as ok" in three["log.status"]
    four = _failed(verify_round(ledger, store, 4))
    assert f"{honest[:10]} is MALFORMED on chain, but its update reads" in four["privacy.scored"]


def test_verify_fails_an_aggregator_that_pays_the_withholder(federation: Any) -> None:
    ledger, store, names, _ = federation
    withholder = _subs(ledger, 4, names)["dp-withhold"]
    assert withholder.weight > 0 and withholder.reason == Reason.OK
    failed = _failed(verify_round(ledger, store, 4))
    assert (
        f"{withholder.site[:10]} is weighted {withholder.weight} with reason OK but its "
        "privacy spend EARLIER SPEND UNAVAILABLE"
    ) in failed["privacy.scored"]


def test_a_withheld_blob_published_after_valuation_changes_no_later_verdict(
    federation: Any, tmp_path: Path
) -> None:
    """An auditor that finds round 1's blob (the withholder published it late) reads it, and
    its declaration of 1 DIFFERS from the blob's parameters in round 1 and, composed over it,
    in round 2: binding either way, so both rounds replay as scored (the aggregator's
    "malformed" in round 1 is this audit's reading too) and only the site's declarations fail.
    Publishing late cannot turn the withholder's zeroes into the aggregator's fault."""
    ledger, store, names, cids = federation
    late = LocalStore(tmp_path / "late")
    shutil.copytree(store.root / "blobs", late.root / "blobs", dirs_exist_ok=True)
    assert late.put(WITHHELD[cids[1]["dp-withhold"]]) == cids[1]["dp-withhold"]
    for r in (1, 2):
        failed = _failed(verify_round(ledger, late, r))
        assert set(failed) == {"privacy.spend"}, failed
        assert (
            f"{names['dp-withhold'][:10]} declared epsilon 1e-06 (1 micro) but its DP "
            "parameters give"
        ) in failed["privacy.spend"]
