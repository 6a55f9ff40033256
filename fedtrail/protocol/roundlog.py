"""The per-round explanation log as one typed record: building, canonical bytes, reading.

The aggregator builds it (:func:`build_round_log`) and writes :meth:`RoundLog.to_bytes`; the
auditor reads untrusted bytes back with :meth:`RoundLog.from_bytes`. Its sha256 is taken over
canonical JSON (sorted keys, no whitespace, NaN/inf as null), the same bytes stored on IPFS, so
the record's JSON shape is format ``fedtrail.explanation-log/1`` exactly (the JSON Schema in
``fedtrail/schemas``): any change to the fields here changes every future log's hash.

Objects whose content the format leaves open stay JSON mappings: the aggregation rule and model
spec (typed by the layers above, which know them), a site's valuation components and the
``explanations`` block (read back untyped: a reader must treat its content as untrusted and check
every field it uses; the schema admits exactly the keys the aggregator writes there).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar

import jsonschema

from fedtrail import safejson
from fedtrail.errors import FedtrailError
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.evidence import Evidence, InvalidEvidence
from fedtrail.protocol.names import skeleton, visual_skeleton
from fedtrail.protocol.peers import PeerVote
from fedtrail.protocol.terms import VALIDATOR_GAMES
from fedtrail.protocol.weights import WEIGHT_SCALE

__all__ = [
    "EXPLANATION_WORDING",
    "EXPLANATION_WORDINGS",
    "FORMAT",
    "MAX_LOG_BYTES",
    "REFERENCE_RULES",
    "VALUATION_MODES",
    "WEIGHTED_REFERENCES",
    "BlobRef",
    "Evidence",
    "ExplanationProbe",
    "HeatmapRef",
    "InvalidLog",
    "LedgerRef",
    "MetricsPair",
    "ModelExplanations",
    "RoundLog",
    "RoundMetrics",
    "RoundSettings",
    "SiteEntry",
    "UpdateRef",
    "ValidationRef",
    "ValuationSettings",
    "build_round_log",
    "explanation_head",
    "explanation_reason",
    "from_bytes",
    "round_summary",
    "schema",
    "summary_of",
    "to_bytes",
    "validate",
    "wording_note",
]

FORMAT = "fedtrail.explanation-log/1"
VALUATION_MODES = ("aggregator", "peers")
"""Who scores a round: the aggregator on its validation split, or the sites on theirs."""

WEIGHTED_REFERENCES = "weighted"
"""The terms' ``valuation.references`` (session 62, h-300): the round's free-rider references
leave out every update the chain holds at weight 0 with a positive score (reason OK: its exact
share rounds below one unit of 1e-18), whatever reads (``fedtrail.valuation.chained.
reference_submissions``). Written with ``public_screen``, whose screen leaves such an update out
when it cannot be read (``fedtrail.protocol.peers.screen_left_out``): nobody needs to hold it.
Absent: every update not scored unreadable is a reference, as before."""
REFERENCE_RULES = (WEIGHTED_REFERENCES,)
"""The reference rules a reader of this release knows (``valuation.references``)."""

EXPLANATION_WORDING = 1
"""The wording of the explanation texts (a log entry's ``explanation``: ``"<reason label>:
<detail>"``) this release's valuation writes, named by the terms' ``valuation`` block
(``explanation_wording``) of every aggregator round it opens (session 57, attack a125
``detail``): with it, ``audit verify --validation`` fails a usable update's text that is not the
one the re-run renders under that wording (numbers within their tolerance), where a log without
it (an older writer's) has its differing texts noted, not failed. A release that changes a word
of any detail must name a new wording here (and keep rendering the old one for the ledgers whose
round 1 fixed it, or leave their texts unchecked)."""
EXPLANATION_WORDINGS = (EXPLANATION_WORDING,)
"""The wordings a reader of this release knows: a log or terms naming another is refused (as an
unknown field is)."""

ComponentValue = float | int | str | bool | None

MAX_LOG_BYTES = 32 << 20
"""Largest round log read (fetch it with ``max_bytes=MAX_LOG_BYTES``). A log holds some 700
bytes per site, and a peer round's score vectors about 10 bytes per pair of sites: a 1,000-site
peer round's log is ~11 MB. Parsing hostile JSON takes ~26 bytes of memory per byte (under
1 GB here, against ~7 GB at the store's general 256 MiB limit)."""


class InvalidLog(FedtrailError):
    """An explanation log that is not valid JSON or does not follow the schema."""


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    text = resources.files("fedtrail").joinpath("schemas/explanation-log.schema.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


def _clean(value: Any) -> Any:
    """NaN/inf are not JSON: a metric that could not be computed is recorded as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


@lru_cache(maxsize=1)
def _validator() -> Any:
    """The schema's validator, built (and the schema checked against its metaschema) once:
    ``jsonschema.validate`` does both on every call, 24 of the 25 ms it took for a 3-site log."""
    cls = jsonschema.validators.validator_for(schema())
    cls.check_schema(schema())
    return cls(schema())


def validate(doc: dict[str, Any]) -> None:
    # the error jsonschema.validate raises: the best match among all of them
    error = jsonschema.exceptions.best_match(_validator().iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise InvalidLog(f"explanation log invalid at {where}: {error.message}")


def to_bytes(doc: dict[str, Any]) -> bytes:
    """Validated canonical bytes of a log given as a JSON dict (what is stored and hashed)."""
    clean = _clean(doc)
    validate(clean)
    return json.dumps(clean, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique. Parsers disagree on a repeated key (Python's and
    most keep the last, others the first or refuse), so a log with one would read differently
    to different auditors under the same on-chain hash: it is refused. No writer repeats one."""
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise InvalidLog(f"explanation log repeats the key {key!r} in one object")
        doc[key] = value
    return doc


def from_bytes(blob: bytes) -> dict[str, Any]:
    """Parses and schema-validates an (untrusted) log into a JSON dict; prefer
    :meth:`RoundLog.from_bytes`, which also checks what the schema leaves open."""
    if len(blob) > MAX_LOG_BYTES:
        raise InvalidLog(f"explanation log is {len(blob)} bytes, over the limit of {MAX_LOG_BYTES}")
    try:
        doc = safejson.loads(blob, object_pairs_hook=_unique_keys)
    except ValueError as exc:  # not UTF-8, not JSON, nested too deep, too many digits
        raise InvalidLog(f"explanation log is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidLog("explanation log is not a JSON object")
    validate(doc)
    return doc


# --------------------------------------------------------------------------- reading helpers
# Used after schema validation: they only check what the schema leaves open, and name the path.


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidLog(f"explanation log invalid at {where}: {value!r} is not an integer")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidLog(f"explanation log invalid at {where}: {value!r} is not a string")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidLog(f"explanation log invalid at {where}: {value!r} is not a finite number")
    return float(value)


def _values(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise InvalidLog(f"explanation log invalid at {where}: not an object")
    return {_str(k, where): _number(v, f"{where}/{k}") for k, v in value.items()}


def _only(doc: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    extra = sorted(set(doc) - set(allowed))
    if extra:
        raise InvalidLog(
            f"explanation log invalid at {where}: unknown field(s) {', '.join(extra)} "
            f"(known: {', '.join(allowed)})"
        )


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class BlobRef:
    """A blob on the content store: its CID and the sha256 of its bytes."""

    cid: str
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"cid": self.cid, "sha256": self.sha256}


@dataclass(frozen=True)
class LedgerRef:
    """The FederationLedger the round ran on."""

    address: str
    chain_id: int

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "chain_id": self.chain_id}


@dataclass(frozen=True, kw_only=True)
class ExplanationProbe:
    """The public probe set the explanation check runs on: a safetensors blob on the content
    store (:mod:`fedtrail.storage.probe`), its CID, sha256 and image count. Committed in the
    round terms' valuation block, so round 1 fixes it (``terms.task_fixed``) and anyone can
    recompute every ``EXPLANATION_SHIFT`` verdict (``reasons.explanation_shift``). The images
    are public: consented, public or synthetic images only, never patients' private scans."""

    cid: str
    sha256: str
    images: int

    _FIELDS: ClassVar[tuple[str, ...]] = ("cid", "sha256", "images")

    def __post_init__(self) -> None:
        if not self.cid or len(self.cid) > 128:
            raise InvalidLog("the explanation probe's cid must be 1-128 characters")
        if len(self.sha256) != 64 or set(self.sha256) - set("0123456789abcdef"):
            raise InvalidLog("the explanation probe's sha256 must be 64 lowercase hex digits")
        if self.images < 1:
            raise InvalidLog(f"the explanation probe must hold images, not {self.images}")

    def to_json(self) -> dict[str, Any]:
        return {"cid": self.cid, "sha256": self.sha256, "images": self.images}

    @classmethod
    def from_json(cls, doc: Any, where: str) -> ExplanationProbe:
        if not isinstance(doc, Mapping):
            raise InvalidLog(f"explanation log invalid at {where}: not an object")
        _only(doc, cls._FIELDS, where)
        for key in cls._FIELDS:
            if key not in doc:
                raise InvalidLog(f"explanation log invalid at {where}: '{key}' is missing")
        return cls(
            cid=_str(doc["cid"], f"{where}/cid"),
            sha256=_str(doc["sha256"], f"{where}/sha256"),
            images=_int(doc["images"], f"{where}/images"),
        )


@dataclass(frozen=True, kw_only=True)
class ValuationSettings:
    """How the round's scores were computed, so an auditor can re-run the valuation.

    ``seed`` and ``explanation_check`` are absent (None) in logs written before the auditor
    re-ran valuations; they are written only when set. ``standing`` True: scores from the values
    accumulated across rounds (the log's :class:`Standing` block), demote-only; absent or False:
    each round scored on its own. ``combiner``: the valuation's thresholds (the fields of
    ``fedtrail.valuation.Combiner``); absent: that class's defaults. ``large_game``: the game
    played instead of Monte-Carlo Shapley when more than ``LARGE_GAME_SITES`` updates pass the
    screening (``fedtrail.valuation.LARGE_GAMES``); absent: Monte-Carlo Shapley at every size.
    ``mode`` ``"peers"``: the sites scored each other's updates on their own validation splits
    and the contract took the median (:mod:`fedtrail.protocol.peers`), with at least ``quorum``
    revealed score vectors; absent: the aggregator scored (``"aggregator"``). ``validator_game``
    (peer rounds only): the game every validator plays at every size instead of ``method``'s
    (``fedtrail.valuation.VALIDATOR_GAMES``: ``"linear_shapley"``, ``"loo"``); absent:
    ``method`` (and ``large_game``), as the aggregator plays. No one can replay a validator's
    game (its split is private), but every honest validator plays the one the terms name.
    ``explanation_probe`` (only with ``explanation_check`` true): the public probe set the check
    runs on (:class:`ExplanationProbe`); absent: the check's probes come from the private
    validation split, and its verdicts are the aggregator's word (verify fails them as not
    checked). ``project_shift`` true: the validation game values every update with its
    first-order uniform logit shift removed (``fedtrail.valuation.value_round``; an opt-in for
    private rounds); absent (None) or false: the updates as submitted, as every round before it.
    ``public_screen`` true (peer rounds only): the validators skip the free-rider screen, which
    reads no validation data; the aggregator runs it once for the round on the public updates
    and references (``fedtrail.valuation.public_screen``) and drops the weighted updates it
    marks on chain (``dropScreened``, reason FREE_RIDER), and ``audit verify`` recomputes it
    (``peers.screen``); absent (None) or false: every validator screens, as before.
    ``references`` (only with ``public_screen`` true): the round's free-rider reference rule,
    :data:`WEIGHTED_REFERENCES` (its updates at weight 0 with a positive score are none);
    absent: every update not scored unreadable, as before.
    """

    method: str
    metric: str
    seed: int | None = None
    explanation_check: bool | None = None
    standing: bool | None = None
    combiner: Mapping[str, float] | None = None
    large_game: str | None = None
    mode: str | None = None
    quorum: int | None = None
    validator_game: str | None = None
    explanation_probe: ExplanationProbe | None = None
    project_shift: bool | None = None
    public_screen: bool | None = None
    explanation_wording: int | None = None
    references: str | None = None

    _FIELDS: ClassVar[tuple[str, ...]] = (
        "method",
        "metric",
        "seed",
        "explanation_check",
        "standing",
        "combiner",
        "large_game",
        "mode",
        "quorum",
        "validator_game",
        "explanation_probe",
        "project_shift",
        "public_screen",
        "explanation_wording",
        "references",
    )

    def __post_init__(self) -> None:
        if self.mode not in (None, *VALUATION_MODES):
            raise InvalidLog(f"valuation mode must be one of {VALUATION_MODES}, not {self.mode!r}")
        if (self.mode == "peers") != (self.quorum is not None):
            raise InvalidLog("a quorum is set exactly for peer valuation (mode 'peers')")
        if self.quorum is not None and self.quorum < 1:
            raise InvalidLog(f"the peer quorum must be at least 1, not {self.quorum}")
        if self.validator_game is not None and self.mode != "peers":
            raise InvalidLog("a validator game is set only for peer valuation (mode 'peers')")
        # a game no honest validator can play makes every honest one abstain, leaving the
        # quorum to sites that vote without playing it
        if self.validator_game is not None and self.validator_game not in VALIDATOR_GAMES:
            raise InvalidLog(
                f"the validator game must be one of {VALIDATOR_GAMES}, not {self.validator_game!r}"
            )
        if self.validator_game == "linear_shapley" and self.metric == "auc":
            raise InvalidLog("the validator game 'linear_shapley' needs a loss metric, not the AUC")
        if self.public_screen is not None and self.mode != "peers":
            raise InvalidLog("a public screen is set only for peer valuation (mode 'peers')")
        if self.references is not None:
            if self.references not in REFERENCE_RULES:
                raise InvalidLog(
                    f"the reference rule must be one of {REFERENCE_RULES}, not {self.references!r}"
                )
            if self.public_screen is not True:
                # the rule is there for the inputs the public screen leaves out (h-300)
                raise InvalidLog("a reference rule is set only with the public screen")
        if self.explanation_probe is not None and self.explanation_check is not True:
            raise InvalidLog("an explanation probe is set only with the explanation check on")
        if self.explanation_wording is not None:
            if self.explanation_wording not in EXPLANATION_WORDINGS:
                raise InvalidLog(
                    f"the explanation wording must be one of {EXPLANATION_WORDINGS}, not "
                    f"{self.explanation_wording!r} (a newer writer's: update fedtrail)"
                )
            if self.mode == "peers":
                # a peer round's text is the README's sentence exactly (peers.median)
                raise InvalidLog("an explanation wording is named only in aggregator rounds")

    @property
    def peers(self) -> bool:
        """Whether the round was scored by its sites (the contract's median), not the aggregator."""
        return self.mode == "peers"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"method": self.method, "metric": self.metric}
        if self.seed is not None:
            doc["seed"] = self.seed
        if self.explanation_check is not None:
            doc["explanation_check"] = self.explanation_check
        if self.standing is not None:
            doc["standing"] = self.standing
        if self.combiner is not None:
            doc["combiner"] = dict(self.combiner)
        if self.large_game is not None:
            doc["large_game"] = self.large_game
        if self.mode is not None:
            doc["mode"] = self.mode
        if self.quorum is not None:
            doc["quorum"] = self.quorum
        if self.validator_game is not None:
            doc["validator_game"] = self.validator_game
        if self.explanation_probe is not None:
            doc["explanation_probe"] = self.explanation_probe.to_json()
        if self.project_shift is not None:
            doc["project_shift"] = self.project_shift
        if self.public_screen is not None:
            doc["public_screen"] = self.public_screen
        if self.explanation_wording is not None:
            doc["explanation_wording"] = self.explanation_wording
        if self.references is not None:
            doc["references"] = self.references
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ValuationSettings:
        where = "settings/valuation"
        _only(doc, cls._FIELDS, where)
        for key in ("method", "metric"):
            if key not in doc:
                raise InvalidLog(f"explanation log invalid at {where}: '{key}' is missing")
        for key in ("explanation_check", "standing", "project_shift", "public_screen"):
            flag = doc.get(key)
            if flag is not None and not isinstance(flag, bool):
                raise InvalidLog(f"explanation log invalid at {where}/{key}: not a bool")
        combiner = doc.get("combiner")
        if combiner is not None:
            if not isinstance(combiner, Mapping):
                raise InvalidLog(f"explanation log invalid at {where}/combiner: not an object")
            combiner = {
                _str(k, f"{where}/combiner"): _number(v, f"{where}/combiner/{k}")
                for k, v in combiner.items()
            }
        seed = doc.get("seed")
        return cls(
            method=_str(doc["method"], f"{where}/method"),
            metric=_str(doc["metric"], f"{where}/metric"),
            seed=None if seed is None else _int(seed, f"{where}/seed"),
            explanation_check=doc.get("explanation_check"),
            standing=doc.get("standing"),
            combiner=combiner,
            large_game=None
            if doc.get("large_game") is None
            else _str(doc["large_game"], f"{where}/large_game"),
            mode=None if doc.get("mode") is None else _str(doc["mode"], f"{where}/mode"),
            quorum=None if doc.get("quorum") is None else _int(doc["quorum"], f"{where}/quorum"),
            validator_game=None
            if doc.get("validator_game") is None
            else _str(doc["validator_game"], f"{where}/validator_game"),
            explanation_probe=None
            if doc.get("explanation_probe") is None
            else ExplanationProbe.from_json(doc["explanation_probe"], f"{where}/explanation_probe"),
            project_shift=doc.get("project_shift"),
            public_screen=doc.get("public_screen"),
            explanation_wording=None
            if doc.get("explanation_wording") is None
            else _int(doc["explanation_wording"], f"{where}/explanation_wording"),
            references=None
            if doc.get("references") is None
            else _str(doc["references"], f"{where}/references"),
        )


@dataclass(frozen=True, kw_only=True)
class RoundSettings:
    """The round's settings: aggregation rule, valuation, model spec (and its hash), base seed,
    and ``terms``, the round-terms document committed on chain at open
    (:mod:`fedtrail.protocol.terms`), which these settings must repeat.

    The rule and the spec are the ``asdict`` of ``AggregationRule`` and ``ModelSpec``; those
    types live above the protocol, so their callers rebuild them (and handle a bad one).
    ``terms`` is absent (None) in logs written before rounds had terms; written only when set.
    """

    aggregation_rule: Mapping[str, Any]
    valuation: ValuationSettings
    model_spec: Mapping[str, Any]
    spec_hash: str
    seed: int
    terms: BlobRef | None = None
    class_names: tuple[str, ...] = ()
    """One name per class (the task's, as the terms fix them); empty in older logs."""

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "aggregation_rule": dict(self.aggregation_rule),
            "valuation": self.valuation.to_json(),
            "model_spec": dict(self.model_spec),
            "spec_hash": self.spec_hash,
            "seed": self.seed,
        }
        if self.terms is not None:
            doc["terms"] = self.terms.to_json()
        if self.class_names:
            doc["class_names"] = list(self.class_names)
        return doc


@dataclass(frozen=True)
class ValidationRef:
    """The aggregator's validation split: content hash and size (the data stays private)."""

    sha256: str
    images: int

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "images": self.images}


@dataclass(frozen=True)
class UpdateRef:
    """A site's submitted update as the chain records it."""

    cid: str
    sha256: str
    num_samples: int

    def to_json(self) -> dict[str, Any]:
        return {"cid": self.cid, "sha256": self.sha256, "num_samples": self.num_samples}


def wording_note(wording: object) -> str:
    """One line for ``audit log`` and the report on what an aggregator round's explanation
    texts are held to: the wording its terms name (``valuation.explanation_wording``, session
    57), in which ``audit verify --validation`` re-derives each usable update's text, or none
    (a writer before session 57: beyond its reason label the text is the aggregator's word)."""
    if wording is None:
        return (
            "explanation texts: no wording named (a writer before session 57): beyond the "
            "reason each begins with, the aggregator's word"
        )
    return (
        f"explanation texts: wording {wording}; audit verify --validation re-derives each "
        "usable update's text from the re-run's figures"
    )


def explanation_head(explanation: str) -> str:
    """An explanation's text before its first ``:`` (all of it when it has none): where the
    aggregator writes the reason (``low quality: ...``; the reason's name alone when the
    valuation gave no text)."""
    return explanation.split(":", 1)[0]


def _reason_keys(text: str) -> tuple[str, str]:
    drop = str.maketrans("", "", "-_")
    return skeleton(text).translate(drop), visual_skeleton(text).translate(drop)


@lru_cache(maxsize=1)
def _reasons_read() -> tuple[tuple[Reason, str, frozenset[str]], ...]:
    out = []
    for r in Reason:
        (sk, vis), (_, label_vis) = _reason_keys(r.name), _reason_keys(r.label)
        out.append((r, sk, frozenset((vis, label_vis))))
    return tuple(out)


def explanation_reason(explanation: str) -> Reason | None:
    """The reason a log entry's explanation begins with, or None (session 56): its
    :func:`explanation_head` read as :mod:`fedtrail.protocol.names` reads names, with every
    ``-`` and ``_`` then dropped, names a reason when its skeleton is that of the reason's name
    (``LOW_QUALITY``; the label ``low quality`` has the same) or its visual skeleton is that of
    the name or of the label. So ``OK``, ``ok``, ``Low-Quality``, ``free rider`` and a
    Cyrillic ``\\u041e\\u041a`` each name one; a peer round's ``Scored by its peers: ...``
    names none. An entry whose explanation names a reason other than the chain's contradicts
    it (``audit verify``'s ``log.agrees``; :func:`fedtrail.auditor.claims.mark_site`)."""
    sk, vis = _reason_keys(explanation_head(explanation))
    for reason, name_sk, visuals in _reasons_read():
        if sk == name_sk or vis in visuals:
            return reason
    return None


@dataclass(frozen=True, kw_only=True)
class SiteEntry:
    """Why one site got its weight: its update, score, reason, components and explanation.

    ``weight`` is the on-chain fixed-point weight (over ``WEIGHT_SCALE``); JSON carries it as a
    decimal string since it does not fit a double.
    """

    site: str
    name: str
    update: UpdateRef
    status: str
    components: Mapping[str, ComponentValue]
    score: int
    reason: int
    reason_label: str
    explanation: str
    weight: int
    weight_fraction: float

    @classmethod
    def of(
        cls,
        *,
        site: str,
        name: str,
        update: UpdateRef,
        status: Reason,
        score: int,
        reason: int,
        weight: int,
        components: Mapping[str, Any],
        explanation: str | None,
    ) -> SiteEntry:
        """The entry the aggregator writes: ``status`` is how the update was read (OK, or why it
        could not be), score/reason/weight are the chain's; components that are not JSON scalars
        are dropped, and a missing explanation falls back to the reason's name."""
        return cls(
            site=site,
            name=name,
            update=update,
            status=status.name.lower(),
            components={
                k: v
                for k, v in components.items()
                if isinstance(v, int | float | str | bool) or v is None
            },
            score=score,
            reason=reason,
            reason_label=Reason(reason).name,
            explanation=explanation or Reason(reason).name,
            weight=weight,
            weight_fraction=weight / WEIGHT_SCALE,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "name": self.name,
            "update": self.update.to_json(),
            "status": self.status,
            "components": dict(self.components),
            "score": self.score,
            "reason": self.reason,
            "reason_label": self.reason_label,
            "explanation": self.explanation,
            "weight": str(self.weight),
            "weight_fraction": self.weight_fraction,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> SiteEntry:
        u = doc["update"]
        return cls(
            site=doc["site"],
            name=doc["name"],
            update=UpdateRef(u["cid"], u["sha256"], _int(u["num_samples"], f"{where}/update")),
            status=doc["status"],
            components=dict(doc["components"]),
            score=_int(doc["score"], f"{where}/score"),
            reason=_int(doc["reason"], f"{where}/reason"),
            reason_label=doc["reason_label"],
            explanation=doc["explanation"],
            weight=int(doc["weight"]),  # the schema allows digits only
            weight_fraction=doc["weight_fraction"],
        )


@dataclass(frozen=True, kw_only=True)
class Aggregation:
    """What was aggregated: the rule's name, the resulting global model, the sites with w > 0."""

    rule: str
    global_sha256: str
    included_sites: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        # a free-form ``detail`` the schema once admitted was written by no writer; refused since
        # stop 47 (a claim no check could bind, attack a55)
        return {
            "rule": self.rule,
            "global_sha256": self.global_sha256,
            "included_sites": list(self.included_sites),
        }


@dataclass(frozen=True, kw_only=True)
class RoundMetrics:
    """A global model on the validation split; None where a metric was undefined (NaN is
    written as null).

    ``auc``, ``f1``, ``accuracy``, ``loss`` (required) use the plain decision, the most probable
    class (for two classes: class 1 when its probability exceeds 0.5). With two classes ``auc``
    and ``f1`` are class 1's ROC AUC and F1; with K > 2 classes ``auc`` is the macro
    one-vs-rest AUC (mean over the classes present in the split, each ranked by its
    probability) and ``f1`` the macro F1 over all K classes (``fedtrail.ml.metrics``). The rest
    is absent (None) in logs written before the aggregator calibrated its decision (or, for the
    recalls, before it recorded them), and written only when set:

    - ``bias``: the per-class intercept fitted on the validation split
      (``fedtrail.ml.metrics.fit_intercept``, deterministic); the calibrated decision is
      ``argmax(logits + bias)`` (``fedtrail.ml.metrics.decide``), one number per class;
    - ``threshold``: for two classes only, the probability of class 1 (of the model's own
      softmax) above which that decision predicts class 1: ``1 / (1 + exp(b1 - b0))``;
    - ``f1_calibrated``, ``balanced_accuracy_calibrated``: F1 (as ``f1``: class 1's, or macro
      for K > 2) and balanced accuracy of the calibrated decision (in-sample: fitted and scored
      on the same split);
    - ``balanced_accuracy``: of the plain decision; ``ece``: expected calibration error of the
      model's own probabilities (10 equal-width bins ``((m-1)/10, m/10]``, Guo et al. 2017);
    - ``recall``, ``recall_calibrated``: the recall of every class ``0..K-1`` under the plain
      and the calibrated decision, None for a class absent from the split (their mean over the
      present classes is the balanced accuracy). Their length is the number of classes
      (:attr:`classes`).
    """

    auc: float | None
    f1: float | None
    accuracy: float | None
    loss: float | None
    n: int | None = None
    balanced_accuracy: float | None = None
    ece: float | None = None
    threshold: float | None = None
    f1_calibrated: float | None = None
    balanced_accuracy_calibrated: float | None = None
    bias: tuple[float, ...] | None = None
    recall: tuple[float | None, ...] | None = None
    recall_calibrated: tuple[float | None, ...] | None = None

    _FIELDS: ClassVar[tuple[str, ...]] = (
        "auc",
        "f1",
        "accuracy",
        "loss",
        "n",
        "balanced_accuracy",
        "ece",
        "threshold",
        "f1_calibrated",
        "balanced_accuracy_calibrated",
        "bias",
        "recall",
        "recall_calibrated",
    )
    PER_CLASS: ClassVar[tuple[str, ...]] = ("recall", "recall_calibrated")
    """The metrics that are one number per class (None for a class absent from the split)."""
    NUMBERS: ClassVar[tuple[str, ...]] = (
        "auc",
        "f1",
        "accuracy",
        "loss",
        "balanced_accuracy",
        "ece",
        "threshold",
        "f1_calibrated",
        "balanced_accuracy_calibrated",
    )
    """The metrics that are one number (everything but ``n``, ``bias`` and :attr:`PER_CLASS`)."""
    _OPTIONAL: ClassVar[tuple[str, ...]] = NUMBERS[4:]

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "auc": self.auc,
            "f1": self.f1,
            "accuracy": self.accuracy,
            "loss": self.loss,
        }
        if self.n is not None:
            doc["n"] = self.n
        for key in self._OPTIONAL:
            value = getattr(self, key)
            if value is not None:
                doc[key] = value
        if self.bias is not None:
            doc["bias"] = list(self.bias)
        for key in self.PER_CLASS:
            values = getattr(self, key)
            if values is not None:
                doc[key] = list(values)
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str) -> RoundMetrics:
        _only(doc, cls._FIELDS, where)
        n = doc.get("n")
        bias = doc.get("bias")
        if bias is not None:
            if not isinstance(bias, list) or len(bias) < 2:
                raise InvalidLog(f"explanation log invalid at {where}/bias: not a list of 2+")
            bias = tuple(_number(b, f"{where}/bias/{i}") for i, b in enumerate(bias))
        per_class: dict[str, tuple[float | None, ...] | None] = {}
        for key in cls.PER_CLASS:
            values = doc.get(key)
            if values is not None:
                if not isinstance(values, list) or len(values) < 2:
                    raise InvalidLog(f"explanation log invalid at {where}/{key}: not a list of 2+")
                values = tuple(
                    None if v is None else _number(v, f"{where}/{key}/{i}")
                    for i, v in enumerate(values)
                )
            per_class[key] = values
        lengths = {key: len(v) for key, v in (("bias", bias), *per_class.items()) if v is not None}
        if len(set(lengths.values())) > 1:
            raise InvalidLog(
                f"explanation log invalid at {where}: one number per class, but "
                + ", ".join(f"{key} has {k}" for key, k in lengths.items())
            )
        # the schema allows numbers (or null) only
        optional = {k: None if doc.get(k) is None else float(doc[k]) for k in cls._OPTIONAL}
        return cls(
            auc=doc["auc"],
            f1=doc["f1"],
            accuracy=doc["accuracy"],
            loss=doc["loss"],
            n=None if n is None else _int(n, f"{where}/n"),
            bias=bias,
            recall=per_class["recall"],
            recall_calibrated=per_class["recall_calibrated"],
            **optional,
        )

    def decision_bias(self, classes: int) -> tuple[float, ...] | None:
        """The recorded intercept of the calibrated decision when it fits a ``classes``-class
        model (None: the log records none, or one for another number of classes)."""
        if self.bias is None or len(self.bias) != classes:
            return None
        return tuple(self.bias)

    @property
    def classes(self) -> int | None:
        """The number of classes the record's per-class figures (or bias) are for; None when it
        records none (logs written before they existed)."""
        for values in (self.recall, self.recall_calibrated, self.bias):
            if values is not None:
                return len(values)
        return None

    def get(self, name: str) -> float | None:
        """One number by name (one of :attr:`NUMBERS`, e.g. ``"auc"``, ``"threshold"``)."""
        if name not in self.NUMBERS:
            raise KeyError(name)
        value: float | None = getattr(self, name)
        return value

    @property
    def calibrated(self) -> bool:
        """Whether the log records a calibrated decision (a fitted bias)."""
        return self.bias is not None


