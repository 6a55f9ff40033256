"""``audit verify`` against blobs the aggregator chose to hurt the auditor: a round log over
``MAX_LOG_BYTES`` is refused by the store before it is read (``log.hash``), and terms and log
naming a model spec so large that no store returns a model under it (``model.size``) decode no
blob with it: a topk8 update of a few bytes per tensor would expand to the spec's dense size."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest

from fedtrail.auditor.verify import verify_round
from fedtrail.errors import ContentNotFound
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol import roundlog
from fedtrail.protocol.roundlog import MAX_LOG_BYTES
from fedtrail.protocol.terms import RoundTerms
from fedtrail.simulation.federation import Federation
from fedtrail.storage.cid import compute_cid
from fedtrail.storage.codec import default_max_bytes
from fedtrail.storage.store import DEFAULT_MAX_BYTES
from tests.auditor.test_verify_components import _failed, fed

__all__ = ["fed"]  # the module-scoped honest federation, shared with the components tests

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]

ROUND = 2

NEEDS_TERMS = {
    "terms.rule",
    "terms.valuation",
    "terms.validation",
    "terms.model",
    "terms.task_fixed",
    "terms.windows",
    "terms.limits",
    "duplicates",
}
"""The checks of round ``ROUND`` (not a first round) that fail as not checked without terms."""


def _forge(fed: Federation, monkeypatch: pytest.MonkeyPatch, **blobs: bytes) -> None:
    """The chain's round ``ROUND`` re-pointed at ``log`` and/or ``terms`` blobs."""
    info = fed.ledger.get_round(ROUND)
    changes: dict[str, str] = {}
    for kind, blob in blobs.items():
        changes[f"{kind}_cid"] = fed.store.put(blob)
        changes[f"{kind}_sha256"] = hashlib.sha256(blob).hexdigest()
    forged = dataclasses.replace(info, **changes)
    real = fed.ledger.get_round
    monkeypatch.setattr(fed.ledger, "get_round", lambda r: forged if r == ROUND else real(r))


