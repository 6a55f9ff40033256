"""Differential privacy in the protocol: the on-chain unit of epsilon and a site's DP parameters.

Epsilon travels on chain as an integer in micro-epsilon (``EPSILON_SCALE``): a uint64 for one
update's declared spend, a uint40 for a site's budget and cumulative spend in the contract (at
most ``MAX_PRIVACY_MICRO``). The contract sums what sites declare; what a site declares for
one update follows the *accounting rule* its update names (``DpParams.accounting``):

- ``"summed"`` (basic composition; every blob written before the field existed): the update's
  own epsilon, :func:`to_micro` of the accountant's epsilon for its training alone, rounded up.
  The chain's total is the sum, an upper bound 3-4x above the RDP-composed epsilon.
- ``"composed"``: the increment of the site's RDP-composed total, ``max(1, ceil(SCALE *
  eps(all the site's earlier private updates + this one, at this update's delta)) - total on
  chain before)``; after the reveal the chain's total is the composed epsilon rounded up (the
  contract needs a positive spend, hence the 1). Composition at one delta over the whole history
  is a guarantee for all of it even where earlier updates named another delta: RDP composes
  independently of delta, which only enters at the conversion to epsilon.

Either way the integer on chain never understates the spend. :class:`DpParams` are what the
accountant needs to recompute it; they travel in the update blob's metadata (pinned by the
update's sha256 on chain), so an auditor recomputes the spend from them (and, under
``"composed"``, from the site's earlier updates) and compares it with the declared one. They
come from other participants: every field is validated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from fedtrail.errors import FedtrailError

__all__ = [
    "ACCOUNTANTS",
    "ACCOUNTING_RULES",
    "COMPOSED",
    "EPSILON_SCALE",
    "MAX_EPSILON_MICRO",
    "MAX_PRIVACY_MICRO",
    "MAX_STEPS",
    "SUMMED",
    "DpParams",
    "InvalidPrivacy",
    "from_micro",
    "to_micro",
]

EPSILON_SCALE: Final = 1_000_000
"""Micro-epsilon per epsilon: the unit of every epsilon on chain."""
MAX_EPSILON_MICRO: Final = 2**64 - 1
"""One update's declared spend travels to the contract as a uint64."""
MAX_PRIVACY_MICRO: Final = 2**40 - 1
"""The contract's limit on a site's budget and on its cumulative spend (``MAX_PRIVACY_MICRO``
there, a uint40: 1,099,511.627775 epsilon), so the account fits the slot a reveal already
writes."""
ACCOUNTANTS: Final = ("rdp",)
"""Accountants an update may name (opacus' RDP accountant; :mod:`fedtrail.ml.privacy`)."""
SUMMED: Final = "summed"
"""Accounting rule: declare each update's own epsilon (the contract sums them)."""
COMPOSED: Final = "composed"
"""Accounting rule: declare the increment of the site's RDP-composed total."""
ACCOUNTING_RULES: Final = (SUMMED, COMPOSED)
"""Rules an update may name; a blob without an ``accounting`` field is ``"summed"``."""
MAX_STEPS: Final = 10_000_000
"""DP-SGD steps in one update at most (bounds the accountant's work on untrusted input)."""
MAX_NOISE_MULTIPLIER: Final = 1_000.0
"""Noise far above any useful training; bounds untrusted input."""
_FIELDS: Final = frozenset(
    {"noise_multiplier", "max_grad_norm", "sample_rate", "steps", "delta", "accountant"}
)
_ACCOUNTING_KEY: Final = "accounting"


class InvalidPrivacy(FedtrailError):
    """DP parameters or an epsilon that cannot be accounted: a missing, mistyped, non-finite
    or out-of-range value (untrusted metadata, a bad config or a bad flag)."""


def to_micro(eps: float) -> int:
    """Epsilon to integer micro-epsilon, rounded up (a spend must never be understated)."""
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps):
        raise InvalidPrivacy(f"epsilon must be a finite number, not {eps!r}")
    if eps < 0:
        raise InvalidPrivacy(f"epsilon must not be negative, not {eps!r}")
    micro = math.ceil(float(eps) * EPSILON_SCALE)
    if micro > MAX_EPSILON_MICRO:
        raise InvalidPrivacy(f"epsilon {eps!r} does not fit the chain's uint64 micro-epsilon")
    return micro


def from_micro(micro: int) -> float:
    """Integer micro-epsilon (as on chain) to epsilon."""
    if isinstance(micro, bool) or not isinstance(micro, int):
        raise InvalidPrivacy(f"micro-epsilon must be an integer, not {micro!r}")
    if not 0 <= micro <= MAX_EPSILON_MICRO:
        raise InvalidPrivacy(f"micro-epsilon must lie in 0..2**64-1, not {micro}")
    return micro / EPSILON_SCALE


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidPrivacy(f"DP parameters: {where} must be a finite number, not {value!r}")
    return float(value)