@dataclass(frozen=True)
class MetricsPair:
    """The global model before and after the round."""

    before: RoundMetrics
    after: RoundMetrics

    def to_json(self) -> dict[str, Any]:
        return {"before": self.before.to_json(), "after": self.after.to_json()}


@dataclass(frozen=True)
class HeatmapRef:
    """One explanation heatmap (PNG) of the new global model on a probe image."""

    cid: str
    sha256: str
    caption: str

    def to_json(self) -> dict[str, Any]:
        return {"cid": self.cid, "sha256": self.sha256, "caption": self.caption}


@dataclass(frozen=True, kw_only=True)
class ModelExplanations:
    """The ``explanations`` block the aggregator writes: heatmaps on a fixed probe set.

    ``faithfulness`` (optional, written only when set, so older logs read as before): how well
    ``method``'s heatmaps on the probe set track the model, as
    ``fedtrail.ml.explain.faithfulness`` measures it: ``deletion_auc`` (lower: more faithful),
    ``insertion_auc`` (higher: more faithful), the same two areas of a seeded random pixel
    ordering (``random_deletion_auc``, ``random_insertion_auc``: chance level), and the
    ``images`` and ``steps`` they were taken over. The audit does not recompute them: the probe
    set is the aggregator's private validation data (only its hash is published), so they are
    the aggregator's statement, like the heatmaps themselves."""

    method: str
    probe_sha256: str
    probe_images: int
    images: tuple[HeatmapRef, ...]
    summary: str
    faithfulness: Mapping[str, float | int] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "method": self.method,
            "probe_sha256": self.probe_sha256,
            "probe_images": self.probe_images,
            "images": [i.to_json() for i in self.images],
            "summary": self.summary,
        }
        if self.faithfulness is not None:
            doc["faithfulness"] = dict(self.faithfulness)
        return doc


