"""a49 (**sites** against an honest aggregator): declines as griefing. ``terms.declined`` fails
a finalized round that paid someone when a site declined for a reason the auditor's table
confirms; can hostile sites make ``audit verify`` fail an honest aggregator's rounds by
declining its (acceptable) terms, with every reason code?

Three honest sites (150 images each) and four hostile ones that never train: in each round each
hostile site commits its own, correctly formed decline of the round's terms
(``decline_commitment``) with a different reason, so that over two rounds all seven codes are
declared. The aggregator runs the production service with the harness's settings (within the
default ``[accept]``). Exit 0 when ``audit verify`` passes both rounds (the declines named,
not failed); exit 1 when a decline alone makes it fail (the honest aggregator griefed).

Run: .venv/bin/python scripts/attacks/a49_decline_griefing.py   (~1 min)
"""

from __future__ import annotations

import sys
from typing import Any

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

from fedtrail.ledger import decline_commitment
from fedtrail.protocol.codes import Decline

HOSTILE = [f"x{i}" for i in range(4)]
CODES = list(Decline)


def setup(fed: Any, acct: dict[str, Any]) -> None:
    opener = fed.service.open_next

    def open_and_decline() -> int:
        r = opener()
        terms_sha = fed.ledger.get_round(r).terms_sha256
        for i, nm in enumerate(HOSTILE):
            reason = CODES[(i + len(HOSTILE) * (r - 1)) % len(CODES)]
            a = acct[nm]
            fed.ledger.commit_update(a, r, decline_commitment(a.address, r, terms_sha, reason))
            print(f"round {r}: {nm} declines ({reason.label})")
        return r

    fed.service.open_next = open_and_decline


def main() -> int:
    sites = [Site(f"h{i}", 150) for i in range(3)]
    sites += [Site(nm, 0, strategy=lambda ctx: None, cap=150) for nm in HOSTILE]
    out = run(sites, rounds=2, setup=setup)
    fed = out["fed"]
    for r in (1, 2):
        named = fed.ledger.declines(r)
        labels = sorted(v.label for v in named.values())
        print(f"round {r}: Ledger.declines names {len(named)}: {labels}")
    print("defence holds" if out["audit_ok"] else "HOLE OPEN: declines alone fail an honest round")
    return 0 if out["audit_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