@dataclass(frozen=True, kw_only=True)
class DpParams:
    """One update's DP-SGD training, as the accountant needs it: Gaussian noise of
    ``noise_multiplier * max_grad_norm`` on per-sample gradients clipped to ``max_grad_norm``,
    ``steps`` steps each over a Poisson sample of the site's training split at ``sample_rate``,
    accounted at ``delta`` (the federation's, from the round terms) with ``accountant``;
    ``accounting`` is the rule the site declared its spend by (module docstring). In JSON the
    field is written only for ``"composed"``: absent means ``"summed"``, so a summed update keeps
    the bytes it had before the field existed (and old blobs stay canonical)."""

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    delta: float
    accountant: str = "rdp"
    accounting: str = SUMMED

    def __post_init__(self) -> None:
        noise = _number(self.noise_multiplier, "noise_multiplier")
        if not 0 < noise <= MAX_NOISE_MULTIPLIER:
            raise InvalidPrivacy(
                f"DP parameters: noise_multiplier must lie in (0, {MAX_NOISE_MULTIPLIER}], "
                f"not {noise!r}"
            )
        clip = _number(self.max_grad_norm, "max_grad_norm")
        if clip <= 0:
            raise InvalidPrivacy(f"DP parameters: max_grad_norm must be positive, not {clip!r}")
        rate = _number(self.sample_rate, "sample_rate")
        if not 0 < rate <= 1:
            raise InvalidPrivacy(f"DP parameters: sample_rate must lie in (0, 1], not {rate!r}")
        delta = _number(self.delta, "delta")
        if not 0 < delta < 1:
            raise InvalidPrivacy(f"DP parameters: delta must lie in (0, 1), not {delta!r}")
        steps = self.steps
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise InvalidPrivacy(f"DP parameters: steps must be an integer, not {steps!r}")
        if not 1 <= steps <= MAX_STEPS:
            raise InvalidPrivacy(f"DP parameters: steps must lie in 1..{MAX_STEPS}, not {steps}")
        if self.accountant not in ACCOUNTANTS:
            raise InvalidPrivacy(
                f"DP parameters: accountant must be one of {ACCOUNTANTS}, not {self.accountant!r}"
            )
        if not isinstance(self.accounting, str) or self.accounting not in ACCOUNTING_RULES:
            raise InvalidPrivacy(
                f"DP parameters: accounting must be one of {ACCOUNTING_RULES}, "
                f"not {self.accounting!r}"
            )
        object.__setattr__(self, "noise_multiplier", noise)
        object.__setattr__(self, "max_grad_norm", clip)
        object.__setattr__(self, "sample_rate", rate)
        object.__setattr__(self, "delta", delta)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "delta": self.delta,
            "accountant": self.accountant,
        }
        if self.accounting != SUMMED:
            doc[_ACCOUNTING_KEY] = self.accounting
        return doc

    @classmethod
    def from_json(cls, doc: Any) -> DpParams:
        """From an untrusted mapping (exactly the fields of :meth:`to_json`: ``accounting``
        only as ``"composed"``, since an explicit ``"summed"`` is not the canonical form);
        :class:`InvalidPrivacy` names what is wrong."""
        if not isinstance(doc, dict):
            raise InvalidPrivacy("DP parameters must be a JSON object")
        keys = set(doc) - {_ACCOUNTING_KEY}
        if keys != _FIELDS:
            missing = sorted(_FIELDS - keys)
            extra = sorted(str(k) for k in keys - _FIELDS)
            raise InvalidPrivacy(f"DP parameters: missing {missing}, unknown {extra}")
        accountant = doc["accountant"]
        if not isinstance(accountant, str):
            raise InvalidPrivacy(f"DP parameters: accountant must be a string, not {accountant!r}")
        accounting = doc.get(_ACCOUNTING_KEY, SUMMED)
        if _ACCOUNTING_KEY in doc and accounting != COMPOSED:
            raise InvalidPrivacy(
                f"DP parameters: accounting must be {COMPOSED!r} when present (absent means "
                f"{SUMMED!r}), not {accounting!r}"
            )
        return cls(
            noise_multiplier=doc["noise_multiplier"],
            max_grad_norm=doc["max_grad_norm"],
            sample_rate=doc["sample_rate"],
            steps=doc["steps"],
            delta=doc["delta"],
            accountant=accountant,
            accounting=accounting,
        )
