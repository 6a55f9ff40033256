"""Bounded JSON parsing: the depth count agrees with the parser, honest documents stay far below
the limit, and a deeply nested blob from the network is refused instead of killing the process."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtrail import safejson
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.privacy import DpParams
from fedtrail.protocol.terms import Personalisation, PrivacyTerms, RoundTerms
from fedtrail.storage.codec import Compression, encode_update, zero_state

REPO = Path(__file__).resolve().parents[2]
LOGS = REPO / "tests" / "fedtrail" / "protocol" / "data"

_TEXT = st.text(alphabet=st.sampled_from('ab"\\[]{}é\n'), max_size=8)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=30,
)


def _depth(x: Any) -> int:
    if isinstance(x, list):
        return 1 + max((_depth(v) for v in x), default=0)
    if isinstance(x, dict):
        return 1 + max((_depth(v) for v in x.values()), default=0)
    return 0


@settings(max_examples=300, derandomize=True, deadline=None)
@given(doc=_JSON, ascii_only=st.booleans(), indent=st.sampled_from([None, 1]))
def test_depth_is_the_parsers_depth(doc: Any, ascii_only: bool, indent: int | None) -> None:
    """Brackets, quotes and backslashes inside strings (escaped or not) do not count."""
    text = json.dumps(doc, ensure_ascii=ascii_only, indent=indent).encode()
    assert safejson.nesting_depth(text) == _depth(doc)
    assert safejson.loads(text, max_depth=_depth(doc)) == doc
    if _depth(doc):
        with pytest.raises(safejson.TooDeep, match="levels deep"):
            safejson.loads(text, max_depth=_depth(doc) - 1)


def test_escapes_decide_where_strings_end() -> None:
    assert safejson.nesting_depth(rb'["\\", [[]]]') == 3  # "\\" ends at its second quote
    assert safejson.nesting_depth(rb'["\"[[", []]') == 2  # \" does not end the string
    assert safejson.nesting_depth(b"[" * 40 + b'"' + b"\\" * 10**6 + b'"') == 40
    assert safejson.nesting_depth(b"") == 0


def test_every_failure_is_a_value_error() -> None:
    for bad in (b"[" * 10**5, b"9" * 5000, b"\xff", b"{", "\udcff"):
        with pytest.raises(ValueError):
            safejson.loads(bad)


def test_honest_documents_nest_far_below_the_limit() -> None:
    """The figures in ``MAX_DEPTH``'s docstring; every one leaves the limit 4x headroom."""
    terms = RoundTerms(
        round=1,
        aggregation_rule={"name": "trimmed_mean", "trim": 0.1},
        valuation={"method": "shapley", "mode": "peers", "quorum": 2},
        model_spec={"arch": "smallcnn"},
        spec_hash="0" * 64,
        seed=0,
        validation_sha256="0" * 64,
        validation_images=10,
        commit_seconds=60,
        reveal_seconds=60,
        score_commit_seconds=30,
        score_reveal_seconds=30,
        class_names=("normal", "pneumonia"),
        personalisation=Personalisation(),
        privacy=PrivacyTerms(delta=1e-5, required=True),
    )
    spec = ModelSpec()
    dp = DpParams(
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        sample_rate=0.01,
        steps=10,
        delta=1e-5,
        accountant="rdp",
    )
    blob = encode_update(
        zero_state(spec), spec=spec, round=1, compression=Compression(method="topk8"), dp=dp
    ).blob
    header = blob[8 : 8 + struct.unpack("<Q", blob[:8])[0]]
    depths = {
        "log": max(safejson.nesting_depth(p.read_bytes()) for p in LOGS.glob("round-log-*.json")),
        "header": safejson.nesting_depth(header),
        "metadata": safejson.nesting_depth(json.loads(header)["__metadata__"]["fedtrail"].encode()),
        "terms": safejson.nesting_depth(terms.to_bytes()),
    }
    assert depths == {"log": 4, "header": 3, "metadata": 2, "terms": 2}
    assert max(depths.values()) * 4 <= safejson.MAX_DEPTH


# Every process that talks to the ledger imports web3, whose py_ecc raises Python's recursion
# limit to 100,000: CPython's C JSON parser then overflows the C stack on a document nested
# ~30,000 deep (a segmentation fault, rc -11) instead of raising RecursionError.
_CHILD = textwrap.dedent(
    """
    import struct, sys
    import fedtrail.ledger  # web3 -> py_ecc: sys.getrecursionlimit() becomes 100000
    assert sys.getrecursionlimit() >= 100_000, sys.getrecursionlimit()
    from fedtrail.errors import FedtrailError
    from fedtrail.ml.models import ModelSpec
    from fedtrail.protocol.roundlog import RoundLog
    from fedtrail.protocol.terms import RoundTerms
    from fedtrail.storage.codec import _layout, decode_model, decode_update

    spec = ModelSpec()
    deep = b"[" * _layout(spec).max_header  # the largest header the codec reads: 68 KiB
    meta = b'{"__metadata__":{"fedtrail":"' + b"[" * 60_000 + b'"}}'
    cases = {
        "update header": lambda: decode_update(struct.pack("<Q", len(deep)) + deep, spec=spec),
        "model metadata": lambda: decode_model(struct.pack("<Q", len(meta)) + meta, spec=spec),
        "terms": lambda: RoundTerms.from_bytes(b'{"a":' * 100_000),
        "log": lambda: RoundLog.from_bytes(b"[" * 100_000),
    }
    for what, parse in cases.items():
        try:
            parse()
        except FedtrailError as exc:
            print(what, "|", type(exc).__name__, "|", exc)
    """
)


def test_a_deeply_nested_blob_is_refused_in_a_ledger_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    lines = [line.split(" | ") for line in proc.stdout.strip().splitlines()]
    assert [(what, kind) for what, kind, _ in lines] == [
        ("update header", "InvalidUpdate"),
        ("model metadata", "InvalidUpdate"),
        ("terms", "InvalidTerms"),
        ("log", "InvalidLog"),
    ]
    assert all("levels deep, over the limit of 32" in why for _, _, why in lines)


@pytest.mark.parametrize(
    "doc",
    [
        b'{"summary": "ok\\ud800"}',  # a lone high surrogate in a value
        b'{"x": ["\\uDC00"]}',  # a lone low surrogate, upper-case hex, in a list
        b'{"\\udbff": 1}',  # in a key
        b'{"a": "\\ude00\\ud83d"}',  # a pair in the wrong order is two lone ones
    ],
)
def test_a_lone_surrogate_is_refused(doc: bytes) -> None:
    """a63: Python reads ``"\\ud800"`` as a str no UTF-8 stream can write (the reader that
    printed a log text crashed) and other parsers refuse the document."""
    assert "\ud800" in json.loads('"\\ud800"')  # what the plain parser gives
    with pytest.raises(safejson.LoneSurrogate):
        safejson.loads(doc)


def test_surrogate_pairs_and_escaped_backslashes_still_read() -> None:
    assert safejson.loads(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}
    assert safejson.loads(b'{"a": "\\\\ud800"}') == {"a": "\\ud800"}  # the text, no surrogate
