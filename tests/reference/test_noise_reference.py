"""``privacy.noise`` and ``privacy.scored`` as an outsider replays them from the README (*The
noise check, exactly*, plain Python run from its text, and *Privacy noise* / *Privacy scored*
as ``scripts/independent/reader.py`` implements them) against the product: the noise check's
values bit for bit against ``fedtrail.ml.dp_noise``, each update's spend-breach status against
``fedtrail.storage.privacy_spend.check_spend``, and both checks' verdicts against ``audit
verify``'s ``_privacy_scoring``, on many generated cases. A near miss (``math.fsum`` where
the README says numpy's pairwise sum; one rule step left out) must disagree somewhere, so the
comparisons can fail."""

from __future__ import annotations

import importlib.util
import math
import random
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from fedtrail.auditor.verify import _privacy_scoring
from fedtrail.errors import ContentNotFound
from fedtrail.ledger import Submission
from fedtrail.ml import dp_noise
from fedtrail.ml.privacy import declared_micro
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.privacy import COMPOSED, SUMMED, DpParams, InvalidPrivacy
from fedtrail.protocol.terms import PrivacyTerms
from fedtrail.storage.privacy_history import UnavailableSpend, UnbackedSpend
from fedtrail.storage.privacy_spend import check_spend

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "README.md").read_text(encoding="utf-8")
MARKER = "<!-- noise-reference -->\n```python\n"
READER = ROOT / "scripts" / "independent" / "reader.py"


def readme_noise() -> dict[str, Any]:
    start = TEXT.index(MARKER) + len(MARKER)
    namespace: dict[str, Any] = {}
    source = TEXT[start : TEXT.index("```", start)]
    exec(compile(source, "README noise-reference", "exec"), namespace)
    return namespace


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_noise", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NOISE = readme_noise()
R = _reader()
SHAPES = [(16, 1, 3, 3), (16,), (16,), (32, 16, 3, 3), (32,), (64, 1568), (64,), (2, 64), (2,)]


def _update(rng: np.random.Generator, kind: int) -> dict[str, torch.Tensor]:
    """An update of SHAPES: Gaussian noise of one scale (kind 0), plus a signal in one layer
    (1), layers of scales orders of magnitude apart (2: a plain update), zeros in some
    tensors (3)."""
    s = 10 ** rng.uniform(-4, -1)
    out = {}
    for i, shape in enumerate(SHAPES):
        z = rng.standard_normal(shape) * s
        if kind == 1 and i == 5:
            z = z + rng.standard_normal(shape) * s * rng.uniform(0.0, 0.3)
        if kind == 2:
            z = z * 10 ** rng.uniform(-3, 1)
        if kind == 3 and i % 3 == 1:
            z = np.zeros(shape)
        out[f"t{i}"] = torch.tensor(z, dtype=torch.float32)
    return out


def _params(rng: np.random.Generator) -> DpParams:
    rate = float(rng.choice([32 / 150, 128 / 2428, 0.01, 0.5, 1.0]))
    return DpParams(
        noise_multiplier=float(rng.choice([0.3, 0.7, 1.0, 2.0, 5.0])),
        max_grad_norm=1.0,
        sample_rate=rate,
        steps=int(rng.choice([1, 5, 47, 300])),
        delta=1e-5,
    )


def _flat(update: dict[str, torch.Tensor]) -> list[list[float]]:
    return [t.double().flatten().tolist() for t in update.values()]


def test_np_sum_is_numpys_sum() -> None:
    rng = np.random.default_rng(5)
    lengths = [*range(0, 260), 1000, 1023, 1024, 4099, 8192, 8193, 70001]
    for n in lengths:
        x = rng.standard_normal(n) * np.exp(rng.standard_normal(n) * 4)
        assert NOISE["np_sum"](x.tolist()) == float(np.sum(x)), n
        assert NOISE["np_sum"]((x * x).tolist()) == float(np.sum(x * x)), n


