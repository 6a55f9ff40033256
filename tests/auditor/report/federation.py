"""A federation run by hand on the embedded chain, with a known history, for the report tests.

There is no aggregator service: the helpers play the aggregator (open rounds, value, aggregate
with the shared rule, write a schema-valid explanation log, finalize). ``build_history`` gives:

- round 1, 2: finalized (round 2 rejects one site and carries two heatmaps, one tampered);
- round 3: cancelled (nobody submitted before the deadline);
- round 4: valued, not finalized.

Site names and log texts include hostile strings (markup, a bidi override, mathtext).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eth_account.signers.local import LocalAccount
from PIL import Image

from fedtrail.chain import advance_time, block_timestamp, connect, dev_account, funded_accounts
from fedtrail.ledger import Ledger, Valuation, commitment
from fedtrail.ml.aggregation import AggregationRule, aggregate, apply_delta
from fedtrail.ml.models import ModelSpec, initial_model
from fedtrail.protocol import roundlog
from fedtrail.protocol.roundlog import EXPLANATION_WORDING
from fedtrail.protocol.terms import RoundTerms
from fedtrail.protocol.weights import WEIGHT_SCALE
from fedtrail.storage.codec import decode_model, decode_update, encode_model, encode_update
from fedtrail.storage.store import LocalStore, sha256_hex
from fedtrail.valuation.combine import Combiner
from fedtrail.valuation.robust import robust_statistics

EVIL_NAME = "<script>alert(1)</script>"
THRESHOLD = 0.412
"""The calibrated decision threshold every finalized round's log records after aggregation."""
EVIL_EXPLANATION = 'gain -0.004 <= 0 & <img src=x onerror="alert(2)"> rejected'
SITE_NAMES = ("St. Mary's Radiology", EVIL_NAME, "Klinikum $x^2$ Nord & S\u00fcd\u202e")
SPEC = ModelSpec()
VALUATION = {
    "method": "loo",
    "metric": "auc",
    "combiner": asdict(Combiner()),
    "explanation_wording": EXPLANATION_WORDING,
}
"""The per-round valuation an aggregator of this build writes: every threshold recorded."""
VALIDATION: dict[str, Any] = {"sha256": "ab" * 32, "images": 270}


@dataclass
class Fed:
    """The chain, the store and the keys of the hand-run federation."""

    ledger: Ledger
    store: LocalStore
    coordinator: LocalAccount
    sites: list[LocalAccount]
    heatmap_png: bytes = b""
    logs: dict[int, dict[str, Any]] = field(default_factory=dict)
    terms: dict[int, tuple[str, str]] = field(default_factory=dict)


def put(store: LocalStore, blob: bytes) -> tuple[str, str]:
    return store.put(blob), sha256_hex(blob)


