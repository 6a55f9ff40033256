"""A3: colluders claim 1 training sample each to drag down the median that IMPLAUSIBLE_SAMPLES
compares every other site's count with (max_sample_ratio x median of the OTHER usable updates).
Their updates are honest-looking (real training on their own small shards). The honest site(s)
with the largest counts are zeroed as IMPLAUSIBLE_SAMPLES although they claim their true size.

usage: python attacks/a3_tiny_count_sabotage.py [layout] [rounds]
  control:  honest 1000, 300, 150, 90 and two more honest sites of 150 claiming 150
  minority: the same four honest sites; 2 colluders (150 images each) claim 1 sample each
            -> 2 of 6 sites zero the largest honest hospital
  half:     honest 300, 300 vs 2 colluders (150 images each) claiming 1 sample each
            -> every honest site zeroed, the colluders take all the weight
  three:    honest 500, 100, 40 alone (the big hospital is paid: others' median 70)
  one:      the same three and ONE colluder (trains on 40 images) claiming 1 sample: the
            others' median for the big hospital drops to 40 and it is zeroed
            (one-control: the colluder claims its true 40 -- the same happens: the rule is that
            fragile)
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

layout = sys.argv[1] if len(sys.argv) > 1 else "minority"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2


def liar(name, claim):
    return lambda ctx: (ctx.now[name], claim)


if layout == "minority":
    sites = [
        Site("big", 1000),
        Site("h1", 300),
        Site("h2", 150),
        Site("h3", 90),
        Site("c1", 150, strategy=liar("c1", 1)),
        Site("c2", 150, strategy=liar("c2", 1)),
    ]
elif layout == "half":
    sites = [
        Site("h1", 300),
        Site("h2", 300),
        Site("c1", 150, strategy=liar("c1", 1)),
        Site("c2", 150, strategy=liar("c2", 1)),
    ]
elif layout == "three":
    sites = [Site("big", 500), Site("h1", 100), Site("h2", 40)]
elif layout in ("one", "one-control"):
    sites = [
        Site("big", 500),
        Site("h1", 100),
        Site("h2", 40),
        Site("c1", 40, strategy=liar("c1", 1 if layout == "one" else 40)),
    ]
elif layout == "control":  # the same federation, colluders claim their true count
    sites = [
        Site("big", 1000),
        Site("h1", 300),
        Site("h2", 150),
        Site("h3", 90),
        Site("c1", 150),
        Site("c2", 150),
    ]
else:
    raise SystemExit(layout)
res = run(sites, rounds=rounds)
