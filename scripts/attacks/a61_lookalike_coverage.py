"""A61: **coordinator**: which look-alike names get past ``fedtrail.protocol.names``.

A coordinator registers an imposter beside ``hospital-a`` under a name drawn to read alike, so
a reader who goes by name credits one site with the other's weight (a59's left-over). This
script tries a fixed list of look-alike variants, each two ways:

- the auditor's rule: is the variant confusable with ``hospital-a`` (one skeleton or one
  visual skeleton, ``fedtrail.protocol.names.confusable``: ``audit verify``'s ``sites.names``
  then fails every finalized round of a registry holding both;
  ``tests/auditor/test_verify_names.py`` runs that on a chain);
- the coordinator's tooling: ``fedtrail node register`` of the variant beside a registered
  ``hospital-a`` on the chain (Anvil under ``real.sh``, else the embedded chain) must refuse it
  before sending anything.

Session 49 added a second registered name, ``west-medical``, for the letter-pair variants
(``vv``, ``rn``, ``cl`` for ``w``, ``m``, ``d``). Controls (names that should pass both):
``hospital-b``, ``clinic-a``, an all-Cyrillic name, ``hospital-nn``, ``east-medical``.
The variants each have a class: ``caught`` (expected caught), ``open`` (known not caught:
outside the rule; printed, not failed).

usage: scripts/attacks/real.sh scripts/attacks/a61_lookalike_coverage.py
Exits 1 when an expected-caught variant passes either way or a control is refused, 0 otherwise.

Session 48: on the first rule (skeleton only, Cyrillic and Greek table) 17 of 22 were caught:
U+2011 and U+2010 hyphens, Armenian oh, Latin alpha and dotless i and a capital I for l got
past; dashes, Armenian and four Latin letters were added to the fold and a case-kept visual
skeleton (capital I as l): 23 of 23.

Session 49: 21 more variants (marked ``s49``: combining marks, a Cyrillic titlo, a variation
selector, a Hangul filler, an inserted, no-break or ideographic space, Cherokee, Coptic and
Lisu letters, Latin letters with a stroke or tilde or as small capitals, ``vv``/``rn``/``cl``);
on session 48's rule (81ac70c's names.py) 23 of 44 were caught, every s49 variant passed
verify's rule (exit 1); after the skeleton dropped every nonspacing mark, blank character and
whitespace, read letters by their Unicode names, took Cherokee, Coptic and Lisu letters from
Unicode's confusables data and read ``m``/``w``/``d`` as ``rn``/``vv``/``cl``: 44 of 44, the 5
controls registered, exit 0. Still open (printed): ``b`` for ``p``, ``_`` for ``-``, ``l`` for
``i``.
"""

import os
import sys

from click.testing import CliRunner

from fedtrail.chain import connect, dev_account
from fedtrail.cli import cli
from fedtrail.ledger import Ledger
from fedtrail.protocol.names import confusable, escaped, name_problems