def test_noise_check_matches_the_product_bit_for_bit() -> None:
    rng = np.random.default_rng(11)
    verdicts = []
    for case in range(60):
        update, params, n = _update(rng, case % 4), _params(rng), int(rng.choice([1, 150, 2428]))
        got = dp_noise.check_noise(update, params, n)
        tensors = _flat(update)
        assert NOISE["needed_signal"](tensors) == got.needed, case
        assert NOISE["allowed_signal"](params.to_json(), n) == got.allowed, case
        for method in ("none", "topk8"):
            product = dp_noise.noise_breach(update, params, n, method) is not None
            assert NOISE["noise_breach"](tensors, params.to_json(), n, method) == product
            for rule in (1, 2):  # the terms' dp_noise_check: the claimed count, or at most 32
                product = dp_noise.noise_breach(update, params, n, method, rule) is not None
                assert NOISE["noise_breach"](tensors, params.to_json(), n, method, rule) == product
        assert dp_noise.noise_breach(update, None, n, "none") is None
        assert NOISE["noise_breach"](tensors, None, n, "none") is False
        verdicts.append(got.ok)
    assert min(sum(verdicts), len(verdicts) - sum(verdicts)) >= 5  # both, several times each


def test_near_the_threshold_the_verdicts_agree() -> None:
    """Noise plus a signal scaled so that ``needed`` lands next to ``allowed``: the README's
    verdict is the product's on both sides."""
    rng = np.random.default_rng(3)
    sides = set()
    for _ in range(12):
        params, n = _params(rng), 150
        noise = _update(rng, 0)
        direction = {  # a plain update's shape: each layer at its own scale
            k: torch.tensor(rng.standard_normal(v.shape) * 10 ** rng.uniform(-3, 1))
            for k, v in noise.items()
        }
        allowed = dp_noise.allowed_signal(params, n)
        lo, hi = 0.0, 1.0
        for _ in range(30):  # the signal amplitude where the product's verdict flips
            mid = (lo + hi) / 2
            upd = {k: (noise[k] + mid * direction[k]).float() for k in noise}
            if dp_noise.check_noise(upd, params, n).needed > allowed:
                hi = mid
            else:
                lo = mid
        for amp in (lo, hi):
            upd = {k: (noise[k] + amp * direction[k]).float() for k in noise}
            product = dp_noise.noise_breach(upd, params, n, "none") is not None
            assert NOISE["noise_breach"](_flat(upd), params.to_json(), n, "none") == product
            sides.add(product)
    assert sides == {True, False}


def test_a_correctly_rounded_sum_is_not_the_rule() -> None:
    """``math.fsum`` where the README says numpy's pairwise sum gives other last bits: the
    bit-for-bit comparison above can fail."""
    near = readme_noise()
    near["np_sum"] = math.fsum
    rng = np.random.default_rng(11)
    differ = 0
    for case in range(40):
        update, params = _update(rng, case % 4), _params(rng)
        differ += (
            near["needed_signal"](_flat(update)) != dp_noise.check_noise(update, params, 150).needed
        )
    assert differ > 0


# ---------------------------------------------------------------- spend breaches

STATES = ("dp", "dp", "dp", "unbacked", "unavailable", "unreadable")


class StubHistory:
    """The site's earlier spends as ``PrivacyHistory`` raises or returns them: each entry a
    DpParams, or the exception reading it back raises."""

    def __init__(self, entries: list[Any], before: int) -> None:
        self.entries, self.before = entries, before

    def remember(self, round_id: int, site: str, params: DpParams | None) -> None:
        pass

    def expected_micro(self, site: str, round_id: int, update: DpParams) -> int:
        if update.accounting == SUMMED:
            return declared_micro(update, [], self.before)
        history = []
        for entry in self.entries:
            if entry == "unbacked":
                raise UnbackedSpend("earlier update without DP parameters")
            if entry == "unavailable":
                raise UnavailableSpend("earlier update not given, scored 0")
            if entry == "unreadable":
                raise ContentNotFound("earlier update not given")
            history.append(entry)
        return declared_micro(update, history, self.before)


