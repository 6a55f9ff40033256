#!/usr/bin/env python3
# ruff: noqa: E501  (long f-string report lines)
"""Independent reader of a fedtrail federation: no `import fedtrail`.

Uses only web3 / eth_abi / requests / numpy / safetensors / jsonschema, the contract ABI in
contracts/build/FederationLedger.json, the log's published JSON Schema
(fedtrail/schemas/explanation-log.schema.json, data) and the README's documented public rules
("The public rules, exactly", "Wire format of models and updates", "The contract").

    scripts/independent/reader.py --rpc-url URL --deployment deployment.json --ipfs http://127.0.0.1:5001 [--json]

Checks per round (each printed PASS/FAIL/NOTE):
  - round list, sites, commitments and reveals from events; commitment opened by the reveal
    (keccak256(abi.encode(site, round, sha256, numSamples)))
  - start model, terms, every update, global model and log fetched by CID over the IPFS HTTP RPC
    API (/api/v0/cat) and compared with the sha256 in contract storage (getRound/getSubmission)
  - updates decoded per the documented wire format (none / topk8), header metadata and canonical
    encoding (bytes equal to safetensors.numpy.save of the blob's own tensors)
  - weights recomputed from on-chain samples x scores with the documented integer rule
  - reputations recomputed with the documented EMA
  - global model recomputed by the terms' rule (README *Global model*: weighted, median,
    trimmed_mean, krum, norm_clip, and the running statistics' setting) and the two casts,
    re-encoded as a `model` blob and its sha256 compared with the on-chain globalSha256
  - terms: canonical bytes, known fields, every field as the README's field list states it,
    exact windows, the spec hash and tensor layout from README's `layout(spec)` (run from the
    README's text), task_fixed (README *Fixed from round 1*, as verify's payment_differences)
  - the reasons' rules in the README's order: duplicates, usable, IMPLAUSIBLE_SAMPLES, free
    riders (norm, own, stale, white-noise, shaped-noise and DP-copy tests, against the
    references the README lists, which must equal the log's), the size bound, the screens
  - the log: its JSON Schema (log.schema), weights (each chain-pinned field with its JSON type), settings (as parsed), robust
    components bit for bit, standing shares and scores, names (README *Strings*); `sites.names`
    by the README's rule and table
  - peer rounds: score windows and quorum (the terms' mode peers exactly when the chain opened a
    peer round), the medians of the revealed vectors, the validators' distances and reputations
  - sites.registry: removals, caps and budgets the coordinator set on a participant inside the
    round's windows (README *Registry changes inside a round*, a65)
  - privacy.spend / privacy.required: every declared spend recomputed with the README's accountant
    (*The privacy accountant, exactly*, run from its text), summed and composed rules
  - privacy.scored / privacy.noise: README *Updates that read*, *Privacy noise*, *Privacy scored*
    and *The noise check, exactly* (plain Python run from its text)
  - content not given (README *Content not given*): every IPFS read bounded (WAIT_SECONDS); an
    update not usable by the wire format passes update.<site> only when the chain zeroed it
    TAMPERED or MALFORMED (peer rounds: also PEER_REJECTED, WITHHELD), its tensors unread
  - standing.chain (README *Standing chain*): the log's standing block continues the source log
    (previous, before, valued_rounds), found newest first among the finalized rounds' logs
Not replayed (README *Not given here*, which lists audit verify's checks this reader leaves
out): the explanation check, the values themselves (private validation split), and others.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import re
import statistics
import struct
import sys
import unicodedata
from fractions import Fraction
from pathlib import Path

import numpy as np
import requests
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from hexbytes import HexBytes
from safetensors.numpy import save as st_save
from web3 import Web3
from web3.datastructures import AttributeDict

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "contracts" / "build" / "FederationLedger.json"
# README *Layout*: the explanation log's published JSON Schema (package data, like the contract
# artifact above: a document read with the jsonschema package, no fedtrail code)
LOG_SCHEMA = ROOT / "fedtrail" / "schemas" / "explanation-log.schema.json"
WEIGHT_SCALE = 10**18
SCORE_SCALE = 10**6
PHASES = {
    0: "None",
    1: "Open",
    2: "Valued",
    3: "Finalized",
    4: "Cancelled",
}  # enum order from the ABI? see notes
REASONS = [
    "OK",
    "LOW_GAIN",
    "OUTLIER_DIRECTION",
    "OUTLIER_NORM",
    "TAMPERED",
    "MALFORMED",
    "DUPLICATE",
    "LATE",
    "EXPLANATION_SHIFT",
    "LOW_QUALITY",
    "FREE_RIDER",
    "IMPLAUSIBLE_SAMPLES",
    "NOT_REVEALED",
    "CONTRADICTED",
    "PEER_REJECTED",
    "WITHHELD",
]
DTYPES = {
    "F32": np.float32,
    "F64": np.float64,
    "F16": np.float16,
    "U8": np.uint8,
    "U16": np.uint16,
    "U32": np.uint32,
    "U64": np.uint64,
    "I8": np.int8,
    "I16": np.int16,
    "I32": np.int32,
    "I64": np.int64,
}

RESULTS: list[dict] = []
README = ROOT / "README.md"
LAYOUT_MARKER = "<!-- layout-reference -->\n```python\n"


def readme_layout():
    """The ``layout(spec)`` function printed in the README's *Wire format* section, run from its
    text (state-dict order and shapes of every architecture's federated tensors)."""
    text = README.read_text(encoding="utf-8")
    start = text.index(LAYOUT_MARKER) + len(LAYOUT_MARKER)
    source = text[start : text.index("```", start)]
    namespace: dict = {}
    exec(compile(source, "README.md layout-reference", "exec"), namespace)
    return namespace["layout"]


RDP_MARKER = "<!-- rdp-reference -->\n```python\n"


def readme_accountant():
    """The privacy accountant printed in the README (*The privacy accountant, exactly*), run from
    its text: ``declared_micro(dp, earlier, total_before)``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(RDP_MARKER) + len(RDP_MARKER)
    source = text[start : text.index("```", start)]
    namespace: dict = {}
    exec(compile(source, "README.md rdp-reference", "exec"), namespace)
    return namespace


DP_FIELDS = {"noise_multiplier", "max_grad_norm", "sample_rate", "steps", "delta", "accountant"}


def valid_dp(doc) -> bool:
    """README *Privacy spend*: the header's "dp" object is valid DP parameters."""

    def num(v):
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    if not isinstance(doc, dict) or set(doc) - {"accounting"} != DP_FIELDS:
        return False
    if "accounting" in doc and doc["accounting"] != "composed":
        return False
    steps = doc["steps"]
    return (
        all(num(doc[k]) for k in ("noise_multiplier", "max_grad_norm", "sample_rate", "delta"))
        and 0 < doc["noise_multiplier"] <= 1000
        and doc["max_grad_norm"] > 0
        and 0 < doc["sample_rate"] <= 1
        and 0 < doc["delta"] < 1
        and isinstance(steps, int)
        and not isinstance(steps, bool)
        and 1 <= steps <= 10_000_000
        and doc["accountant"] == "rdp"
    )


def privacy_rule(acct, terms, revealed, readable, dp, samples, weights, spends, earlier_of):
    """README *Privacy spend*. revealed: sites with a revealed update; readable: those whose
    update reads; dp: site -> "dp" object or None (readable ones); samples / weights: on-chain
    numSamples / weight; spends: [(site, epsilonMicro)] of the round's PrivacySpent events;
    earlier_of(site) -> (list of earlier "dp" objects or None when one cannot be read,
    total_before). Returns [(check, ok, detail)] (empty: neither check applies)."""
    asked = terms.get("privacy")
    if asked is None and not any(dp.get(a) is not None for a in readable):
        return []
    declared: dict = {}
    problems = []
    for site, micro in spends:
        if site in declared:
            problems.append(f"{site[:10]} declared twice")
        declared[site] = declared.get(site, 0) + micro
    checked = 0
    for a in sorted(revealed, key=lambda x: int(x, 16)):
        said = declared.get(a, 0)
        if a not in readable:
            if a in declared:
                problems.append(f"{a[:10]} declared a spend for an unreadable update")
            continue
        checked += 1
        p = dp.get(a)
        if p is None:
            if said:
                problems.append(f"{a[:10]} declared {said} micro but its update has no dp")
            continue
        n = samples[a]
        if asked is not None and p["delta"] != asked.get("delta"):
            problems.append(f"{a[:10]} delta {p['delta']} is not the terms' {asked.get('delta')}")
        if n > 0 and p["delta"] > 1 / n:
            problems.append(f"{a[:10]} delta {p['delta']} > 1 / its {n} samples")
        if p["sample_rate"] * n < 1 - 1e-9:
            problems.append(f"{a[:10]} sample rate {p['sample_rate']} over {n} samples")
        inverse = 1 / p["sample_rate"]
        per_epoch = max(1, round(inverse)) if math.isfinite(inverse) else 0
        if per_epoch == 0 or p["steps"] % per_epoch:
            problems.append(f"{a[:10]} {p['steps']} steps are not whole epochs of {per_epoch}")
        earlier, before = earlier_of(a) if p.get("accounting") == "composed" else ([], 0)
        if earlier is None:
            problems.append(f"{a[:10]}: an earlier private update cannot be read or has no dp")
            continue
        got = acct["declared_micro"](p, earlier, before)
        if got != said:
            problems.append(
                f"{a[:10]} declared {said} micro, its dp ({p.get('accounting', 'summed')}) gives {got}"
            )
    unknown = sorted(s[:10] for s in set(declared) - set(revealed))
    if unknown:
        problems.append(f"spends declared by sites without an update: {', '.join(unknown)}")
    out = [
        (
            "privacy.spend",
            not problems,
            "; ".join(problems)
            or f"{checked} update(s): every declared spend is the README accountant's "
            f"({len(spends)} spend(s) on chain: {dict(declared)})",
        )
    ]
    if asked is not None and asked.get("required"):
        plain = sorted(
            a[:10] for a in revealed if weights[a] > 0 and (a not in readable or dp.get(a) is None)
        )
        out.append(
            (
                "privacy.required",
                not plain,
                f"weighted updates without dp: {', '.join(plain)}"
                if plain
                else "every weighted update carries dp",
            )
        )
    return out


NOISE_MARKER = "<!-- noise-reference -->\n```python\n"


def readme_noise():
    """The noise check printed in the README (*The noise check, exactly*), run from its text:
    ``noise_breach(tensors, dp, num_samples, compression)`` and its parts."""
    text = README.read_text(encoding="utf-8")
    start = text.index(NOISE_MARKER) + len(NOISE_MARKER)
    source = text[start : text.index("```", start)]
    namespace: dict = {}
    exec(compile(source, "README.md noise-reference", "exec"), namespace)
    return namespace


UNAVAILABLE_REASONS = {"TAMPERED", "MALFORMED", "WITHHELD", "PEER_REJECTED"}


def spend_breach(acct, asked, dp, declared, n, earlier):
    """README *Privacy scored*: the spend-breach status of an update that reads, or None.
    asked: the terms' privacy block or None; dp: its "dp" object or None; declared: the sum of
    its site's PrivacySpent of the round; n: its numSamples; earlier: (entries, total_before),
    entries in chain order, each the earlier update's "dp" object or "unbacked" (given, header
    does not read or has no dp), "unavailable" (not given, scored 0 as unusable on chain) or
    "unreadable" (anything else)."""
    if dp is None:
        return "NO DP PARAMETERS" if declared > 0 else None
    if asked is not None and dp["delta"] != asked.get("delta"):
        return "WRONG DELTA"
    if n > 0 and dp["delta"] > 1 / n:
        return "DELTA ABOVE 1/n"
    inverse = 1 / dp["sample_rate"]
    if (
        (n > 0 and dp["sample_rate"] * n < 1 - 1e-9)
        or not math.isfinite(inverse)
        or dp["steps"] % max(1, round(inverse))
    ):
        return "SAMPLING IMPLAUSIBLE"
    entries, before = earlier
    if dp.get("accounting") == "composed":
        for entry in entries:  # the first one that gives no "dp" decides
            if entry == "unbacked":
                return "EARLIER SPEND UNBACKED"
            if entry == "unavailable":
                return "EARLIER SPEND UNAVAILABLE"
            if not isinstance(entry, dict):
                return None  # cannot be recomputed here: privacy.spend's to fail
        got = acct["declared_micro"](dp, entries, before)
    else:
        got = acct["declared_micro"](dp, [], before)
    return "DIFFERS" if got != declared else None


def dp_scored_rule(noise_on, spend_on, peer, asked, decoded_dp, updates):
    """README *Privacy noise* and *Privacy scored*. noise_on / spend_on: the terms'
    dp_noise_check / dp_spend_check; peer: a peer round; asked: the terms' privacy block;
    decoded_dp: some revealed update that decodes has "dp"; updates: {site: dict(reads, dp,
    lacks, breach, weight, reason)} of the revealed updates (lacks / breach: the noise verdict
    and spend-breach status of an update that reads, else False / None). Returns [(check, ok,
    detail)] for the checks that apply."""
    out = []
    sites = sorted(updates, key=lambda x: int(x, 16))
    breaches = {a: updates[a]["breach"] for a in sites if spend_on and updates[a]["breach"]}
    lacking = {a for a in sites if noise_on and updates[a]["lacks"]}

    def problems(flagged, clean):
        bad = []
        for a in sites:
            u = updates[a]
            if a in flagged and (u["weight"] > 0 or u["reason"] != "MALFORMED"):
                bad.append(
                    f"{a[:10]} flagged ({flagged[a]}) but weight {u['weight']} {u['reason']}"
                )
            elif a not in flagged and clean(a) and u["reason"] == "MALFORMED":
                bad.append(f"{a[:10]} is MALFORMED on chain but passes")
        return bad

    if not peer and spend_on and (asked is not None or decoded_dp or breaches):
        bad = problems(breaches, lambda a: updates[a]["reads"] and a not in lacking)
        out.append(
            (
                "privacy.scored",
                not bad,
                "; ".join(bad)
                or f"{len(breaches)} spend breach(es) {sorted(set(breaches.values()))}, each MALFORMED with weight 0; no other update that reads is MALFORMED",
            )
        )
    if not peer and noise_on and decoded_dp:
        bad = problems(
            {a: "lacks its noise" for a in lacking},
            lambda a: updates[a]["reads"] and updates[a]["dp"] is not None and a not in breaches,
        )
        out.append(
            (
                "privacy.noise",
                not bad,
                "; ".join(bad)
                or f"{len(lacking)} DP update(s) lacking their noise, each MALFORMED with weight 0; no DP update that carries it is",
            )
        )
    return out


def standing_chain_rule(r: int, standing_terms: bool, block, earlier) -> tuple[bool, str]:
    """README *Standing chain*: ``block`` the round log's ``standing`` (None when absent or
    null), ``standing_terms`` the terms' ``valuation.standing``, ``earlier`` the finalized rounds
    before ``r`` newest first, each ``(q, cid, sha256 hex, its log's standing or None)``, or
    ``(q, cid, sha, ValueError(why))`` for a log not given, under another sha256, not JSON or
    naming another round. Returns (ok, detail)."""
    if not standing_terms:
        return block is None, (
            "valued per round, no standing block"
            if block is None
            else "valued per round, yet the log shows standing"
        )
    if not isinstance(block, dict):
        return False, "the terms value with standing; the log has none"
    source = None
    for q, cid, sha_hex, st in earlier:  # newest first: the first log with a block
        if isinstance(st, Exception):
            return False, f"cannot read round {q}'s log: {st}"
        if isinstance(st, dict):
            source = (q, cid, sha_hex, st)
            break
    if source is None and earlier:  # none has one: the latest finalized round, no block
        source = (*earlier[0][:3], None)
    problems = []
    if source is None:
        want_prev, before, valued = None, {}, 0
    else:
        q, cid, sha_hex, st = source
        want_prev = {"round": q, "cid": cid, "sha256": sha_hex}
        before = st.get("after") if isinstance(st, dict) else {}
        valued = (
            st.get("valued_rounds") + 1
            if isinstance(st, dict) and type(st.get("valued_rounds")) is int
            else 0
            if st is None
            else None
        )
    if block.get("previous") != want_prev:
        problems.append(f"previous {block.get('previous')} is not {want_prev}")
    if block.get("before") != before:
        problems.append("'before' differs from the source log's 'after'")
    if block.get("valued_rounds") != valued:
        problems.append(f"valued_rounds {block.get('valued_rounds')}, expected {valued}")
    return not problems, "; ".join(problems) or (
        f"continues round {source[0]}'s log" if source else "continues nothing (first round)"
    ) + f", {len(before)} accumulated value(s) carried in"


def zeroed_unusable(reason: int, weight: int, peer: bool) -> bool:
    """README *Content not given*: an update not usable by the wire format passes
    ``update.<site>`` when the chain zeroed it: weight 0 and reason TAMPERED or MALFORMED (in a
    round with a PeerScoringOpened also PEER_REJECTED or WITHHELD)."""
    allowed = {"TAMPERED", "MALFORMED"} | ({"PEER_REJECTED", "WITHHELD"} if peer else set())
    return weight == 0 and 0 <= reason < len(REASONS) and REASONS[reason] in allowed


def status_rule(lsites, read_as, onchain, aggregator_round, revealed, read_then=None):
    """README *Log status*: lsites the log's entries by address, read_as this reader's reading
    ("ok", "tampered", "malformed", "duplicate") of the revealed updates it read, onchain the
    getSubmission tuples, revealed every revealed site, read_then (peer rounds) the updates
    read while the round was scored: the others' status may also be ok, duplicate or
    malformed. Returns (ok, detail)."""
    problems = []
    unusable = {"tampered", "malformed", "duplicate"}
    for a in sorted(revealed, key=lambda x: int(x, 16)):
        entry = lsites.get(a)
        if entry is None:
            continue
        named = REASONS[onchain[a][3]].lower()
        if named in unusable and entry.get("status") != named:
            problems.append(f"{a[:10]} is {named.upper()} on chain, status {entry.get('status')!r}")
        elif aggregator_round and named not in unusable and entry.get("status") in unusable:
            problems.append(f"{a[:10]} status {entry.get('status')!r}, reason {named.upper()}")
    for a in sorted(read_as, key=lambda x: int(x, 16)):
        entry = lsites.get(a)
        allowed = {read_as[a]}
        if read_then is not None and a not in read_then:
            allowed |= {"ok", "duplicate", "malformed"}
        if entry is not None and entry.get("status") not in allowed:
            problems.append(f"{a[:10]} status {entry.get('status')!r}, read as {read_as[a]}")
    return not problems, "; ".join(
        problems
    ) or f"{len(read_as)} status(es) as this reader reads them"


def spec_hash_of(spec: dict) -> str:
    """README *Wire format*: sha256 of the canonical JSON of the spec and its tensors in
    state-dict order, each ``[name, shape, "float32"]``."""
    tensors = [[name, shape, "float32"] for name, shape in readme_layout()(spec)]
    text = json.dumps({"spec": spec, "tensors": tensors}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def report(rnd, check, ok, detail):
    res = "PASS" if ok is True else ("FAIL" if ok is False else str(ok))
    RESULTS.append({"round": rnd, "check": check, "result": res, "detail": detail})
    print(f"{rnd!s:>5}  {check:<28} {res:<5} {detail}")


# ---------------------------------------------------------------- IPFS (HTTP RPC API)
WAIT_SECONDS = 10  # README *Content not given*: the wait for a CID's first bytes
META_KEYS = {"compression", "format_version", "kind", "round", "spec_hash"}
NOT_A_FILE_WORDS = ("directory", "pbnode", "unixfs", "protocol buffer")
# README *Content not given*: bytes are given only under their canonical CID, a CIDv0 or the
# base32 dag-pb CIDv1 of one sha2-256 root, so no other text can name given bytes; the chain
# takes any text as a CID (attack a126: a reveal under a megabyte of NUL bytes), which the
# daemon answered with an empty 400 (~8 KB) or a reset connection (~100 KB) instead of a verdict
CID_SHAPE = re.compile(r"Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{58}")
# README *The round log against the chain* (a126): a log records a chain CID as it is only when
# it has CID_SHAPE, else as "sha256:" and the hex sha256 of the text's UTF-8 (the *Strings*
# reading of its bytes); a log written before that rule holds the text itself, which names it too
STAND_IN = "sha256:"


def logged_cid(text: str) -> str:
    if CID_SHAPE.fullmatch(text):
        return text
    return STAND_IN + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def logged_cid_agrees(logged, text: str) -> bool:
    return isinstance(logged, str) and logged in (logged_cid(text), text)


MAX_JSON_DEPTH = 32  # README *Blobs chosen by someone else*: deeper documents are refused
_JSON_STRING_BYTES = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_JSON_STRING_TEXT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)


def json_depth(data) -> int:
    """The deepest ``[``/``{`` nesting of JSON text outside its strings, counted without
    recursion: web3's ``py_ecc`` raises Python's recursion limit to 100,000, and CPython's
    parser then overflows the C stack (a segmentation fault) on a document nested some 30,000
    deep (attack a127: a site's update header)."""
    if isinstance(data, str):
        bare = _JSON_STRING_TEXT.sub('""', data).encode("utf-8", "surrogatepass")
    else:
        bare = _JSON_STRING_BYTES.sub(b'""', bytes(data))
    b = np.frombuffer(bare, dtype=np.uint8)
    opens = (b == ord("[")) | (b == ord("{"))
    at = np.flatnonzero(opens | (b == ord("]")) | (b == ord("}")))
    return int(np.cumsum(np.where(opens[at], 1, -1)).max(initial=0))


def _unique_keys(pairs):
    doc = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"repeats the key {key!r} in one object")
        doc[key] = value
    return doc