@dataclass(frozen=True, kw_only=True)
class PreviousLog:
    """The log a round's standing continues: the latest round finalized before it."""

    round: int
    cid: str
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "cid": self.cid, "sha256": self.sha256}


@dataclass(frozen=True, kw_only=True)
class Standing:
    """Each site's value accumulated across rounds (valuation with ``standing``), chained
    through the logs so an auditor re-derives it: ``before`` must equal the previous log's
    ``after`` (empty for the first round), ``after`` is ``before`` plus ``normalised`` (None in
    the warm-up round, ``valued_rounds`` 0, and in a round whose values are all zero), and
    every OK site's score follows from its ``after`` value. ``references``: the earlier
    updates this round's updates were checked against for free-riding, by label."""

    previous: PreviousLog | None
    valued_rounds: int
    before: Mapping[str, float]
    normalised: Mapping[str, float] | None
    after: Mapping[str, float]
    references: tuple[str, ...] = ()

    _FIELDS: ClassVar[tuple[str, ...]] = (
        "previous",
        "valued_rounds",
        "before",
        "normalised",
        "after",
        "references",
    )

    def to_json(self) -> dict[str, Any]:
        return {
            "previous": None if self.previous is None else self.previous.to_json(),
            "valued_rounds": self.valued_rounds,
            "before": dict(self.before),
            "normalised": None if self.normalised is None else dict(self.normalised),
            "after": dict(self.after),
            "references": list(self.references),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Standing:
        where = "standing"
        if not isinstance(doc, Mapping):
            raise InvalidLog(f"explanation log invalid at {where}: not an object")
        _only(doc, cls._FIELDS, where)
        missing = [k for k in cls._FIELDS if k not in doc]
        if missing:
            raise InvalidLog(f"explanation log invalid at {where}: missing {', '.join(missing)}")
        prev = doc["previous"]
        if prev is not None:
            if not isinstance(prev, Mapping):
                raise InvalidLog(f"explanation log invalid at {where}/previous: not an object")
            _only(prev, ("round", "cid", "sha256"), f"{where}/previous")
            prev = PreviousLog(
                round=_int(prev.get("round"), f"{where}/previous/round"),
                cid=_str(prev.get("cid"), f"{where}/previous/cid"),
                sha256=_str(prev.get("sha256"), f"{where}/previous/sha256"),
            )
        refs = doc["references"]
        if not isinstance(refs, list):
            raise InvalidLog(f"explanation log invalid at {where}/references: not a list")
        valued = _int(doc["valued_rounds"], f"{where}/valued_rounds")
        if valued < 0:
            raise InvalidLog(f"explanation log invalid at {where}/valued_rounds: negative")
        norm = doc["normalised"]
        return cls(
            previous=prev,
            valued_rounds=valued,
            before=_values(doc["before"], f"{where}/before"),
            normalised=None if norm is None else _values(norm, f"{where}/normalised"),
            after=_values(doc["after"], f"{where}/after"),
            references=tuple(_str(r, f"{where}/references") for r in refs),
        )


@dataclass(frozen=True, kw_only=True)
class RoundLog:
    """One round's explanation log (format ``fedtrail.explanation-log/1``).

    ``explanations`` is the block as JSON: format /1 leaves its shape open, so a log read back
    keeps it untyped (the aggregator writes :class:`ModelExplanations`).
    """

    round: int
    ledger: LedgerRef
    start_model: BlobRef
    settings: RoundSettings
    validation: ValidationRef
    sites: tuple[SiteEntry, ...]
    aggregation: Aggregation
    metrics: MetricsPair
    summary: str
    explanations: Mapping[str, Any] | None = None
    standing: Standing | None = None
    """Accumulated values (valuation with ``standing``); None for per-round valuation."""
    evidence: tuple[Evidence, ...] = ()
    """Signed replies contradicting the chain (Flower runs); written only when there are any,
    so a log without them keeps the bytes (and hash) it always had."""
    peer_votes: tuple[PeerVote, ...] | None = None
    """A peer round's revealed score vectors as the chain holds them (ascending validator
    order, entries aligned with the revealed updates in address order); None: not a peer round.
    The medians, reasons and validator distances follow from them
    (:mod:`fedtrail.protocol.peers`)."""

    @property
    def valuation_seed(self) -> int:
        """The valuation's seed; logs that predate ``settings.valuation.seed`` used the base
        seed plus the round."""
        seed = self.settings.valuation.seed
        return self.settings.seed + self.round if seed is None else seed

    def site(self, address: str) -> SiteEntry | None:
        """The entry of ``address`` (case-insensitive), if the log lists it."""
        for entry in self.sites:
            if entry.site.lower() == address.lower():
                return entry
        return None

    def to_json(self) -> dict[str, Any]:
        """The log as a JSON dict (NaN still in it: :meth:`to_bytes` writes those as null)."""
        doc: dict[str, Any] = {
            "format": FORMAT,
            "round": self.round,
            "ledger": self.ledger.to_json(),
            "start_model": self.start_model.to_json(),
            "settings": self.settings.to_json(),
            "validation": self.validation.to_json(),
            "sites": [s.to_json() for s in self.sites],
            "aggregation": self.aggregation.to_json(),
            "metrics": self.metrics.to_json(),
            "summary": self.summary,
        }
        if self.explanations is not None:
            doc["explanations"] = dict(self.explanations)
        if self.standing is not None:
            doc["standing"] = self.standing.to_json()
        if self.evidence:
            doc["evidence"] = [e.to_json() for e in self.evidence]
        if self.peer_votes is not None:
            doc["peers"] = {
                "votes": [
                    {"validator": v.validator, "scores": list(v.scores)} for v in self.peer_votes
                ]
            }
        return doc

    def to_bytes(self) -> bytes:
        """Validated canonical bytes (what is stored on IPFS and hashed on chain)."""
        return to_bytes(self.to_json())

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RoundLog:
        """The record of a JSON dict; validates it first (the dict may be untrusted)."""
        validate(doc)
        return cls._from_valid(doc)

    @classmethod
    def from_bytes(cls, blob: bytes) -> RoundLog:
        """Parses untrusted bytes fetched from the store; :class:`InvalidLog` says what is wrong."""
        return cls._from_valid(from_bytes(blob))

    @classmethod
    def _from_valid(cls, doc: dict[str, Any]) -> RoundLog:
        """Builds the record of a schema-valid dict, checking what the schema leaves open."""
        s = doc["settings"]
        agg = doc["aggregation"]
        sites = doc["sites"]
        seen: set[str] = set()
        for i, entry in enumerate(sites):
            # one entry per site: readers take a site's first entry (RoundLog.site), a
            # comparison keyed by address its last, so a second entry could hide a forged one
            address = entry["site"].lower()
            if address in seen:
                raise InvalidLog(
                    f"explanation log invalid at sites/{i}/site: {entry['site']} is listed twice"
                )
            seen.add(address)
        return cls(
            round=_int(doc["round"], "round"),
            ledger=LedgerRef(doc["ledger"]["address"], _int(doc["ledger"]["chain_id"], "ledger")),
            start_model=BlobRef(doc["start_model"]["cid"], doc["start_model"]["sha256"]),
            settings=RoundSettings(
                aggregation_rule=dict(s["aggregation_rule"]),
                valuation=ValuationSettings.from_json(s["valuation"]),
                model_spec=dict(s["model_spec"]),
                spec_hash=s["spec_hash"],
                seed=_int(s["seed"], "settings/seed"),
                terms=BlobRef(s["terms"]["cid"], s["terms"]["sha256"]) if "terms" in s else None,
                class_names=tuple(s.get("class_names", ())),
            ),
            validation=ValidationRef(
                doc["validation"]["sha256"], _int(doc["validation"]["images"], "validation")
            ),
            sites=tuple(SiteEntry.from_json(e, f"sites/{i}") for i, e in enumerate(sites)),
            aggregation=Aggregation(
                rule=agg["rule"],
                global_sha256=agg["global_sha256"],
                included_sites=tuple(agg["included_sites"]),
            ),
            metrics=MetricsPair(
                RoundMetrics.from_json(doc["metrics"]["before"], "metrics/before"),
                RoundMetrics.from_json(doc["metrics"]["after"], "metrics/after"),
            ),
            summary=doc["summary"],
            explanations=dict(doc["explanations"]) if "explanations" in doc else None,
            standing=Standing.from_json(doc["standing"]) if "standing" in doc else None,
            evidence=_evidence(doc.get("evidence", ())),
            peer_votes=None if "peers" not in doc else _peer_votes(doc["peers"]["votes"]),
        )


def _peer_votes(items: Any) -> tuple[PeerVote, ...]:
    return tuple(
        PeerVote(
            validator=_str(v["validator"], f"peers/votes/{i}/validator"),
            scores=tuple(_int(x, f"peers/votes/{i}/scores") for x in v["scores"]),
        )
        for i, v in enumerate(items)
    )


def _evidence(items: Any) -> tuple[Evidence, ...]:
    out = []
    for i, item in enumerate(items):
        try:
            out.append(Evidence.from_json(item))
        except InvalidEvidence as exc:
            raise InvalidLog(f"explanation log invalid at evidence/{i}: {exc}") from None
    return tuple(out)


def build_round_log(
    *,
    round_id: int,
    ledger: LedgerRef,
    start_model: BlobRef,
    settings: RoundSettings,
    validation: ValidationRef,
    sites: Sequence[SiteEntry],
    rule: str,
    global_sha256: str,
    before: RoundMetrics,
    after: RoundMetrics,
    explanations: ModelExplanations | None = None,
    standing: Standing | None = None,
    evidence: Sequence[Evidence] = (),
    peer_votes: Sequence[PeerVote] | None = None,
) -> RoundLog:
    """The log the aggregator writes at finalize: the included sites are those with on-chain
    weight > 0, in the given (aggregation) order, and the summary is derived from the rest."""
    included = tuple(s.site for s in sites if s.weight > 0)
    return RoundLog(
        round=round_id,
        ledger=ledger,
        start_model=start_model,
        settings=settings,
        validation=validation,
        sites=tuple(sites),
        aggregation=Aggregation(rule=rule, global_sha256=global_sha256, included_sites=included),
        metrics=MetricsPair(before, after),
        summary=round_summary(round_id, len(included), len(sites), rule, before.auc, after.auc),
        explanations=None if explanations is None else explanations.to_json(),
        standing=standing,
        evidence=tuple(evidence),
        peer_votes=None if peer_votes is None else tuple(peer_votes),
    )


def round_summary(
    round_id: int,
    included: int,
    sites: int,
    rule: str,
    before_auc: float | None,
    after_auc: float | None,
) -> str:
    """The log's ``summary``, derived from its other fields (the same words since the first
    log format): an auditor rebuilds it from them (``log.agrees``)."""
    return (
        f"Round {round_id}: {included} of {sites} updates aggregated with "
        f"the '{rule}' rule using the on-chain weights; validation AUC "
        f"{_auc(before_auc)} -> {_auc(after_auc)}."
    )


def summary_of(log: RoundLog) -> str:
    """The ``summary`` the log's own fields give (:func:`round_summary`)."""
    return round_summary(
        log.round,
        len(log.aggregation.included_sites),
        len(log.sites),
        log.aggregation.rule,
        log.metrics.before.auc,
        log.metrics.after.auc,
    )


def _auc(value: float | None) -> str:
    return "nan" if value is None else f"{value:.3f}"