def test_an_oversized_log_fails_log_hash_unread(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = fed.ledger.get_round(ROUND)
    doc: dict[str, Any] = json.loads(fed.store.get(info.log_cid, info.log_sha256))
    doc["summary"] = "x" * MAX_LOG_BYTES
    _forge(fed, monkeypatch, log=roundlog.to_bytes(doc))
    bad = _failed(verify_round(fed.ledger, fed.store, ROUND))
    assert f"over the {MAX_LOG_BYTES}-byte limit" in bad["log.hash"]


def test_a_spec_no_store_can_return_decodes_nothing(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = {"arch": "smallcnn", "hidden": 2**16}  # 100M-entry fc1: 786 MiB blobs
    assert default_max_bytes(ModelSpec(**huge)) > DEFAULT_MAX_BYTES
    info = fed.ledger.get_round(ROUND)
    terms = json.loads(fed.store.get(info.terms_cid, info.terms_sha256))
    terms["model_spec"] = {**terms["model_spec"], **huge}
    log: dict[str, Any] = json.loads(fed.store.get(info.log_cid, info.log_sha256))
    log["settings"]["model_spec"] = terms["model_spec"]
    terms_blob = json.dumps(terms, sort_keys=True, separators=(",", ":")).encode()
    RoundTerms.from_bytes(terms_blob)  # well-formed terms: only the size is wrong
    _forge(fed, monkeypatch, terms=terms_blob, log=roundlog.to_bytes(log))
    audit = verify_round(fed.ledger, fed.store, ROUND)
    bad = _failed(audit)
    assert "over the store's" in bad["model.size"], bad
    assert bad["global.recomputed"] == "cannot replay: the log names no valid model spec"
    details = [c.detail for c in audit.checks if c.name.startswith("update.")]
    assert details and all("not decoded: no spec" in d for d in details), details


def _terms(fed: Federation) -> dict[str, Any]:
    info = fed.ledger.get_round(ROUND)
    doc: dict[str, Any] = json.loads(fed.store.get(info.terms_cid, info.terms_sha256))
    return doc


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def test_terms_the_chain_points_at_must_be_this_rounds_terms(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The terms blob the chain pins at open is fetched, parsed and must name the round: JSON
    that is not terms fails ``terms.hash``, and every check that needs the terms fails as not
    checked; the terms of round 99 fail ``terms.hash`` and, since the log names the terms it
    was written under, ``terms.reference``."""
    _forge(fed, monkeypatch, terms=b'{"hello":"world"}')
    bad = _failed(verify_round(fed.ledger, fed.store, ROUND))
    # the log names the terms it ran under, not these (terms.reference needs only the log)
    assert set(bad) == {"terms.hash", "terms.reference"} | NEEDS_TERMS, bad
    assert "round terms are not fedtrail.round-terms/1" in bad["terms.hash"]
    monkeypatch.undo()
    _forge(fed, monkeypatch, terms=_canonical({**_terms(fed), "round": 99}))
    bad = _failed(verify_round(fed.ledger, fed.store, ROUND))
    assert set(bad) == {"terms.hash", "terms.reference"}, bad
    assert bad["terms.hash"] == "the committed terms name round 99"


def test_a_log_naming_other_terms_fails_terms_reference(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log whose terms reference is not the chain's (here: the same terms with another seed,
    stored beside them) fails ``terms.reference``, naming both hashes."""
    info = fed.ledger.get_round(ROUND)
    log: dict[str, Any] = json.loads(fed.store.get(info.log_cid, info.log_sha256))
    other = _canonical({**_terms(fed), "seed": 12345})
    log["settings"]["terms"] = {
        "cid": fed.store.put(other),
        "sha256": hashlib.sha256(other).hexdigest(),
    }
    _forge(fed, monkeypatch, log=roundlog.to_bytes(log))
    bad = _failed(verify_round(fed.ledger, fed.store, ROUND))
    assert set(bad) == {"terms.reference"}, bad
    want = hashlib.sha256(other).hexdigest()[:16]
    assert bad["terms.reference"].startswith(f"log names terms {want}")
    assert info.terms_sha256[:16] in bad["terms.reference"]


def test_terms_missing_from_the_store_fail_terms_hash(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Terms the chain pins but no store holds (the aggregator committed a hash and never put
    the blob, or dropped it): ``terms.hash`` fails naming the CID it could not fetch, so the
    round does not pass; every check that needs the terms is listed as failed, not checked
    (none is left out: a withheld document cannot shrink the audit), and the others still
    run."""
    blob = _canonical({**_terms(fed), "seed": 4242})  # well-formed terms nobody stored
    cid = compute_cid(blob)
    with pytest.raises(ContentNotFound):
        fed.store.get(cid, hashlib.sha256(blob).hexdigest())
    info = fed.ledger.get_round(ROUND)
    forged = dataclasses.replace(info, terms_cid=cid, terms_sha256=hashlib.sha256(blob).hexdigest())
    real = fed.ledger.get_round
    monkeypatch.setattr(fed.ledger, "get_round", lambda r: forged if r == ROUND else real(r))
    audit = verify_round(fed.ledger, fed.store, ROUND)
    bad = _failed(audit)
    # the log names the terms it ran under, not the missing ones the chain was re-pointed at
    assert set(bad) == {"terms.hash", "terms.reference"} | NEEDS_TERMS, bad
    assert bad["terms.hash"].startswith(f"cannot fetch {cid} (missing)"), bad
    assert not audit.passed
    for name in NEEDS_TERMS:
        assert bad[name] == "not checked: the round's terms are unreadable (terms.hash)", name
    # the rest of the round is still verified against the chain
    passed = {c.name for c in audit.checks if c.status == "PASS"}
    assert {"log.hash", "weights", "global.recomputed", "global.hash"} <= passed