def _not_a_number(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is not a finite float")
    return value


def _float_sized_int(text: str) -> int:
    value = int(text)  # over Python's 4,300 digits: a ValueError
    if len(text) > 300:
        try:
            float(value)
        except OverflowError:
            raise ValueError(f"an integer of {len(text)} digits, too large for a float") from None
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    return False


_LOG_VALIDATOR: list = []


def log_schema_problems(log) -> list:
    """The places where the parsed round log ``log`` breaks its published JSON Schema
    (``LOG_SCHEMA``; README *Layout*), each ``path: message``, at most five, sorted; empty when
    it follows it. Before h-312 the reader's log.schema only asked that the log read one way
    (README *Not given here* left the schema out): a log carrying keys no writer writes (a55's
    ``aggregation.detail``), a missing ``summary`` or a text where a number is due passed it."""
    import jsonschema

    if not _LOG_VALIDATOR:
        schema = json.loads(LOG_SCHEMA.read_text(encoding="utf-8"))
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _LOG_VALIDATOR.append(cls(schema))
    found = sorted(
        f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in _LOG_VALIDATOR[0].iter_errors(log)
    )
    return found[:5]


def json_loads(data, *, strict: bool = False):
    """``json.loads`` of a document a participant chose, refused when nested deeper than
    ``MAX_JSON_DEPTH``; ``strict`` (a round log; README *Trust model* and *Blobs chosen by
    someone else*: such a log fails log.schema, attacks a128, a63, a29, a31) also when an
    object repeats a key, a number is ``NaN``, ``Infinity`` or beyond a float, or a string
    holds a lone UTF-16 surrogate. A ValueError, like any JSON that does not parse."""
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels ({depth})")
    if not strict:
        return json.loads(data)
    doc = json.loads(
        data,
        object_pairs_hook=_unique_keys,
        parse_constant=_not_a_number,
        parse_float=_finite_float,
        parse_int=_float_sized_int,
    )
    if _lone_surrogate(doc):
        raise ValueError("a string holds a lone UTF-16 surrogate")
    return doc


def short_text(text: str, most: int = 100) -> str:
    """``repr`` of a participant's text cut to ``most`` characters for a report line."""
    shown = repr(text)
    return shown if len(shown) <= most else shown[: most - 3] + "..."


class NotGiven(Exception):
    """README *Content not given*: the store gives no bytes for a CID. ``kind``: "missing"
    (no answer within the wait, or the daemon says not found / timed out), "not a file" or
    "invalid cid" (both fixed by the chain's CID alone)."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class Ipfs:
    def __init__(self, url, wait: float = WAIT_SECONDS):
        self.url = url.rstrip("/")
        self.wait = wait

    def cat(self, cid: str) -> bytes:
        """The bytes under ``cid``, or NotGiven: the daemon's own ``timeout`` and this
        request's both bound the wait (an offline daemon never answers "not found" for content
        nobody serves: attacks a67, a80, a81), so an unserved CID is a verdict, not a hang."""
        if not isinstance(cid, str) or not CID_SHAPE.fullmatch(cid):
            raise NotGiven(
                "invalid cid",
                f"{short_text(cid)}: not a CIDv0 or base32 dag-pb CIDv1 of one sha2-256 root",
            )
        try:
            r = requests.post(
                f"{self.url}/api/v0/cat",
                params={"arg": cid, "timeout": f"{self.wait:g}s"},
                timeout=(self.wait, self.wait),
            )
        except requests.Timeout:
            raise NotGiven("missing", f"{cid}: no answer within {self.wait:g}s") from None
        except requests.RequestException as exc:  # a reset or broken answer: nothing given
            raise NotGiven("missing", f"{cid}: {type(exc).__name__}") from None
        if r.status_code == 200:
            if cid not in canonical_cids(r.content):
                raise NotGiven(
                    "invalid cid",
                    f"{cid}: not the canonical CID of its bytes ({canonical_cids(r.content)[0]})",
                )
            return r.content
        text = r.text[:300].lower()
        if any(w in text for w in NOT_A_FILE_WORDS):
            raise NotGiven("not a file", f"{cid}: {r.text[:200]}")
        if "invalid" in text and ("cid" in text or "query input" in text):
            raise NotGiven("invalid cid", f"{cid}: {r.text[:200]}")
        raise NotGiven("missing", f"{cid}: HTTP {r.status_code} {r.text[:200]}")


CHUNK_BYTES = 262144  # README *Content not given*: the canonical CID's chunks
MAX_LINKS = 174  # and the most links of one node in its balanced layout
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:  # protobuf length-delimited field
    return _varint(tag << 3 | 2) + _varint(len(payload)) + payload


def canonical_cids(data: bytes) -> tuple[str, str]:
    """README *Content not given*: the two spellings (CIDv0, base32 dag-pb CIDv1) of the CID a
    default `ipfs add` gives ``data``: 256 KiB chunks as dag-pb UnixFS file leaves, nodes of at
    most 174 links in a balanced layout, sha2-256. Written from the UnixFS and dag-pb specs."""
    # level 0: (block sha256, block size + sizes below it, file bytes under it)
    chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
    level = []
    for c in chunks:
        unixfs = b"\x08\x02" + (_field(2, c) if c else b"") + b"\x18" + _varint(len(c))
        node = _field(1, unixfs)
        level.append((hashlib.sha256(node).digest(), len(node), len(c)))
    while len(level) > 1:
        up = []
        for i in range(0, len(level), MAX_LINKS):
            kids = level[i : i + MAX_LINKS]
            links = b"".join(
                _field(2, _field(1, b"\x12\x20" + h) + _field(2, b"") + b"\x18" + _varint(t))
                for h, t, _ in kids
            )
            size = sum(n for _, _, n in kids)
            unixfs = (
                b"\x08\x02\x18" + _varint(size) + b"".join(b"\x20" + _varint(n) for _, _, n in kids)
            )
            node = links + _field(1, unixfs)
            up.append((hashlib.sha256(node).digest(), len(node) + sum(t for _, t, _ in kids), size))
        level = up
    mh = b"\x12\x20" + level[0][0]
    num, v0 = int.from_bytes(mh, "big"), ""
    while num:
        num, rem = divmod(num, 58)
        v0 = B58[rem] + v0
    v1 = "b" + base64.b32encode(b"\x01\x70" + mh).decode().lower().rstrip("=")
    return v0, v1


def ipfs_url(store: str) -> str:
    """Accept http://host:port or the README's ipfs:/ip4/HOST/tcp/PORT/http form."""
    if store.startswith("ipfs:"):
        parts = store[5:].strip("/").split("/")
        host, port = parts[1], parts[3]
        scheme = parts[4] if len(parts) > 4 else "http"
        return f"{scheme}://{host}:{port}"
    return store


# ---------------------------------------------------------------- wire format
def parse_safetensors(blob: bytes):
    """Return (header dict, metadata dict, {name: np.ndarray}) reading the bytes by hand."""
    if len(blob) < 8:
        raise ValueError("shorter than the 8-byte header length")
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json_loads(blob[8 : 8 + hlen])
    base = 8 + hlen
    meta = header.pop("__metadata__", None)
    tensors = {}
    spans = []
    for name, e in header.items():
        dt = DTYPES[e["dtype"]]
        a, b = e["data_offsets"]
        count = int(np.prod(e["shape"])) if e["shape"] else 1
        if b - a != count * np.dtype(dt).itemsize:
            raise ValueError(f"{name}: size mismatch")
        tensors[name] = (
            np.frombuffer(blob[base + a : base + b], dtype=np.dtype(dt).newbyteorder("<"))
            .reshape(e["shape"])
            .copy()
        )
        spans.append((a, b))
    spans.sort()
    pos = 0
    for a, b in spans:
        if a != pos:
            raise ValueError("gap or overlap in data_offsets")
        pos = b
    if base + pos != len(blob):
        raise ValueError("trailing bytes")
    return header, meta, tensors


def fedtrail_meta(meta):
    if not isinstance(meta, dict) or list(meta) != ["fedtrail"]:
        raise ValueError(f"__metadata__ must have exactly one key 'fedtrail', got {meta!r}")
    text = meta["fedtrail"]
    doc = json_loads(text)
    if json.dumps(doc, sort_keys=True, separators=(",", ":")) != text:
        raise ValueError("metadata text is not the canonical JSON")
    return text, doc


def integer_is(value, n: int) -> bool:
    """README *Wire format*: a JSON integer equal to n (`true` and `1.0` are not 1: a105)."""
    return type(value) is int and value == n


def update_header_ok(udoc: dict, r: int, spec_hash: str) -> bool:
    """README *Wire format*: an update's metadata for round r under the terms' spec hash."""
    return (
        udoc.get("kind") == "update"
        and integer_is(udoc.get("round"), r)
        and integer_is(udoc.get("format_version"), 1)
        and udoc.get("spec_hash") == spec_hash
        and set(udoc) - {"dp"} == META_KEYS  # README *Wire format*: these, "dp"
        and ("dp" not in udoc or valid_dp(udoc["dp"]))
    )


DP_FLOAT_FIELDS = ("noise_multiplier", "max_grad_norm", "sample_rate", "delta")


def floats_spelled(doc) -> bool:
    """README *Wire format*: the metadata's float fields written as floats (`1.0`, never `1`):
    topk8's `fraction` and the DP parameters' (a104)."""
    comp, dp = doc.get("compression"), doc.get("dp")
    if isinstance(comp, dict) and "fraction" in comp and not isinstance(comp["fraction"], float):
        return False
    return not isinstance(dp, dict) or all(
        isinstance(dp[k], float) for k in DP_FLOAT_FIELDS if k in dp
    )


def canonical(tensors: dict, text: str) -> bytes:
    return st_save(tensors, metadata={"fedtrail": text})


def canonical_blob(blob: bytes, tensors: dict, text: str, doc: dict) -> bool:
    """README *Wire format*: the bytes safetensors writes for the blob's own tensors and
    metadata text, that text with its float fields written as floats."""
    return blob == canonical(tensors, text) and floats_spelled(doc)


def decode_update(tensors: dict, doc: dict, shapes: dict) -> dict:
    """Dense float32 delta per tensor name, per README 'Wire format'."""
    comp = doc["compression"]
    out = {}
    # README *Wire format*: C is {"method":"none"} or {"fraction":F,"method":"topk8"}, F a JSON
    # number in (0, 1]; every part's dtype and shape as the bullets name them (a103)
    if not isinstance(comp, dict) or set(comp) != (
        {"method"} if comp.get("method") == "none" else {"fraction", "method"}
    ):
        raise ValueError(f"compression {comp!r}: keys other than the wire format's")
    if comp["method"] == "topk8":
        f = comp["fraction"]
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0 < f <= 1:
            raise ValueError(f"topk8 fraction {f!r} is not a number in (0, 1]")
    if comp["method"] == "none":
        for name, arr in tensors.items():
            if arr.dtype != np.float32:
                raise ValueError(f"{name}: dtype {arr.dtype}, F32 expected")
            out[name] = arr
    elif comp["method"] == "topk8":
        for name, shape in shapes.items():
            if not trainable(name):  # running statistics travel dense, as `none`
                if name not in tensors or tensors[name].dtype != np.float32:
                    raise ValueError(f"{name}: running statistics not dense F32")
                out[name] = tensors[name]
                continue
            if any(name + p not in tensors for p in (":idx", ":q", ":scale")):
                raise ValueError(f"{name}: not sent as the three topk8 parts")
            idx, q, scale = tensors[name + ":idx"], tensors[name + ":q"], tensors[name + ":scale"]
            n = int(np.prod(shape)) if shape else 1
            k = min(n, max(1, math.ceil(float(comp["fraction"]) * n)))
            if idx.dtype not in (np.uint8, np.uint16, np.uint32) or idx.shape != (k,):
                raise ValueError(
                    f"{name}:idx is {idx.dtype}{list(idx.shape)}, not U8/U16/U32 [{k}]"
                )
            if q.dtype != np.int8 or q.shape != (k,):
                raise ValueError(f"{name}:q is {q.dtype}{list(q.shape)}, not I8 [{k}]")
            if scale.dtype != np.float32 or scale.shape != ():
                raise ValueError(f"{name}:scale is {scale.dtype}{list(scale.shape)}, not F32 []")
            pos = np.cumsum(idx.astype(np.int64))
            if len(idx) > 1 and np.any(idx[1:] == 0):
                raise ValueError(f"{name}: gap of 0")
            if len(pos) and pos[-1] >= n:
                raise ValueError(f"{name}: position >= n")
            s = np.float32(scale.reshape(()))
            if not (np.isfinite(s) and s > 0):
                raise ValueError(f"{name}: bad scale")
            if np.any(q == -128):
                raise ValueError(f"{name}: q of -128")
            dense = np.zeros(n, dtype=np.float32)
            dense[pos] = q.astype(np.float32) * s
            if not np.all(np.isfinite(dense)):
                raise ValueError(f"{name}: non-finite")
            out[name] = dense.reshape(shape)
        parts = [(n,) if not trainable(n) else (n + ":idx", n + ":q", n + ":scale") for n in shapes]
        extra = set(tensors) - {k for ks in parts for k in ks}  # a trainable T dense: refused
        if extra:
            raise ValueError(f"unexpected entries {sorted(extra)}")
    else:
        raise ValueError(f"unknown compression {comp}")
    missing = set(shapes) - set(out)
    if missing:
        raise ValueError(f"missing tensors {sorted(missing)}")
    for name, arr in out.items():
        if name not in shapes or tuple(arr.shape) != tuple(shapes[name]):
            raise ValueError(f"{name}: unexpected name or shape")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: non-finite")
    return out


