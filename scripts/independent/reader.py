#!/usr/bin/env python3
# ruff: noqa: E501  (long f-string report lines)
"""Independent reader of a fedtrail federation: no `import fedtrail`.

Uses only web3 / eth_abi / requests / numpy / safetensors, the contract ABI in
contracts/build/FederationLedger.json and the README's documented public rules
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
  - global model recomputed with the documented two casts, re-encoded as a `model` blob and its
    sha256 compared with the on-chain globalSha256
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import struct
import sys
from pathlib import Path

import numpy as np
import requests
from eth_abi import encode as abi_encode
from safetensors.numpy import save as st_save
from web3 import Web3

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "contracts" / "build" / "FederationLedger.json"
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
# README line 1858 gives only "conv1.weight, ..., fc2.bias": this order is a guess (PyTorch's
# module order, weight before bias) and is compared with the log bit for bit below.
STATE_DICT_ORDER = [
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
]


def report(rnd, check, ok, detail):
    res = "PASS" if ok is True else ("FAIL" if ok is False else str(ok))
    RESULTS.append({"round": rnd, "check": check, "result": res, "detail": detail})
    print(f"{rnd!s:>5}  {check:<28} {res:<5} {detail}")


# ---------------------------------------------------------------- IPFS (HTTP RPC API)
class Ipfs:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def cat(self, cid: str) -> bytes:
        r = requests.post(f"{self.url}/api/v0/cat", params={"arg": cid}, timeout=60)
        r.raise_for_status()
        return r.content


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
    header = json.loads(blob[8 : 8 + hlen])
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
    doc = json.loads(text)
    if json.dumps(doc, sort_keys=True, separators=(",", ":")) != text:
        raise ValueError("metadata text is not the canonical JSON")
    return text, doc


def canonical(tensors: dict, text: str) -> bytes:
    return st_save(tensors, metadata={"fedtrail": text})


def decode_update(tensors: dict, doc: dict, shapes: dict) -> dict:
    """Dense float32 delta per tensor name, per README 'Wire format'."""
    comp = doc["compression"]
    out = {}
    if comp["method"] == "none":
        for name, arr in tensors.items():
            if arr.dtype != np.float32:
                raise ValueError(f"{name}: dtype {arr.dtype}, F32 expected")
            out[name] = arr
    elif comp["method"] == "topk8":
        for name, shape in shapes.items():
            if name in tensors:  # dense entry (running statistics)
                out[name] = tensors[name]
                continue
            idx, q, scale = tensors[name + ":idx"], tensors[name + ":q"], tensors[name + ":scale"]
            n = int(np.prod(shape)) if shape else 1
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
            k = min(n, max(1, math.ceil(float(comp["fraction"]) * n)))
            if len(idx) != k:
                report("-", f"topk8.k {name}", "NOTE", f"k={len(idx)} but ceil(F*n) rule gives {k}")
            dense = np.zeros(n, dtype=np.float32)
            dense[pos] = q.astype(np.float32) * s
            if not np.all(np.isfinite(dense)):
                raise ValueError(f"{name}: non-finite")
            out[name] = dense.reshape(shape)
        extra = set(tensors) - {k for n in shapes for k in (n, n + ":idx", n + ":q", n + ":scale")}
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


def aggregate_weighted(start: dict, deltas: dict, weights: dict):
    """README 'The two casts'. deltas/weights keyed by address; returns float32 tensors."""
    order = sorted((a for a in deltas if weights[a] > 0), key=lambda x: int(x, 16))
    out = {}
    for name, g in start.items():
        acc = np.zeros(g.shape, dtype=np.float64)
        for a in order:
            c = np.float64(weights[a] / WEIGHT_SCALE)  # Python int / int: correctly rounded
            term = c * deltas[a][name].astype(np.float64)  # rounded before it is added
            acc = acc + term
        d32 = acc.astype(np.float32)
        out[name] = (g.astype(np.float64) + d32.astype(np.float64)).astype(np.float32)
    return out


# ---------------------------------------------------------------- chain
def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


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
            "SiteRegistered",
            "SiteRemoved",
            "RoundOpened",
            "UpdateCommitted",
            "UpdateSubmitted",
            "UpdateValued",
            "RoundValued",
            "RoundFinalized",
            "RoundCancelled",
            "UpdateReweighted",
            "UpdateWithheld",
            "PeerScoringOpened",
        ]
    }
    alpha = c.functions.reputationAlpha().call()
    names = {e.args.site.lower(): e.args.name for e in ev["SiteRegistered"]}
    print(
        f"ledger {c.address} chain {w3.eth.chain_id}; reputationAlpha {alpha}; "
        f"{len(names)} site(s): " + ", ".join(f"{n} {a}" for a, n in names.items())
    )
    print(
        f"rounds opened: {[e.args.round for e in ev['RoundOpened']]}; currentRound() "
        f"{c.functions.currentRound().call()}, lastFinalizedRound() {c.functions.lastFinalizedRound().call()}"
    )

    reputation: dict[str, int | None] = {}
    summary = []
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
        if peer:
            report(
                r,
                "peer_round",
                "NOTE",
                "peer round: scores from ScoresRevealed medians (not replayed here)",
            )

        # ---- start model and terms
        start_blob = ipfs.cat(ro.args.modelCid)
        report(
            r,
            "start_model.sha256",
            sha(start_blob) == start_sha.hex(),
            f"{ro.args.modelCid} {sha(start_blob)[:16]}",
        )
        terms_blob = ipfs.cat(ro.args.termsCid)
        report(
            r,
            "terms.sha256",
            sha(terms_blob) == terms_sha.hex(),
            f"{ro.args.termsCid} {sha(terms_blob)[:16]}",
        )
        terms = json.loads(terms_blob)
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
        # NOT in the README (gap): read from fedtrail/ml/models.py ModelSpec.spec_hash after noting
        # the gap: sha256 of canonical JSON {"spec": model_spec, "tensors": [[name, shape, dtype],
        # ...] in state-dict order}. The state-dict order is itself not in the README; the guessed
        # STATE_DICT_ORDER (SmallCNN only) reproduces the hash, which confirms the guess.
        if set(STATE_DICT_ORDER) == set(start):
            layout = [[nm, list(start[nm].shape), "float32"] for nm in STATE_DICT_ORDER]
            mine_spec = sha(
                json.dumps(
                    {"spec": terms.get("model_spec"), "tensors": layout},
                    sort_keys=True,
                    separators=(",", ":"),
                ).encode()
            )
            report(
                r,
                "terms.spec_hash",
                mine_spec == spec_hash == sdoc.get("spec_hash"),
                f"recomputed {mine_spec[:16]} (rule from source, not README); terms {spec_hash[:16]}; "
                f"start model header {sdoc.get('spec_hash', '')[:16]}",
            )
        else:
            report(
                r,
                "terms.spec_hash",
                "NOTE",
                "state-dict order unknown for this model: spec_hash not recomputed",
            )
        win = terms.get("windows", {})
        cw, rw = commit_dl - opened_at, reveal_dl - commit_dl
        report(
            r,
            "terms.windows",
            rw == win.get("reveal_seconds")
            and win.get("commit_seconds", 0) - 60 <= cw <= win.get("commit_seconds", 0) + 2,
            f"commit window {cw} s (terms {win.get('commit_seconds')}), reveal window {rw} s (terms {win.get('reveal_seconds')})",
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
        onchain = {}
        for e in commits:
            a = e.args.site.lower()
            sub = c.functions.getSubmission(r, e.args.site).call()
            (_, revealed, commitment, sub_sha, n, score, reason, weight) = sub
            onchain[a] = (revealed, n, score, reason, weight)
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
            blob = ipfs.cat(rev.args.cid)
            ok_hash = sha(blob) == sub_sha.hex()
            try:
                _, umeta, ut = parse_safetensors(blob)
                utext, udoc = fedtrail_meta(umeta)
                canon = blob == canonical(ut, utext)
                hdr_ok = (
                    udoc.get("kind") == "update"
                    and udoc.get("round") == r
                    and udoc.get("format_version") == 1
                    and udoc.get("spec_hash") == spec_hash
                )
                deltas[a] = decode_update(ut, udoc, shapes)
                report(
                    r,
                    tag,
                    ok_hash and canon and hdr_ok,
                    f"{rev.args.cid} sha256 {'ok' if ok_hash else 'MISMATCH'}, decodes ({udoc['compression']['method']}), "
                    f"canonical {canon}, header {utext}",
                )
            except Exception as exc:
                report(
                    r,
                    tag,
                    False,
                    f"{rev.args.cid} sha256 {'ok' if ok_hash else 'MISMATCH'}; does not decode: {exc}",
                )

        # ---- weights
        vals = sorted(valued)
        if not vals:
            report(r, "weights", "NOTE", "not valued")
            summary.append({"round": r, "phase": phase})
            continue
        entries = [(a, onchain[a][1], onchain[a][2]) for a in vals]
        mine, T = weights_rule(entries)
        rvd = [e for e in ev["RoundValued"] if e.args.round == r]
        ok_w = all(mine[a] == onchain[a][4] == valued[a].args.weight for a in vals)
        detail = "; ".join(
            f"{names.get(a)} n={onchain[a][1]} s={onchain[a][2]} {REASONS[onchain[a][3]]} "
            f"w={onchain[a][4]} mine={mine[a]}"
            for a in vals
        )
        report(r, "weights", ok_w, detail)
        report(
            r,
            "weights.basis",
            bool(rvd) and rvd[0].args.totalWeightBasis == T,
            f"RoundValued.totalWeightBasis {rvd[0].args.totalWeightBasis if rvd else None} vs sum n*s {T}",
        )
        # ---- IMPLAUSIBLE_SAMPLES per the reason table (README line 2413): n above max_sample_ratio
        # times the median of the round's other usable updates (at least two). "Usable" is not
        # defined there; taken as: revealed, decoded, and not TAMPERED/MALFORMED/DUPLICATE.
        ratio = terms.get("valuation", {}).get("combiner", {}).get("max_sample_ratio", 10.0)
        usable = [
            a
            for a in vals
            if a in deltas and REASONS[onchain[a][3]] not in ("TAMPERED", "MALFORMED", "DUPLICATE")
        ]
        imp_ok, imp = True, []
        for a in vals:
            others = [onchain[b][1] for b in usable if b != a]
            flag = (
                a in usable
                and len(others) >= 2
                and onchain[a][1] > ratio * statistics.median(others)
            )
            imp_ok &= flag == (REASONS[onchain[a][3]] == "IMPLAUSIBLE_SAMPLES")
            if flag:
                imp.append(names.get(a))
        report(
            r,
            "reasons.implausible",
            imp_ok,
            f"flagged by the documented rule: {imp or 'none'} (limit {ratio}x)",
        )
        # ---- reputation (EMA; the first valued score sets it)
        rep_ok = True
        rep_detail = []
        for a in vals:
            s = onchain[a][2]
            before = reputation.get(a)
            after = (
                s if before is None else (alpha * s + (SCORE_SCALE - alpha) * before) // SCORE_SCALE
            )
            reputation[a] = valued[a].args.reputation  # continue from the chain's
            rep_ok &= after == valued[a].args.reputation
            rep_detail.append(
                f"{names.get(a)} {before}->{after} (chain {valued[a].args.reputation})"
            )
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
        gblob = ipfs.cat(f.globalCid)
        report(
            r,
            "global.sha256",
            sha(gblob) == global_sha.hex() == f.globalSha256.hex(),
            f"{f.globalCid} {sha(gblob)[:16]} vs chain {global_sha.hex()[:16]}",
        )
        lblob = ipfs.cat(f.logCid)
        report(
            r,
            "log.sha256",
            sha(lblob) == log_sha.hex() == f.logSha256.hex(),
            f"{f.logCid} {sha(lblob)[:16]}",
        )
        if dump:
            (dump / f"log-{r}.json").write_bytes(lblob)
        if any(a not in deltas for a in vals if onchain[a][4] > 0):
            report(r, "global.recomputed", False, "a weighted update could not be decoded")
            continue
        # ---- the log against the chain and the documented rules
        log = json.loads(lblob)
        lsites = {x["site"].lower(): x for x in log.get("sites", [])}
        ok_log = all(
            int(lsites[a]["weight"]) == onchain[a][4]
            and lsites[a]["weight_fraction"] == onchain[a][4] / WEIGHT_SCALE
            and lsites[a]["score"] == onchain[a][2]
            and lsites[a]["reason"] == onchain[a][3]
            and lsites[a]["update"]["num_samples"] == onchain[a][1]
            for a in vals
        )
        report(
            r,
            "log.weights",
            ok_log,
            "log weight, weight_fraction (= w / 10**18), score, reason, samples equal the chain's",
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

            # README line 1694 says "canonical JSON, types included"; fedtrail itself compares the
            # combiner's numbers as floats (the log writes 3.0 where the terms have 3).
            def floats(d):
                d = json.loads(json.dumps(d))
                if isinstance(d, dict) and isinstance(d.get("combiner"), dict):
                    d["combiner"] = {k: float(v) for k, v in d["combiner"].items()}
                return json.dumps(d, sort_keys=True, separators=(",", ":"))

            eq = floats(lset.get(key)) == floats(terms.get(tkey))
            diff = [
                k
                for k in (terms.get(tkey) or {}).get("combiner", {})
                if json.dumps(terms[tkey]["combiner"][k])
                != json.dumps(lset.get(key, {}).get("combiner", {}).get(k))
            ]
            report(
                r,
                f"log.settings.{key}",
                "MISMATCH-DOC" if eq else False,
                f"not equal as canonical JSON (README 1694: 'types included'), equal with combiner numbers as floats: {eq}; "
                f"differing keys {diff}",
            )
        # robust components over the updates the log says counted, in state-dict order
        counted = [
            a
            for a in vals
            if a in deltas
            and isinstance(lsites[a].get("components"), dict)
            and "norm" in lsites[a]["components"]
        ]
        floor = terms.get("valuation", {}).get("combiner", {}).get("norm_scale_floor", 0.25)
        for label, names_order in (
            ("state-dict order (guessed)", STATE_DICT_ORDER),
            ("blob order", sorted(shapes)),
        ):
            if set(names_order) != set(shapes):
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
        # standing: shares, after, reference, scores
        st = log.get("standing")
        # warm_up_floor below 1: the warm-up round (valued_rounds 0, nothing accumulated) scores
        # each OK update from its own share of the round's values, not credited, at least the floor
        wfloor = terms.get("valuation", {}).get("combiner", {}).get("warm_up_floor", 1.0)
        warm = isinstance(st, dict) and st.get("valued_rounds") == 0 and wfloor < 1.0
        if isinstance(st, dict) and (st.get("normalised") or warm):
            phi = {
                a: lsites[a]["components"]["value"]
                for a in vals
                if lsites[a].get("components", {}).get("value") is not None
                and lsites[a]["reason_label"] == "OK"
            }
            tot = math.fsum(abs(v) for v in phi.values())
            share = {a: v / tot for a, v in phi.items()}
            cc = terms["valuation"]["combiner"]
            if len(phi) >= cc.get("min_robust_sites", 3) and not warm:
                for a in share:
                    if share[a] > 0 and lsites[a]["components"]["cosine"] < cc["credit_cosine"]:
                        share[a] = 0.0
            before = {k.lower(): v for k, v in st.get("before", {}).items()}
            after = dict(before)
            for a, v in share.items():
                after[a] = before.get(a, 0.0) + v
            ref = min(0.0, statistics.median([after[a] for a in share]))
            sc_ok = True
            det = []
            for a in share:
                cos_a = lsites[a]["components"].get("cosine")
                relief = cc.get("relief_cosine", -1.0)
                checked_a = lsites[a]["components"].get("robust_checked") is True
                d = after[a] - (0.0 if checked_a and cos_a is not None and cos_a < relief else ref)
                sc = (
                    SCORE_SCALE
                    if d >= 0
                    else max(0, min(SCORE_SCALE, round(SCORE_SCALE * (1 + d / cc["demote_scale"]))))
                )
                if sc < 10_000:
                    sc = 0
                if warm and sc < SCORE_SCALE:
                    sc = max(sc, round(SCORE_SCALE * wfloor))
                # boost_clip: an update longer along the median update than 1/boost_clip median
                # norms keeps (1 / (boost_clip * along))**2 of its score, at least 1
                clip = cc.get("boost_clip", 0.0)
                comp_a = lsites[a]["components"]
                if sc > 0 and clip > 0 and checked_a and cos_a is not None:
                    med_a = comp_a.get("median_norm")
                    if med_a:
                        along = cos_a * comp_a["norm"] / med_a
                        if along * clip > 1.0:
                            f = (1.0 / (along * clip)) ** 2
                            sc = max(1, min(sc, round(sc * f)))
                sc_ok &= sc == onchain[a][2]
                det.append(
                    f"{names.get(a)} share {share[a]:.6g} after {after[a]:.6g} score {sc} (chain {onchain[a][2]})"
                )
            logged_after = {k.lower(): v for k, v in st.get("after", {}).items()}
            ok_after = all(logged_after.get(a) == after[a] for a in share)
            report(
                r,
                "standing.scores",
                sc_ok and ok_after,
                f"reference {ref}; " + "; ".join(det) + f"; log's after equal: {ok_after}",
            )
        rname = rule.get("name") if isinstance(rule, dict) else rule
        if rname != "weighted":
            report(r, "global.recomputed", "NOTE", f"rule {rname!r} not replayed by this reader")
            continue
        weights = {a: onchain[a][4] for a in vals}
        g = aggregate_weighted(start, {a: deltas[a] for a in vals if a in deltas}, weights)
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