def _spend_case(rng: random.Random) -> dict[str, Any]:
    acct = R.readme_accountant()
    rate = rng.choice([32 / 150, 0.2, 1e-9, 0.5, 5e-324, 1.0])
    steps = rng.choice([5, 10, 7, 2, 1])
    params = (
        None
        if rng.random() < 0.15
        else DpParams(
            noise_multiplier=rng.choice([0.8, 1.0, 1.3]),
            max_grad_norm=1.0,
            sample_rate=rate,
            steps=steps,
            delta=rng.choice([1e-5, 1e-5, 1e-4, 0.01]),
            accounting=rng.choice([SUMMED, COMPOSED]),
        )
    )
    entries: list[Any] = []
    for _ in range(rng.randrange(0, 3)):
        state = rng.choice(STATES)
        entries.append(
            DpParams(
                noise_multiplier=rng.choice([0.9, 1.1]),
                max_grad_norm=1.0,
                sample_rate=0.2,
                steps=5,
                delta=1e-5,
                accounting=COMPOSED,
            )
            if state == "dp"
            else state
        )
    before = rng.choice([0, 1234567])
    declared = rng.choice([0, 1, 999])
    if params is not None and rng.random() < 0.6:  # often the true spend, or one off
        try:
            due = StubHistory(entries, before).expected_micro("s", 1, params)
            declared = due + rng.choice([0, 0, -1, 1])
        except (InvalidPrivacy, ContentNotFound):
            pass
    privacy = rng.choice([None, PrivacyTerms(delta=1e-5), PrivacyTerms(delta=1e-4)])
    n = rng.choice([0, 150, 100000, 3])
    return {
        "acct": acct,
        "params": params,
        "entries": entries,
        "before": before,
        "declared": declared,
        "privacy": privacy,
        "n": n,
    }


def _product_breach(case: dict[str, Any]) -> str | None:
    verdict = check_spend(
        StubHistory(case["entries"], case["before"]),  # type: ignore[arg-type]
        round_id=4,
        site="0x" + "ab" * 20,
        params=case["params"],
        declared=case["declared"],
        privacy=case["privacy"],
        num_samples=case["n"],
    )
    return verdict.status if verdict.binding else None


def _reader_breach(case: dict[str, Any], spend_breach: Callable[..., str | None]) -> str | None:
    p = case["params"]
    entries = [e.to_json() if isinstance(e, DpParams) else e for e in case["entries"]]
    asked = None if case["privacy"] is None else {"delta": case["privacy"].delta}
    return spend_breach(
        case["acct"],
        asked,
        None if p is None else p.to_json(),
        case["declared"],
        case["n"],
        (entries, case["before"]),
    )


def test_spend_breaches_match_check_spend() -> None:
    rng = random.Random(8)
    seen = set()
    for i in range(150):
        case = _spend_case(rng)
        product = _product_breach(case)
        assert _reader_breach(case, R.spend_breach) == product, (i, case)
        seen.add(product)
    assert seen >= {
        None,
        "NO DP PARAMETERS",
        "WRONG DELTA",
        "DELTA ABOVE 1/n",
        "SAMPLING IMPLAUSIBLE",
        "EARLIER SPEND UNBACKED",
        "EARLIER SPEND UNAVAILABLE",
        "DIFFERS",
    }, seen


def test_a_spend_rule_without_the_sampling_test_disagrees() -> None:
    def near(acct: Any, asked: Any, dp: Any, declared: int, n: int, earlier: Any) -> str | None:
        if dp is not None:
            dp = {**dp, "sample_rate": 1.0, "steps": max(1, dp["steps"])}
        return R.spend_breach(acct, asked, dp, declared, n, earlier)  # type: ignore[no-any-return]

    rng = random.Random(8)
    cases = [_spend_case(rng) for _ in range(60)]
    assert any(_reader_breach(c, near) != _product_breach(c) for c in cases)


# ---------------------------------------------------------------- the two checks