BASE = "hospital-a"
BASE2 = "west-medical"  # registered too: the w, m and d look-alikes imitate it (s49)
VARIANTS = [
    # (name, expected: caught | open | control, what)
    ("hospital-\u0430", "caught", "Cyrillic a"),
    ("h\u043espital-a", "caught", "Cyrillic o"),
    ("\u04bbospital-a", "caught", "Cyrillic shha for h"),
    ("hos\u0440ital-a", "caught", "Cyrillic er for p"),
    ("hosp\u0456tal-a", "caught", "Cyrillic i"),
    ("h\u03bfspital-a", "caught", "Greek omicron"),
    ("hospit\u03b1l-a", "caught", "Greek alpha"),
    ("HOSPITAL-A", "caught", "upper case"),
    ("Hospital-A", "caught", "title case"),
    ("hospita1-a", "caught", "digit 1 for l"),
    ("h0spital-a", "caught", "digit 0 for o"),
    ("\uff48\uff4f\uff53\uff50\uff49\uff54\uff41\uff4c-\uff41", "caught", "fullwidth (NFKC)"),
    ("\U0001d421ospital-a", "caught", "mathematical bold h (NFKC)"),
    ("hospital\u200b-a", "caught", "zero-width space"),
    ("hospital-a\u00ad", "caught", "soft hyphen (format)"),
    ("hospital-a ", "caught", "trailing space"),
    ("hospital -a", "caught", "inserted space (s49)"),
    ("hospital\u2010a", "caught", "Unicode hyphen U+2010 for -"),
    ("hospital\u2011a", "caught", "non-breaking hyphen U+2011"),
    ("h\u0585spital-a", "caught", "Armenian oh for o"),
    ("hospit\u0251l-a", "caught", "Latin alpha U+0251 for a"),
    ("hosp\u0131tal-a", "caught", "Latin dotless i"),
    ("hospita\u217c-a", "caught", "Roman numeral fifty (NFKC: l)"),
    ("hospitaI-a", "caught", "capital I for l"),
    ("hospital-a\u0301", "caught", "combining acute after a (s49)"),
    # session 49: letters outside the first table, marks, spaces, letter pairs
    ("hospital-\u00e1", "caught", "precomposed a acute (s49)"),
    ("hospital-a\u0308\u0301", "caught", "two combining marks (s49)"),
    ("hospital-a\u0483", "caught", "Cyrillic titlo (a mark) after a (s49)"),
    ("hospital-a\ufe00", "caught", "variation selector after a (s49)"),
    ("hospital-a\u3164", "caught", "Hangul filler (drawn as nothing) (s49)"),
    ("hospital\u00a0-a", "caught", "no-break space (s49)"),
    ("hospital\u3000-a", "caught", "ideographic space (NFKC, s49)"),
    ("hospital-\u13aa", "caught", "Cherokee GO for a (s49)"),
    ("\u13bbOSPITAL-A", "caught", "Cherokee MI for H (s49)"),
    ("h\u2c9fspital-a", "caught", "Coptic small o (s49)"),
    ("\ua4e7OSPITAL-A", "caught", "Lisu XA for H (s49)"),
    ("hospita\u0142-a", "caught", "l with stroke (s49)"),
    ("\u0127ospital-a", "caught", "h with stroke (s49)"),
    ("h\u00f8spital-a", "caught", "o with stroke (s49)"),
    ("hospita\u029f-a", "caught", "small capital L (s49)"),
    ("hospita\u026b-a", "caught", "l with middle tilde (s49)"),
    ("vvest-medical", "caught", "vv for w (s49; beside west-medical)"),
    ("west-rnedical", "caught", "rn for m (s49; beside west-medical)"),
    ("west-meclical", "caught", "cl for d (s49; beside west-medical)"),
    ("hosbital-a", "open", "b for p (a different word)"),
    ("hospital_a", "open", "underscore for hyphen"),
    ("hospltal-a", "open", "l for i (a different letter)"),
    ("hospital-b", "control", "another name"),
    ("clinic-a", "control", "another name"),
    ("\u0431\u043e\u043b\u044c\u043d\u0438\u0446\u0430", "control", "all Cyrillic"),
    ("hospital-nn", "control", "nn (no letter is drawn so)"),
    ("east-medical", "control", "another name"),
]


def register(ledger: Ledger, rpc: str, i: int, name: str) -> tuple[int, str, str]:
    site = dev_account(10 + i).address
    r = CliRunner().invoke(
        cli,
        [
            "node", "register", site, "--name", name, "--max-samples", "100",
            "--rpc-url", rpc, "--contract", ledger.address, "--dev-account", "0",
        ],
    )  # fmt: skip
    info = ledger.get_site(site)
    registered = info is not None and info.registered
    if registered:  # back to a clean registry for the next variant
        ledger.remove_site(dev_account(0), site)
    return r.exit_code, "sent" if registered else "refused", r.output


rpc = os.environ.get("FEDTRAIL_ATTACK_RPC")
if rpc is None:
    sys.exit("run through scripts/attacks/real.sh (the CLI needs a JSON-RPC chain)")
ledger, _ = Ledger.deploy(connect(rpc), dev_account(0))
ledger.register_site(dev_account(0), dev_account(1).address, BASE, 100)
ledger.register_site(dev_account(0), dev_account(2).address, BASE2, 100)
problems, open_ones = [], []
caught_n = sum(1 for _, kind, _ in VARIANTS if kind == "caught")
hits = 0
for i, (name, kind, what) in enumerate(VARIANTS):
    alike = confusable(name, BASE) or confusable(name, BASE2)
    refused_why = name_problems(name, [BASE, BASE2])
    code, sent, output = register(ledger, rpc, i, name)
    print(
        f"  {kind:7} {what:44} '{escaped(name)}': skeleton "
        f"{'ALIKE' if alike else 'apart'}, register {sent} (exit {code})"
        + (f": {refused_why[0][:70]}" if refused_why else "")
    )
    if sent == "refused" and not refused_why:
        print(f"    refused otherwise: {output.strip().splitlines()[-1][:160]}")
    if kind == "caught":
        hits += alike and sent == "refused"
        if not alike or sent != "refused":
            problems.append(f"{what} ('{escaped(name)}') gets past")
    elif kind == "control" and (alike or sent != "sent"):
        problems.append(f"control {what} ('{escaped(name)}') refused")
    elif kind == "open" and not alike:
        open_ones.append(what)
print(f"caught {hits} of {caught_n} expected; open (outside the rule): {open_ones}")
if problems:
    print("ATTACK WORKS: " + "; ".join(problems))
    sys.exit(1)
print("defence holds: every expected look-alike is caught by verify's rule and by node register")