def heatmap_png(seed: int) -> bytes:
    """A 56x56 RGB PNG, different for each seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:56, 0:56]
    heat = np.exp(-((xx - 30) ** 2 + (yy - 24) ** 2) / 120.0) + 0.1 * rng.random((56, 56))
    rgb = np.stack([heat, 0.3 * heat, 1 - heat], axis=-1)
    buf = io.BytesIO()
    Image.fromarray((255 * rgb / rgb.max()).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def submit_all(fed: Fed, round_id: int, *, seed: int) -> None:
    """Every site commits, the clock passes the commit deadline, every site reveals."""
    gen = torch.Generator().manual_seed(seed)
    reveals = []
    for i, site in enumerate(fed.sites):
        delta = {
            name: 0.01 * torch.randn(shape, generator=gen)
            for name, (shape, _) in SPEC.tensor_layout().items()
        }
        cid, sha = put(fed.store, encode_update(delta, spec=SPEC, round=round_id).blob)
        n = 100 + 50 * i
        fed.ledger.commit_update(site, round_id, commitment(site.address, round_id, sha, n))
        reveals.append((site, cid, sha, n))
    info = fed.ledger.get_round(round_id)
    advance_time(fed.ledger.w3, info.commit_deadline - block_timestamp(fed.ledger.w3) + 1)
    for site, cid, sha, n in reveals:
        fed.ledger.reveal_update(site, round_id, cid, sha, n)


def open_round(fed: Fed, model: tuple[str, str], seconds: int = 3600) -> int:
    """Opens a round whose commit window is ``seconds`` long and whose reveal window as long."""
    round_terms = RoundTerms(
        round=fed.ledger.current_round() + 1,
        aggregation_rule=asdict(AggregationRule()),
        valuation=VALUATION,
        model_spec=asdict(SPEC),
        spec_hash=SPEC.spec_hash(),
        seed=0,
        validation_sha256=VALIDATION["sha256"],
        validation_images=VALIDATION["images"],
        commit_seconds=seconds,
        reveal_seconds=seconds,
    )
    terms = put(fed.store, round_terms.to_bytes())
    fed.terms[round_terms.round] = terms
    round_id, _ = fed.ledger.open_round(
        fed.coordinator,
        model[0],
        model[1],
        terms_cid=terms[0],
        terms_sha256=terms[1],
        commit_seconds=seconds,
        reveal_seconds=seconds,
    )
    return round_id


def finalize(
    fed: Fed,
    round_id: int,
    start: tuple[str, str],
    explanations: dict[str, Any] | None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[str, str]:
    """What an honest aggregator does after valuation: aggregate with the on-chain weights,
    store the new global model and the explanation log, finalize."""
    ledger, store = fed.ledger, fed.store
    subs = ledger.get_submissions(round_id)
    start_state, _ = decode_model(store.get(*start), spec=SPEC)
    deltas = [
        decode_update(store.get(s.cid, s.sha256), spec=SPEC, expected_round=round_id)[0]
        for s in subs
    ]
    rule = AggregationRule()
    new = apply_delta(
        start_state,
        aggregate(rule, deltas, [s.weight for s in subs], statistics=SPEC.statistic_names()),
    )
    global_ref = put(store, encode_model(new, spec=SPEC, round=round_id))
    names = {s.address: s.name for s in ledger.get_sites()}
    auc = 0.70 + 0.08 * round_id
    # the data-free components the audit recomputes (every update counted: none was rejected
    # before the screen), beside a made-up game value (the aggregator's claim)
    robust = robust_statistics(dict(zip([s.site for s in subs], deltas, strict=True)))
    doc: dict[str, Any] = {
        "format": roundlog.FORMAT,
        "round": round_id,
        "ledger": {"address": ledger.address, "chain_id": ledger.chain_id},
        "start_model": {"cid": start[0], "sha256": start[1]},
        "settings": {
            "aggregation_rule": asdict(rule),
            "valuation": dict(VALUATION),
            "model_spec": asdict(SPEC),
            "spec_hash": SPEC.spec_hash(),
            "seed": 0,
            "terms": {"cid": fed.terms[round_id][0], "sha256": fed.terms[round_id][1]},
        },
        "validation": dict(VALIDATION),
        "sites": [
            {
                "site": s.site,
                "name": names[s.site],
                "update": {"cid": s.cid, "sha256": s.sha256, "num_samples": s.num_samples},
                "status": "ok",
                "components": {
                    "value": round(s.score / 1e7, 4),
                    "method": "loo",
                    "status": "OK",
                    **asdict(robust[s.site]),
                    "robust_checked": True,
                },
                "score": s.score,
                "reason": s.reason,
                "reason_label": "OK" if s.reason == 0 else "LOW_GAIN",
                "explanation": (
                    f"marginal AUC gain {s.score / 1e7:.4f} > 0: accepted"
                    if s.reason == 0
                    else EVIL_EXPLANATION
                ),
                "weight": str(s.weight),
                "weight_fraction": s.weight / WEIGHT_SCALE,
            }
            for s in subs
        ],
        "aggregation": {
            "rule": rule.name,
            "global_sha256": global_ref[1],
            "included_sites": [s.site for s in subs if s.weight > 0],
        },
        "metrics": {
            "before": {"auc": auc - 0.08, "f1": auc - 0.15, "accuracy": auc - 0.1, "loss": 0.6},
            "after": {  # "before" in the format without the calibrated decision
                "auc": auc,
                "f1": auc - 0.07,
                "accuracy": auc - 0.02,
                "loss": 0.5,
                "threshold": THRESHOLD,
                "f1_calibrated": auc - 0.005,
                "bias": [0.0, math.log((1 - THRESHOLD) / THRESHOLD)],
            },
        },
        # the sentence every log's other fields give (audit verify checks it); the report's
        # escaping of a hostile one is tested on a page rendered from an edited record
        "summary": roundlog.round_summary(
            round_id,
            sum(1 for s in subs if s.weight > 0),
            len(subs),
            rule.name,
            auc - 0.08,
            auc,
        ),
    }
    if explanations is not None:
        doc["explanations"] = explanations
    if edit is not None:  # a lying aggregator
        edit(doc)
    log_ref = put(store, roundlog.to_bytes(doc))
    fed.logs[round_id] = doc
    ledger.finalize_round(
        fed.coordinator,
        round_id,
        global_cid=global_ref[0],
        global_sha256=global_ref[1],
        log_cid=log_ref[0],
        log_sha256=log_ref[1],
    )
    return global_ref


def new_federation(tmp: Path, rpc_url: str = "embedded") -> Fed:
    """A fresh ledger with the three sites registered: on the embedded chain, or on the node at
    ``rpc_url`` (its development accounts 0..3)."""
    w3 = connect(rpc_url)
    accounts = funded_accounts(w3) if rpc_url == "embedded" else [dev_account(i) for i in range(4)]
    ledger, _ = Ledger.deploy(w3, accounts[0])
    fed = Fed(ledger, LocalStore(tmp / "store"), accounts[0], accounts[1:4])
    for account, name in zip(fed.sites, SITE_NAMES, strict=True):
        ledger.register_site(fed.coordinator, account.address, name, 10_000)
    return fed


def initial(fed: Fed) -> tuple[str, str]:
    state = initial_model(SPEC, 0).state_dict()
    return put(fed.store, encode_model(state, spec=SPEC, round=0))


def build_history(tmp: Path, rpc_url: str = "embedded") -> Fed:
    """The four rounds the module docstring lists."""
    fed = new_federation(tmp, rpc_url)
    ledger, coord, sites = fed.ledger, fed.coordinator, fed.sites
    model = initial(fed)

    r1 = open_round(fed, model)
    submit_all(fed, r1, seed=1)
    ledger.record_valuation(
        coord, r1, [Valuation(s.address, 600_000 + 100_000 * i, 0) for i, s in enumerate(sites)]
    )
    model = finalize(fed, r1, model, None)

    r2 = open_round(fed, model)
    submit_all(fed, r2, seed=2)
    ledger.record_valuation(
        coord,
        r2,
        [
            Valuation(sites[0].address, 900_000, 0),
            Valuation(sites[1].address, 0, 1),  # the malicious name is rejected: LOW_GAIN
            Valuation(sites[2].address, 700_000, 0),
        ],
    )
    fed.heatmap_png = heatmap_png(0)
    good = put(fed.store, fed.heatmap_png)
    other = put(fed.store, heatmap_png(1))
    model = finalize(
        fed,
        r2,
        model,
        {
            "method": "integrated_gradients <i>",
            "images": [
                {"cid": good[0], "sha256": good[1], "caption": "pneumonia probe <b>#7</b>"},
                {"cid": other[0], "sha256": "00" * 32, "caption": "tampered probe"},
                "not an object",
            ],
        },
    )

    r3 = open_round(fed, model, seconds=60)
    advance_time(ledger.w3, 240)
    ledger.cancel_round(coord, r3)

    r4 = open_round(fed, model)
    submit_all(fed, r4, seed=4)
    ledger.record_valuation(coord, r4, [Valuation(s.address, 800_000, 0) for s in sites])
    return fed


def store_without(fed: Fed, root: Path, cid: str) -> LocalStore:
    """A copy of the federation's store that lacks one blob."""
    copy = LocalStore(root)
    for blob in (fed.store.root / "blobs").iterdir():
        if blob.name != cid:
            copy.put(blob.read_bytes())
    return copy
