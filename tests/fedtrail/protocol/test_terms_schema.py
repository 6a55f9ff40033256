"""The round terms' JSON Schema (``fedtrail/schemas/round-terms.schema.json``): real and fully
optioned terms validate against it, it refuses what the reader refuses, its fields are the code's,
and the README's field-by-field section names every one of them."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, fields
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fedtrail.errors import FedtrailError
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.ml.models import ModelSpec
from fedtrail.protocol.roundlog import ExplanationProbe, ValuationSettings
from fedtrail.protocol.terms import DuplicateRule, Personalisation, PrivacyTerms, RoundTerms
from fedtrail.valuation.combine import Combiner

DATA = Path(__file__).parent / "data"
README = Path(__file__).resolve().parents[3] / "README.md"
REAL = DATA / "round-terms-real.json"
"""Round 1's terms of a testnet_demo.sh run (2 sites, 2026-12-04), as stored."""


def schema() -> dict[str, Any]:
    text = resources.files("fedtrail").joinpath("schemas/round-terms.schema.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


def validator() -> Any:
    cls = jsonschema.validators.validator_for(schema())
    cls.check_schema(schema())
    return cls(schema())


def full_terms() -> RoundTerms:
    """Terms with every optional field set: a peer round of a BatchNorm-free densenet with a
    statistics rule, privacy, personalisation and class names."""
    spec = ModelSpec(arch="densenet121", image_size=32, norm="group", input_norm="zscore")
    valuation = ValuationSettings(
        method="shapley",
        metric="balanced_loss",
        seed=8,
        explanation_check=True,
        standing=True,
        combiner=asdict(Combiner()),
        large_game="linear_shapley",
        mode="peers",
        quorum=2,
        validator_game="loo",
        explanation_probe=ExplanationProbe(cid="QmProbe", sha256="cd" * 32, images=32),
        public_screen=True,
        references="weighted",
    )
    return RoundTerms(
        round=7,
        aggregation_rule=AggregationRule().to_terms(statistics=True),
        valuation=valuation.to_json(),
        model_spec=spec.to_json(),
        spec_hash=spec.spec_hash(),
        seed=1,
        validation_sha256="ab" * 32,
        validation_images=270,
        commit_seconds=60,
        reveal_seconds=30,
        class_names=("normal", "pneumonia"),
        personalisation=Personalisation(method="fedbn", steps=20, lr=0.05),
        privacy=PrivacyTerms(delta=1e-5, required=True),
        score_commit_seconds=30,
        score_reveal_seconds=30,
        initial_model="deployment",
        initial_salt="0f" * 32,
        duplicates=DuplicateRule(white_noise_dp_cosine=0.5),  # the opt-in key (a100)
    )


def test_real_terms_validate() -> None:
    """The stored bytes of a real round's terms parse, re-encode to themselves and validate."""
    blob = REAL.read_bytes()
    terms = RoundTerms.from_bytes(blob)
    assert terms.to_bytes() == blob
    # written before scaled_cosine: the rule of its day, cosine and distance together
    assert terms.duplicates == DuplicateRule(
        scaled_cosine=None,
        support_cosine=None,
        support_overlap=None,
        white_noise_z=None,
        shared_tensor=None,
        either_order=None,
        white_noise_dp_cosine=None,
    )
    validator().validate(json.loads(blob))


def test_terms_with_every_optional_field_validate() -> None:
    """The schema covers every field the code writes (it refuses unknown ones at every level)."""
    doc = json.loads(full_terms().to_bytes())
    assert {"class_names", "personalisation", "privacy", "initial_model", "initial_salt"} <= set(
        doc
    )
    assert {"score_commit_seconds", "statistics", "norm", "mode"} <= _keys(doc)
    assert doc["duplicates"]["white_noise_dp_cosine"] == 0.5
    validator().validate(doc)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("windows",), None),  # a required field missing
        (("initial_model",), "legacy"),
        (("initial_salt",), "0F" * 32),
        (("initial_model",), "deployment"),  # without its initial_salt
        (("windows", "reveal_seconds"), "30"),
        (("windows", "score_commit_seconds"), 30),  # without its score_reveal_seconds
        (("duplicates", "cosine"), 0.0),
        (("duplicates", "scaled_cosine"), 1.5),
        (("model_spec", "depth"), 18),  # an unknown key
        (("valuation", "combiner", "max_norm_zz"), 1.0),
        (("spec_hash",), "AB" * 32),
        (("aggregation_rule", "trim_ratio"), 0.5),  # AggregationRule's ranges
        (("aggregation_rule", "trim_ratio"), -0.1),
        (("aggregation_rule", "max_norm"), 0.0),
        (("aggregation_rule", "krum_m"), 0),
        (("aggregation_rule", "krum_f"), -1),
    ],
)
def test_the_schema_refuses_what_readers_refuse(path: tuple[str, ...], value: object) -> None:
    """Each change makes terms that ``RoundTerms.from_bytes`` or the node's own types refuse;
    the schema refuses them too."""
    doc = json.loads(REAL.read_bytes())
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    assert list(validator().iter_errors(doc)), path


