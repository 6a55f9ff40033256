"""README *Standing* as ``scripts/independent/reader.py`` implements it from the text alone
(``standing_chain``, ``standing_scores``; attack a95). Before session 52 the reader took each
log's ``before`` as given (README *Not given here* listed ``standing.chain``), compared
``after`` only for the sites with a share, never compared ``normalised`` with the shares of
the log's values, and checked no score in a round without shares (the warm-up): an honest site
demoted through a forged ``before`` (a95 ``before``, ``warmup``) or zeroed LOW_QUALITY in the
warm-up (``lowq``) passed it while ``audit verify`` failed, and a log whose shares contradict
its values (``shares``) failed it while verify passed (``scripts/attacks/real.sh
scripts/attacks/a95_standing_chain_gap.py MODE``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedtrail.valuation.standing import (
    accumulate,
    credited,
    demoted_score,
    demotion_reference,
    floored_records,
    norm_factor,
    normalised_values,
    scaled_score,
)

READER = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_standing", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R = _reader()
A, B, C = "0xaa", "0xbb", "0xcc"
TERMS: dict[str, Any] = {
    "valuation": {
        "combiner": {
            "demote_scale": 0.5,
            "credit_cosine": -0.7,
            "relief_cosine": -0.7,
            "boost_clip": 0.0,
            "warm_up_floor": 1.0,
        }
    }
}
NAMES = {A: "a", B: "b", C: "c"}
ONE = {"round": 1, "cid": "bafy1", "sha256": "11" * 32}


def _entry(value: float | None, cosine: float = 0.9) -> dict[str, Any]:
    return {"components": {"value": value, "cosine": cosine, "robust_checked": True}}


def _block(**fields: Any) -> dict[str, Any]:
    return {
        "previous": ONE,
        "valued_rounds": 1,
        "before": {},
        "normalised": None,
        "after": {},
        **fields,
    }


# ---------------------------------------------------------------- shares and scores


def _scores(block: dict[str, Any], sites: dict[str, Any], chain: dict[str, Any]) -> bool:
    ok, _ = R.standing_scores(block, sites, sorted(chain), chain, TERMS, NAMES)
    return bool(ok)


def test_the_shares_after_and_scores_follow_the_products_rule() -> None:
    """The reader's block for values (0.3, 0.1, -0.6) is the product's (``normalised_values``,
    ``credited``, ``accumulate``), and the demoted site's score follows."""
    values = {A: 0.3, B: 0.1, C: -0.6}
    sites = {s: _entry(v) for s, v in values.items()}
    shares = normalised_values(values)
    assert shares is not None
    shares = credited(shares, {s: 0.9 for s in values}, credit_cosine=-0.7)
    before = {C: 0.1}
    after = accumulate(before, shares)
    # C: after 0.1 - 0.6 = -0.5, reference min(0, median) = 0: 1e6 * (1 - 1.0) = 0
    chain = {A: (1_000_000, "OK"), B: (1_000_000, "OK"), C: (0, "LOW_QUALITY")}
    block = _block(before=before, normalised=shares, after=after)
    assert _scores(block, sites, chain)
    assert not _scores(block, sites, {**chain, C: (1_000_000, "OK")})


def test_shares_other_than_the_values_fail() -> None:
    """a95 ``shares``: positive values, one site's share written -0.8, after and scores
    following: the reader fails it (verify's standing.accumulated too, since session 52)."""
    values = {A: 0.3, B: 0.3, C: 0.4}
    sites = {s: _entry(v) for s, v in values.items()}
    forged = {A: -0.8, B: 0.05, C: 0.05}
    chain = {A: (0, "LOW_QUALITY"), B: (1_000_000, "OK"), C: (1_000_000, "OK")}
    assert not _scores(_block(normalised=forged, after=dict(forged)), sites, chain)


