"""A122: **site**: decodable, finite updates at the edges of what the valuation reads, to make the
aggregator's valuation (screens, game, explanation check) raise, stall or pay them.

Earlier fuzzes stopped at the codec (a28: blobs through ``decode_update``) or at documents (a34
logs, a35 terms). Here every update decodes (float32, the spec's names and shapes, finite) and
goes through the production service's whole round. Variants (a data-less ``att`` claiming 150,
its cap, beside three honest sites of 150; ``h0``'s update is a colluder's knowledge):

* ``zero``: every tensor 0;  ``negstart``: minus the start model (the model becomes all zeros);
* ``denormal``: every entry 1e-44 (subnormal float32);  ``max``: every entry 3e38;
* ``spike``: one entry per tensor at 3e38, the rest 0;  ``bigfc``: the last tensor at 1e18;
* ``headonly``: ``h0``'s update on ``fc2`` (the output head) x5, every other tensor 0 (a site
  that moves one class's logit only);
* ``negstart_h``: ``h0``'s update minus the start model;  ``tinyh``: ``h0``'s update x 1e-30;
* ``ownhead`` (not in the default list; ``att`` then trains on 150 images of its own): its own
  update on ``fc2`` alone, every other tensor 0 (a site that trains only the head: not a copy,
  so "held" here means it was zeroed, a false positive; see scripts/attacks/README.md).

``VARIANTS`` (all by default) and ``CHECK=1`` (the terms' explanation check on: captum on each
site's model) pick the runs. Each prints ``att``'s verdict and weight, the round's time and
``audit verify``.

usage: scripts/attacks/real.sh scripts/attacks/a122_valuation_edge_updates.py [VARIANT ...]
Exits 1 when a variant raises out of the service, is paid (weight > 0), or verify fails; 0
otherwise.
"""

import os
import sys
import time
import traceback

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import torch
from harness import Site, run

from fedtrail.aggregator.service import AggregatorSettings


def _spike(v: torch.Tensor) -> torch.Tensor:
    t = torch.zeros_like(v)
    t.view(-1)[0] = 3e38
    return t


def variants(ctx):
    s, h = ctx.start, ctx.now["h0"]
    last = sorted(s)[-1]
    return {
        "zero": lambda: {k: torch.zeros_like(v) for k, v in s.items()},
        "negstart": lambda: {k: -v for k, v in s.items()},
        "denormal": lambda: {k: torch.full_like(v, 1e-44) for k, v in s.items()},
        "max": lambda: {k: torch.full_like(v, 3.0e38) for k, v in s.items()},
        "spike": lambda: {k: _spike(v) for k, v in s.items()},
        "bigfc": lambda: {
            k: torch.full_like(v, 1e18) if k == last else torch.zeros_like(v) for k, v in s.items()
        },
        "headonly": lambda: {
            k: h[k] * 5 if k.startswith("fc2") else torch.zeros_like(v) for k, v in s.items()
        },
        "negstart_h": lambda: {k: h[k] - v for k, v in s.items()},
        "tinyh": lambda: {k: h[k] * 1e-30 for k in s},
        "ownhead": lambda: {
            k: v if k.startswith("fc2") else torch.zeros_like(v) for k, v in ctx.now["att"].items()
        },
    }


NAMES = ["zero", "negstart", "denormal", "max", "spike", "bigfc", "headonly", "negstart_h"]
NAMES.append("tinyh")
chosen = sys.argv[1:] or NAMES
check = bool(os.environ.get("CHECK"))
bad = []
for name in chosen:

    def att(ctx, name=name):
        return variants(ctx)[name](), 150

    settings = AggregatorSettings(
        explain_method="integrated_gradients" if check else None,
        explanation_check=check,
        round_seconds=60,
        reveal_seconds=30,
    )
    sites = [Site(n, 150) for n in ("h0", "h1", "h2")]
    sites.append(Site("att", 150 if name == "ownhead" else 0, strategy=att, cap=150))
    t = time.monotonic()
    try:
        res = run(
            sites, rounds=1, settings=settings, real=True, verbose=bool(os.environ.get("VERBOSE"))
        )
    except Exception as exc:  # the finding is whatever escapes the service
        traceback.print_exc()
        print(f"{name}: RAISED {type(exc).__name__}: {str(exc)[:200]}")
        bad.append(name)
        continue
    a = res["results"][0].get("att", {})
    print(
        f"{name}: att {a.get('reason')} weight {a.get('weight', 0.0):.3f}; "
        f"round {time.monotonic() - t:.1f} s; audit verify {res['audit_ok']}"
    )
    if a.get("weight", 0.0) > 0 or not res["audit_ok"]:
        bad.append(name)
print(
    f"explanation check {'on' if check else 'off'}; held: {len(chosen) - len(bad)} of "
    f"{len(chosen)}; not held: {bad}"
)
sys.exit(1 if bad else 0)
