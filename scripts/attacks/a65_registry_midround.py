"""A65: **coordinator**: a committed site's reveal voided by a registry change inside the round.

The coordinator may change the registry at any time, in an open round too: ``removeSite``
revokes a site's right to reveal, ``setMaxSamples`` applies "from its next reveal on", and
``setPrivacyBudget`` on a site without one makes its plain ``revealUpdate`` revert (a site with
a budget must declare a spend). A site's commitment binds its sample count and its update, so
once it has committed, any of these moves (made after the commitments are on chain and before
the reveal window closes) leaves its commitment unrevealable: it is shut out of a chosen round,
and the round reads as one where the site committed and never revealed (its own failure).

Three honest sites of 150 (``a``, ``b``, the target ``t``), two rounds; round 1 is honest. In
round 2, once every commitment is mined, the coordinator
- ``remove``: removes ``t`` and registers it again at once under the same name and cap (the
  registry reads as before; a site registered while a round is open takes part from the next);
- ``cap``: lowers ``t``'s cap from 150 to 100 (its commitment binds 150);
- ``budget``: sets a privacy budget of 1 epsilon on ``t`` (a plain site);
- ``raise``: the other way round, for an ally: ``t`` commits 300 samples against its cap of
  150 and the coordinator raises the cap to 300 (``get_sites`` shows 300 afterwards; a
  coordinator could lower it again after the round);
- ``honest``: does nothing (control).

Before the fix ``audit verify`` passed round 2 with ``terms.declined`` noting "1 other
commitment(s) never revealed" and no check naming the coordinator's move. Holds when round 2
fails ``sites.registry`` naming the move (and ``honest`` passes).

usage: scripts/attacks/real.sh scripts/attacks/a65_registry_midround.py remove|cap|budget|honest
Exits 1 when ``t`` is shut out of round 2 and verify passes it (``raise``: when verify does
not name the raised cap), 0 otherwise.
"""

import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.auditor.verify import verify_round
from fedtrail.protocol.privacy import EPSILON_SCALE

MODE = sys.argv[1] if len(sys.argv) > 1 else "remove"
if MODE not in ("remove", "cap", "budget", "raise", "honest"):
    sys.exit(f"unknown mode {MODE!r}: remove, cap, budget, raise or honest")


def between(fed, acct, r):
    if r != 2 or MODE == "honest":
        return
    t = acct["t"].address
    if MODE == "remove":
        fed.ledger.remove_site(fed.coordinator, t)
        fed.ledger.register_site(fed.coordinator, t, "t", 150)
    elif MODE == "cap":
        fed.ledger.set_max_samples(fed.coordinator, t, 100)
    elif MODE == "raise":
        fed.ledger.set_max_samples(fed.coordinator, t, 300)
    else:
        fed.ledger.set_privacy_budget(fed.coordinator, t, EPSILON_SCALE)
    print(f"round 2: coordinator, after every commitment: {MODE} on t ({t})")


def inflated(ctx):
    # t's own trained update, claimed at 300 samples in round 2 (its cap at open: 150)
    return ctx.now["t"], 300 if ctx.round == 2 else 150


target = Site("t", 150, strategy=inflated if MODE == "raise" else None)
out = run([Site("a", 150), Site("b", 150), target], 2, real=True, between=between)
r2 = out["results"][1]
shut_out = "t" not in r2
print(f"round 2: t {'shut out (no reveal)' if shut_out else 'revealed: ' + str(r2['t'])}")
round2 = [(c, d) for r, c, d in out["failed"] if r == 2]
named = [d for c, d in round2 if c == "sites.registry"]
print("round 2 failed checks:", round2 or "none")
if MODE == "honest":
    sys.exit(0 if out["audit_ok"] and not shut_out else 1)
if MODE == "raise":
    check = next(
        c
        for c in verify_round(out["fed"].ledger, out["store"], 2).checks
        if c.name == "sites.registry"
    )
    print(f"round 2 sites.registry: {'passed' if check.passed else 'FAILED'}: {check.detail}")
    if "cap set to 300" not in check.detail:
        print("ATTACK WORKS: t claimed 300 samples over its cap at open, and no check names it")
        sys.exit(1)
    print("defence holds: the raised cap is named (not failed: the coordinator's registry)")
    sys.exit(0)
if shut_out and not named:
    print("ATTACK WORKS: t shut out of round 2 by the coordinator, and no check names it")
    sys.exit(1)
print("defence holds: " + ("sites.registry fails round 2" if named else "t revealed"))