def _round(rng: random.Random) -> tuple[dict[str, Any], list[Any]]:
    sites = [f"0x{rng.randrange(16**40):040x}" for _ in range(rng.randrange(1, 6))]
    updates = {}
    for a in sites:
        decoded = rng.random() < 0.85
        reads = decoded and rng.random() < 0.85
        has_dp = decoded and rng.random() < 0.6
        updates[a] = {
            "decoded": decoded,
            "reads": reads,
            "dp": {"delta": 1e-5} if has_dp else None,
            "lacks": reads and has_dp and rng.random() < 0.3,
            "breach": rng.choice([None, None, "DIFFERS", "NO DP PARAMETERS"]) if reads else None,
            "weight": rng.choice([0, 0, 5 * 10**17]),
            "reason": rng.choice(["OK", "MALFORMED", "MALFORMED", "DUPLICATE", "FREE_RIDER"]),
        }
    flags = [rng.random() < 0.7, rng.random() < 0.7, rng.random() < 0.15, rng.random() < 0.4]
    return updates, flags


def _product_checks(updates: dict[str, Any], flags: list[Any]) -> list[tuple[str, bool]]:
    noise_on, spend_on, peers, asked = flags
    subs = [
        Submission(
            round=3,
            site=a,
            cid="Qm",
            sha256="00" * 32,
            num_samples=100,
            score=0,
            reason=int(Reason[u["reason"]]),
            weight=u["weight"],
            commitment="00" * 32,
            commit_order=i + 1,
            revealed=True,
        )
        for i, (a, u) in enumerate(updates.items())
    ]
    read_as: dict[str, Reason | None] = {
        a: Reason.OK if u["reads"] else Reason.MALFORMED for a, u in updates.items()
    }
    dp = {
        a: None
        if u["dp"] is None
        else DpParams(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.2, steps=5, delta=1e-5)
        for a, u in updates.items()
        if u["decoded"]
    }
    quiet = {a: "no noise" for a, u in updates.items() if noise_on and u["lacks"]}
    breaches = {a: u["breach"] for a, u in updates.items() if u["breach"]} if spend_on else None
    out = _privacy_scoring(
        subs, read_as, {}, dp, quiet, breaches, noise=noise_on, asked=asked, peers=peers
    )
    return [(name, ok) for name, ok, _ in out]


def _reader_checks(updates: dict[str, Any], flags: list[Any], rule: Callable[..., Any]) -> Any:
    noise_on, spend_on, peers, asked = flags
    decoded_dp = any(u["decoded"] and u["dp"] is not None for u in updates.values())
    out = rule(noise_on, spend_on, peers, {"delta": 1e-5} if asked else None, decoded_dp, updates)
    return [(name, ok) for name, ok, _ in out]


def test_scoring_checks_match_verify() -> None:
    rng = random.Random(21)
    outcomes = set()
    for i in range(600):
        updates, flags = _round(rng)
        product = _product_checks(updates, flags)
        assert _reader_checks(updates, flags, R.dp_scored_rule) == product, (i, updates, flags)
        outcomes.update(product)
    assert outcomes == {
        ("privacy.scored", True),
        ("privacy.scored", False),
        ("privacy.noise", True),
        ("privacy.noise", False),
    }


@pytest.mark.parametrize("left_out", ["breach", "lacks"])
def test_a_check_that_ignores_the_other_disagrees(left_out: str) -> None:
    """privacy.noise judged without the spend breaches (or privacy.scored without the
    quiet updates) disagrees with verify somewhere."""

    def near(noise_on: bool, spend_on: bool, peer: bool, asked: Any, dec: bool, ups: Any) -> Any:
        out = R.dp_scored_rule(noise_on, spend_on, peer, asked, dec, ups)
        cleared = {
            a: {**u, left_out: None if left_out == "breach" else False} for a, u in ups.items()
        }
        keep = "privacy.noise" if left_out == "breach" else "privacy.scored"
        alt = {c[0]: c for c in R.dp_scored_rule(noise_on, spend_on, peer, asked, dec, cleared)}
        return [alt[c[0]] if c[0] == keep else c for c in out]

    rng = random.Random(21)
    rounds = [_round(rng) for _ in range(600)]
    assert any(_reader_checks(u, f, near) != _product_checks(u, f) for u, f in rounds)


# ---------------------------------------------------------------- log.status

STATUSES = ("ok", "tampered", "malformed", "duplicate", "free_rider")


class FakeLog:
    def __init__(self, entries: dict[str, Any]) -> None:
        self.entries = entries

    def site(self, site: str) -> Any:
        return self.entries.get(site)


