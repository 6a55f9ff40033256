"""Signed Flower replies (fedtrail.protocol.evidence): only the site's key makes evidence, any
altered field breaks the signature, the binding to chain/ledger/round/site is checked, and only
a reply claiming a reveal the chain contradicts is evidence."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace

import pytest
from eth_account import Account

from fedtrail.protocol.evidence import (
    ChainUpdate,
    Evidence,
    InvalidEvidence,
    SignedReply,
    applicable,
    contradictions,
    evidence_problems,
    recover_signer,
    reply_text,
    sign_reply,
)
from fedtrail.protocol.roundlog import InvalidLog, RoundLog

SITE = Account.from_key("0x" + "11" * 32)
OTHER = Account.from_key("0x" + "22" * 32)
LEDGER = "0x" + "ab" * 20
CHAIN = ChainUpdate(cid="QmTrue", sha256="0x" + "aa" * 32, num_samples=100)


def _reply(**kw: object) -> SignedReply:
    fields: dict[str, object] = {
        "chain_id": 31337,
        "ledger": LEDGER,
        "round": 3,
        "phase": "revealed",
        "site": SITE.address,
        "cid": "QmTrue",
        "sha256": "aa" * 32,
        "num_samples": 1000,
    }
    fields.update(kw)
    return SignedReply(**fields)  # type: ignore[arg-type]


def _problems(reply: SignedReply, chain: ChainUpdate | None = CHAIN) -> list[str]:
    return evidence_problems(
        reply, chain_id=31337, ledger=LEDGER, round_id=3, site=SITE.address, chain=chain
    )


def test_the_signed_text_is_domain_separated_and_names_every_field() -> None:
    text = reply_text(_reply())
    assert text.splitlines()[0] == "fedtrail flower reply v1"
    for part in ("chain_id: 31337", f"ledger: {_reply().ledger}", "round: 3", "phase: revealed"):
        assert part in text.splitlines()
    assert f"site: {SITE.address}" in text and "num_samples: 1000" in text


def test_a_site_signed_lie_is_evidence_and_recovers_to_the_site() -> None:
    signed = sign_reply(SITE, _reply())
    assert recover_signer(signed) == SITE.address
    assert contradictions(signed, CHAIN) == ("num_samples",)
    assert _problems(signed) == []
    # the log's record round-trips
    ev = Evidence(reply=signed, contradicts=("num_samples",))
    assert Evidence.from_json(ev.to_json()) == ev


@pytest.mark.parametrize(
    "change",
    [{"num_samples": 10}, {"cid": "QmOther"}, {"round": 4}, {"chain_id": 1}, {"phase": "none"}],
)
def test_any_altered_field_breaks_the_signature(change: dict[str, object]) -> None:
    signed = sign_reply(SITE, _reply())
    forged = replace(signed, **change)  # type: ignore[arg-type]
    assert recover_signer(forged) != SITE.address
    assert _problems(forged)


def test_unsigned_or_other_key_or_wrong_binding_is_not_evidence() -> None:
    assert _problems(_reply()) == ["unsigned"]
    by_other = replace(_reply(), signature=sign_reply(OTHER, _reply(site=OTHER.address)).signature)
    assert any("recovers to" in p for p in _problems(by_other))
    with pytest.raises(InvalidEvidence, match="cannot sign"):
        sign_reply(OTHER, _reply())
    junk = replace(_reply(), signature="0x1234")
    assert recover_signer(junk) is None
    wrong_round = sign_reply(SITE, _reply(round=2))
    assert any("round 2" in p for p in _problems(wrong_round))


def test_only_a_contradicted_reveal_is_evidence() -> None:
    truthful = sign_reply(SITE, _reply(num_samples=100, sha256="0x" + "AA" * 32))
    assert contradictions(truthful, CHAIN) == ()
    assert _problems(truthful) == ["the reply agrees with the chain (or claims no reveal)"]
    committed = sign_reply(SITE, _reply(phase="committed"))
    assert contradictions(committed, CHAIN) == () and _problems(committed)
    no_reveal_on_chain = sign_reply(SITE, _reply())
    assert contradictions(no_reveal_on_chain, None) == ("phase",)
    assert _problems(no_reveal_on_chain, None) == []


def test_malformed_replies_are_refused() -> None:
    with pytest.raises(InvalidEvidence):
        SignedReply.from_json({**_reply().to_json(), "extra": 1})
    with pytest.raises(InvalidEvidence):
        _reply(site="nobody")
    with pytest.raises(InvalidEvidence):
        _reply(num_samples=-1)
    with pytest.raises(InvalidEvidence):
        _reply(cid="a\nb")


def test_a_log_carries_evidence_and_one_without_keeps_its_bytes() -> None:
    from tests.fedtrail.protocol.test_roundlog import _record

    plain = _record()
    assert "evidence" not in plain.to_json()  # older logs: same fields, same bytes
    ev = Evidence(reply=sign_reply(SITE, _reply()), contradicts=("num_samples",))
    with_ev = dataclasses.replace(plain, evidence=(ev,))
    blob = with_ev.to_bytes()
    back = RoundLog.from_bytes(blob)
    assert back.evidence == (ev,) and back.to_bytes() == blob
    assert RoundLog.from_bytes(plain.to_bytes()).evidence == ()
    doc = json.loads(blob)
    doc["evidence"][0]["reply"]["extra"] = 1
    with pytest.raises(InvalidLog, match="evidence/0/reply"):
        RoundLog.from_json(doc)


def test_applicable_keeps_one_valid_reply_per_site_with_a_revealed_update() -> None:
    lie = sign_reply(SITE, _reply())
    lie2 = sign_reply(SITE, _reply(cid="QmOther"))
    forged = replace(_reply(site=OTHER.address), signature=lie.signature)
    found = applicable(
        [_reply(), forged, lie, lie2],
        chain_id=31337,
        ledger=LEDGER,
        round_id=3,
        updates={SITE.address: CHAIN, OTHER.address: CHAIN},
    )
    assert found == [Evidence(reply=lie, contradicts=("num_samples",))]
    # a site without a revealed update this round: nothing to hold against it
    assert applicable([lie], chain_id=31337, ledger=LEDGER, round_id=3, updates={}) == []
    # bound to one ledger and chain
    assert (
        applicable([lie], chain_id=1, ledger=LEDGER, round_id=3, updates={SITE.address: CHAIN})
        == []
    )