def test_the_schema_fields_are_the_codes() -> None:
    """The nested objects list exactly the fields of the types that read them."""
    props = schema()["properties"]
    assert set(props["model_spec"]["properties"]) == {f.name for f in fields(ModelSpec)}
    assert set(props["aggregation_rule"]["properties"]) == {f.name for f in fields(AggregationRule)}
    valuation = props["valuation"]["properties"]
    assert set(valuation) == set(ValuationSettings._FIELDS)
    assert set(valuation["combiner"]["properties"]) == {f.name for f in fields(Combiner)}
    assert set(props["duplicates"]["properties"]) == {f.name for f in fields(DuplicateRule)}


def test_the_readme_names_every_field() -> None:
    """The README's *round terms, field by field* has one bullet per top-level field, and that
    bullet names each of the field's own fields (the combiner's in the valuation's bullet)."""
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- terms-fields -->")
    section = text[start : text.index("### Wire format", start)]
    bullets = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^- `([a-z_]+)`.*?(?=^- |^\s*$)", section, re.M | re.S)
    }
    props = schema()["properties"]
    assert set(bullets) == set(props)
    for name, prop in props.items():
        for child, sub in prop.get("properties", {}).items():
            assert f"`{child}`" in bullets[name], (name, child)
            for grandchild in sub.get("properties", {}):
                assert f"`{grandchild}`" in bullets[name], (name, child, grandchild)


def _keys(doc: Any) -> set[str]:
    if not isinstance(doc, dict):
        return set()
    return set(doc) | {k for v in doc.values() for k in _keys(v)}


def _integer_paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    kind = node.get("type")
    own = [prefix] if kind == "integer" or (isinstance(kind, list) and "integer" in kind) else []
    return own + [
        path
        for key, child in node.get("properties", {}).items()
        for path in _integer_paths(child, (*prefix, key))
    ]


def test_every_integer_field_refuses_a_float() -> None:
    """``30.0`` where the schema says integer: JSON Schema's ``integer`` accepts it (its data
    model counts a number with a zero fraction as an integer; the schema's description says
    so), so the readers must refuse it: ``RoundTerms.from_bytes`` for its own fields, the
    node's types for the blocks it rebuilds (``aggregation_rule``, ``valuation``,
    ``model_spec``). Every integer field of fully optioned terms, written as a float, is
    refused by one of them."""
    doc = json.loads(full_terms().to_bytes())
    doc["aggregation_rule"]["krum_m"] = 2  # null in full_terms: an integer to turn into 2.0
    paths = _integer_paths(schema())
    assert len(paths) >= 15, paths
    for path in paths:
        changed = json.loads(json.dumps(doc))
        parent = changed
        for key in path[:-1]:
            parent = parent[key]
        assert type(parent[path[-1]]) is int, path
        parent[path[-1]] = float(parent[path[-1]])
        validator().validate(changed)  # the schema cannot tell 30.0 from 30
        blob = json.dumps(changed, sort_keys=True, separators=(",", ":")).encode()
        with pytest.raises((FedtrailError, TypeError, ValueError)):
            terms = RoundTerms.from_bytes(blob)
            AggregationRule.from_terms(terms.aggregation_rule)
            ModelSpec(**terms.model_spec)
            ValuationSettings.from_json(terms.valuation)


@pytest.mark.parametrize("scope", [0, 1, 2, 3, -1])
def test_the_schema_takes_the_warm_up_scopes_the_combiner_takes(scope: int) -> None:
    """``warm_up_scope`` 2 (opt-in since session 64) is in the published schema as in
    :class:`Combiner`; a value the combiner refuses is refused by the schema too."""
    try:
        Combiner(warm_up_scope=scope)
        takes = True
    except FedtrailError:
        takes = False
    doc = json.loads(REAL.read_bytes())
    doc["valuation"]["combiner"]["warm_up_scope"] = scope
    assert (not list(validator().iter_errors(doc))) == takes, scope
    assert takes == (scope in (0, 1, 2))