def test_the_whole_after_is_before_plus_the_shares() -> None:
    """A site without a share this round keeps its before: an ``after`` that moves it (a95
    ``warmup``'s carry) fails, where the reader before compared only the sites with a share."""
    values = {A: 0.5, B: 0.5}
    sites = {s: _entry(v) for s, v in values.items()}
    shares = {A: 0.5, B: 0.5}
    chain = {A: (1_000_000, "OK"), B: (1_000_000, "OK")}
    honest = _block(before={C: 0.0}, normalised=shares, after={**shares, C: 0.0})
    assert _scores(honest, sites, chain)
    assert not _scores({**honest, "after": {**shares, C: -2.0}}, sites, chain)


def test_the_warm_up_round_is_checked_too() -> None:
    """a95 ``lowq``: the warm-up (valued_rounds 0, normalised null, nothing accumulated) scores
    every passed update in full; one posted LOW_QUALITY 0 fails, where the reader checked no
    score in a round without shares. Its values give no shares there."""
    sites = {A: _entry(0.02), B: _entry(0.01), C: _entry(0.03)}
    warm = _block(previous=None, valued_rounds=0)
    full = {A: (1_000_000, "OK"), B: (1_000_000, "OK"), C: (1_000_000, "OK")}
    assert _scores(warm, sites, full)
    assert not _scores(warm, sites, {**full, A: (0, "LOW_QUALITY")})
    assert not _scores({**warm, "normalised": {A: 1.0}, "after": {A: 1.0}}, sites, full)


@pytest.mark.parametrize("ratio", [0.001, 0.02, 0.0499, 0.05, 1.0, 2.0, 2.0001, 3.7, 40.0])
@pytest.mark.parametrize("after", [0.0, -0.2])
def test_the_magnitude_factors_follow_the_products_rule(ratio: float, after: float) -> None:
    """Under terms that turn ``max_norm_ratio`` (2) and ``small_norm_ratio`` (0.05) on (off by
    default; a site may accept them), a passed update's score is multiplied by the factor of
    README *Standing*: the reader agrees with ``norm_factor`` and ``scaled_score`` on both
    sides of each bound. Before session 52 it left the factor out, so an honest federation
    under such terms failed its ``standing.scores`` wherever an update was outside them."""
    terms = {
        "valuation": {
            "combiner": {**TERMS["valuation"]["combiner"], "max_norm_ratio": 2.0}
            | {"small_norm_ratio": 0.05}
        }
    }
    median = 0.013
    sites = {
        A: {
            "components": {
                "value": 0.5,
                "cosine": 0.9,
                "robust_checked": True,
                "norm": ratio * median,
                "median_norm": median,
            }
        },
        B: {
            "components": {
                "value": 0.5,
                "cosine": 0.9,
                "robust_checked": True,
                "norm": median,
                "median_norm": median,
            }
        },
    }
    before = {A: after - 0.5, B: -0.5}
    shares = {A: 0.5, B: 0.5}
    block = _block(before=before, normalised=shares, after=accumulate(before, shares))
    reference = demotion_reference([after, 0.0])
    base = demoted_score(after - reference, demote_scale=0.5)
    factor = norm_factor(ratio * median, median, max_norm_ratio=2.0, small_norm_ratio=0.05)
    want = scaled_score(base, factor)
    chain = {A: (want, "OK" if want else "LOW_QUALITY"), B: (1_000_000, "OK")}
    ok, detail = R.standing_scores(block, sites, [A, B], chain, terms, NAMES)
    assert ok, detail
    off = {A: (base, "OK" if base else "LOW_QUALITY"), B: (1_000_000, "OK")}
    ok_off, _ = R.standing_scores(block, sites, [A, B], off, terms, NAMES)
    assert ok_off == (want == base)


