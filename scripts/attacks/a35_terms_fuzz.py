"""A35: **aggregator**: round terms fuzzed through what a node and ``audit verify`` do first.

The bundled real terms (``tests/fedtrail/protocol/data/round-terms-real.json``) are mutated N
times (1-2 fields replaced by hostile values: None, bools, 0, -1, 2**63, 10**30, 1e308,
5e-324, strings naming other games and rules, empty or odd lists and objects; sometimes a key
added to ``valuation``, ``aggregation_rule`` or ``model_spec``), parsed as a node parses them,
and the parsed ones run through the node's ``_unrunnable`` and verify's ``payment_differences``,
``terms.limits``, the spec binding, the statistics rule and the task key. Anything but a
``FedtrailError`` is a crash. No chain, no training: 3,000 mutations take about 20 s.

Found: a ``model_spec`` dimension beyond a 64-bit integer (``in_channels`` 1e30) made torch's
layout raise ``TypeError`` inside ``terms.limits`` (34 of 3,000 with seed 0); fixed by
``ModelSpec``'s bound (``MAX_SPEC_DIMENSION``, 2**20): 0 of 3,000 with seeds 0 and 1.

usage: python attacks/a35_terms_fuzz.py [N] [SEED]   (default 3000 0)
"""

import collections
import json
import random
import sys
import traceback
from pathlib import Path

from fedtrail.auditor.verify import (
    RoundAudit,
    _check_limits,
    _spec_binding,
    _statistics_breach,
    _task_key,
)
from fedtrail.errors import FedtrailError
from fedtrail.node.daemon import _unrunnable
from fedtrail.protocol.terms import InvalidTerms, RoundTerms, payment_differences
from fedtrail.valuation.limits import ThresholdLimits

REPO = Path(__file__).resolve().parents[2]
base = json.loads((REPO / "tests/fedtrail/protocol/data/round-terms-real.json").read_text())
real = RoundTerms.from_bytes(json.dumps(base, sort_keys=True, separators=(",", ":")).encode())
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 0)


def paths(doc, prefix=()):
    items = (
        list(doc.items())
        if isinstance(doc, dict)
        else list(enumerate(doc))
        if isinstance(doc, list)
        else []
    )
    for k, v in items:
        yield (*prefix, k)
        yield from paths(v, (*prefix, k))


VALS = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**63,
    10**30,
    1e308,
    -1e308,
    5e-324,
    0.5,
    -0.5,
    "",
    "x",
    "loo",
    "mc_shapley",
    "peers",
    "median",
    "krum",
    "norm_clip",
    "trimmed_mean",
    "auc",
    [],
    {},
    {"a": 1},
    [1, 2],
]
allp = list(paths(base))
crashes = collections.Counter()
ex = {}
ok = refused = 0
N = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
for _ in range(N):
    d = json.loads(json.dumps(base))
    for _ in range(rng.choice([1, 1, 2])):
        p = rng.choice(allp)
        t = d
        try:
            for k in p[:-1]:
                t = t[k]
            t[p[-1]] = rng.choice(VALS)
        except (KeyError, IndexError, TypeError):
            pass
    # also add new keys sometimes
    if rng.random() < 0.3 and all(
        isinstance(d.get(s), dict) for s in ("valuation", "aggregation_rule", "model_spec")
    ):
        sect = rng.choice(["valuation", "aggregation_rule", "model_spec"])
        d[sect][
            rng.choice(
                [
                    "seed",
                    "large_game",
                    "validator_game",
                    "combiner",
                    "max_norm",
                    "krum_m",
                    "trim_ratio",
                    "statistics",
                    "width",
                    "norm",
                    "explanation_probe",
                    "explanation_check",
                    "mode",
                    "quorum",
                ]
            )
        ] = rng.choice(VALS)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
    try:
        t = RoundTerms.from_bytes(blob)
    except InvalidTerms:
        refused += 1
        continue
    except Exception as e:
        k = ("from_bytes", type(e).__name__)
        crashes[k] += 1
        ex.setdefault(k, (str(e)[:150], blob[:0]))
        continue
    for name, fn in (
        ("_unrunnable", lambda t=t: _unrunnable(t, None)),
        ("payment", lambda t=t: payment_differences(real, t)),
        ("limits", lambda t=t: _check_limits(RoundAudit(2), t, ThresholdLimits())),
        ("binding", lambda t=t: _spec_binding(t)),
        ("stats", lambda t=t: _statistics_breach(t, ThresholdLimits())),
        ("task", lambda t=t: _task_key(t)),
    ):
        try:
            fn()
        except FedtrailError:
            pass
        except Exception as e:
            tb = traceback.extract_tb(e.__traceback__)[-1]
            k = (name, type(e).__name__, tb.name)
            crashes[k] += 1
            ex.setdefault(
                k,
                (str(e)[:150], d.get("valuation"), d.get("aggregation_rule"), d.get("model_spec")),
            )
    ok += 1
print(f"{N}: refused {refused}, parsed {ok}, crashes {sum(crashes.values())}")
for k, v in crashes.items():
    print(k, v, ex[k])