# ---------------------------------------------------------------- public rules
def weights_rule(entries):
    """entries: list of (address, n, s) -> {address: w} per README 'The public rules' (Weights)."""
    p = {a: n * s for a, n, s in entries}
    T = sum(p.values())
    w = {a: p[a] * WEIGHT_SCALE // T for a in p}
    left = WEIGHT_SCALE - sum(w.values())
    for a in sorted(p, key=lambda x: int(x, 16)):
        if left == 0:
            break
        if p[a] * WEIGHT_SCALE % T != 0:
            w[a] += 1
            left -= 1
    return w, T


def block_sum(v: np.ndarray) -> float:
    """README 'Flattening and sums': blocks of 1024 (last zero-padded), added element-wise in
    order, then math.fsum of the 1024 partial sums."""
    n = len(v)
    pad = (-n) % 1024
    if pad:
        v = np.concatenate([v, np.zeros(pad)])
    acc = np.zeros(1024)
    for blk in v.reshape(-1, 1024):
        acc = acc + blk
    return math.fsum(acc.tolist())


def median_of(values):
    s = sorted(values)
    k = len(s)
    return s[k // 2] if k % 2 else (s[k // 2 - 1] + s[k // 2]) / 2.0


def robust_components(flats: dict, norm_scale_floor: float):
    """README 'Robust statistics' over flattened float64 updates keyed by address."""
    order = sorted(flats, key=lambda x: int(x, 16))
    stack = np.stack([flats[a] for a in order])
    stack = np.where(stack == 0.0, 0.0, stack)  # -0.0 read as +0.0
    k = len(order)
    srt = np.sort(stack, axis=0)
    m = srt[k // 2] if k % 2 else (srt[k // 2 - 1] + srt[k // 2]) * 0.5
    mnorm = math.sqrt(block_sum(m * m))
    out = {}
    norms = {a: math.sqrt(block_sum(flats[a] * flats[a])) for a in order}
    med = median_of(list(norms.values()))
    mad = median_of([abs(norms[a] - med) for a in order])
    scale = max(1.4826 * mad, norm_scale_floor * med)
    for a in order:
        den = norms[a] * mnorm
        cos = 0.0 if den == 0 else min(1.0, max(-1.0, block_sum(flats[a] * m) / den))
        out[a] = {
            "cosine": cos,
            "norm": norms[a],
            "median_norm": med,
            "norm_z": 0.0 if scale == 0 else (norms[a] - med) / scale,
        }
    return out


class RuleRefused(ValueError):
    """README *Global model*: the rule gives no global model for these updates (none paid, an
    unknown rule or setting)."""


def sorted_columns(rows: np.ndarray) -> np.ndarray:
    """README *Global model*, "sorted": each -0.0 replaced by +0.0, then sorted per coordinate."""
    return np.sort(rows + 0.0, axis=0)


def median_columns(rows: np.ndarray) -> np.ndarray:
    """README *Global model*, `median`: s[n // 2], or (s[n // 2 - 1] + s[n // 2]) * 0.5."""
    n = rows.shape[0]
    s = sorted_columns(rows)
    return s[n // 2].copy() if n % 2 else (s[n // 2 - 1] + s[n // 2]) * 0.5


def rule_vector(rule: dict, rows: np.ndarray, c: list) -> np.ndarray:
    """README *Global model*: the float64 vector `d` of the terms' rule over the kept rows
    (ascending address order) with their weights as correctly rounded fractions `c`."""
    name = rule.get("name")
    n = rows.shape[0]
    if name == "weighted":
        d = np.zeros(rows.shape[1])
        for ci, row in zip(c, rows, strict=True):
            d = d + ci * row
        return d
    if name == "median":
        return median_columns(rows)
    if name == "trimmed_mean":
        k = math.floor(float(rule["trim_ratio"]) * n)
        s = sorted_columns(rows)
        acc = s[k].copy()
        for j in range(k + 1, n - k):
            acc = acc + s[j]
        return acc / float(n - 2 * k)
    if name == "krum":
        if n < 3:  # no neighbour to score by: every update kept
            acc = rows[0].copy()
            for i in range(1, n):
                acc = acc + rows[i]
            return acc / float(n)
        f = min(int(rule["krum_f"]), (n - 3) // 2)
        m = n - f if rule.get("krum_m") is None else min(int(rule["krum_m"]), n)
        dist = {}
        for i in range(n):
            for j in range(i + 1, n):
                diff = rows[i] - rows[j]
                dist[i, j] = dist[j, i] = block_sum(diff * diff)
        scores = [
            math.fsum(sorted(dist[i, j] for j in range(n) if j != i)[: n - f - 2]) for i in range(n)
        ]
        kept = sorted(sorted(range(n), key=lambda i: (scores[i], i))[:m])
        acc = rows[kept[0]].copy()
        for i in kept[1:]:
            acc = acc + rows[i]
        return acc / float(m)
    if name == "norm_clip":
        norms = [math.sqrt(block_sum(row * row)) for row in rows]
        if rule.get("max_norm") is None:
            limit = float(median_columns(np.array(norms)[:, None])[0])
        else:
            limit = float(rule["max_norm"])
        d = np.zeros(rows.shape[1])
        for ci, row, nrm in zip(c, rows, norms, strict=True):
            factor = limit / nrm if nrm > limit else 1.0
            d = d + (ci * factor) * row
        return d
    raise RuleRefused(f"unknown aggregation rule {name!r}")


def rule_settings_refused(rule: dict) -> None:
    """README *Global model*: the settings' ranges, each checked whatever `name` is and only
    when present (absent: the product's default); a boolean is no number. RuleRefused naming
    the setting (a round outside them is one the product never aggregates)."""

    def number(x: object) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    def integer(x: object) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if "trim_ratio" in rule:
        t = rule["trim_ratio"]
        if not (number(t) and 0.0 <= t < 0.5):
            raise RuleRefused(f"trim_ratio {t!r} is not a number in [0, 0.5)")
    if "krum_f" in rule:
        f = rule["krum_f"]
        if not (integer(f) and f >= 0):
            raise RuleRefused(f"krum_f {f!r} is not an integer >= 0")
    m = rule.get("krum_m")
    if m is not None and not (integer(m) and m >= 1):
        raise RuleRefused(f"krum_m {m!r} is not null or an integer >= 1")
    mx = rule.get("max_norm")
    if mx is not None and not (number(mx) and math.isfinite(mx) and mx > 0):
        raise RuleRefused(f"max_norm {mx!r} is not null or a finite number > 0")


def aggregate_rule(rule: dict, start: dict, deltas: dict, weights: dict, order: list) -> dict:
    """README *Global model*: the updates with weight > 0 in ascending address order, flattened
    in `layout(spec)` order (`order`), the rule's `d`, the running statistics by the terms'
    `statistics`, then the two casts. deltas/weights keyed by address; float32 tensors out."""
    rule_settings_refused(rule)
    kept = sorted((a for a in deltas if weights[a] > 0), key=lambda x: int(x, 16))
    if not kept:
        raise RuleRefused("no update with a positive weight")
    rows = np.stack([flat_of(deltas[a], order, False) for a in kept])
    c = [weights[a] / WEIGHT_SCALE for a in kept]  # Python int / int: correctly rounded
    d = rule_vector(rule, rows, c)
    sizes = [int(np.prod(start[name].shape)) for name in order]
    offsets = np.cumsum([0, *sizes])
    stats = np.zeros(rows.shape[1], dtype=bool)
    for name, lo, hi in zip(order, offsets[:-1], offsets[1:], strict=True):
        stats[lo:hi] = not trainable(name)
    setting = rule.get("statistics", "weighted")
    if stats.any() and setting in ("anchored_median", "median"):
        votes = rows[:, stats]
        if setting == "anchored_median" and len(kept) < 3:
            votes = np.concatenate([votes, np.zeros((3 - len(kept), votes.shape[1]))])
        d[stats] = median_columns(votes)
    elif stats.any() and setting != "weighted":
        raise RuleRefused(f"unknown statistics setting {setting!r}")
    delta = d.astype(np.float32)
    out = {}
    for name, lo, hi in zip(order, offsets[:-1], offsets[1:], strict=True):
        g = start[name]
        part = delta[lo:hi].reshape(g.shape)
        out[name] = (g.astype(np.float64) + part.astype(np.float64)).astype(np.float32)
    return out


# ---------------------------------------------------------------- the reasons' public rules
STATS = ("running_mean", "running_var")
# README *The round terms, field by field* (combiner): a threshold a block lacks takes its value
# from before it existed
LATER_THRESHOLDS = {
    "max_norm_ratio": 0.0,
    "small_norm_ratio": 0.0,
    "stale_rounds": 1,
    "credit_cosine": -1.0,
    "sample_median_self": 0,
    "dp_spend_check": 0,
    "norm_size_cap": 1.0,
    "tiny_size_power": 0.0,
    "tiny_size_reference": 0.0,
    "tiny_size_own": 0,
    "dp_noise_check": 0,
    "relief_cosine": -1.0,
    "boost_clip": 0.0,
    "warm_up_floor": 1.0,
    "warm_up_scope": 0,
    "record_floor": 0.0,
    "white_noise_z": 0.0,
    "shaped_noise_z": 0.0,
    "block_noise_z": 0.0,
    "dp_copy_z": 0.0,
    "stale_support_cosine": 1.0,
    "stale_support_overlap": 1.0,
    "span_residual": 0.0,
    "size_norm_z": 0.0,
    "size_norm_count": 0.0,
}


def trainable(name: str) -> bool:
    return not name.endswith(STATS)


def flat_of(update: dict, order, only_trainable: bool) -> np.ndarray:
    return np.concatenate(
        [update[n].astype(np.float64).ravel() for n in order if not only_trainable or trainable(n)]
    )


def tensor_norm(update: dict) -> float:
    """README *Size bound*: sqrt(fsum(per-tensor sums of float64 squares)), trainable only."""
    return math.sqrt(
        math.fsum(
            math.fsum((v.astype(np.float64).ravel() ** 2).tolist())
            for n, v in update.items()
            if trainable(n)
        )
    )


def codes(upd):
    """README *Duplicates*: each tensor's codes, in sorted name order, float64."""
    out = []
    for n in sorted(upd):
        t = upd[n].astype(np.float64).ravel()
        m = np.max(np.abs(t)) if t.size else 0.0
        out.append(np.zeros_like(t) if m == 0 else np.round(t * (127 / m)))
    return np.concatenate(out)


def cosine(x, y) -> float:
    nx, ny = math.sqrt(float(np.dot(x, x))), math.sqrt(float(np.dot(y, y)))
    return float(np.dot(x, y)) / (nx * ny) if nx > 0 and ny > 0 else 0.0


def on_support(o_upd, upd, support: float) -> bool:
    """README *Duplicates*, support_cosine (and the stale screen's stale_support_cosine): the
    original with every entry where this one is 0 set to 0, if that changed it, against this
    one (values and codes)."""
    if sorted(o_upd) != sorted(upd) or any(o_upd[n].shape != upd[n].shape for n in upd):
        return False
    kept = {n: np.where(upd[n] != 0, o_upd[n].astype(np.float64), 0.0) for n in o_upd}
    a_kept, a, b = (flat_of(u, sorted(u), False) for u in (kept, o_upd, upd))
    if np.array_equal(a_kept, a) or not np.any(a_kept) or not np.any(b):
        return False
    return cosine(a_kept, b) > support or cosine(codes(kept), codes(upd)) > support


def sparse_update(upd) -> bool:
    """README *Duplicates*, support_overlap: over each tensor (a matrix of two or more
    dimensions cut to its rows and columns holding a nonzero value), more than half of all
    the values left are 0."""
    total = zeros = 0
    for name in sorted(upd):
        t = np.asarray(upd[name])
        nz = t != 0
        if t.size == 0:  # an empty matrix holds no value (README: cut to nothing)
            continue
        if t.ndim < 2:
            size = t.size
        else:
            m = nz.reshape(t.shape[0], -1)
            size = int(m.any(axis=1).sum()) * int(m.any(axis=0).sum())
        total += size
        zeros += size - int(nz.sum())
    return total > 0 and 2 * zeros > total


def kept_largest(o_flat, upd, overlap) -> bool:
    """README *Duplicates*, support_overlap: a sparse ``upd`` more than ``overlap`` of whose
    nonzero entries are, tensor by tensor, among the original's k largest nonzero magnitudes
    (k: this one's nonzero entries in the tensor; m the k-th largest: 1 above m, (k - A) / T
    at m, A and T the magnitudes above and at m; every nonzero 1 when fewer than k)."""
    if not sparse_update(upd):
        return False
    hits = Fraction(0)
    kept = 0
    at = 0
    for name in sorted(upd):
        b = np.asarray(upd[name]).reshape(-1)
        a = np.abs(o_flat[at : at + b.size])
        at += b.size
        on = b != 0
        k = int(on.sum())
        if k == 0:
            continue
        kept += k
        mags = a[a != 0]
        if mags.size < k:
            hits += int(((a != 0) & on).sum())
            continue
        m = np.sort(mags)[::-1][k - 1]
        above, ties = int((mags > m).sum()), int((mags == m).sum())
        hits += int(((a > m) & on).sum())
        hits += Fraction(int(((a == m) & on).sum()) * (k - above), ties)
    return kept > 0 and hits > Fraction(overlap) * kept


def white_residual(o_upd, upd) -> float:
    """README *Duplicates*, white_noise_z: the structure statistic of upd's residual from
    o_upd, each tensor divided by its root mean square; inf when not applicable."""
    names = sorted(upd)
    if names != sorted(o_upd) or any(upd[n].shape != o_upd[n].shape for n in names):
        return math.inf
    x = flat_of(upd, names, False)
    r = flat_of(o_upd, names, False)
    rr = block_sum(r * r)
    if not (rr > 0 and math.isfinite(rr)):
        return math.inf
    s = block_sum(x * r) / rr
    if not (s > 0 and math.isfinite(s)):
        return math.inf
    e = x - s * r
    parts, at = {}, 0
    for n in names:
        size = int(np.asarray(upd[n]).size)
        t = e[at : at + size].reshape(np.asarray(upd[n]).shape)
        at += size
        m = block_sum((t * t).ravel()) / size if size else 0.0
        parts[n] = t / math.sqrt(m) if 0 < m < math.inf else t
    return structure(parts)


def near_tensor(a, b) -> bool:
    """README *Duplicates*, shared_tensor: b (the later update's tensor) within relative L2
    distance 1e-3 of a (the earlier one's), decided as d2 < 1e-6 * n2; each with at least 16
    nonzero entries, the same shape."""
    if a is None:
        return False
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or np.count_nonzero(a) < 16 or np.count_nonzero(b) < 16:
        return False
    a, b = a.ravel(), b.ravel()
    d = b - a
    return block_sum(d * d) < 1e-6 * block_sum(a * a)


def duplicate_copies(items, dup: dict, noisy=frozenset()) -> dict:
    """README *Duplicates*: items = [(site, sha256, {name: array} or None)] in commit order;
    noisy: the sites whose update declares DP-SGD; returns {site: the original's site} for
    every copy (under either_order an earlier update's original may come after it)."""

    cos_t, l2_t, scaled = dup.get("cosine"), dup.get("relative_l2"), dup.get("scaled_cosine")
    support, overlap = dup.get("support_cosine"), dup.get("support_overlap")
    white = dup.get("white_noise_z") or 0
    shared = dup.get("shared_tensor") or 0
    white_dp = dup.get("white_noise_dp_cosine")  # absent: DP-declared updates not tested

    originals = []
    copies = {}
    for site, digest, upd in items:
        flat = None if upd is None else flat_of(upd, sorted(upd), False)
        code = None if upd is None or scaled is None else codes(upd)
        found = None
        for o_site, o_digest, o_flat, o_code, o_upd in originals:
            if digest == o_digest:
                found = o_site
                break
            if flat is None or len(flat) != len(o_flat):
                continue
            a, b = o_flat, flat
            if np.array_equal(a, b):
                found = o_site
                break
            na, nb = math.sqrt(float(np.dot(a, a))), math.sqrt(float(np.dot(b, b)))
            if na > 0 and nb > 0:
                cos = float(np.dot(a, b)) / (na * nb)
                if cos > cos_t and math.sqrt(float(np.dot(b - a, b - a))) / na < l2_t:
                    found = o_site
                    break
                if scaled is not None and cos > scaled:
                    found = o_site
                    break
            if scaled is not None:
                ca, cb = o_code, code
                nca, ncb = math.sqrt(float(np.dot(ca, ca))), math.sqrt(float(np.dot(cb, cb)))
                if nca > 0 and ncb > 0 and float(np.dot(ca, cb)) / (nca * ncb) > scaled:
                    found = o_site
                    break
            if support is not None and on_support(o_upd, upd, support):
                found = o_site
                break
            if overlap is not None and kept_largest(o_flat, upd, overlap):
                found = o_site
                break
        mine = []  # README *Duplicates*, either_order: earlier originals that copy this one
        if found is None and upd is not None and dup.get("either_order") is True:
            # the two sparse tests the other way round, this one the original and an earlier
            # original not yet marked the update judged; before this one's shared-tensor and
            # white-noise tests
            for o_site, _, o_flat, _, o_upd in originals:
                if o_site in copies or len(o_flat) != len(flat):
                    continue
                if (support is not None and on_support(upd, o_upd, support)) or (
                    overlap is not None and kept_largest(flat, o_upd, overlap)
                ):
                    mine.append(o_site)
        if found is None and shared and upd is not None:
            # README: the first original of as many entries with a tensor of the same name and
            # shape as one of this one's, both with at least 16 nonzero entries, d2 < 1e-6 * n2
            # (sums of (b - a) * (b - a) and a * a as in 'Flattening and sums'), but this one's
            # copies (either_order)
            for o_site, _, o_flat, _, o_upd in originals:
                if len(o_flat) != len(flat) or o_site in mine:
                    continue
                if any(near_tensor(o_upd.get(n), upd[n]) for n in sorted(upd)):
                    found = o_site
                    break
        tested = site not in noisy or white_dp is not None
        if found is None and white > 0 and flat is not None and tested:
            # the closest original by cosine (the first on a tie), above 0.5 (and, for an
            # update that declares DP-SGD, above white_noise_dp_cosine), but this one's copies
            # (either_order)
            least = 0.5 if site not in noisy else max(0.5, white_dp)
            best, closest = 0.0, None
            for o_site, _, o_flat, _, o_upd in originals:
                if len(o_flat) != len(flat) or o_site in mine:
                    continue
                na = math.sqrt(float(np.dot(o_flat, o_flat)))
                nb = math.sqrt(float(np.dot(flat, flat)))
                if na > 0 and nb > 0 and float(np.dot(o_flat, flat)) / (na * nb) > best:
                    best = float(np.dot(o_flat, flat)) / (na * nb)
                    closest = (o_site, o_upd)
            if closest is not None and best > least and white_residual(closest[1], upd) < white:
                found = closest[0]
        for o_site in mine:
            copies[o_site] = site
        if found is not None:
            copies[site] = found
        elif upd is not None:
            originals.append((site, digest, flat, code, upd))
    return copies


def free_rider_rule(
    sites,
    flats,
    refs,
    counts,
    cc,
    model_norm,
    checksum,
    tensors=None,
    ref_tensors=None,
    declared=(),
):
    """README *Free-riders and stale copies* (and the size allowance of *Screens*): sites in
    address order, flats {site: trainable float64 vector}, refs [(label, vector)]; returns
    {site: why} for the tests the README defines (the white-noise, shaped-noise and DP-copy
    tests excepted)."""
    frn = cc.get("free_rider_norm", 0.01)
    stale_cos = cc.get("stale_cosine", 0.99999)
    stale_dist = cc.get("stale_distance", 1e6)
    power = cc.get("tiny_size_power", LATER_THRESHOLDS["tiny_size_power"])
    size_ref = cc.get("tiny_size_reference", LATER_THRESHOLDS["tiny_size_reference"])
    size_own = cc.get("tiny_size_own", LATER_THRESHOLDS["tiny_size_own"])
    norms = {a: math.sqrt(block_sum(flats[a] * flats[a])) for a in sites}
    ref_norms = [math.sqrt(block_sum(v * v)) for _, v in refs]
    own = sorted(norms.values())
    med = own[(len(own) - 1) // 2] if own else 0.0
    m = float(statistics.median([counts[a] for a in sites])) if sites else 0.0
    out = {}
    for a in sites:
        x, nx = flats[a], norms[a]
        if nx == 0.0:
            out[a] = "zero"
            continue
        if nx < frn * med:
            out[a] = f"norm below {frn} x median"
            continue
        factor = counts[a] / m if m > 0 else 1.0
        ratio = 0.001 * (factor**power if power > 0 and factor < 1.0 else 1.0)
        if power > 0 and size_ref > 0 and size_own:  # its own claim alone, every round
            ratio = 0.001 * min(1.0, counts[a] / size_ref) ** power
        elif power > 0 and size_ref > 0 and 0 < m < size_ref:  # a round of small sites
            ratio = 0.001 * (min(1.0, factor) * (m / size_ref)) ** power
        if nx < ratio * model_norm:
            out[a] = f"norm below {ratio:.3g} x the start model's"
            continue
        mine = [k for k, (lab, _) in enumerate(refs) if lab.startswith(f"{checksum(a)}'s update")]
        if any(nx < frn * ref_norms[k] for k in mine):
            out[a] = "norm below free_rider_norm x its own earlier update's"
            continue
        for k, (lab, r) in enumerate(refs):
            if ref_norms[k] == 0.0:
                continue
            cos = block_sum(x * r) / (nx * ref_norms[k])
            dist = math.sqrt(block_sum((x - r) * (x - r))) / ref_norms[k]
            if cos > stale_cos and dist < stale_dist:
                out[a] = f"stale copy of {lab}"
                break
        sparse_cos = cc.get("stale_support_cosine", LATER_THRESHOLDS["stale_support_cosine"])
        if a not in out and tensors is not None and ref_tensors and sparse_cos < 1:
            for k, (lab, _) in enumerate(refs):
                if on_support(ref_tensors[k], tensors[a], sparse_cos):
                    out[a] = f"stale copy of {lab} on the entries it carries"
                    break
        kept_share = cc.get("stale_support_overlap", LATER_THRESHOLDS["stale_support_overlap"])
        if a not in out and tensors is not None and ref_tensors and kept_share < 1:
            for k, (lab, _) in enumerate(refs):
                ref, upd = ref_tensors[k], tensors[a]
                if sorted(ref) != sorted(upd) or any(ref[n].shape != upd[n].shape for n in upd):
                    continue
                if kept_largest(flat_of(ref, sorted(ref), False), upd, kept_share):
                    out[a] = f"stale copy of {lab} by the entries it keeps"
                    break
        if a in out or tensors is None:
            continue
        why = noise_tests(tensors[a], x, [v for _, v in refs], ref_tensors or [], a in declared, cc)
        if why:
            out[a] = why
    span_limit = cc.get("span_residual", LATER_THRESHOLDS["span_residual"])
    if span_limit > 0 and tensors is not None and refs:
        gram = None
        for a in sites:
            if a in out:
                continue
            r, gram = span_residual(flats[a], norms[a], [v for _, v in refs], ref_norms, gram)
            if r < span_limit:
                out[a] = f"a linear mixture of earlier public updates ({r:.3g})"
    return out, norms


def span_residual(x, nx, refs, ref_norms, gram=None):
    """docs/results.md *Linear mixtures*: the square root of the minimum over c of
    |x/|x| - sum_j c_j r_j/|r_j||^2 + 1e-6 |c|^2, over the references whose norm lies in
    (1e-100, 1e100), every dot product a block sum; 1.0 for an update of a norm outside it or
    without such references. ``gram``: the references' normalised Gram matrix from an earlier
    call of the same round (returned for the next)."""
    keep = [k for k in range(len(refs)) if 1e-100 < ref_norms[k] < 1e100]
    if not keep or not 1e-100 < nx < 1e100:
        return 1.0, gram
    if gram is None:
        gram = np.eye(len(keep))
        for p_, kp in enumerate(keep):
            for q_ in range(p_, len(keep)):
                kq = keep[q_]
                v = block_sum(refs[kp] * refs[kq]) / (ref_norms[kp] * ref_norms[kq])
                gram[p_, q_] = gram[q_, p_] = v
    b = np.array([block_sum(x * refs[k]) / (nx * ref_norms[k]) for k in keep])
    h = gram + 1e-6 * np.eye(len(keep))
    c = np.linalg.solve(h, b)
    m = 1.0 - 2.0 * float(b @ c) + float(c @ h @ c)
    return math.sqrt(max(m, 0.0)), gram


# ---------------------------------------------------------------- names that look alike
def readme_table(marker: str, letters: str) -> dict:
    """README *Names that look alike*: a table (code point, Latin letter), parsed from its text."""
    text = README.read_text(encoding="utf-8")
    head = f"<!-- {marker} -->\n```\n"
    start = text.index(head) + len(head)
    block = text[start : text.index("```", start)]
    return {
        chr(int(cp, 16)): latin
        for cp, latin in re.findall(rf"U\+([0-9A-F]{{4}}) ([{letters}])", block)
    }


def readme_homoglyphs() -> dict:
    return readme_table("homoglyphs", "a-z")


def readme_cased() -> dict:
    return readme_table("cased", "A-Za-z")


NAME_DASHES = {chr(c) for c in range(0x2010, 0x2016)} | {
    "\u2043",
    "\u2212",
    "\ufe58",
    "\ufe63",
    "\uff0d",
}
NAME_DROPPED = {"Cc", "Cf", "Cs", "Co", "Cn"}
NAME_BLANK = (
    {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800", "\u034f", "\u180b", "\u180c", "\u180d"}
    | {"\u180f"}
    | {chr(c) for c in range(0xFE00, 0xFE10)}
    | {chr(c) for c in range(0xE0100, 0xE01F0)}
)
NAME_MARKS = {"Mn", "Me"}
NAME_MODIFIED = re.compile(
    r"([A-Z]+) (SMALL|CAPITAL) LETTER (?:DOTLESS |SCRIPT )?([A-Z]+)(?: WITH .+)?"
)
NAME_SMALL_CAPITAL = re.compile(r"([A-Z]+) LETTER SMALL CAPITAL ([A-Z]+)")


def name_base(ch: str) -> str:
    """README: a letter named as another of its script with a modification reads as that one."""
    label = unicodedata.name(ch, "")
    m = NAME_MODIFIED.fullmatch(label)
    try:
        if m:
            return unicodedata.lookup(f"{m[1]} {m[2]} LETTER {m[3]}")
        m = NAME_SMALL_CAPITAL.fullmatch(label)
        if m:
            return unicodedata.lookup(f"{m[1]} CAPITAL LETTER {m[2]}").lower()
    except KeyError:
        pass
    return ch


def name_keys(name: str, table: dict, cased: dict | None = None) -> tuple:
    """(skeleton, visual skeleton) by the README's rule."""
    cased = readme_cased() if cased is None else cased

    def letters(upper):
        t = "".join("-" if ch in NAME_DASHES else ch for ch in unicodedata.normalize("NFKC", name))
        t = "".join(
            ch for ch in t if unicodedata.category(ch) not in NAME_DROPPED and ch not in NAME_BLANK
        )
        t = "".join(
            ch
            for ch in unicodedata.normalize("NFD", t)
            if unicodedata.category(ch) not in NAME_MARKS
        )
        out = []
        for ch in t:
            ch = name_base(ch)
            if ch in cased:
                out.append(cased[ch])
            elif ch in table:
                out.append(table[ch].upper() if upper and ch.isupper() else table[ch])
            else:
                out.append(ch)
        return "".join(out)

    def s(t):
        t = unicodedata.normalize("NFKC", re.sub(r"\s+", "", t))
        return t.translate(str.maketrans({"m": "rn", "w": "vv", "d": "cl"}))

    return (
        s(letters(False).casefold().translate(str.maketrans("1|0", "llo"))),
        s(letters(True).translate(str.maketrans("I1|0", "lllO"))),
    )


def alike_pairs(names: dict) -> list:
    table, cased = readme_homoglyphs(), readme_cased()
    keys = {a: name_keys(n, table, cased) for a, n in names.items()}
    order = sorted(names, key=lambda x: int(x, 16))
    return [
        (a, b)
        for i, a in enumerate(order)
        for b in order[i + 1 :]
        if keys[a][0] and (keys[a][0] == keys[b][0] or keys[a][1] == keys[b][1])
    ]


# ---------------------------------------------------------------- noise tests of the free-rider
# screen (README *Free-riders and stale copies*: white noise, shaped noise, DP copies)
def seq_rows(m: np.ndarray, axis: int) -> np.ndarray:
    """Sums of a matrix's rows (axis 1) or columns (axis 0), each added left to right / top to
    bottom one value after another."""
    if axis == 1:
        m = m.T
    acc = np.zeros(m.shape[1])
    for row in m:
        acc = acc + row
    return acc


def structure(parts: dict, present: dict | None = None) -> float:
    """README: the structure statistic of float64 arrays (optionally only where ``present``)."""
    keys = [k for k, a in parts.items() if a.size]
    arrays = [parts[k] for k in keys]
    masks = [None if present is None or present[k].all() else present[k] for k in keys]
    count = sum(
        a.size if m is None else int(np.count_nonzero(m))
        for a, m in zip(arrays, masks, strict=False)
    )
    squares = [a * a for a in arrays]
    sums = [block_sum(q.ravel()) for q in squares]
    total = math.fsum(sums)
    if count == 0 or not total > 0 or not math.isfinite(total):
        return math.inf
    mean = total / count
    scores = []
    for family in range(3):
        groups, sizes = [], []
        for a, q, m, t in zip(arrays, squares, masks, sums, strict=False):
            if family == 0:
                groups.append(np.array([t]))
                sizes.append(np.array([a.size if m is None else np.count_nonzero(m)], float))
                continue
            if a.ndim < 2:
                continue
            mat = q.reshape(a.shape[0], -1)
            groups.append(seq_rows(mat, 1 if family == 1 else 0))
            mm = np.ones(mat.shape, bool) if m is None else m.reshape(a.shape[0], -1)
            sizes.append(np.count_nonzero(mm, axis=1 if family == 1 else 0).astype(float))
        if not groups:
            continue
        g, n = np.concatenate(groups), np.concatenate(sizes)
        g, n = g[n > 0], n[n > 0]
        if g.size < 2:
            continue
        spread = math.sqrt(math.fsum((2.0 + 12.0 / n).tolist()))
        dispersion = math.fsum(((g - n * mean) ** 2 / (2.0 * n * mean * mean)).tolist())
        scores.append((dispersion - g.size) / spread)
    if not scores:
        return math.inf
    num, left, right, pairs = [], [], [], 0
    for a, m in zip(arrays, masks, strict=False):
        if a.ndim != 4:
            continue
        for x, y in ((np.s_[..., :-1], np.s_[..., 1:]), (np.s_[..., :-1, :], np.s_[..., 1:, :])):
            if a[x].size == 0:
                continue
            both = np.ones(a[x].shape, bool) if m is None else m[x] & m[y]
            xs = np.where(both, a[x], 0.0).ravel()
            ys = np.where(both, a[y], 0.0).ravel()
            num.append(block_sum(xs * ys))
            left.append(block_sum(xs * xs))
            right.append(block_sum(ys * ys))
            pairs += int(np.count_nonzero(both))
    if pairs:
        den = math.sqrt(math.fsum(left) * math.fsum(right))
        if den > 0:
            scores.append(abs(math.fsum(num) / den) * math.sqrt(pairs))
    return max(scores)


def blocks(update: dict) -> list:
    """README: the tensors the block-noise test reads, each cut into blocks, in order: every
    tensor of 2+ dimensions with 2+ rows (3+ dimensions: one block per pair of its first two
    indices; 2-D: runs of 8 values of a row, the last zero-padded), left out where a row has one
    block only. Shape (rows, blocks a row, values a block)."""
    out = []
    for a in update.values():
        if a.ndim < 2 or a.shape[0] < 2 or a.size == 0:
            continue
        if a.ndim >= 3:
            x = a.reshape(a.shape[0], a.shape[1], -1)
        else:
            runs = -(-a.shape[1] // 8)
            x = np.zeros((a.shape[0], runs * 8))
            x[:, : a.shape[1]] = a
            x = x.reshape(a.shape[0], runs, 8)
        if x.shape[1] >= 2:
            out.append(x)
    return out


def block_bound(update: dict) -> float:
    """README: a lower bound on block_statistic from sums in any order (matrix products), so
    honest updates skip the exact pairwise sums: G within 1e-6 |x_i| |x_j| of the exact dot
    product, w <= W = sum_b |x_ib|^2 |x_jb|^2 and w^2 - q <= W^2; each side widened by 1e-5."""
    num, var = 0.0, 0.0
    for x in blocks(update):  # a tensor of one block a row adds exactly 0 to both sums
        m = x.reshape(x.shape[0], -1)
        g = m @ m.T
        n = np.sqrt(np.diag(g))
        s2 = (x * x).sum(axis=2)
        big_w = (s2 @ s2.T) * (1 + 1e-5)
        up = np.triu_indices(x.shape[0], 1)
        low = np.maximum(np.abs(g[up]) - 1e-6 * np.outer(n, n)[up], 0.0)
        num += float(np.sum(low * low * (1 - 1e-5) - big_w[up]))
        var += float(np.sum(2.0 * big_w[up] ** 2))
    if not num > 0 or not var > 0 or not math.isfinite(num) or not math.isfinite(var):
        return -math.inf
    return num * (1 - 1e-5) / math.sqrt(var * (1 + 1e-5))


def block_statistic(update: dict) -> float:
    """README *The public rules, exactly*, the block-noise test: every tensor of 2+ dimensions
    with 2+ rows cut into blocks (3+ dimensions: one per pair of its first two indices; 2-D:
    runs of 8 values of a row, zero-padded), then for each pair of rows the blocks' dot
    products c (in order): fsum(G^2 - w) / sqrt(fsum(2 (w^2 - q))), G = sum c, w = sum c^2,
    q = sum (c^2)^2, each added in order."""
    num, var = [], []
    read = blocks(update)  # a tensor of one block a row: not read
    for x in read:
        # every pair at once, a square per block (np.outer of a block's k-th values), each
        # block's products added in order, then the blocks in order; the upper triangle read
        n = x.shape[0]
        g, w, q = np.zeros((n, n)), np.zeros((n, n)), np.zeros((n, n))
        for b in range(x.shape[1]):
            c = np.outer(x[:, b, 0], x[:, b, 0])
            for k in range(1, x.shape[2]):
                c += np.outer(x[:, b, k], x[:, b, k])
            g += c
            w += c * c
            q += (c * c) * (c * c)
        up = np.triu_indices(n, 1)
        num.extend((g * g - w)[up].tolist())
        var.extend((2.0 * (w * w - q))[up].tolist())
    total = math.fsum(var)
    if not read or not math.isfinite(total):
        return math.inf
    if not total > 0:  # tensors to read, all left zero
        return 0.0
    return math.fsum(num) / math.sqrt(total)


def block_ceiling(update: dict) -> float:
    """README: the largest B the layout allows, sqrt(sum n (n - 1) / 2) over every pair of
    rows of every tensor read (n its blocks a row), in exact integers."""
    total = 0
    for a in update.values():
        if a.ndim < 2 or a.shape[0] < 2 or a.size == 0:
            continue
        n = a.shape[1] if a.ndim >= 3 else -(-a.shape[1] // 8)
        total += a.shape[0] * (a.shape[0] - 1) // 2 * (n * (n - 1) // 2)
    return math.sqrt(total)


def sparse(update: dict) -> bool:
    total = zeros = 0
    for a in update.values():
        if a.size == 0:  # an empty matrix holds no value
            continue
        nz = a != 0
        if a.ndim >= 2:
            m = nz.reshape(a.shape[0], -1)
            nz = m[m.any(axis=1)][:, m.any(axis=0)]
        total += nz.size
        zeros += nz.size - int(np.count_nonzero(nz))
    return total > 0 and zeros > 0.5 * total


def shaped(residual: dict, reference: dict, update: dict) -> float:
    ratios, present = {}, {}
    for k, r in residual.items():
        size = np.abs(reference[k])
        mask = (size > 0) & (update[k] != 0)
        ratios[k] = np.divide(r, size, out=np.zeros_like(r), where=mask)
        present[k] = mask
    return structure(ratios, present)


def dp_copy_z(x: np.ndarray, refs: list) -> float:
    root = math.sqrt(x.size)
    ref_norms = [math.sqrt(block_sum(r * r)) for r in refs]
    total = math.sqrt(block_sum(x * x))
    if not total > 0:
        return 0.0
    res = x.copy()
    first, steps = 0.0, 0
    for _ in range(8):
        norm = math.sqrt(block_sum(res * res))
        if not norm > 0:
            break
        best, best_j, best_dot = -1.0, -1, 0.0
        for j, r in enumerate(refs):
            if not ref_norms[j] > 0:
                continue
            dot = block_sum(res * r)
            z = abs(dot) / (norm * ref_norms[j]) * root
            if z > best:
                best, best_j, best_dot = z, j, dot
        if steps == 0:
            first = max(best, 0.0)
        if best < 10.0:
            break
        res = res - (best_dot / (ref_norms[best_j] * ref_norms[best_j])) * refs[best_j]
        steps += 1
    left = math.sqrt(block_sum(res * res)) / total
    return max(first, math.sqrt(max(0.0, 1.0 - left * left)) * root)


def noise_tests(
    update: dict, flat: np.ndarray, refs: list, ref_tensors: list, declared: bool, cc: dict
):
    """README: the white-noise, shaped-noise and DP-copy tests of one update that passed the
    norm and stale tests; ``update`` its trainable tensors (float64), ``refs`` the references'
    flat vectors and ``ref_tensors`` their tensors, in the references' order. Returns why it
    is FREE_RIDER, or None."""
    white, shaped_z, dp_z = (
        cc.get("white_noise_z", 0),
        cc.get("shaped_noise_z", 0),
        cc.get("dp_copy_z", 0),
    )
    if declared:
        if dp_z > 0 and refs:
            z = dp_copy_z(flat, refs)
            if z >= dp_z:
                return f"DP copy ({z:.3g} >= {dp_z})"
        return None
    block_limit = cc.get("block_noise_z", 0)
    if white <= 0 and shaped_z <= 0 and block_limit <= 0:
        return None
    if white > 0:
        z = structure(update)
        if z < white:
            return f"white noise ({z:.3g})"
    if (
        block_limit > 0
        and block_ceiling(update) >= 32 * block_limit
        and block_bound(update) < block_limit
    ):
        z = block_statistic(update)
        if z < block_limit:
            return f"noise independent between blocks ({z:.3g})"
    if white <= 0 and shaped_z <= 0:
        return None
    if not refs:
        return None
    nx = math.sqrt(block_sum(flat * flat))
    best = (-1, 0.0, 0.0)
    for j, r in enumerate(refs):
        nr = math.sqrt(block_sum(r * r))
        if nr == 0:
            continue
        dot = block_sum(flat * r)
        cos = dot / (nx * nr)
        if cos > best[1]:
            best = (j, cos, dot / (nr * nr))
    if best[0] < 0:
        return None
    reference = ref_tensors[best[0]]
    residual = {k: v - best[2] * reference[k] for k, v in update.items()}
    if white > 0:
        z = structure(residual)
        if z < white:
            return f"copy plus white noise ({z:.3g})"
    if shaped_z > 0 and not sparse(update):
        z = shaped(residual, reference, update)
        if z < shaped_z:
            return f"copy plus shaped noise ({z:.3g})"
    return None


# ---------------------------------------------------------------- registry changes (a65)
DECLINE_TAG = Web3.keccak(text="fedtrail.decline/1")
# README *Registry changes inside a round*: a decline of reason 1..8 (9, cap below data, is the
# coordinator's move and counts as a lost update there, a96)
DECLINE_REASONS = range(1, 9)


def auc_text(value) -> str:
    return "nan" if value is None else f"{value:.3f}"


def log_agrees(log, r, ledger, start, glob, revealed, terms, terms_ref) -> list:
    """README *The round log against the chain* (``log.agrees``, ``terms.model``,
    ``terms.validation``, ``terms.reference``, attack a82): every log field the chain or the
    committed terms pin. ``ledger`` (address, chain id); ``start`` (CID, sha256 hex) of the
    RoundOpened event; ``glob`` the finalized global sha256 hex; ``revealed``: lower-case
    address -> (checksum address, CID, sha256 hex, samples, score, reason, weight) of every
    revealed update; ``terms`` the committed terms (parsed), ``terms_ref`` their (CID, sha256
    hex). Returns the problems found (empty: the log agrees)."""
    bad = []
    entries = log.get("sites", [])
    by_site = {e.get("site"): e for e in entries}
    if len({str(a).lower() for a in by_site}) != len(entries):
        bad.append("a site is listed twice")
    if not integer_is(log.get("round"), r):  # `true` is not 1 (a105's spelling, in a log)
        bad.append(f"log is for round {log.get('round')!r}")
    led = log.get("ledger", {})
    if (str(led.get("address")).lower(), led.get("chain_id")) != (ledger[0].lower(), ledger[1]):
        bad.append(f"log names ledger {led.get('address')} on chain {led.get('chain_id')}")
    sm = log.get("start_model", {})
    if (sm.get("cid"), sm.get("sha256")) != start:
        bad.append(f"log's start model {sm.get('cid')} is not the RoundOpened one")
    agg = log.get("aggregation", {})
    if agg.get("global_sha256") != glob:
        bad.append("log names another global model")
    rule = (terms.get("aggregation_rule") or {}).get("name", "weighted")
    if agg.get("rule") != rule:
        bad.append(f"log's rule {agg.get('rule')!r}, the terms' {rule!r}")
    if set(by_site) != {v[0] for v in revealed.values()}:
        bad.append("log lists other sites than the revealed ones (checksum addresses)")
    weighted = sorted(v[0] for v in revealed.values() if v[6] > 0)
    if sorted(agg.get("included_sites", [])) != weighted:
        bad.append("log's included_sites are not the sites with on-chain weight")
    for addr, cid, sha_hex, n, score, reason, weight in sorted(revealed.values()):
        e = by_site.get(addr)
        if e is None:
            continue
        upd = e.get("update", {})
        label = REASONS[reason] if reason < len(REASONS) else str(reason)
        got = (
            True if logged_cid_agrees(upd.get("cid"), cid) else upd.get("cid"),
            upd.get("sha256"),
            upd.get("num_samples"),
            e.get("score"),
            e.get("reason"),
            e.get("reason_label"),
            digits(e.get("weight")),
            e.get("weight_fraction"),
        )
        want = (True, sha_hex, n, score, reason, label, weight, weight / WEIGHT_SCALE)
        diff = [k for k, x, y in zip(FIELDS_PINNED, got, want, strict=True) if not json_same(x, y)]
        said = explanation_reason(e.get("explanation"))
        if said is not None and said != label:
            diff.append("explanation")  # begins with another reason than the chain's
        if diff:
            bad.append(f"{addr[:10]} {', '.join(diff)} differ from the chain")
    metrics = log.get("metrics", {})
    sentence = (
        f"Round {log.get('round')}: {len(agg.get('included_sites', []))} of {len(entries)} "
        f"updates aggregated with the '{agg.get('rule')}' rule using the on-chain weights; "
        f"validation AUC {auc_text(metrics.get('before', {}).get('auc'))} -> "
        f"{auc_text(metrics.get('after', {}).get('auc'))}."
    )
    if log.get("summary") != sentence:
        bad.append(f"summary {log.get('summary')!r} is not its fields' {sentence!r}")
    s = log.get("settings", {})
    if not json_same(s.get("seed"), terms.get("seed")) or list(s.get("class_names", [])) != list(
        terms.get("class_names", [])
    ):
        bad.append("log's seed or class names differ from the terms'")
    val, tval = log.get("validation", {}), terms.get("validation", {})
    if val.get("sha256") != tval.get("sha256") or not json_same(
        val.get("images"), tval.get("images")
    ):
        bad.append("log's validation set is not the committed one")
    ref = s.get("terms")
    if ref is not None and (ref.get("cid"), ref.get("sha256")) != terms_ref:
        bad.append(f"log names terms {ref.get('sha256')}, not the committed ones")
    return bad + calibration(log)


def reasons_given(reasons, plain_readable, need_dp, standing, counted, evidenced) -> dict:
    """README *Reasons an aggregator round gives* (attack a84): ``reasons`` site -> on-chain
    reason name; ``plain_readable`` the updates usable by the wire format (hash, decoding,
    canonical header) without ``"dp"``; ``need_dp`` the terms' ``privacy.required``;
    ``standing`` whether the round is valued with standing; ``counted`` the sites whose log
    ``components.norm`` is a number; ``evidenced`` the (lower-case) sites the log's
    ``evidence`` names with a non-empty ``contradicts``. Returns site -> why, for each reason
    no rule of an aggregator round gives."""
    wrong = {}
    for a, reason in sorted(reasons.items()):
        if reason in ("LATE", "NOT_REVEALED", "PEER_REJECTED", "WITHHELD", "?"):
            wrong[a] = f"{reason}, which no aggregator round gives"
        elif reason == "CONTRADICTED" and a.lower() not in evidenced:
            wrong[a] = "CONTRADICTED without an evidence entry for it in the log"
        elif reason == "TAMPERED" and a in plain_readable:
            wrong[a] = "TAMPERED, but its blob matches the chain's sha256 and decodes"
        elif reason == "MALFORMED" and a in plain_readable and not need_dp:
            wrong[a] = "MALFORMED, but its blob decodes, is canonical and declares no DP"
        elif reason == "LOW_GAIN" and standing and a in counted:
            wrong[a] = "LOW_GAIN on an update counted in the statistics, under standing"
    return wrong


def standing_scores(
    st: dict,
    lsites: dict,
    passed: list,
    chain: dict,
    terms: dict,
    names: dict,
    counts: dict | None = None,
) -> tuple[bool, str]:
    """README *Standing*, shares and scores, for every round valued with standing (the warm-up
    and a round whose values are all 0 included: before session 52 only a round with shares
    was checked, attack a95 ``lowq``): ``st`` the log's standing block, ``lsites`` lower-case
    address -> its log entry, ``passed`` the sites whose on-chain reason is OK or LOW_QUALITY
    (every update that passed the screens has a value, LOW_QUALITY ones too: that reason is
    the standing score's own outcome), ``chain`` address -> (score, reason name) on chain.
    The log's ``normalised`` must be the shares of its values and its whole ``after`` be
    ``before`` plus them (a95 ``shares``, ``warmup``). ``counts``: address -> its claimed
    sample count on chain (``warm_up_scope``). Returns (passed, detail)."""
    cc = terms["valuation"]["combiner"]
    # warm_up_floor below 1: the warm-up round (valued_rounds 0) accumulates its shares and
    # scores each passed update as a later round, at least the floor
    wfloor = cc.get("warm_up_floor", 1.0)
    warm = st.get("valued_rounds") == 0 and wfloor < 1.0
    phi = {
        a: e["components"]["value"]
        for a, e in lsites.items()
        if (e.get("components") or {}).get("value") is not None
    }
    tot = math.fsum(abs(v) for v in phi.values())
    accumulates = st.get("valued_rounds") != 0 or warm
    share = {a: v / tot for a, v in phi.items()} if accumulates and tot > 0 else {}
    # the credit rule where the data-free thresholds applied (robust_checked, checked bit for
    # bit by log.components: at least min_robust_sites usable updates), the warm-up included
    for a in share:
        comp_a = lsites[a]["components"]
        if (
            share[a] > 0
            and comp_a.get("robust_checked") is True
            and comp_a["cosine"] < cc.get("credit_cosine", -1.0)
        ):
            share[a] = 0.0
    # warm_up_scope 1 (terms without it: 0): in the warm-up only a share below 0 whose site
    # claimed more samples than every site with a share of 0 or more (0 when none) is scored
    # from its share and kept in after; every other passer keeps the full score.
    # warm_up_scope 2: every passer is scored from its share (as 0), only those kept in after
    scope = None  # the sites kept in after (None: every one)
    scored_only = None  # the sites scored from their shares (None: every one)
    wscope = cc.get("warm_up_scope", 0)
    if warm and wscope in (1, 2):
        cnt = counts or {}
        top = max((cnt.get(a, 0) for a, v in share.items() if v >= 0), default=0)
        scope = {a for a, v in share.items() if v < 0 and cnt.get(a, 0) > top}
        scored_only = scope if wscope == 1 else None
    logged_share = {k.lower(): v for k, v in (st.get("normalised") or {}).items()}
    ok_share = logged_share == share and (st.get("normalised") is None) == (not share)
    before = {k.lower(): v for k, v in (st.get("before") or {}).items()}
    after = dict(before)
    for a, v in share.items():
        after[a] = before.get(a, 0.0) + v
    relief = cc.get("relief_cosine", -1.0)

    def own_reference(a: str, ref: float) -> float:
        comp_a = lsites.get(a, {}).get("components") or {}
        cos_a = comp_a.get("cosine")
        checked_a = comp_a.get("robust_checked") is True
        return 0.0 if checked_a and cos_a is not None and cos_a < relief else ref

    # record_floor (terms without it: 0, off), not in the warm-up: each passed site in after
    # raised to at least its own reference (from after before any is raised) minus
    # max(record_floor, demote_scale)
    rfloor = cc.get("record_floor", 0.0)
    if rfloor > 0 and st.get("valued_rounds") != 0 and passed:
        ref0 = min(0.0, statistics.median([after.get(a, 0.0) for a in passed]))
        depth = max(rfloor, cc["demote_scale"])
        for a in passed:
            if a in after:
                after[a] = max(after[a], own_reference(a, ref0) - depth)
    ref = min(0.0, statistics.median([after.get(a, 0.0) for a in passed])) if passed else 0.0
    sc_ok = True
    det = []
    for a in passed:
        comp_a = lsites.get(a, {}).get("components") or {}
        cos_a = comp_a.get("cosine")
        checked_a = comp_a.get("robust_checked") is True
        d = after.get(a, 0.0) - own_reference(a, ref)
        sc = (
            SCORE_SCALE
            if d >= 0
            else max(0, min(SCORE_SCALE, round(SCORE_SCALE * (1 + d / cc["demote_scale"]))))
        )
        if sc < 10_000:
            sc = 0
        if warm and sc < SCORE_SCALE:
            sc = max(sc, round(SCORE_SCALE * wfloor))
        if scored_only is not None and a not in scored_only:
            sc = SCORE_SCALE
        med_a = comp_a.get("median_norm")
        # max_norm_ratio / small_norm_ratio (off at 0): an update above max_norm_ratio median
        # norms keeps max_norm_ratio / (norm / median) of its score, one below small_norm_ratio
        # (norm / median) / small_norm_ratio, rounded, at least 1 (before session 52 the reader
        # left this out and failed every such score of terms that turn it on)
        mr, sr = cc.get("max_norm_ratio", 0.0), cc.get("small_norm_ratio", 0.0)
        if sc > 0 and checked_a and med_a and med_a > 0 and comp_a.get("norm") is not None:
            ratio = comp_a["norm"] / med_a
            f = (
                mr / ratio
                if mr > 0 and ratio > mr
                else (ratio / sr if sr > 0 and ratio < sr else 1.0)
            )
            if f < 1.0:
                sc = max(1, min(sc, round(sc * f)))
        # boost_clip: an update longer along the median update than 1/boost_clip median norms
        # keeps (1 / (boost_clip * along))**2 of its score, at least 1
        clip = cc.get("boost_clip", 0.0)
        if sc > 0 and clip > 0 and checked_a and cos_a is not None and med_a:
            along = cos_a * comp_a["norm"] / med_a
            if along * clip > 1.0:
                f = (1.0 / (along * clip)) ** 2
                sc = max(1, min(sc, round(sc * f)))
        score, label = chain[a]
        sc_ok &= sc == score and (label == "LOW_QUALITY") == (sc == 0)
        det.append(
            f"{names.get(a)} share {share.get(a, 0.0):.6g} after {after.get(a, 0.0):.6g} "
            f"score {sc} (chain {score} {label})"
        )
    if scope is not None:  # the record keeps the scoped shares only
        after = dict(before)
        for a, v in share.items():
            if a in scope:
                after[a] = before.get(a, 0.0) + v
    logged_after = {k.lower(): v for k, v in (st.get("after") or {}).items()}
    ok_after = logged_after == after
    return sc_ok and ok_after and ok_share, (
        f"reference {ref}; "
        + "; ".join(det)
        + f"; log's normalised are the shares: {ok_share}; log's after = before + share: {ok_after}"
    )


def threshold_of(bias) -> float:
    """README *The round log against the chain*: ``1 / (1 + exp(b1 - b0))``, written so that
    no exp overflows."""
    gap = float(bias[1]) - float(bias[0])
    if not math.isfinite(gap):
        raise ValueError("biases must be finite")
    return math.exp(-gap) / (1.0 + math.exp(-gap)) if gap >= 0 else 1.0 / (1.0 + math.exp(gap))


def calibration(log) -> list:
    """README *The round log against the chain*, its metrics (attack a83): ``n`` the log's
    validation size, one per-class figure per class, and for two classes the threshold its
    bias's (within 1e-12; both absent or both present), for more none."""
    bad = []
    classes = (log.get("settings", {}).get("model_spec") or {}).get("num_classes", 2)
    images = log.get("validation", {}).get("images")
    for label in ("before", "after"):
        m = log.get("metrics", {}).get(label, {})
        if m.get("n") is not None and m["n"] != images:
            bad.append(f"metrics.{label}.n {m['n']} != validation images {images}")
        lengths = {
            k: len(m[k]) for k in ("bias", "recall", "recall_calibrated") if m.get(k) is not None
        }
        if any(v != classes for v in lengths.values()):
            bad.append(f"metrics.{label} per-class lengths {lengths} for {classes} classes")
            continue
        threshold, bias = m.get("threshold"), m.get("bias")
        if classes != 2:
            if threshold is not None:
                bad.append(f"metrics.{label}.threshold for {classes} classes")
            continue
        try:
            want = None if bias is None else threshold_of(bias)
        except ValueError:
            bad.append(f"metrics.{label}.bias gives no threshold")
            continue
        if (want is None) != (threshold is None) or (
            want is not None and not abs(threshold - want) <= 1e-12
        ):
            bad.append(f"metrics.{label}.threshold {threshold} is not its bias's {want}")
    return bad


def explanation_reason(text) -> str | None:
    """README *The round log against the chain*: the reason name an entry's explanation begins
    with. Its text before the first ``:`` (all of it without one), its skeleton and visual
    skeleton by *Names that look alike* with every ``-`` and ``_`` then dropped, names the
    reason whose name has the same skeleton, or whose name or label has the same visual
    skeleton (the label: the name lower-cased, ``_`` read as a space)."""
    if not isinstance(text, str):
        return None
    table, cased = readme_homoglyphs(), readme_cased()
    drop = str.maketrans("", "", "-_")

    def keys(t):
        return tuple(k.translate(drop) for k in name_keys(t, table, cased))

    first, second = keys(text.split(":", 1)[0])
    for name in REASONS:
        by_name, by_label = keys(name), keys(name.lower().replace("_", " "))
        if first == by_name[0] or second in (by_name[1], by_label[1]):
            return name
    return None


def digits(value):
    """A log's ``weight``: the value of its string of ASCII digits; anything else (a JSON
    number among them, which readers of doubles round above 2**53) stays as it is, unequal to
    every chain integer."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return ("not a string of digits", value)


def json_same(logged, chain) -> bool:
    """A log field equals the chain's value with its JSON type, as verify reads the log
    (session 62, a137): an integer only as an integer (``60.0`` and ``false`` are not 60 and
    0, which Python's ``==`` takes them for), a float as any JSON number (not ``true``), a
    string or ``true`` as itself."""
    if type(chain) is bool or type(chain) is str:
        return type(logged) is type(chain) and logged == chain
    if type(chain) is int:
        return type(logged) is int and logged == chain
    return type(logged) in (int, float) and logged == chain


FIELDS_PINNED = (
    "cid",
    "sha256",
    "num_samples",
    "score",
    "reason",
    "reason_label",
    "weight",
    "weight_fraction",
)


def is_decline(commitment: bytes, site: str, rnd: int, terms_sha: bytes) -> bool:
    """README *Refusals are declared on chain*: keccak256(abi.encode(keccak256("fedtrail.decline/1"),
    site, round, termsSha256, reason)) for one of the reason codes."""
    return any(
        Web3.keccak(
            abi_encode(
                ["bytes32", "address", "uint256", "bytes32", "uint8"],
                [DECLINE_TAG, Web3.to_checksum_address(site), rnd, terms_sha, reason],
            )
        )
        == bytes(commitment)
        for reason in DECLINE_REASONS
    )


def registry_rule(
    opened, events, stamps, reveal_dl, until, revealed, declined, voted, phase, paid, peer
):
    """README 'The public rules, exactly', *Registry changes inside a round* (`sites.registry`).

    opened: (block, logIndex) of the round's first RoundOpened; events: [(position, kind, site,
    value)] with kind "registered", "removed", "cap", "budget"; stamps: block -> timestamp;
    revealed / declined / voted: sets of sites; voted None: a ScoresRevealed event that does not
    match the stored vote (no one counted as having lost a vector). Returns (ok, detail)."""
    participants = set()
    for pos, kind, site, _ in sorted(events, key=lambda e: e[0]):
        if pos >= opened:
            break
        if kind == "registered":
            participants.add(site)
        elif kind == "removed":
            participants.discard(site)
    moves = [
        e
        for e in sorted(events, key=lambda e: e[0])
        if e[0] > opened
        and e[1] in ("removed", "cap", "budget")
        and e[2] in participants
        and stamps[e[0][0]] <= until
    ]
    lost: dict = {}
    for pos, kind, site, _value in moves:
        got = lost.setdefault(site, set())
        if stamps[pos[0]] <= reveal_dl and site not in revealed | declined:
            got.add("no update")
        if peer and voted is not None and kind == "removed" and site not in voted:
            got.add("no score vector")
    words = "; ".join(
        f"{site} {kind}{'' if value is None else ' ' + str(value)} (block {pos[0]}, t {stamps[pos[0]]})"
        for pos, kind, site, value in moves
    )
    kept_out = sorted((s for s in lost if lost[s]), key=lambda a: int(a, 16))
    detail = (
        f"{len(participants)} participant(s) at open; moves up to {until}: {words or 'none'}; "
        f"kept out: {', '.join(f'{s} ({sorted(lost[s])})' for s in kept_out) or 'none'}; "
        f"finalized {phase == 3}, paid {paid}"
    )
    return not (kept_out and phase == 3 and paid), detail


# ---------------------------------------------------------------- peer rounds
REPUTATION_GATE = 500_000


def high_median(values):
    """README *Peer rounds*: the middle value, the higher middle of an even count, 0 if empty."""
    s = sorted(values)
    return s[len(s) // 2] if s else 0


def gate_counted(votes, before, quorum) -> set:
    """README *Peer rounds*: the validators the reputation gate counts, or ValueError
    (GateUndecided)."""
    passed = [
        v for v, _ in votes if before.get(v, (0, 0))[1] == 0 or before[v][0] >= REPUTATION_GATE
    ]
    if 2 * len(passed) > len(votes) and len(passed) >= quorum:
        return set(passed)
    if 2 * len(passed) < len(votes):
        return {v for v, _ in votes}
    raise ValueError(f"GateUndecided: {len(passed)} of {len(votes)} pass, quorum {quorum}")


def peer_sentence(count, median, gated, withheld) -> str:
    """README *Peer rounds*: a peer round's log explanation of one update."""
    text = f"Scored by its peers: the median of the {count} other validator(s)' scores is "
    text += f"{median / SCORE_SCALE:.3f}"
    if not count:
        text += " (no other validator scored it)"
    if gated:
        text += f" ({gated} validator(s) below the reputation gate not counted)"
    text += "."
    if withheld:
        text += (
            " It was then dropped: the aggregator could not read the update back by the score "
            "reveal deadline (reason WITHHELD), and its weight went to the others."
        )
    return text


def peer_rule(sites, votes, before, quorum, withheld, alpha):
    """README *Peer rounds*: sites (revealed updates, ascending address), votes [(validator,
    scores)] ascending validator, before {validator: (reputation, rated rounds)}; returns
    (medians, counts, {validator: (distance, reputation)}) or raises ValueError (GateUndecided)."""
    counted = gate_counted(votes, before, quorum)
    medians, counts = [], []
    for i, site in enumerate(sites):
        entries = [sc[i] for v, sc in votes if v in counted and v != site]
        medians.append(high_median(entries))
        counts.append(len(entries))
    rated = {}
    for v, sc in votes:
        diffs = [abs(sc[i] - medians[i]) for i, site in enumerate(sites) if site != v]
        if diffs:
            rated[v] = sum(diffs) // len(diffs)
    for w in withheld:
        rated[w] = SCORE_SCALE
    out = {}
    for v, distance in rated.items():
        agreement = SCORE_SCALE - distance
        rep, rounds = before.get(v, (0, 0))
        if rounds == 0:
            new = agreement
        else:
            f = alpha if agreement < rep else alpha // 4
            new = (f * agreement + (SCORE_SCALE - f) * rep) // SCORE_SCALE
        out[v] = (distance, new)
    return medians, counts, out


# ---------------------------------------------------------------- round terms
# README *The round terms, field by field*: every top-level field it lists
TERMS_FIELDS = {
    "format",
    "round",
    "aggregation_rule",
    "valuation",
    "model_spec",
    "spec_hash",
    "seed",
    "initial_model",
    "initial_salt",
    "validation",
    "windows",
    "duplicates",
    "canonical_encoding",
    "class_names",
    "personalisation",
    "privacy",
}
# fixed from round 1 (terms.task_fixed); valuation's seed (its difference from round is fixed)
# and quorum are free
TASK_FIXED = (
    "model_spec",
    "spec_hash",
    "class_names",
    "validation",
    "aggregation_rule",
    "duplicates",
    "canonical_encoding",
)


def canonical_terms(blob: bytes) -> bool:
    """The bytes are the canonical form of what they parse to (1 MiB at most)."""
    if len(blob) > 1 << 20:
        return False
    doc = json_loads(blob)
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8") == blob


# the fields the README's field list calls integers (JSON numbers without a fraction or
# exponent: Python ints after json.loads; `true`/`false` are not integers)
INT_FIELDS = (
    ("round",),
    ("seed",),
    ("validation", "images"),
    ("windows", "commit_seconds"),
    ("windows", "reveal_seconds"),
    ("windows", "score_commit_seconds"),
    ("windows", "score_reveal_seconds"),
    ("model_spec", "in_channels"),
    ("model_spec", "image_size"),
    ("model_spec", "num_classes"),
    ("model_spec", "width"),
    ("model_spec", "hidden"),
    ("aggregation_rule", "krum_f"),
    ("aggregation_rule", "krum_m"),
    ("valuation", "seed"),
    ("valuation", "quorum"),
    ("personalisation", "steps"),
    ("duplicates", "shared_tensor"),
)


# the fields whose type is a float: a float written `1` reads back as `1.0`, not these bytes
FLOAT_FIELDS = (
    ("duplicates", "cosine"),
    ("duplicates", "relative_l2"),
    ("duplicates", "scaled_cosine"),
    ("duplicates", "support_cosine"),
    ("duplicates", "support_overlap"),
    ("duplicates", "white_noise_z"),
    ("duplicates", "white_noise_dp_cosine"),
    ("personalisation", "lr"),
    ("privacy", "delta"),
)


DUPLICATE_KEYS = {
    "cosine",
    "relative_l2",
    "scaled_cosine",
    "support_cosine",
    "support_overlap",
    "white_noise_z",
    "shared_tensor",
    "either_order",
    "white_noise_dp_cosine",
}


def duplicate_rule_problems(terms: dict) -> list:
    """README *Round terms*, ``duplicates``: its keys and each value's kind and range (a rule
    the product refuses is no rule to replay: ``"either_order": 1`` read as absent would judge
    the round one way)."""
    dup = terms.get("duplicates")
    if not isinstance(dup, dict):
        return ["duplicates is not an object"]
    bad = [f"unknown {k}" for k in sorted(set(dup) - DUPLICATE_KEYS)]
    bad += [f"no {k}" for k in ("cosine", "relative_l2") if k not in dup]

    def num(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    for k, v in dup.items():
        if k == "either_order":
            ok = type(v) is bool
        elif k == "shared_tensor":
            ok = type(v) is int and v in (0, 1)
        elif k == "relative_l2":
            ok = num(v) and 0.0 <= v < 1.0
        elif k == "white_noise_z":
            ok = num(v) and v >= 0.0
        elif k in DUPLICATE_KEYS:
            ok = num(v) and 0.0 < v <= 1.0
        else:
            continue
        if not ok:
            bad.append(f"{k} {v!r}")
    return bad


SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# README *The round terms, field by field*, the combiner's ranges, as written there (h-312;
# tests/reference/test_combiner_ranges_reference.py holds this table to the README's text):
# an interval "[a, b)" ("inf" unbounded), a set "{0, 1}", alternatives joined by " or ",
# "integer" first for a number with no fraction, "any" for every finite number
COMBINER_RANGES = {
    "min_cosine": "[-1, 1]",
    "credit_cosine": "[-1, 1]",
    "relief_cosine": "[-1, 1]",
    "max_norm_z": "(0, inf)",
    "norm_scale_floor": "(0, inf)",
    "demote_scale": "(0, inf)",
    "min_gain": "any",
    "min_robust_sites": "integer [1, inf)",
    "stale_rounds": "integer [1, inf)",
    "free_rider_norm": "[0, 1)",
    "small_norm_ratio": "[0, 1)",
    "span_residual": "[0, 1)",
    "stale_cosine": "[0, 1]",
    "stale_support_cosine": "[0, 1]",
    "stale_support_overlap": "[0, 1]",
    "boost_clip": "[0, 1]",
    "warm_up_floor": "[0, 1]",
    "stale_distance": "[0, inf)",
    "record_floor": "[0, inf)",
    "tiny_size_power": "[0, inf)",
    "tiny_size_reference": "[0, inf)",
    "white_noise_z": "[0, inf)",
    "shaped_noise_z": "[0, inf)",
    "block_noise_z": "[0, inf)",
    "dp_copy_z": "[0, inf)",
    "size_norm_z": "[0, inf)",
    "size_norm_count": "[0, inf)",
    "max_sample_ratio": "(1, inf)",
    "norm_size_cap": "[1, inf)",
    "max_norm_ratio": "{0} or [1, inf)",
    "sample_median_self": "{0, 1}",
    "dp_spend_check": "{0, 1}",
    "tiny_size_own": "{0, 1}",
    "warm_up_scope": "{0, 1, 2}",
    "dp_noise_check": "{0, 1, 2}",
}


def in_documented_range(x, spec: str) -> bool:
    """Whether the finite number ``x`` lies in ``spec``, a range as COMBINER_RANGES writes it."""
    if spec.startswith("integer "):
        if x != int(x):
            return False
        spec = spec[len("integer ") :]
    if spec == "any":
        return True
    for part in spec.split(" or "):
        if part.startswith("{"):
            if any(x == float(v) for v in part.strip("{}").split(",")):
                return True
            continue
        lo, hi = (float(v) for v in part[1:-1].split(","))
        if (lo <= x if part[0] == "[" else lo < x) and (x <= hi if part[-1] == "]" else x < hi):
            return True
    return False


PERSONALISATION_METHODS = ("finetune", "fedbn", "fedrep")
VALUATION_FIELDS = {
    "method",
    "metric",
    "seed",
    "explanation_check",
    "standing",
    "combiner",
    "large_game",
    "mode",
    "quorum",
    "validator_game",
    "explanation_probe",
    "project_shift",
    "public_screen",
    "explanation_wording",
    "references",
}


def terms_field_problems(terms: dict) -> list:
    """README *The round terms, field by field*, the fields other checks leave to it (session
    62, a138: before, nested objects could hold unknown fields or values of another type, and
    such terms, which fedtrail's nodes and verify refuse, passed terms.canonical): spec_hash and
    validation.sha256 64 lowercase hex digits; validation exactly sha256 and images; windows
    commit_seconds and reveal_seconds, and score_commit_seconds with score_reveal_seconds
    (positive) exactly when valuation.mode is "peers"; canonical_encoding a boolean; class_names, when present, an array of distinct
    non-empty strings; personalisation exactly method (one of three), steps (0..10000), lr
    (a number > 0); privacy exactly delta (a number in (0, 1)) and required (a boolean);
    initial_model "deployment" or absent, initial_salt 64 lowercase hex digits exactly when
    initial_model is present; valuation only its documented fields, method and metric strings,
    its flags booleans (the reader reads standing and public_screen), combiner numbers, mode
    aggregator or peers (null: absent)."""

    def num(x) -> bool:
        return type(x) in (int, float) and math.isfinite(x)

    out = []
    for name, value in (
        ("spec_hash", terms.get("spec_hash")),
        ("validation.sha256", (terms.get("validation") or {}).get("sha256")),
    ):
        if not (isinstance(value, str) and SHA256_HEX.fullmatch(value)):
            out.append(f"{name} is not 64 lowercase hex digits")
    val = terms.get("validation")
    if not isinstance(val, dict) or set(val) != {"sha256", "images"}:
        out.append("validation holds other fields than sha256 and images")
    win = terms.get("windows")
    if not isinstance(win, dict) or set(win) not in (
        {"commit_seconds", "reveal_seconds"},
        {"commit_seconds", "reveal_seconds", "score_commit_seconds", "score_reveal_seconds"},
    ):
        out.append("windows holds other fields than the commit and reveal (and both score) windows")
    else:
        peers = (
            isinstance(terms.get("valuation"), dict) and terms["valuation"].get("mode") == "peers"
        )
        scored = [win.get(k) for k in ("score_commit_seconds", "score_reveal_seconds")]
        if peers and not all(type(w) is int and w >= 1 for w in scored):
            out.append("a peer round's terms without positive score windows")
        if not peers and any(w is not None for w in scored):
            out.append("score windows in terms whose valuation mode is not peers (a139)")
    if type(terms.get("canonical_encoding")) is not bool:
        out.append("canonical_encoding is not a boolean")
    if "class_names" in terms:
        names = terms["class_names"]
        if not (
            isinstance(names, list)
            and names
            and all(isinstance(n, str) and n for n in names)
            and len(set(names)) == len(names)
        ):
            out.append("class_names is not an array of distinct non-empty strings")
    if "personalisation" in terms:
        p = terms["personalisation"]
        if not (
            isinstance(p, dict)
            and set(p) == {"method", "steps", "lr"}
            and p["method"] in PERSONALISATION_METHODS
            and type(p["steps"]) is int
            and 0 <= p["steps"] <= 10000
            and num(p["lr"])
            and p["lr"] > 0
        ):
            out.append("personalisation is not method, steps (0..10000) and lr (> 0)")
    if "privacy" in terms:
        p = terms["privacy"]
        if not (
            isinstance(p, dict)
            and set(p) == {"delta", "required"}
            and num(p["delta"])
            and 0 < p["delta"] < 1
            and type(p["required"]) is bool
        ):
            out.append("privacy is not delta (in (0, 1)) and required (a boolean)")
    v = terms.get("valuation")
    if not isinstance(v, dict) or not set(v) <= VALUATION_FIELDS:
        out.append("valuation is not an object of the documented fields")
    else:
        if not all(isinstance(v.get(k), str) for k in ("method", "metric")):
            out.append("valuation's method or metric is not a string")
        flags = ("explanation_check", "standing", "project_shift", "public_screen")
        if any(v.get(k) is not None and type(v[k]) is not bool for k in flags):
            out.append(f"valuation's {'/'.join(flags)} not a boolean (or null)")
        comb = v.get("combiner")
        if comb is not None and not (
            isinstance(comb, dict) and all(num(x) and type(x) is not bool for x in comb.values())
        ):
            out.append("valuation.combiner is not an object of finite numbers")
        elif isinstance(comb, dict):
            # README *Round terms*: only the documented thresholds, each in its documented
            # range (before h-312 any finite number passed: a negative size_norm_z, h-309, or
            # a max_norm_z of -1, which the product refuses, replayed as a rule)
            unknown = sorted(k for k in comb if k not in COMBINER_RANGES)
            if unknown:
                out.append(f"valuation.combiner names unknown threshold(s) {unknown}")
            outside = [
                f"{k} {x!r} (documented: {COMBINER_RANGES[k]})"
                for k, x in sorted(comb.items())
                if k in COMBINER_RANGES and not in_documented_range(x, COMBINER_RANGES[k])
            ]
            if outside:
                out.append(f"valuation.combiner values outside their ranges: {outside}")
        if v.get("mode") not in (None, "aggregator", "peers"):
            out.append(f"valuation.mode {v.get('mode')!r} is not aggregator or peers")
    model, salt = terms.get("initial_model"), terms.get("initial_salt")
    if "initial_model" in terms and model != "deployment":
        out.append(f"initial_model {model!r} is not 'deployment'")
    if ("initial_salt" in terms) != ("initial_model" in terms) or (
        "initial_salt" in terms and not (isinstance(salt, str) and SHA256_HEX.fullmatch(salt))
    ):
        out.append("initial_salt is not 64 lowercase hex digits beside initial_model")
    return out


def float_integers(terms: dict) -> list:
    """The integer fields present and not written as integers (``krum_m`` may be null), and the
    float fields not written as floats."""
    bad = []
    for path in FLOAT_FIELDS:
        node = terms.get(path[0])
        if isinstance(node, dict) and path[1] in node and not isinstance(node[path[1]], float):
            bad.append(".".join(path))
    for path in INT_FIELDS:
        node = terms
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or path[-1] not in node:
            continue
        v = node[path[-1]]
        if path == ("aggregation_rule", "krum_m") and v is None:
            continue
        if not isinstance(v, int) or isinstance(v, bool):
            bad.append(".".join(path))
    return bad


def round_one_differences(first: dict, later: dict, rnd: int) -> list:
    """README *Fixed from round 1*: what in round ``rnd``'s terms re-chooses what round 1's
    (``first``) fixed, compared as canonical JSON (``1``, ``1.0`` and ``true`` differ): the
    TASK_FIXED fields always; the valuation mode only towards ``peers``; the valuation block
    while the mode is round 1's (quorum free; the seed's offset from the round fixed, the base
    ``seed`` standing in for a valuation seed not written, a30); the privacy block's
    ``required`` and ``delta`` (no block: not required, no delta; a36, a39); no window shorter
    than round 1's (a40). Before session 62 only TASK_FIXED and the valuation were compared,
    and nothing at all when the two ``mode`` values differed (a134-a136)."""

    def canon(value) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    out = [k for k in TASK_FIXED if canon(first.get(k)) != canon(later.get(k))]
    va, vb = dict(first.get("valuation") or {}), dict(later.get("valuation") or {})
    ma, mb = va.get("mode"), vb.get("mode")
    if ma != mb and mb != "peers":
        out.append(f"valuation mode {ma} -> {mb} (only a move to the peers' is free)")
    if ma == mb:

        def offset(terms: dict, val: dict, round_id: int):
            seed = val.get("seed")
            if seed is None:
                return canon(terms.get("seed"))
            if type(seed) is int:
                return canon(seed - round_id)
            return canon(seed)

        rest = [{k: v for k, v in val.items() if k not in ("seed", "quorum")} for val in (va, vb)]
        if canon(rest[0]) != canon(rest[1]):
            out.append("valuation")
        if offset(first, va, 1) != offset(later, vb, rnd):
            out.append("valuation seed minus round")
    pa, pb = first.get("privacy") or {}, later.get("privacy") or {}
    if (pa.get("required") is True) != (pb.get("required") is True):
        out.append("privacy required")
    if pa.get("delta") != pb.get("delta"):
        out.append("privacy delta")
    wa, wb = first.get("windows") or {}, later.get("windows") or {}
    for key in ("commit_seconds", "reveal_seconds", "score_commit_seconds", "score_reveal_seconds"):
        was, now = wa.get(key), wb.get(key)
        if type(was) is int and type(now) is int and now < was:
            out.append(f"windows {key} {was} -> {now} (shorter than round 1's)")
    return out


# ---------------------------------------------------------------- chain
def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def chain_text(raw: bytes) -> str:
    """A ``string`` from the chain per README 'The public rules, exactly' (*Strings*): UTF-8, each
    backslash doubled, each byte that is not UTF-8 as ``\\xNN``."""
    out = []
    for ch in raw.decode("utf-8", errors="surrogateescape"):
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= ord(ch) <= 0xDCFF:
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return "".join(out)


def registrations(w3, address, from_block):
    """Every ``SiteRegistered`` log in chain order: (blockNumber, logIndex, site, text)."""
    topic = Web3.keccak(text="SiteRegistered(address,string,uint64)")
    logs = w3.eth.get_logs({"address": address, "topics": [topic], "fromBlock": from_block})
    out = []
    for log in sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"])):
        site = "0x" + bytes(log["topics"][1])[-20:].hex()
        raw, _ = abi_decode(["bytes", "uint64"], bytes(log["data"]))
        out.append((log["blockNumber"], log["logIndex"], site.lower(), chain_text(raw)))
    return out


def submitted_updates(w3, address, from_block):
    """Every ``UpdateSubmitted`` log in chain order, as web3 gives an event (``args``: round,
    site, cid, sha256, numSamples), with the CID read by *Strings* from its raw bytes: web3's
    decoder refuses a CID that is not UTF-8 and reads a backslash as one (a126: a log's record
    of a CID with no CID's shape is the sha256 of the *Strings* text)."""
    topic = Web3.keccak(text="UpdateSubmitted(uint256,address,string,bytes32,uint64)")
    logs = w3.eth.get_logs({"address": address, "topics": [topic], "fromBlock": from_block})
    out = []
    for log in sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"])):
        raw, sha256, samples = abi_decode(["bytes", "bytes32", "uint64"], bytes(log["data"]))
        args = {
            "round": int.from_bytes(bytes(log["topics"][1]), "big"),
            "site": Web3.to_checksum_address(bytes(log["topics"][2])[-20:]),
            "cid": chain_text(raw),
            "sha256": HexBytes(sha256),
            "numSamples": samples,
        }
        out.append(AttributeDict({**log, "event": "UpdateSubmitted", "args": AttributeDict(args)}))
    return out


def aggregator_cids(w3, address, from_block, name):
    """Every ``RoundOpened`` (``name`` "opened": args round, modelCid, modelSha256, termsCid,
    termsSha256, commitDeadline, revealDeadline) or ``RoundFinalized`` log ("finalized": round,
    globalCid, globalSha256, logCid, logSha256) in chain order, as web3 gives an event, each CID
    read by *Strings* from its raw bytes: web3's decoder raised ``UnicodeDecodeError`` on an
    aggregator's CID that is not UTF-8, which left every round without a verdict; such a CID
    now reads as text no store gives (*invalid cid*), which fails its round's check."""
    if name == "opened":
        event = "RoundOpened"
        signature = "RoundOpened(uint256,string,bytes32,string,bytes32,uint64,uint64)"
        types = ["bytes", "bytes32", "bytes", "bytes32", "uint64", "uint64"]
        fields = ["modelCid", "modelSha256", "termsCid", "termsSha256"]
        fields += ["commitDeadline", "revealDeadline"]
    else:
        event = "RoundFinalized"
        signature = "RoundFinalized(uint256,string,bytes32,string,bytes32)"
        types = ["bytes", "bytes32", "bytes", "bytes32"]
        fields = ["globalCid", "globalSha256", "logCid", "logSha256"]
    topic = Web3.keccak(text=signature)
    logs = w3.eth.get_logs({"address": address, "topics": [topic], "fromBlock": from_block})
    out = []
    for log in sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"])):
        values = abi_decode(types, bytes(log["data"]))
        args = {"round": int.from_bytes(bytes(log["topics"][1]), "big")}
        for field, kind, value in zip(fields, types, values, strict=True):
            if kind == "bytes":
                args[field] = chain_text(value)
            elif kind == "bytes32":
                args[field] = HexBytes(value)
            else:
                args[field] = value
        out.append(AttributeDict({**log, "event": event, "args": AttributeDict(args)}))
    return out


def registered_names(w3, address, from_block):
    """site -> latest registered name, from the raw ``SiteRegistered`` logs: web3's decoder
    refuses a name that is not UTF-8 (the contract keeps any bytes a coordinator sends)."""
    topic = Web3.keccak(text="SiteRegistered(address,string,uint64)")
    logs = w3.eth.get_logs({"address": address, "topics": [topic], "fromBlock": from_block})
    names = {}
    for log in sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"])):
        site = "0x" + bytes(log["topics"][1])[-20:].hex()
        raw, _ = abi_decode(["bytes", "uint64"], bytes(log["data"]))
        names[site.lower()] = chain_text(raw)
    return names


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rpc-url", default="http://127.0.0.1:8545")
    ap.add_argument("--deployment", help="deployment.json (address, block_number)")
    ap.add_argument("--contract")
    ap.add_argument(
        "--ipfs",
        default="http://127.0.0.1:5001",
        help="http://HOST:PORT or ipfs:/ip4/HOST/tcp/PORT/http",
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    ap.add_argument("--dump", help="folder to write fetched terms/logs into (for reading)")
    args = ap.parse_args(argv)

    from_block = 0
    address = args.contract
    if args.deployment and not address:
        dep = json.loads(Path(args.deployment).read_text())
        address = dep["address"]
        from_block = int(dep.get("block_number", 0))
    w3 = Web3(Web3.HTTPProvider(args.rpc_url))
    if args.deployment and not args.contract:
        # a later block_number would hide every event before it (attack a56): the deploying
        # transaction's receipt must show this contract created in that very block
        receipt = w3.eth.get_transaction_receipt("0x" + str(dep["tx_hash"]).removeprefix("0x"))
        created = receipt["contractAddress"] or ""
        if created.lower() != address.lower() or receipt["blockNumber"] != from_block:
            sys.exit(
                f"deployment file disagrees with the chain: tx {dep['tx_hash']} created "
                f"{created or 'no contract'} in block {receipt['blockNumber']}, the file says "
                f"{address} in block {from_block}"
            )
    abi = json.loads(ARTIFACT.read_text())["abi"]
    c = w3.eth.contract(address=Web3.to_checksum_address(address), abi=abi)
    ipfs = Ipfs(ipfs_url(args.ipfs))
    dump = Path(args.dump) if args.dump else None
    if dump:
        dump.mkdir(parents=True, exist_ok=True)

    def events(name):
        return sorted(
            getattr(c.events, name).get_logs(from_block=from_block),
            key=lambda e: (e["blockNumber"], e["logIndex"]),
        )

    ev = {
        n: events(n)
        for n in [
            "SiteRemoved",
            "MaxSamplesSet",
            "PrivacyBudgetSet",
            "UpdateCommitted",
            "PrivacySpent",
            "UpdateValued",
            "RoundValued",
            "RoundCancelled",
            "UpdateReweighted",
            "UpdateWithheld",
            "UpdateScreened",
            "PeerScoringOpened",
            "ScoresCommitted",
            "ScoresRevealed",
            "ValidatorRated",
        ]
    }
    ev["UpdateSubmitted"] = submitted_updates(w3, c.address, from_block)
    # the aggregator's CIDs, raw as the reveals' (a non-UTF-8 one crashed web3's decoder)
    ev["RoundOpened"] = aggregator_cids(w3, c.address, from_block, "opened")
    ev["RoundFinalized"] = aggregator_cids(w3, c.address, from_block, "finalized")
    alpha = c.functions.reputationAlpha().call()
    names = registered_names(w3, c.address, from_block)
    regs = registrations(w3, c.address, from_block)
    print(
        f"ledger {c.address} chain {w3.eth.chain_id}; reputationAlpha {alpha}; "
        f"{len(names)} site(s): " + ", ".join(f"{n} {a}" for a, n in names.items())
    )
    print(
        f"rounds opened: {[e.args.round for e in ev['RoundOpened']]}; currentRound() "
        f"{c.functions.currentRound().call()}, lastFinalizedRound() {c.functions.lastFinalizedRound().call()}"
    )

    # README *Registry changes inside a round*: every registration, removal, cap and budget
    reg_events = [((b, i), "registered", site, None) for b, i, site, _ in regs]
    for name, kind, field in (
        ("SiteRemoved", "removed", None),
        ("MaxSamplesSet", "cap", "maxSamples"),
        ("PrivacyBudgetSet", "budget", "epsilonBudgetMicro"),
    ):
        reg_events += [
            (
                (e["blockNumber"], e["logIndex"]),
                kind,
                e.args.site.lower(),
                None if field is None else int(e.args[field]),
            )
            for e in ev[name]
        ]
    stamps = {
        pos[0]: w3.eth.get_block(pos[0])["timestamp"]
        for pos, kind, _, _ in reg_events
        if kind != "registered"
    }

    acct = readme_accountant()
    dp_seen: dict = {}  # (round, site) -> the "dp" object of a readable revealed update, or None
    header_dp: dict = {}  # (round, site) -> the "dp" of an update whose header reads, or None
    earlier_state: dict = {}  # (round, site) -> "dp" object / "unbacked" / "unavailable" / ...
    noise = readme_noise()
    reputation: dict[str, int | None] = {}
    history: dict[int, dict] = {}  # finalized round -> its free-rider references
    finalized: list[int] = []  # every finalized round, whether or not its blobs read
    first_terms: dict | None = None
    summary = []
    standing_logs: dict = {}  # finalized round -> (log sha256 hex, its standing or "why not")

    def standing_of(q: int, cid: str) -> tuple[str, object]:
        """README *Standing chain*: round q's log read by its CID against getRound's sha256."""
        if q not in standing_logs:
            want = c.functions.getRound(q).call()[10].hex()
            try:
                blob = ipfs.cat(cid)
                doc = json_loads(blob) if sha(blob) == want else None
                st = (
                    ValueError("another sha256")
                    if doc is None
                    else ValueError(f"it names round {doc.get('round')}")
                    if not integer_is(doc.get("round"), q)
                    else doc.get("standing")
                )
            except NotGiven as exc:
                st = ValueError(f"not given: {exc}")
            except ValueError as exc:
                st = ValueError(f"not JSON: {exc}")
            standing_logs[q] = (want, st)
        return standing_logs[q]

    for ro in ev["RoundOpened"]:
        r = ro.args.round
        rv = c.functions.getRound(r).call()
        (
            _rid,
            phase,
            commit_dl,
            reveal_dl,
            opened_at,
            active,
            reveal_count,
            start_sha,
            terms_sha,
            global_sha,
            log_sha,
        ) = rv
        print(
            f"\n== round {r}: phase {phase} ({PHASES.get(phase)}), commit until {commit_dl}, reveal until "
            f"{reveal_dl}, opened {opened_at}, active at open {active}, revealed {reveal_count}"
        )
        report(
            r,
            "round.event_vs_storage",
            ro.args.modelSha256 == start_sha
            and ro.args.termsSha256 == terms_sha
            and ro.args.commitDeadline == commit_dl
            and ro.args.revealDeadline == reveal_dl,
            "RoundOpened model/terms sha256 and deadlines equal getRound's",
        )
        peer = [e for e in ev["PeerScoringOpened"] if e.args.round == r]
        # README *Phase* (a33): a valued aggregator round fails, a valued peer round, an open or
        # cancelled one passes, a finalized one has no phase check
        if phase == 2:
            report(
                r,
                "phase",
                bool(peer),
                "valued peer round: its medians are checked from the votes"
                if peer
                else "valued, never finalized: weights on chain that no log or global model justifies",
            )
        elif phase != 3:
            report(r, "phase", phase in (1, 4), f"round is {PHASES.get(phase, phase)}")
        if peer:
            report(
                r,
                "peer_round",
                "NOTE",
                "peer round: scores are the medians of the ScoresRevealed vectors (peers.median below)",
            )

        # ---- start model and terms
        # README *Content not given*: a start model or terms the store does not give fail
        # their check in a finalized round (a note in any other), and the round is not replayed
        try:
            start_blob = ipfs.cat(ro.args.modelCid)
        except NotGiven as exc:
            report(
                r,
                "start_model.sha256",
                False if phase == 3 else "NOTE",
                f"not given: {exc}; round not replayed",
            )
            continue
        report(
            r,
            "start_model.sha256",
            sha(start_blob) == start_sha.hex(),
            f"{short_text(ro.args.modelCid)} {sha(start_blob)[:16]}",
        )
        try:
            terms_blob = ipfs.cat(ro.args.termsCid)
        except NotGiven as exc:
            report(
                r,
                "terms.sha256",
                False if phase == 3 else "NOTE",
                f"not given: {exc}; round not replayed",
            )
            continue
        report(
            r,
            "terms.sha256",
            sha(terms_blob) == terms_sha.hex(),
            f"{short_text(ro.args.termsCid)} {sha(terms_blob)[:16]}",
        )
        try:  # README *Blobs chosen by someone else*: terms that do not read one way (a128)
            terms = json_loads(terms_blob, strict=True)
            if not isinstance(terms, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            report(
                r,
                "terms.canonical",
                False if phase == 3 else "NOTE",
                f"the terms do not read one way: {exc}; round not replayed",
            )
            continue
        unknown = sorted(set(terms) - TERMS_FIELDS)
        floats = float_integers(terms)
        rule_bad = duplicate_rule_problems(terms)
        field_bad = terms_field_problems(terms)
        # README *The round terms, field by field*: valuation.references is "weighted", and only
        # with public_screen true; any other value is terms no reader of this release takes
        # (audit verify fails them; this reader passed them as the rule before: h-307)
        val_doc = terms.get("valuation") if isinstance(terms.get("valuation"), dict) else {}
        refs_rule = val_doc.get("references")
        refs_bad = refs_rule is not None and not (
            refs_rule == "weighted" and val_doc.get("public_screen") is True
        )
        report(
            r,
            "terms.canonical",
            canonical_terms(terms_blob)
            and not unknown
            and not floats
            and not rule_bad
            and not field_bad
            and not refs_bad
            and terms.get("format") == "fedtrail.round-terms/1"
            and integer_is(terms.get("round"), r),
            f"canonical bytes {canonical_terms(terms_blob)}, unknown fields {unknown or 'none'}, "
            f"integers written otherwise {floats or 'none'}, "
            f"duplicate rule {rule_bad or 'ok'}, "
            f"fields {field_bad or 'ok'}, "
            + (
                f"reference rule {refs_rule!r} unknown or without public_screen, "
                if refs_bad
                else ""
            )
            + f"format {terms.get('format')}, round {terms.get('round')}",
        )
        if r == 1:
            first_terms = terms
        elif first_terms is None:  # README *Fixed from round 1*: nothing else binds them
            report(r, "terms.task_fixed", False, "round 1's terms are unreadable")
        else:
            changed = round_one_differences(first_terms, terms, r)
            report(
                r,
                "terms.task_fixed",
                not changed,
                "the fields round 1 fixes are round 1's"
                + (f": {changed} differ" if changed else ""),
            )
        if dump:
            (dump / f"terms-{r}.json").write_bytes(terms_blob)
        _, smeta, start = parse_safetensors(start_blob)
        stext, sdoc = fedtrail_meta(smeta)
        report(
            r,
            "start_model.header",
            sdoc.get("kind") == "model"
            and sdoc["compression"] == {"method": "none"}
            and start_blob == canonical(start, stext),
            f"metadata {stext}; canonical",
        )
        spec_hash = terms.get("spec_hash")
        # README *Wire format*: the spec hash and the state-dict order come from its layout(spec)
        spec = terms.get("model_spec") or {}
        order = [name for name, _ in readme_layout()(spec)]
        mine_spec = spec_hash_of(spec)
        report(
            r,
            "terms.spec_hash",
            mine_spec == spec_hash == sdoc.get("spec_hash")
            and {n: list(sh) for n, sh in readme_layout()(spec)}
            == {k: list(v.shape) for k, v in start.items()},
            f"recomputed from README layout(spec) {mine_spec[:16]}; terms {spec_hash[:16]}; "
            f"start model header {sdoc.get('spec_hash', '')[:16]}; start model's tensors as layout",
        )
        win = terms.get("windows", {})
        cw, rw = commit_dl - opened_at, reveal_dl - commit_dl
        report(
            r,
            "terms.windows",
            # README field list: commitDeadline - openedAt and revealDeadline - commitDeadline,
            # exactly
            cw == win.get("commit_seconds") and rw == win.get("reveal_seconds"),
            f"commit window {cw} s (terms {win.get('commit_seconds')}), reveal window {rw} s (terms {win.get('reveal_seconds')})",
        )
        if not peer and (terms.get("valuation") or {}).get("mode") == "peers":
            # README *Peer rounds* (a140, a133's round finalized): terms that say the sites score
            # the round under a round the chain opened as an aggregator round (openRound)
            report(
                r,
                "peers.windows",
                False,
                "the terms say mode peers, the chain opened no peer round (no PeerScoringOpened)",
            )
        rule = terms.get("aggregation_rule")
        report(r, "terms.rule", "NOTE", f"aggregation_rule {rule}")
        shapes = {k: v.shape for k, v in start.items()}

        # ---- commits and reveals
        commits = [e for e in ev["UpdateCommitted"] if e.args.round == r]
        reveals = {e.args.site.lower(): e for e in ev["UpdateSubmitted"] if e.args.round == r}
        valued = {e.args.site.lower(): e for e in ev["UpdateValued"] if e.args.round == r}
        print(f"   commit order: {[names.get(e.args.site.lower(), e.args.site) for e in commits]}")
        deltas = {}
        hdrs = {}
        onchain = {}
        commitments = {}
        readable = set()
        blobs: dict = {}
        not_given: dict = {}  # site -> NotGiven.kind, for an update the store did not give
        onchain_sha: dict = {}
        # README *Peer rounds*, public screen: the update.<site> rows that failed an update
        # nobody here reads at weight 0 with a positive score (reason OK), by place in RESULTS:
        # passed below if the screen left it out (session 62)
        unread_zero: dict = {}
        for e in commits:
            a = e.args.site.lower()
            sub = c.functions.getSubmission(r, e.args.site).call()
            (_, revealed, commitment, sub_sha, n, score, reason, weight) = sub
            onchain[a] = (revealed, n, score, reason, weight)
            commitments[a] = commitment
            rev = reveals.get(a)
            tag = f"update.{names.get(a, a)}"
            if rev is None:
                report(r, tag, "NOTE", f"committed, never revealed (storage revealed={revealed})")
                continue
            expect = Web3.keccak(
                abi_encode(
                    ["address", "uint256", "bytes32", "uint256"],
                    [e.args.site, r, rev.args.sha256, rev.args.numSamples],
                )
            )
            report(
                r,
                tag + ".commitment",
                expect == e.args.commitment == commitment,
                "keccak256(abi.encode(site, round, sha256, numSamples)) equals the commitment",
            )
            report(
                r,
                tag + ".reveal_vs_storage",
                rev.args.sha256 == sub_sha and rev.args.numSamples == n,
                f"UpdateSubmitted sha256/numSamples vs getSubmission (n={n} storage, {rev.args.numSamples} event)",
            )
            # README *Content not given* and *Usable*: an update that is not usable by the wire
            # format (not given, another sha256, not decoding, not canonical, a wrong header)
            # passes its check only when the chain zeroed it (weight 0) as TAMPERED or
            # MALFORMED (or, in a peer round, PEER_REJECTED or WITHHELD)
            zeroed = zeroed_unusable(reason, weight, bool(peer))
            # outside a finalized round verify reads no update: an unusable one is a note
            unusable_verdict = zeroed if phase == 3 else "NOTE"
            if (
                peer
                and unusable_verdict is False
                and weight == 0
                and score > 0
                and 0 <= reason < len(REASONS)
                and REASONS[reason] == "OK"
            ):
                unread_zero[a] = len(RESULTS)  # the row reported next, if it fails
            onchain_sha[a] = sub_sha.hex()
            try:
                blob = ipfs.cat(rev.args.cid)
            except NotGiven as exc:
                blobs[a], not_given[a] = None, exc.kind
                report(
                    r,
                    tag,
                    unusable_verdict,
                    f"not given: {exc}; chain reason {reason} weight {weight}"
                    + (" (zeroed as unusable: consistent)" if zeroed else ""),
                )
                continue
            ok_hash = sha(blob) == sub_sha.hex()
            blobs[a] = blob
            try:
                _, umeta, ut = parse_safetensors(blob)
                utext, udoc = fedtrail_meta(umeta)
                canon = canonical_blob(blob, ut, utext, udoc)
                hdr_ok = update_header_ok(udoc, r, spec_hash)
                if ok_hash and hdr_ok:
                    header_dp[(r, a)] = udoc.get("dp")  # README *Privacy scored*: header reads
                decoded = decode_update(ut, udoc, shapes)
                hdrs[a] = udoc
                # README *Content not given*: usable by the wire format, or its tensors unread
                wire_ok = ok_hash and canon and hdr_ok
                if wire_ok:
                    deltas[a] = decoded
                    readable.add(a)
                    dp_seen[(r, a)] = udoc.get("dp")
                report(
                    r,
                    tag,
                    True if wire_ok else unusable_verdict,
                    f"{rev.args.cid} sha256 {'ok' if ok_hash else 'MISMATCH'}, decodes ({udoc['compression']['method']}), "
                    f"canonical {canon}, header {utext}"
                    + (
                        ""
                        if wire_ok
                        else f"; chain reason {reason} weight {weight}"
                        + (" (zeroed as unusable: consistent)" if zeroed else "")
                    ),
                )
            except Exception as exc:
                report(
                    r,
                    tag,
                    unusable_verdict,
                    f"{rev.args.cid} sha256 {'ok' if ok_hash else 'MISMATCH'}; does not decode: {exc}; "
                    f"chain reason {reason} weight {weight}"
                    + (" (zeroed as unusable: consistent)" if zeroed else ""),
                )

        for e in commits:  # README *Privacy scored*: what a later composed update reads back
            a = e.args.site.lower()
            if a not in reveals or not onchain[a][0]:
                continue
            if (r, a) in header_dp:
                earlier_state[(r, a)] = header_dp[(r, a)] or "unbacked"
            elif blobs[a] is not None and sha(blobs[a]) == onchain_sha[a]:
                earlier_state[(r, a)] = "unbacked"
            elif onchain[a][4] == 0 and REASONS[onchain[a][3]] in UNAVAILABLE_REASONS:
                earlier_state[(r, a)] = "unavailable"
            else:
                earlier_state[(r, a)] = "unreadable"

        # ---- peers.withheld (README *Peer rounds*): an update the chain dropped as unreadable
        # (reason WITHHELD: dropWithheld or dropUpdates) must not be usable here either; one
        # that reads and decodes (and carries the DP block terms that require it ask for) is a
        # readable update dropped, or one its site published only after the score reveal
        # deadline (h-276: the reader left this out, so a rigged drop passed it)
        if peer:
            need_dp_wh = bool((terms.get("privacy") or {}).get("required"))
            withheld_now = sorted(
                a
                for a in onchain
                if onchain[a][0]
                and 0 <= onchain[a][3] < len(REASONS)
                and REASONS[onchain[a][3]] == "WITHHELD"
            )
            usable_wh = [
                a
                for a in withheld_now
                if a in readable and not (need_dp_wh and "dp" not in hdrs.get(a, {}))
            ]
            if withheld_now:
                report(
                    r,
                    "peers.withheld",
                    not usable_wh,
                    f"dropped as unreadable: {[names.get(a) for a in withheld_now]}"
                    + (
                        f"; yet {[names.get(a) for a in usable_wh]} read(s) and decode(s) now"
                        if usable_wh
                        else "; none reads here either"
                    ),
                )

        # ---- privacy.spend / privacy.required (README *Privacy spend*)
        spends_all = ev["PrivacySpent"]

        def earlier_of(site, r=r, spends_all=spends_all):
            mine = [e for e in spends_all if e.args.site.lower() == site and e.args.round < r]
            params = [dp_seen.get((e.args.round, site)) for e in mine]
            if any(p is None for p in params):
                return None, 0
            return params, mine[-1].args.totalMicro if mine else 0

        for check, ok, detail in privacy_rule(
            acct,
            terms,
            {a for a in reveals if onchain.get(a, (False,))[0]},
            readable,
            {a: hdrs[a].get("dp") for a in readable},
            {a: onchain[a][1] for a in onchain},
            {a: onchain[a][4] for a in onchain},
            [(e.args.site.lower(), e.args.epsilonMicro) for e in spends_all if e.args.round == r],
            earlier_of,
        ):
            report(r, check, ok, detail)

        # ---- privacy.scored / privacy.noise (README *Updates that read*, *Privacy noise*,
        # *Privacy scored*, *The noise check, exactly*): finalized rounds, as every replay
        read_as_now: dict = {}  # README *Log status*: how this reader reads each update
        # README *Duplicates*: in a peer round only the updates read while it was scored (a
        # positive peer median before any drop, not dropped as withheld: the chain's scores
        # and the drops dropScreened made, which only weighted updates can be) are originals
        read_then = (
            {a for a in onchain if onchain[a][0] and onchain[a][2] > 0}
            | {e.args.site.lower() for e in ev["UpdateScreened"] if e.args.round == r}
            if peer
            else None
        )

        def pinned_of(a, deltas=deltas, read_then=read_then):
            return deltas.get(a) if read_then is None or a in read_then else None

        peer_round = bool(peer) or (terms.get("valuation") or {}).get("mode") == "peers"
        for e in ev["RoundFinalized"]:  # README *Updates that read*: or a log that says peers
            if e.args.round == r and not peer_round:
                try:
                    ldoc = json_loads(ipfs.cat(e.args.logCid))
                    peer_round = (
                        "peers" in ldoc
                        or ((ldoc.get("settings") or {}).get("valuation") or {}).get("mode")
                        == "peers"
                    )
                except (ValueError, AttributeError, requests.RequestException, NotGiven):
                    pass  # an unreadable log: log.sha256 and the log checks say so
        if phase == 3:
            comb = dict(LATER_THRESHOLDS)
            vcomb = (terms.get("valuation") or {}).get("combiner")
            if vcomb is None:
                comb["dp_noise_check"] = comb["dp_spend_check"] = 0
            else:
                comb.update(vcomb)
            asked = terms.get("privacy")
            revealed_now = [
                a for a in (e.args.site.lower() for e in commits) if a in reveals and onchain[a][0]
            ]
            copies_now = duplicate_copies(
                [(a, reveals[a].args.sha256, pinned_of(a)) for a in revealed_now],
                terms.get("duplicates") or {},
                {a for a in hdrs if hdrs[a].get("dp") is not None},
            )
            need_dp_now = bool((asked or {}).get("required"))
            spends_now: dict = {}
            for e in spends_all:
                if e.args.round == r:
                    s_ = e.args.site.lower()
                    spends_now[s_] = spends_now.get(s_, 0) + e.args.epsilonMicro
            upd = {}
            for a in revealed_now:
                dpa = hdrs[a].get("dp") if a in readable else None
                reads = a in readable and not (need_dp_now and dpa is None) and a not in copies_now
                lacks, breach = False, None
                if reads and comb["dp_noise_check"] and dpa is not None:
                    lacks = noise["noise_breach"](
                        [deltas[a][nm].astype(np.float64).ravel().tolist() for nm in order],
                        dpa,
                        onchain[a][1],
                        hdrs[a]["compression"]["method"],
                        comb["dp_noise_check"],
                    )
                if reads and comb["dp_spend_check"]:
                    mine = [e for e in spends_all if e.args.site.lower() == a and e.args.round < r]
                    entries = [earlier_state.get((e.args.round, a), "unreadable") for e in mine]
                    breach = spend_breach(
                        acct,
                        asked,
                        dpa,
                        spends_now.get(a, 0),
                        onchain[a][1],
                        (entries, mine[-1].args.totalMicro if mine else 0),
                    )
                if blobs[a] is None:  # README *Log status*: not given here
                    if not_given[a] in ("not a file", "invalid cid"):
                        read_as_now[a] = "malformed"  # fixed by the chain's CID alone
                else:
                    read_as_now[a] = (
                        "tampered"
                        if sha(blobs[a]) != onchain_sha[a]
                        else "malformed"
                        if a not in readable or (need_dp_now and dpa is None) or lacks or breach
                        else "duplicate"
                        if a in copies_now
                        else "ok"
                    )
                upd[a] = {
                    "reads": reads,
                    "dp": dpa,
                    "lacks": lacks,
                    "breach": breach,
                    "weight": onchain[a][4],
                    "reason": REASONS[onchain[a][3]],
                }
            for check, ok, detail in dp_scored_rule(
                bool(comb["dp_noise_check"]),
                bool(comb["dp_spend_check"]),
                peer_round,
                asked,
                any(a in readable and hdrs[a].get("dp") is not None for a in revealed_now),
                upd,
            ):
                report(r, check, ok, detail)

        # ---- sites.registry (README *Registry changes inside a round*, a65)
        voted: set | None = set()
        for e in ev["ScoresRevealed"]:
            if e.args.round != r:
                continue
            stored, _ = c.functions.scoreVote(r, e.args.validator).call()
            expect = Web3.keccak(
                abi_encode(
                    ["uint256", "address", "uint32[]"],
                    [r, e.args.validator, list(e.args.scores)],
                )
            )
            if voted is not None and stored == expect:
                voted.add(e.args.validator.lower())
            else:
                voted = None
        until = max([reveal_dl] + [e.args.scoreRevealDeadline for e in peer])
        reg_ok, reg_detail = registry_rule(
            (ro["blockNumber"], ro["logIndex"]),
            reg_events,
            stamps,
            reveal_dl,
            until,
            {a for a in onchain if onchain[a][0]},
            {
                a
                for a in onchain
                if not onchain[a][0] and is_decline(commitments[a], a, r, terms_sha)
            },
            voted,
            phase,
            any(onchain[a][0] and onchain[a][4] > 0 for a in onchain),
            bool(peer),
        )
        if peer:
            reg_detail += (
                "; a ScoresRevealed differs from its stored vote"
                if voted is None
                else f"; {len(voted)} score vector(s), each its stored vote"
            )
        report(r, "sites.registry", reg_ok, reg_detail)

        # ---- weights
        vals = sorted(valued)
        if not vals:
            report(r, "weights", "NOTE", "not valued")
            summary.append({"round": r, "phase": phase})
            continue
        entries = [(a, onchain[a][1], onchain[a][2]) for a in vals]
        mine, T = weights_rule(entries)
        rvd = [e for e in ev["RoundValued"] if e.args.round == r]
        # README *The contract*, events: UpdateValued and RoundValued state the valuation's
        # weights and denominator; a later drop (dropWithheld, dropScreened, dropUpdates) zeroes
        # scores and re-weights over a smaller sum, and each site's last UpdateReweighted holds.
        # The weights in storage are the rule's over the scores now, the valuation's the rule's
        # over UpdateValued's scores (before, any drop failed both checks: h-276)
        at_valuation, T0 = weights_rule([(a, onchain[a][1], valued[a].args.score) for a in vals])
        held = {a: valued[a].args.weight for a in vals}
        for e in ev["UpdateReweighted"]:
            if e.args.round == r and e.args.site.lower() in held:
                held[e.args.site.lower()] = e.args.weight
        ok_w = all(
            mine[a] == onchain[a][4] == held[a] and at_valuation[a] == valued[a].args.weight
            for a in vals
        )
        detail = "; ".join(
            f"{names.get(a)} n={onchain[a][1]} s={onchain[a][2]} {REASONS[onchain[a][3]]} "
            f"w={onchain[a][4]} mine={mine[a]}"
            + (
                f" (valued s={valued[a].args.score} w={valued[a].args.weight} "
                f"mine={at_valuation[a]}; events {held[a]})"
                if held[a] != valued[a].args.weight or onchain[a][2] != valued[a].args.score
                else ""
            )
            for a in vals
        )
        report(r, "weights", ok_w, detail)
        report(
            r,
            "weights.basis",
            bool(rvd) and rvd[0].args.totalWeightBasis == T0,
            f"RoundValued.totalWeightBasis {rvd[0].args.totalWeightBasis if rvd else None} vs "
            f"sum n*s at the valuation (UpdateValued's scores) {T0}"
            + (f"; after the drops {T}" if T != T0 else ""),
        )
        # ---- peer rounds (README *Peer rounds*): the medians of the revealed vectors
        peer_meds: dict = {}
        peer_gated = 0
        if peer:
            psites = sorted(reveals, key=lambda x: int(x, 16))
            votes = sorted(
                (
                    (e.args.validator.lower(), list(e.args.scores))
                    for e in ev["ScoresRevealed"]
                    if e.args.round == r
                ),
                key=lambda v: int(v[0], 16),
            )
            voted = {v for v, _ in votes}
            withheld = sorted(
                {
                    e.args.validator.lower()
                    for e in ev["ScoresCommitted"]
                    if e.args.round == r and e.args.validator.lower() not in voted
                },
                key=lambda x: int(x, 16),
            )
            before = {}
            for e in ev["ValidatorRated"]:
                if e.args.round < r:
                    v = e.args.validator.lower()
                    before[v] = (e.args.validatorReputation, before.get(v, (0, 0))[1] + 1)
            # README *Peer rounds*: the terms say mode "peers" and the quorum (a139: a missing
            # quorum was read as 1, so a peer round opened under aggregator terms passed)
            tval = terms.get("valuation") or {}
            named = tval.get("quorum") if tval.get("mode") == "peers" else None
            quorum = peer[0].args.quorum  # what the contract applied
            po = peer[0].args
            report(
                r,
                "peers.windows",
                po.scoreCommitDeadline - reveal_dl == win.get("score_commit_seconds")
                and po.scoreRevealDeadline - po.scoreCommitDeadline
                == win.get("score_reveal_seconds")
                and type(named) is int
                and po.quorum == named,
                f"score windows {po.scoreCommitDeadline - reveal_dl} s and "
                f"{po.scoreRevealDeadline - po.scoreCommitDeadline} s, quorum {po.quorum} "
                f"(terms {win.get('score_commit_seconds')}, {win.get('score_reveal_seconds')}, {named})",
            )
            try:
                meds, cnts, rated = peer_rule(psites, votes, before, quorum, withheld, alpha)
                # README *Peer rounds*: an update dropped afterwards (dropWithheld, or
                # dropScreened under the terms' public_screen) holds 0 and its drop's reason
                screened_now = {
                    e.args.site.lower() for e in ev["UpdateScreened"] if e.args.round == r
                }
                bad = [
                    f"{names.get(a)} median {meds[i]} chain {onchain[a][2]} {REASONS[onchain[a][3]]}"
                    for i, a in enumerate(psites)
                    if a in onchain
                    and REASONS[onchain[a][3]] != "WITHHELD"
                    and not (a in screened_now and REASONS[onchain[a][3]] == "FREE_RIDER")
                    and (
                        onchain[a][2] != meds[i]
                        or REASONS[onchain[a][3]] != ("OK" if meds[i] > 0 else "PEER_REJECTED")
                    )
                ]
                report(
                    r,
                    "peers.median",
                    not bad,
                    f"{len(votes)} revealed vector(s), quorum {quorum}: medians {meds} (entries {cnts})"
                    + (f"; disagree: {bad}" if bad else ""),
                )
                chain_rated = {
                    e.args.validator.lower(): (e.args.distance, e.args.validatorReputation)
                    for e in ev["ValidatorRated"]
                    if e.args.round == r
                }
                report(
                    r,
                    "peers.reputation",
                    chain_rated == rated,
                    "validator (distance, reputation): "
                    + "; ".join(
                        f"{names.get(v)} {rated[v]} chain {chain_rated.get(v)}" for v in rated
                    ),
                )
                peer_meds = dict(zip(psites, zip(meds, cnts, strict=True), strict=True))
                peer_gated = len(votes) - len(gate_counted(votes, before, quorum))
                on = terms.get("valuation") or {}  # the key with standing (README)
                if screened_now and not (on.get("public_screen") and on.get("standing")):
                    report(
                        r,
                        "peers.screen",
                        False,
                        f"dropScreened zeroed {[names.get(a) for a in sorted(screened_now)]} "
                        "in a round whose terms have no public_screen (with standing)",
                    )
            except ValueError as exc:
                report(r, "peers.median", "NOTE", str(exc))
                peer_meds = {}
        # ---- the reasons' public rules (README *Usable*, *Duplicates*, *IMPLAUSIBLE_SAMPLES*,
        # *Free-riders and stale copies*, *Size bound*, *Screens*), in the README's order
        onlabel = {a: REASONS[onchain[a][3]] for a in vals}
        cc = dict(LATER_THRESHOLDS)
        cc.update((terms.get("valuation") or {}).get("combiner") or {})
        # aggregator rounds only: in a peer round the scores and reasons are the medians above,
        # except under the terms' public_screen (README *Peer rounds*): the free-rider screen
        # then runs once in public and the aggregator drops what it marks (dropScreened)
        public_screen = bool(peer) and bool((terms.get("valuation") or {}).get("public_screen"))
        standing_on = bool((terms.get("valuation") or {}).get("standing")) and (
            not peer or public_screen
        )
        predicted: dict[str, str] = {}
        pending_refs: list[str] | None = None
        why: dict[str, str] = {}
        items = [
            (
                e.args.site.lower(),
                reveals[e.args.site.lower()].args.sha256,
                pinned_of(e.args.site.lower()),
            )
            for e in commits
            if e.args.site.lower() in reveals
        ]
        copies = duplicate_copies(
            items,
            terms.get("duplicates") or {},
            {a for a in hdrs if hdrs[a].get("dp") is not None},
        )
        if peer:  # README *Peer rounds*: a copy weighted 0, no other DUPLICATE
            dup_ok = all(onchain[a][4] == 0 for a in copies if a in onchain) and all(
                a in copies for a in onlabel if onlabel[a] == "DUPLICATE"
            )
        else:
            dup_ok = all(
                (a in copies) == (onlabel.get(a) == "DUPLICATE")
                for a, _, _ in items
                if a in onlabel
            )
        report(
            r,
            "duplicates",
            dup_ok,
            f"copies by the documented rule: {[(names.get(a), names.get(o)) for a, o in copies.items()] or 'none'}",
        )
        for a in copies:
            predicted[a], why[a] = "DUPLICATE", f"copy of {names.get(copies[a])}"
        need_dp = bool((terms.get("privacy") or {}).get("required"))
        usable = [
            a
            for a in vals
            if a in deltas
            and a not in copies
            and onchain[a][1] >= 1
            and (not need_dp or "dp" in hdrs.get(a, {}))
            and onlabel[a] not in ("TAMPERED", "MALFORMED", "EXPLANATION_SHIFT", "CONTRADICTED")
        ]
        # README *Peer rounds*, public screen: its inputs are named by the chain alone, the
        # revealed updates whose peer median is positive less those dropped by dropWithheld;
        # no other update is read, whether or not it reads now; an input that does not read,
        # or a reference that does not, leaves the screen uncomputable, except an input that
        # does not read and carries no weight once the withheld ones are dropped (a positive
        # median at weight 0 from rounding, which dropWithheld cannot take): it is left out,
        # as if withheld (session 61)
        blocked: list[str] = []
        left_out: set[str] = set()
        if public_screen and standing_on:
            dropped_wh = {e.args.site.lower() for e in ev["UpdateWithheld"] if e.args.round == r}
            inputs = {a for a, (m, _) in peer_meds.items() if m > 0 and a not in dropped_wh}
            if not peer_meds:
                blocked.append("no peer medians")
            unread_inputs = [
                a
                for a in sorted(inputs)
                if a not in copies
                and (a not in deltas or (need_dp and "dp" not in hdrs.get(a, {})))
            ]
            base = [
                (a, onchain[a][1], 0 if a in dropped_wh else m)
                for a, (m, _) in peer_meds.items()
                if a in onchain
            ]
            w_base = weights_rule(base)[0] if any(n * m for _, n, m in base) else {}
            left_out = {a for a in unread_inputs if w_base.get(a, 0) == 0}
            # a left-out update keeps reason OK and weight 0 (the contract drops only a
            # weighted one): its update.<site> passes, though no reader here reads it; so does
            # an unread copy at weight 0 (the screen takes no copy, read or not: h-307, as
            # audit verify settles it; before, a copy's row failed here and passed there)
            unread_copies = {
                a for a in inputs if a in copies and a not in deltas and w_base.get(a, 0) == 0
            }
            # only under terms that say so (valuation.references "weighted", session 62): a log
            # under older terms keeps its verdict (absent is the old rule, under which such a
            # row fails; an input withheld after the finalize then cannot launder a copy of it)
            settled = left_out | unread_copies
            if (terms.get("valuation") or {}).get("references") != "weighted":
                settled = set()
            for a in sorted(settled):
                at = unread_zero.get(a)
                if at is None or at >= len(RESULTS) or RESULTS[at]["result"] != "FAIL":
                    continue
                row = RESULTS[at]
                if row["round"] != r or row["check"] != f"update.{names.get(a, a)}":
                    continue
                row["result"] = "PASS"
                row["detail"] += (
                    "; left out of the public screen unread (a positive peer median at weight "
                    "0, reason OK, which the contract cannot drop): consistent"
                )
                print(f"{r!s:>5}  {row['check']:<28} PASS  (was FAIL: left out of the screen)")
            blocked += [
                f"input {names.get(a)} does not read" for a in unread_inputs if a not in left_out
            ]
            usable = [a for a in usable if a in inputs]
        ratio = cc.get("max_sample_ratio", 10.0)
        self_in = bool(cc.get("sample_median_self"))
        for a in usable:
            others = [onchain[b][1] for b in usable if b != a]
            pool = [*others, onchain[a][1]] if self_in else others
            if len(others) >= 2 and onchain[a][1] > ratio * statistics.median(pool):
                predicted[a], why[a] = "IMPLAUSIBLE_SAMPLES", f"n above {ratio} x median"
        usable = [a for a in usable if a not in predicted]
        start_norm = tensor_norm(start)
        if standing_on:
            refs, labels = [], []
            prevs = [q for q in sorted(history, reverse=True) if q < r][: int(cc["stale_rounds"])]
            ref_wide = []
            if public_screen:  # the latest finalized rounds, by the chain (README *Standing*)
                prevs = [q for q in sorted(finalized, reverse=True) if q < r][
                    : int(cc["stale_rounds"])
                ]
                blocked += [f"round {q}'s references not given" for q in prevs if q not in history]
                blocked += [
                    f"round {q}'s reference update of {names.get(a)} not given"
                    for q in prevs
                    if q in history
                    for a in history[q]["missing"]
                ]
                prevs = [q for q in prevs if q in history]
            for q in prevs:
                for site_q, d_q in history[q]["updates"]:
                    labels.append(f"{Web3.to_checksum_address(site_q)}'s update of round {q}")
                    refs.append((labels[-1], flat_of(d_q, order, True)))
                    ref_wide.append({n: d_q[n].astype(np.float64) for n in order if trainable(n)})
                gd_q = history[q]["global_delta"]
                labels.append(f"the global delta of round {q}")
                refs.append((labels[-1], flat_of(gd_q, order, True)))
                ref_wide.append({n: gd_q[n].astype(np.float64) for n in order if trainable(n)})
            flats_fr = {a: flat_of(deltas[a], order, True) for a in usable}
            counts = {a: onchain[a][1] for a in usable}
            wide = {
                a: {n: deltas[a][n].astype(np.float64) for n in order if trainable(n)}
                for a in usable
            }
            riders, _ = (
                ({}, None)
                if blocked
                else free_rider_rule(
                    usable,
                    flats_fr,
                    refs,
                    counts,
                    cc,
                    start_norm,
                    Web3.to_checksum_address,
                    tensors=wide,
                    ref_tensors=ref_wide,
                    declared={a for a in usable if "dp" in hdrs.get(a, {})},
                )
            )
            for a, text in riders.items():
                predicted[a], why[a] = "FREE_RIDER", text
            usable = [a for a in usable if a not in riders]
            # a peer round's log has no standing block (README *Standing*: the aggregator's
            # rounds only; verify checks none there): before session 62 this reader compared
            # the public screen's references with the absent block and failed every such round
            pending_refs = None if peer else labels
            # README *Peer rounds*, public screen: exactly the weighted marks dropped, in every
            # valued round (left valued and cancelled ones too: there only the drops, since the
            # aggregator drops at finalize); a dropped update that does not read now is not
            # usable, so the rule cannot mark it and the drop fails
            if peer:
                dropped_scr = {
                    e.args.site.lower() for e in ev["UpdateScreened"] if e.args.round == r
                }
                dropped_wh = {
                    e.args.site.lower() for e in ev["UpdateWithheld"] if e.args.round == r
                }
                zeroed = sorted(dropped_scr - set(riders))
                # the drop's rule: a marked update weighted once the withheld ones are dropped
                # (the weights over the medians, a withheld one's at 0), then, step by step,
                # one the drop re-weights above 0; a positive median that still rounds to
                # weight 0 can be neither dropped nor paid. An input left out (unreadable at
                # weight 0) keeps its median, as on the chain, until a step re-weights it: it is
                # then dropped as withheld, so at 0, and the steps start again (h-297)
                reweighted: set[str] = set()
                while True:
                    before_drop = [
                        (
                            a,
                            onchain[a][1],
                            0
                            if a in dropped_wh or a in reweighted
                            else peer_meds.get(a, (0, 0))[0],
                        )
                        for a in peer_meds
                        if a in onchain
                    ]
                    must_drop = set()
                    again: set[str] = set()
                    while True:
                        left = [(a, n, 0 if a in must_drop else m) for a, n, m in before_drop]
                        if not any(n * m for _, n, m in left):
                            break
                        w_now = weights_rule(left)[0]
                        again = {a for a in left_out if w_now.get(a, 0) > 0 and a not in reweighted}
                        if again:
                            break
                        more = {
                            a
                            for a, w in w_now.items()
                            if w > 0 and a in riders and a not in must_drop
                        }
                        if not more:
                            break
                        must_drop |= more
                    if not again:
                        break
                    reweighted |= again
                spared = sorted(a for a in must_drop if a not in dropped_scr)
                report(
                    r,
                    "peers.screen",
                    not blocked and not zeroed and (not spared or phase != 3),
                    f"the public screen cannot be recomputed: {'; '.join(blocked)}"
                    if blocked
                    else f"public screen marks {[names.get(a) for a in riders] or 'none'}; dropped "
                    f"{[names.get(a) for a in sorted(dropped_scr)] or 'none'}"
                    + (f"; zeroed unmarked {[names.get(a) for a in zeroed]}" if zeroed else "")
                    + (f"; spared marked {[names.get(a) for a in spared]}" if spared else ""),
                )
        # README *Peer rounds* (peers.cancelled): a peer round cancelled after its valuation
        # passes only when every update with a positive score is unusable now, or every one
        # reads and the public screen marks each update left with samples x median > 0 (the
        # withheld ones at 0), so that its drop, step by step, leaves no weight; an update that
        # does not read at weight 0 is left out of the screen as if withheld (session 61), so
        # a cancel also passes when those are the only unusable ones and the screen marks the rest
        if peer and phase == 4 and any(onchain[a][4] > 0 for a in onchain):
            pos = sorted(a for a in onchain if onchain[a][2] > 0)
            unread = [a for a in pos if a not in readable]
            if unread and (len(unread) == len(pos) or not set(unread) <= left_out):
                ok = len(unread) == len(pos)
                detail = f"valued, then cancelled: {[names.get(a) for a in unread]} unusable" + (
                    "" if ok else f", {[names.get(a) for a in pos if a in readable]} read"
                )
            else:
                gone = {e.args.site.lower() for e in ev["UpdateWithheld"] if e.args.round == r}
                gone |= {e.args.site.lower() for e in ev["UpdateScreened"] if e.args.round == r}
                gone |= left_out
                left = [
                    a
                    for a, (m, _) in peer_meds.items()
                    if a in onchain and m * onchain[a][1] > 0 and a not in gone
                ]
                marks = riders if public_screen and standing_on and not blocked else {}
                spared = [a for a in left if a not in marks]
                ok = bool(public_screen and standing_on and not blocked and not spared)
                detail = (
                    "valued, then cancelled; every update with a positive score reads"
                    + (
                        f" but {[names.get(a) for a in unread]} (weight 0: left out of the screen)"
                        if unread
                        else ""
                    )
                    + "; the "
                    + (
                        f"public screen cannot be recomputed: {'; '.join(blocked)}"
                        if blocked
                        else "terms have no public screen"
                        if not (public_screen and standing_on)
                        else f"public screen spares {[names.get(a) for a in spared]}"
                        if spared
                        else "public screen marks every update left: its drop leaves no weight"
                    )
                )
            report(r, "peers.cancelled", ok, detail)
        for a in list(usable):
            if start_norm > 0 and tensor_norm(deltas[a]) / start_norm > 100:
                predicted[a], why[a] = "OUTLIER_NORM", "over 100 x the start model's norm"
                usable.remove(a)
        screened = set()
        if len(usable) >= cc.get("min_robust_sites", 3):
            screened = set(usable)
        rule_reasons = {
            "DUPLICATE",
            "IMPLAUSIBLE_SAMPLES",
            "FREE_RIDER",
            "OUTLIER_NORM",
            "OUTLIER_DIRECTION",
        }
        mismatch = [
            f"{names.get(a)} chain {onlabel[a]} rules {predicted.get(a, '-')}"
            for a in vals
            if a not in screened
            and (predicted.get(a) != onlabel[a] if a in predicted else onlabel[a] in rule_reasons)
        ]
        report(
            r,
            "reasons.public",
            "NOTE" if peer else not mismatch,
            ("peer round: the aggregator's reason rules do not apply; " if peer else "")
            + f"by the documented rules: {[(names.get(a), predicted[a], why[a]) for a in predicted] or 'none flagged'}"
            + (f"; disagree: {mismatch}" if mismatch else ""),
        )
        # ---- reputation (EMA; the first valued score sets it)
        rep_ok = True
        rep_detail = []
        # a drop after the valuation (dropWithheld, dropScreened: README *Peer rounds*) zeroes
        # the stored score; the valuation's EMA read the median (UpdateValued's score), and the
        # drop's event states the reputation the round left
        drops = {
            e.args.site.lower(): e.args.reputation
            for name in ("UpdateWithheld", "UpdateScreened")
            for e in ev[name]
            if e.args.round == r
        }
        before_drop = {a: reputation.get(a) for a in vals}
        for a in vals:
            s = valued[a].args.score if a in drops else onchain[a][2]
            before = reputation.get(a)
            after = (
                s if before is None else (alpha * s + (SCORE_SCALE - alpha) * before) // SCORE_SCALE
            )
            reputation[a] = valued[a].args.reputation  # continue from the chain's
            rep_ok &= after == valued[a].args.reputation
            rep_detail.append(
                f"{names.get(a)} {before}->{after} (chain {valued[a].args.reputation})"
            )
        for a, rep in drops.items():
            if a in reputation:
                # README *Peer rounds*: the round's credit taken back, 0 in a first valued round
                credit = alpha * valued[a].args.score // SCORE_SCALE
                first = before_drop.get(a) is None
                want = 0 if first or credit >= reputation[a] else reputation[a] - credit
                rep_ok &= want == rep
                rep_detail.append(f"{names.get(a)} dropped -> {want} (chain {rep})")
                reputation[a] = rep
        report(r, "reputation", rep_ok, "; ".join(rep_detail))

        # ---- global model
        fin = [e for e in ev["RoundFinalized"] if e.args.round == r]
        if not fin:
            report(r, "global", "NOTE", "not finalized")
            summary.append(
                {"round": r, "phase": phase, "weights": {names.get(a): onchain[a][4] for a in vals}}
            )
            continue
        f = fin[0].args
        finalized.append(r)
        try:  # README *Content not given*
            gblob = ipfs.cat(f.globalCid)
        except NotGiven as exc:
            report(r, "global.sha256", False, f"not given: {exc}; round not replayed further")
            continue
        report(
            r,
            "global.sha256",
            sha(gblob) == global_sha.hex() == f.globalSha256.hex(),
            f"{short_text(f.globalCid)} {sha(gblob)[:16]} vs chain {global_sha.hex()[:16]}",
        )
        # this round's free-rider references for the next ones (README *Free-riders and stale
        # copies*): revealed updates in ascending address order, not TAMPERED / MALFORMED / NOT_REVEALED /
        # PEER_REJECTED / WITHHELD, then the global delta (global - start, float32); under this
        # round's own terms' valuation.references "weighted" (session 62), not one the chain
        # holds at weight 0 with a positive score either
        _, _, g_tensors = parse_safetensors(gblob)
        by_weight = (terms.get("valuation") or {}).get("references") == "weighted"

        def referable_now(a, by_weight=by_weight, onchain=onchain):
            _, _, score_, reason_, weight_ = onchain[a]
            if REASONS[reason_] in (
                "TAMPERED",
                "MALFORMED",
                "NOT_REVEALED",
                "PEER_REJECTED",
                "WITHHELD",
            ):
                return False
            return not (by_weight and weight_ == 0 and score_ > 0)

        referable = [a for a in onchain if a in reveals and referable_now(a)]
        history[r] = {
            "missing": [a for a in referable if a not in deltas],
            "updates": [
                (a, deltas[a]) for a in sorted(deltas, key=lambda x: int(x, 16)) if referable_now(a)
            ],
            "global_delta": {k: (g_tensors[k] - start[k]).astype(np.float32) for k in start},
        }
        try:  # README *Content not given*
            lblob = ipfs.cat(f.logCid)
        except NotGiven as exc:
            report(r, "log.sha256", False, f"not given: {exc}; round not replayed further")
            continue
        report(
            r,
            "log.sha256",
            sha(lblob) == log_sha.hex() == f.logSha256.hex(),
            f"{short_text(f.logCid)} {sha(lblob)[:16]}",
        )
        if dump:
            (dump / f"log-{r}.json").write_bytes(lblob)
        if any(a not in deltas for a in vals if onchain[a][4] > 0):
            report(r, "global.recomputed", False, "a weighted update could not be decoded")
            continue
        # ---- the log against the chain and the documented rules
        try:  # README: a log that repeats a JSON key fails log.schema (a128)
            log = json_loads(lblob, strict=True)
            if not isinstance(log, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:  # not UTF-8 or JSON, too deep, a repeated key, NaN, ...
            report(r, "log.schema", False, f"the log does not read one way: {exc}")
            continue
        broken = log_schema_problems(log)
        if broken:  # read no further, as a log that does not parse (verify's no_log): the
            # checks below take its structure as the schema gives it (h-318: a site without
            # its address, sites as an object, stopped the whole reader)
            report(r, "log.schema", False, f"the log breaks its JSON Schema: {'; '.join(broken)}")
            continue
        lsites = {x["site"].lower(): x for x in log.get("sites", [])}
        report(
            r,
            "log.status",
            *status_rule(
                lsites,
                read_as_now,
                onchain,
                not peer_round,
                [a for a in onchain if onchain[a][0]],
                read_then,
            ),
        )
        ok_log = all(
            a in lsites
            and json_same(digits(lsites[a]["weight"]), onchain[a][4])
            and json_same(lsites[a]["weight_fraction"], onchain[a][4] / WEIGHT_SCALE)
            and json_same(lsites[a]["score"], onchain[a][2])
            and json_same(lsites[a]["reason"], onchain[a][3])
            and json_same(lsites[a]["update"]["num_samples"], onchain[a][1])
            for a in vals
        )
        report(
            r,
            "log.weights",
            ok_log,
            "log weight, weight_fraction (= w / 10**18), score, reason, samples equal the chain's",
        )
        disagree = log_agrees(
            log,
            r,
            (c.address, w3.eth.chain_id),
            (ro.args.modelCid, start_sha.hex()),
            global_sha.hex(),
            {
                a: (
                    Web3.to_checksum_address(a),
                    reveals[a].args.cid,
                    reveals[a].args.sha256.hex(),
                    *onchain[a][1:],
                )
                for a in reveals
                if a in onchain
            },
            terms,
            (ro.args.termsCid, terms_sha.hex()),
        )
        report(
            r,
            "log.agrees",
            not disagree,
            "; ".join(disagree)
            or "log's round, ledger, start model, global model, rule, sites, CIDs, hashes, "
            "labels, included sites, summary, seed, class names, validation set and terms "
            "reference equal the chain's and the terms'; its metrics' thresholds are their "
            "biases', one figure per class, n the validation size",
        )
        for a in vals:  # a site missing from the log (failed above) has no claims to replay
            lsites.setdefault(a, {"components": {}})
        if not peer:
            wrong = reasons_given(
                {a: REASONS[onchain[a][3]] if onchain[a][3] < len(REASONS) else "?" for a in vals},
                {a for a in readable if "dp" not in hdrs.get(a, {})},
                need_dp,
                standing_on,
                {a for a in vals if isinstance(lsites[a]["components"].get("norm"), float | int)},
                {
                    str((e.get("reply") or {}).get("site", "")).lower()
                    for e in log.get("evidence", [])
                    if isinstance(e, dict) and e.get("contradicts")
                },
            )
            report(
                r,
                "reasons.given",
                not wrong,
                "; ".join(f"{names.get(a, a)}: {why}" for a, why in wrong.items())
                or "no reason outside the rules an aggregator round gives (README *Reasons "
                "an aggregator round gives*)",
            )
        lset = log.get("settings", {})
        for key, tkey in (
            ("valuation", "valuation"),
            ("aggregation_rule", "aggregation_rule"),
            ("model_spec", "model_spec"),
            ("spec_hash", "spec_hash"),
        ):
            a_txt = json.dumps(lset.get(key), sort_keys=True, separators=(",", ":"))
            b_txt = json.dumps(terms.get(tkey), sort_keys=True, separators=(",", ":"))
            if a_txt == b_txt:
                report(
                    r,
                    f"log.settings.{key}",
                    True,
                    "log's settings equal the terms' as canonical JSON, types included",
                )
                continue

            # README (*The round terms, field by field*, `valuation`): the log's block must equal
            # the terms' "as parsed", the combiner being "an object of numbers": its values compare
            # as numbers (the log may write 3.0 where the terms have 3); everything else exactly.
            def parsed(d):
                d = json.loads(json.dumps(d))
                if isinstance(d, dict) and isinstance(d.get("combiner"), dict):
                    d["combiner"] = {
                        k: float(v)
                        if isinstance(v, (int, float)) and not isinstance(v, bool)
                        else v
                        for k, v in d["combiner"].items()
                    }
                return json.dumps(d, sort_keys=True, separators=(",", ":"))

            eq = parsed(lset.get(key)) == parsed(terms.get(tkey))
            diff = [
                k
                for k in (terms.get(tkey) or {}).get("combiner", {})
                if json.dumps(terms[tkey]["combiner"][k])
                != json.dumps(lset.get(key, {}).get("combiner", {}).get(k))
            ]
            report(
                r,
                f"log.settings.{key}",
                eq,
                f"equal as parsed (combiner values as numbers): {eq}; written differently: {diff}",
            )
        # robust components over the updates the log says counted, in state-dict order
        counted = [
            a
            for a in vals
            if a in deltas
            and isinstance(lsites[a].get("components"), dict)
            # README *Robust statistics*: counted = a number in `norm` (null: not counted, e.g.
            # an update zeroed MALFORMED by privacy.noise, which this reader does not replay)
            and isinstance(lsites[a]["components"].get("norm"), float | int)
        ]
        floor = terms.get("valuation", {}).get("combiner", {}).get("norm_scale_floor", 0.25)
        # README *Robust statistics*: without the running statistics of a BatchNorm model
        # (before session 54 the reader counted them and failed every BatchNorm round here)
        trained = {nm for nm in shapes if trainable(nm)}
        for label, names_order in (
            ("state-dict order (README layout)", [nm for nm in order if trainable(nm)]),
            ("blob order", sorted(trained)),
        ):
            if set(names_order) != trained or not counted:
                continue
            flats = {
                a: np.concatenate([deltas[a][nm].astype(np.float64).ravel() for nm in names_order])
                for a in counted
            }
            comp = robust_components(flats, floor)
            diffs = {
                a: {k: comp[a][k] - lsites[a]["components"][k] for k in comp[a]} for a in counted
            }
            exact = all(v == 0 for d in diffs.values() for v in d.values())
            worst = max((abs(v) for d in diffs.values() for v in d.values()), default=0)
            if label == "blob order":  # control: shows that the flattening order matters
                report(
                    r,
                    f"log.components [{label}]",
                    "NOTE",
                    f"control: flattening in safetensors (sorted-name) order instead: bit-equal {exact}, largest difference {worst:.3g}",
                )
            else:
                report(
                    r,
                    f"log.components [{label}]",
                    exact,
                    f"{len(counted)} update(s); largest difference {worst:.3g}",
                )
        # sites.names: README *Names that look alike*: the names at the round's RoundFinalized
        # (each site's last SiteRegistered at or before it, removed sites included)
        until = (fin[0]["blockNumber"], fin[0]["logIndex"])
        at_fin = {}
        for bn, li, site, text in regs:
            if (bn, li) <= until:
                at_fin[site] = text
        pairs = alike_pairs(at_fin)
        report(
            r,
            "sites.names",
            not pairs,
            f"{len(at_fin)} registered name(s) at finalization; confusable pairs: "
            + (", ".join(f"{at_fin[a]!a} ~ {at_fin[b]!a}" for a, b in pairs) or "none"),
        )
        # names: README *Strings*: a round log's `name` is the chain's text of the name the site
        # held when the round was valued or any it was registered under from the round's
        # RoundValued to its RoundFinalized (a66: a rename can front-run the finalize)
        valued_at = (rvd[0]["blockNumber"], rvd[0]["logIndex"]) if rvd else until
        held: dict = {}
        for bn, li, site, text in regs:
            if (bn, li) > until:
                break
            if (bn, li) < valued_at:
                held[site] = {text}
            else:
                held.setdefault(site, set()).add(text)
        names_ok = all(lsites[a].get("name") in held.get(a, set()) for a in vals)
        report(
            r,
            "log.names",
            names_ok,
            "each site's log name is a SiteRegistered name it held from the round's valuation "
            "to its finalization, read by the Strings rule",
        )
        if pending_refs is not None:
            logged = (log.get("standing") or {}).get("references")
            report(
                r,
                "standing.references",
                logged == pending_refs,
                f"{len(pending_refs)} reference(s) by the documented rule equal the log's: {logged == pending_refs}",
            )
        if peer and peer_meds:
            ok_c = all(
                lsites[a].get("components")
                == {"peer_count": peer_meds[a][1], "peer_median": peer_meds[a][0]}
                for a in vals
                if a in peer_meds
            )
            report(
                r,
                "log.components [peers]",
                ok_c,
                "each site's components are exactly its peer_median and peer_count",
            )
            wrong = [
                names.get(a)
                for a in vals
                if a in peer_meds
                and lsites[a].get("explanation")
                != peer_sentence(
                    peer_meds[a][1],
                    peer_meds[a][0],
                    peer_gated,
                    a in onchain and REASONS[onchain[a][3]] == "WITHHELD",
                )
            ]
            report(
                r,
                "log.explanation [peers]",
                not wrong,
                "each site's explanation is the sentence of its peer_median and peer_count"
                + (f"; not: {wrong}" if wrong else ""),
            )
        # screens (README *Screens*) on the components checked bit-equal above
        if screened and not peer:
            cs = [onchain[a][1] for a in screened]
            m_c = statistics.median(cs)
            # size_norm_count (0 or absent: none): size_norm_z's allowance is judged against
            # min(m, size_norm_count), a count the colluders' claims cannot raise (h-312)
            cap_c = cc.get("size_norm_count", 0.0)
            m_s = min(m_c, cap_c) if cap_c > 0 else m_c
            bad = []
            for a in sorted(screened):
                comp_a = lsites[a].get("components") or {}
                cos_a, z_a = comp_a.get("cosine"), comp_a.get("norm_z")
                nrm, med_n = comp_a.get("norm"), comp_a.get("median_norm")
                size_a = max(1.0, onchain[a][1] / m_c if m_c else 1.0)
                k = min(cc.get("norm_size_cap", 1.0), size_a)
                z = z_a if k == 1 or z_a <= 0 else z_a * (nrm / k - med_n) / (nrm - med_n)
                # size_norm_z (0: off): the same z after the claimed count's uncapped allowance
                size_b = max(1.0, onchain[a][1] / m_s if m_s else 1.0)
                z2 = (
                    z_a if size_b == 1 or z_a <= 0 else z_a * (nrm / size_b - med_n) / (nrm - med_n)
                )
                sz = cc.get("size_norm_z", 0.0)
                want = (
                    "OUTLIER_DIRECTION"
                    if cos_a < cc["min_cosine"]
                    else ("OUTLIER_NORM" if z > cc["max_norm_z"] or (sz > 0 and z2 > sz) else None)
                )
                got = onlabel[a] if onlabel[a] in ("OUTLIER_DIRECTION", "OUTLIER_NORM") else None
                if want != got and not (got == "OUTLIER_NORM" and want is None):
                    bad.append(f"{names.get(a)} rule {want} chain {onlabel[a]}")
                elif got == "OUTLIER_NORM" and want is None:
                    report(
                        r,
                        "reasons.screen",
                        "NOTE",
                        f"{names.get(a)} OUTLIER_NORM without the screen: non-finite outputs (--validation only)",
                    )
            report(
                r,
                "reasons.screen",
                not bad,
                f"{len(screened)} screened update(s), claimed-count median {m_c}"
                + (f"; disagree: {bad}" if bad else ""),
            )
        # README *Standing chain*: the block continues the right log (aggregator rounds)
        standing_terms = bool((terms.get("valuation") or {}).get("standing"))
        if not peer_round and (standing_terms or log.get("standing") is not None):
            earlier = []
            for q in range(r - 1, 0, -1):
                fq = [e for e in ev["RoundFinalized"] if e.args.round == q]
                if not fq or c.functions.getRound(q).call()[1] != 3:
                    continue
                earlier.append((q, fq[0].args.logCid, *standing_of(q, fq[0].args.logCid)))
            report(
                r,
                "standing.chain",
                *standing_chain_rule(
                    r,
                    standing_terms,
                    log.get("standing"),
                    earlier,
                ),
            )
        # standing: shares, after, reference, scores (README *Standing*)
        st = log.get("standing")
        if standing_on and isinstance(st, dict):
            passed = [a for a in vals if onlabel[a] in ("OK", "LOW_QUALITY")]
            chain_scores = {a: (onchain[a][2], onlabel[a]) for a in vals}
            sc_ok, sc_detail = standing_scores(
                st,
                lsites,
                passed,
                chain_scores,
                terms,
                names,
                {a: onchain[a][1] for a in vals},
            )
            report(r, "standing.scores", sc_ok, sc_detail)
        # README *Global model*: every rule, with the terms' statistics setting
        weights = {a: onchain[a][4] for a in vals}
        try:
            if not isinstance(rule, dict):
                raise RuleRefused(f"aggregation_rule {rule!r} is no object")
            g = aggregate_rule(
                rule, start, {a: deltas[a] for a in vals if a in deltas}, weights, order
            )
        except (RuleRefused, KeyError, TypeError, ValueError) as exc:
            report(r, "global.recomputed", False, f"cannot replay: {exc}")
            continue
        gtext = json.dumps(
            {
                "compression": {"method": "none"},
                "format_version": 1,
                "kind": "model",
                "round": r,
                "spec_hash": spec_hash,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        mine_blob = canonical(g, gtext)
        same = sha(mine_blob) == global_sha.hex()
        _, gmeta, gt = parse_safetensors(gblob)
        tensor_eq = all(
            np.array_equal(gt[k].view(np.uint32), g[k].view(np.uint32)) for k in g
        ) and set(gt) == set(g)
        report(
            r,
            "global.recomputed",
            same,
            f"recomputed sha256 {sha(mine_blob)} vs on-chain {global_sha.hex()}; tensors bit-equal {tensor_eq}; "
            f"stored header {gmeta}",
        )
        summary.append(
            {
                "round": r,
                "phase": phase,
                "weights": {names.get(a): onchain[a][4] for a in vals},
                "global_sha256_chain": global_sha.hex(),
                "global_sha256_recomputed": sha(mine_blob),
            }
        )

    fails = [x for x in RESULTS if x["result"] == "FAIL"]
    print(
        f"\n{'FAIL' if fails else 'PASS'}: {sum(x['result'] == 'PASS' for x in RESULTS)} passed, "
        f"{len(fails)} failed, {sum(x['result'] not in ('PASS', 'FAIL') for x in RESULTS)} notes"
    )
    if args.json:
        print(json.dumps({"results": RESULTS, "summary": summary}, indent=1))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
