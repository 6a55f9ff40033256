"""README *Standing chain* (session 52) as ``scripts/independent/reader.py`` implements it from
the text (``standing_chain_rule``), against the product's ``standing.chain``
(``fedtrail/auditor/standing.py`` ``check_standing`` over ``standing_source``) on many random
chains of earlier rounds and round logs, honest and lying; and near-miss readings of the text
(the newest finalized log as the source whatever it holds, ``before`` taken from the log as the
reader did before session 52, ``valued_rounds`` not counted up) that the product disagrees
with."""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from fedtrail.auditor import standing as standing_checks
from fedtrail.errors import ContentNotFound
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.roundlog import Standing, ValuationSettings
from fedtrail.valuation import chained

READER = Path(__file__).resolve().parents[2] / "scripts" / "independent" / "reader.py"
CASES = 1500


def _reader() -> ModuleType:
    spec = importlib.util.spec_from_file_location("independent_reader_standing", READER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R = _reader()
SITES = ["0xA1", "0xB2", "0xC3"]


def _after(rng: random.Random) -> dict[str, float]:
    return {s: rng.uniform(-1, 1) for s in rng.sample(SITES, rng.randint(0, 3))}


def _case(rng: random.Random) -> dict[str, Any]:
    """Earlier rounds 1..r-1 (finalized or cancelled; a finalized one's log with or without a
    standing block, now and then unreadable or naming another round) and round r's block,
    drawn from values near the right ones."""
    r = rng.randint(1, 6)
    earlier: dict[int, dict[str, Any]] = {}
    for q in range(1, r):
        final = rng.random() < 0.8
        block = None
        if final and rng.random() < 0.7:
            block = {"valued_rounds": rng.randint(0, 4), "after": _after(rng)}
        fault = rng.choice([None] * 12 + ["missing", "round"])
        earlier[q] = {
            "final": final,
            "cid": f"Qm{q}{rng.randint(0, 9)}",
            "sha": f"{rng.getrandbits(256):064x}",
            "block": block,
            "fault": fault if final else None,
        }
    finals = [q for q in earlier if earlier[q]["final"]]
    prev_pool: list[dict[str, Any] | None] = [None]
    before_pool: list[dict[str, float]] = [{}]
    valued_pool = [0, 1]
    for q in finals:
        e = earlier[q]
        prev_pool.append({"round": q, "cid": e["cid"], "sha256": e["sha"]})
        prev_pool.append({"round": q, "cid": e["cid"], "sha256": e["sha"].upper()})
        if e["block"] is not None:
            before_pool.append(dict(e["block"]["after"]))
            nudged = dict(e["block"]["after"])
            for s in nudged:
                nudged[s] += 1e-12
                break
            before_pool.append(nudged)
            valued_pool += [e["block"]["valued_rounds"] + d for d in (0, 1, 2)]
    # bias toward the newest candidates, which the honest block names
    block = {
        "previous": rng.choice(prev_pool[-3:] if rng.random() < 0.6 else prev_pool),
        "before": rng.choice(before_pool[-2:] if rng.random() < 0.6 else before_pool),
        "valued_rounds": rng.choice(valued_pool),
    }
    terms_standing = rng.random() < 0.9
    present = rng.random() < 0.92
    return {
        "r": r,
        "earlier": earlier,
        "block": block if present else None,
        "standing": terms_standing,
    }


def _product(case: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> bool | None:
    """verify's standing.chain verdict (None: no such check)."""
    earlier = case["earlier"]
    by_cid = {e["cid"]: (q, e) for q, e in earlier.items()}

    class Ledger:
        def get_round(self, q: int) -> SimpleNamespace:
            e = earlier[q]
            return SimpleNamespace(
                phase=Phase.FINALIZED if e["final"] else Phase.CANCELLED,
                log_cid=e["cid"],
                log_sha256=e["sha"],
            )

    class Store:
        def get(self, cid: str, sha256: str, max_bytes: int | None = None) -> bytes:
            if by_cid[cid][1]["fault"] == "missing":
                raise ContentNotFound(f"{cid} not given")
            return cid.encode()

    class Log:
        @staticmethod
        def from_bytes(blob: bytes) -> SimpleNamespace:
            q, e = by_cid[blob.decode()]
            st = e["block"]
            return SimpleNamespace(
                round=q + 1 if e["fault"] == "round" else q,
                standing=None
                if st is None
                else Standing(
                    previous=None,
                    valued_rounds=st["valued_rounds"],
                    before={},
                    normalised=None,
                    after=st["after"],
                ),
            )

    monkeypatch.setattr(chained, "RoundLog", Log)
    monkeypatch.setattr(standing_checks, "reference_labels", lambda *a: [])
    b = case["block"]
    log_standing = None
    if b is not None:
        prev = b["previous"]
        log_standing = Standing(
            previous=None if prev is None else chained.PreviousLog(**prev),
            valued_rounds=b["valued_rounds"],
            before=b["before"],
            normalised=None,
            after=b["before"],
        )
    log = SimpleNamespace(round=case["r"], standing=log_standing, site=lambda a: None, sites=())
    settings = ValuationSettings(method="shapley", metric="loss", standing=case["standing"])
    checks = standing_checks.check_standing(Ledger(), Store(), log, settings, [])  # type: ignore[arg-type]
    found = [ok for name, ok, _ in checks if name == "standing.chain"]
    return found[0] if found else None


def _readers_earlier(case: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What the reader gathers: the finalized rounds before r, newest first."""
    out: list[tuple[Any, ...]] = []
    for q in range(case["r"] - 1, 0, -1):
        e = case["earlier"][q]
        if not e["final"]:
            continue
        st: Any = e["block"]
        if e["fault"] == "missing":
            st = ValueError("not given")
        elif e["fault"] == "round":
            st = ValueError("it names another round")
        out.append((q, e["cid"], e["sha"], st))
    return out


def _readme(
    case: dict[str, Any], rule: Callable[..., tuple[bool, str]] = R.standing_chain_rule
) -> bool | None:
    if not case["standing"] and case["block"] is None:
        return None  # the reader reports nothing, as verify
    ok, _ = rule(case["r"], case["standing"], case["block"], _readers_earlier(case))
    return bool(ok)


def _newest_source(
    r: int, standing: bool, block: Any, earlier: list[tuple[Any, ...]]
) -> tuple[bool, str]:
    """Near miss: the newest finalized round is the source whatever its log holds."""
    return R.standing_chain_rule(r, standing, block, earlier[:1])


def _before_from_log(
    r: int, standing: bool, block: Any, earlier: list[tuple[Any, ...]]
) -> tuple[bool, str]:
    """Near miss: the reader before session 52 (``before`` as the log says)."""
    if not isinstance(block, dict):
        return R.standing_chain_rule(r, standing, block, earlier)
    source = next((e for e in earlier if isinstance(e[3], dict)), None)
    fake = [
        (q, c, s, {**st, "after": block.get("before")} if isinstance(st, dict) else st)
        for q, c, s, st in earlier
    ]
    return R.standing_chain_rule(r, standing, block, fake if source else earlier)


def _valued_not_counted(
    r: int, standing: bool, block: Any, earlier: list[tuple[Any, ...]]
) -> tuple[bool, str]:
    """Near miss: ``valued_rounds`` the source's, not one more."""
    fake = [
        (q, c, s, {**st, "valued_rounds": st["valued_rounds"] - 1} if isinstance(st, dict) else st)
        for q, c, s, st in earlier
    ]
    return R.standing_chain_rule(r, standing, block, fake)


def test_the_readme_rule_is_verifys_on_random_chains(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(52)
    cases = [_case(rng) for _ in range(CASES)]
    verdicts = [_product(c, monkeypatch) for c in cases]
    mine = [_readme(c) for c in cases]
    assert mine == verdicts
    # both verdicts well represented, lies of each kind among the failures
    assert sum(v is True for v in verdicts) > CASES // 10
    assert sum(v is False for v in verdicts) > CASES // 10
    for near in (_newest_source, _before_from_log, _valued_not_counted):
        differ = sum(_readme(c, near) != v for c, v in zip(cases, verdicts, strict=True))
        assert differ > 0, near.__name__