@pytest.mark.parametrize("cosine_c", [0.9, -0.9])
def test_the_record_floor_follows_the_products_rule(cosine_c: float) -> None:
    """Terms with ``record_floor`` 0.5: C's record 2.0 below its reference after its -0.6
    share is raised by the product (``floored_records``) and the reader accepts exactly the
    raised ``after`` (C still LOW_QUALITY); the unraised one fails. Terms without the field
    (written before it) accept the unraised ``after`` and fail the raised one. With C's update
    against the consensus (cosine -0.9, below ``relief_cosine``) it is floored against 0."""
    terms = {"valuation": {"combiner": {**TERMS["valuation"]["combiner"], "record_floor": 0.5}}}
    values = {A: 0.3, B: 0.1, C: -0.6}
    sites = {A: _entry(0.3), B: _entry(0.1), C: _entry(-0.6, cosine=cosine_c)}
    shares = normalised_values(values)
    assert shares is not None
    before = {A: -0.4, B: -0.5, C: -2.0}
    plain = accumulate(before, shares)
    raised = floored_records(
        plain,
        {A: 0.9, B: 0.9, C: cosine_c},
        record_floor=0.5,
        demote_scale=0.5,
        relief_cosine=-0.7,
    )
    assert raised[C] > plain[C] and {A: raised[A], B: raised[B]} == {A: plain[A], B: plain[B]}
    chain = {A: (1_000_000, "OK"), B: (1_000_000, "OK"), C: (0, "LOW_QUALITY")}
    ref_a_b = demotion_reference([plain[A], plain[B], plain[C]])
    chain[A] = (demoted_score(raised[A] - ref_a_b, demote_scale=0.5), "OK")
    chain[B] = (demoted_score(raised[B] - ref_a_b, demote_scale=0.5), "OK")
    floored = _block(before=before, normalised=shares, after=raised)
    unfloored = _block(before=before, normalised=shares, after=plain)
    ok, detail = R.standing_scores(floored, sites, sorted(chain), chain, terms, NAMES)
    assert ok, detail
    assert not R.standing_scores(unfloored, sites, sorted(chain), chain, terms, NAMES)[0]
    assert _scores(unfloored, sites, chain)  # TERMS: no record_floor, the unbounded record
    assert not _scores(floored, sites, chain)


def test_the_scoped_warm_up_scores_and_keeps_only_the_outweighing_shares() -> None:
    """Terms with ``warm_up_floor`` 0.5 and ``warm_up_scope`` 1: in the warm-up (valued_rounds
    0) C (share -0.6, 500 images, more than A's 300 and B's 200, the sites with a share of 0
    or more) is scored from its share, floored at 500,000, and its share alone is kept in
    ``after``; A and B keep the full score. An ``after`` holding
    every share fails, as does a demoted score for a site that outweighs no one. Terms without
    ``warm_up_scope`` (0, every passer scored and recorded) accept the whole ``after``."""
    from fedtrail.valuation.standing import outweighing

    base = {**TERMS["valuation"]["combiner"], "warm_up_floor": 0.5}
    scoped_terms = {"valuation": {"combiner": {**base, "warm_up_scope": 1}}}
    old = {"valuation": {"combiner": base}}
    values = {A: 0.3, B: 0.1, C: -0.6}
    counts = {A: 300, B: 200, C: 500}
    sites = {s: _entry(v) for s, v in values.items()}
    shares = normalised_values(values)
    assert shares is not None
    assert outweighing(shares, counts) == {C}
    kept = {C: shares[C]}
    chain = {A: (1_000_000, "OK"), B: (1_000_000, "OK"), C: (500_000, "OK")}
    part = _block(previous=None, valued_rounds=0, normalised=shares, after=kept)
    whole = _block(previous=None, valued_rounds=0, normalised=shares, after=dict(shares))

    def scores(block: dict[str, Any], chain: dict[str, Any], terms: dict[str, Any]) -> bool:
        ok, _ = R.standing_scores(block, sites, sorted(chain), chain, terms, NAMES, counts)
        return bool(ok)

    assert scores(part, chain, scoped_terms)
    assert not scores(whole, chain, scoped_terms)
    assert scores(whole, chain, old) and not scores(part, chain, old)
    # C no longer outweighs when A claims 600: C keeps the full score and no record
    bigger_a = {**counts, A: 600}
    ok, _ = R.standing_scores(
        _block(previous=None, valued_rounds=0, normalised=shares, after={}),
        sites,
        sorted(chain),
        {**chain, C: (1_000_000, "OK")},
        scoped_terms,
        NAMES,
        bigger_a,
    )
    assert ok
    wrong = R.standing_scores(part, sites, sorted(chain), chain, scoped_terms, NAMES, bigger_a)
    assert not wrong[0]
