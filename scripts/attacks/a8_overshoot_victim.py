"""A8: hurt a chosen honest site through the validation game. From round 2 the attacker (no
data) sends FACTOR x (the victim's previous-round update + 2% Gaussian noise, which the stale
screen does not call a copy). In every coalition that holds the attacker the model already
steps far along the victim's direction, so the victim's own step overshoots and its marginal
value (hence Shapley value, hence standing) drops.

usage: python attacks/a8_overshoot_victim.py [FACTOR] [rounds]
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, noisy, run

factor = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4


def attacker(ctx):
    if not ctx.past:
        return None
    d = noisy(ctx.past[-1]["victim"], 0.02, ctx.round)
    return {k: factor * v for k, v in d.items()}, 150


res = run(
    [
        Site("victim", 150),
        Site("h1", 150),
        Site("h2", 150),
        Site("h3", 150),
        Site("att", 0, strategy=attacker, cap=150),
    ],
    rounds=rounds,
)