def test_log_status_matches_verify() -> None:
    """README *Log status* as reader.py implements it against ``_check_status`` on random
    rounds: the chain's reasons, the log's statuses and this audit's readings (none for a blob
    the store does not give here)."""
    from types import SimpleNamespace

    from fedtrail.auditor.verify import _check_status

    rng = random.Random(4)
    outcomes = set()
    for i in range(800):
        sites = [f"0x{rng.randrange(16**40):040x}" for _ in range(rng.randrange(1, 6))]
        reasons = {
            a: rng.choice(["OK", "TAMPERED", "MALFORMED", "DUPLICATE", "FREE_RIDER"]) for a in sites
        }
        statuses = {a: rng.choice(STATUSES) for a in sites if rng.random() < 0.9}
        readings = {a: rng.choice(STATUSES[:4]) for a in sites if rng.random() < 0.85}
        for a in sites:  # mostly consistent rounds, so both verdicts occur
            if rng.random() < 0.6:
                readings[a] = statuses.get(a, "ok")
                reasons[a] = {"ok": "OK", "free_rider": "FREE_RIDER"}.get(
                    readings[a], readings[a].upper()
                )
        aggregator = rng.random() < 0.8
        subs = [
            Submission(
                round=3,
                site=a,
                cid="Qm",
                sha256="00" * 32,
                num_samples=10,
                score=0,
                reason=int(Reason[reasons[a]]),
                weight=0,
                commitment="00" * 32,
                commit_order=k + 1,
                revealed=True,
            )
            for k, a in enumerate(sites)
        ]
        log = FakeLog({a: SimpleNamespace(status=st) for a, st in statuses.items()})
        read_as = {a: Reason[readings[a].upper()] if a in readings else None for a in sites}
        _, product, _ = _check_status(
            log,
            subs,
            read_as,
            duplicates_known=True,
            aggregator_round=aggregator,  # type: ignore[arg-type]
        )
        onchain = {a: (True, 10, 0, R.REASONS.index(reasons[a]), 0) for a in sites}
        mine, _ = R.status_rule(
            {a: {"status": st} for a, st in statuses.items()}, readings, onchain, aggregator, sites
        )
        assert mine == product, (i, reasons, statuses, readings, aggregator)
        outcomes.add(product)
    assert outcomes == {True, False}


def test_the_credited_count_is_the_readmes() -> None:
    """``dp_noise_check`` 2 evaluates the allowance at ``min(n, NOISE_COUNT)``: the README's
    constant is the product's, and for updates between the allowance at 32 samples and at the
    claimed 1,500 the README's verdict flips with the rule exactly as the product's does."""
    assert NOISE["NOISE_COUNT"] == dp_noise.NOISE_COUNT
    rng = np.random.default_rng(17)
    flips = 0
    for _ in range(8):
        params = _params(rng)
        low = dp_noise.allowed_signal(params, dp_noise.NOISE_COUNT)
        high = dp_noise.allowed_signal(params, 1500)
        noise = _update(rng, 0)
        direction = {
            k: torch.tensor(rng.standard_normal(v.shape) * 10 ** rng.uniform(-3, 1))
            for k, v in noise.items()
        }
        lo, hi = 0.0, 1.0
        target = (low + high) / 2  # a signal the claimed count allows and 32 samples do not
        for _ in range(30):
            mid = (lo + hi) / 2
            upd = {k: (noise[k] + mid * direction[k]).float() for k in noise}
            if dp_noise.check_noise(upd, params, 1500).needed > target:
                hi = mid
            else:
                lo = mid
        upd = {k: (noise[k] + lo * direction[k]).float() for k in noise}
        tensors = _flat(upd)
        for n in (1, 31, 32, 33, 1500):
            for rule in (1, 2):
                product = dp_noise.noise_breach(upd, params, n, "none", rule) is not None
                assert NOISE["noise_breach"](tensors, params.to_json(), n, "none", rule) == product
        if low < high and NOISE["noise_breach"](tensors, params.to_json(), 1500, "none", 2):
            flips += not NOISE["noise_breach"](tensors, params.to_json(), 1500, "none", 1)
    assert flips >= 2  # the rule changes the verdict, so a reader that ignores it disagrees
