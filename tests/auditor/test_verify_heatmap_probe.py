"""``log.heatmaps`` binds the images the round's heatmaps explain (attack a38): the log's
``explanations`` block names the probe set by its hash and size, and the aggregator chose it from
its private split. Free per round, it could show each round only the images the new global model
classifies correctly (or the attribution method whose maps look best), and verify passed. Now a
later round's probe set and method must be the earlier rounds' (public), and with the split the
probe set must be ``probe_set`` of it (its first images of each class)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fedtrail.auditor.verify import verify_round
from fedtrail.ml.datasets import load_bundled
from fedtrail.ml.explain import probe_set
from fedtrail.simulation.federation import Federation
from tests.auditor.test_verify_components import _audit_with_log, _failed, fed
from tests.auditor.test_verify_log_fields import _only_log_schema

__all__ = ["fed"]  # the module-scoped honest federation of the components tests

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.anvil]


def _other_probe(doc: dict[str, Any]) -> tuple[str, int]:
    """The hash and size of a probe set of the split other than the one the log names: the
    split's images from the 20th on, first of each class (what a cherry-picking aggregator
    would show instead: other images of the same split)."""
    val = load_bundled().val
    probe = probe_set(val.subset(list(range(20, len(val)))), 2)
    assert probe.content_sha256() != doc["explanations"]["probe_sha256"]
    return probe.content_sha256(), len(probe)


def test_a_later_round_explaining_other_images_fails_log_heatmaps(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 2's log naming another probe set of the same split than round 1's fails
    log.heatmaps naming round 1 (before: no check failed); the honest log passes."""
    honest = verify_round(fed.ledger, fed.store, 2)
    assert honest.passed, _failed(honest)

    def edit(doc: dict[str, Any]) -> None:
        sha, n = _other_probe(doc)
        doc["explanations"]["probe_sha256"] = sha
        doc["explanations"]["probe_images"] = n

    bad = _audit_with_log(fed, 2, edit, monkeypatch)
    assert set(bad) == {"log.heatmaps"}, bad
    assert "round 1's with" in bad["log.heatmaps"], bad
    assert "the probe set and method are fixed" in bad["log.heatmaps"], bad


def test_a_later_round_explaining_with_another_method_fails_log_heatmaps(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attribution method is bound the same way: round 2 naming grad_cam after round 1's
    method fails log.heatmaps."""

    def edit(doc: dict[str, Any]) -> None:
        assert doc["explanations"]["method"] != "grad_cam"
        doc["explanations"]["method"] = "grad_cam"

    bad = _audit_with_log(fed, 2, edit, monkeypatch)
    assert set(bad) == {"log.heatmaps"}, bad
    assert "'grad_cam'" in bad["log.heatmaps"], bad


def test_round_1s_probe_set_must_be_the_splits_first_images_with_the_split(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 1 has no earlier round to be bound to: without the split a probe set the aggregator
    picked passes (its statement), with it log.heatmaps fails; the honest probe set passes
    with the split."""
    val = load_bundled().val

    def edit(doc: dict[str, Any]) -> None:
        sha, n = _other_probe(doc)
        doc["explanations"]["probe_sha256"] = sha
        doc["explanations"]["probe_images"] = n
        # one heatmap per probe image (a110); which pictures they are is the aggregator's
        images = doc["explanations"]["images"]
        doc["explanations"]["images"] = (images * n)[:n]

    bad = _audit_with_log(fed, 1, edit, monkeypatch, validation=val)
    assert "log.heatmaps" in bad, bad
    assert "is not the validation split's first images of each class" in bad["log.heatmaps"]
    monkeypatch.undo()
    assert "log.heatmaps" not in _audit_with_log(fed, 1, edit, monkeypatch)
    monkeypatch.undo()
    honest = {c.name: c for c in verify_round(fed.ledger, fed.store, 1, validation=val).checks}
    assert honest["log.heatmaps"].status == "PASS", honest["log.heatmaps"]


def test_a_later_round_without_heatmaps_fails_log_heatmaps(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack a41: round 2's log with its explanations block left out (the aggregator withholds
    the heatmaps of a model that looked bad) fails log.heatmaps naming round 1, which had them
    (before: the log claimed none and got no check); round 1's log without the block has no
    earlier round to answer to and passes."""

    def drop(doc: dict[str, Any]) -> None:
        del doc["explanations"]

    bad = _audit_with_log(fed, 2, drop, monkeypatch)
    assert set(bad) == {"log.heatmaps"}, bad
    assert "names no explanation heatmaps, but round 1's did" in bad["log.heatmaps"], bad
    monkeypatch.undo()
    assert _audit_with_log(fed, 1, drop, monkeypatch) == {}


def test_the_heatmaps_summary_is_recounted_with_the_split(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack a38 with the probe hash left honest: round 2's summary naming another count of
    correctly classified probe images than the model's fails log.heatmaps with the split (the
    model's calibrated decisions on probe_set of it, recounted), and passes without it (the
    aggregator's claim); the honest summary passes with the split."""
    val = load_bundled().val
    honest = {c.name: c for c in verify_round(fed.ledger, fed.store, 2, validation=val).checks}
    assert honest["log.heatmaps"].status == "PASS", honest["log.heatmaps"]
    info = fed.ledger.get_round(2)
    block = json.loads(fed.store.get(info.log_cid, info.log_sha256))["explanations"]
    n = block["probe_images"]
    right = int(block["summary"].split(" of ")[0])
    other = f"{(right + 1) % (n + 1)} of {n} probe images classified correctly"

    def edit(doc: dict[str, Any]) -> None:
        doc["explanations"]["summary"] = other

    bad = _audit_with_log(fed, 2, edit, monkeypatch, validation=val)
    assert "log.heatmaps" in bad, bad
    assert f"summary {other!r} is not {block['summary']!r}" in bad["log.heatmaps"], bad
    monkeypatch.undo()
    assert "log.heatmaps" not in _audit_with_log(fed, 2, edit, monkeypatch)


@pytest.mark.parametrize("where", ["block", "image"])
def test_a_key_no_round_writes_in_the_explanations_fails_log_schema(
    where: str, fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack a55: the explanations block was read only for the fields a check uses, so an
    extra key (a claim that a paid site was flagged as a poisoner) passed (then log.heatmaps
    failed it); since stop 47 the schema refuses it, in the block or in one heatmap's entry:
    log.schema fails, and nothing else but the checks the refused log takes away."""

    def edit(doc: dict[str, Any]) -> None:
        block = doc["explanations"]
        target = block if where == "block" else block["images"][0]
        target["flagged"] = [doc["sites"][0]["site"]]

    bad = _audit_with_log(fed, 2, edit, monkeypatch, unchecked=True)
    assert _only_log_schema(bad), bad
    at = "explanations" if where == "block" else "explanations/images/0"
    assert bad["log.schema"] == (
        f"explanation log invalid at {at}: Additional properties are not allowed "
        "('flagged' was unexpected)"
    )


def test_a_heatmap_list_shorter_than_the_probe_set_fails_log_heatmaps(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack a110 ``subset``: round 2's log lists its heatmaps but the last (say the ones the
    model gets wrong), probe hash, size, method and summary honest. The writer lists one
    heatmap per probe image; before, the shorter list passed every check."""

    def edit(doc: dict[str, Any]) -> None:
        doc["explanations"]["images"] = doc["explanations"]["images"][:-1]

    bad = _audit_with_log(fed, 2, edit, monkeypatch)
    info = fed.ledger.get_round(2)
    n = json.loads(fed.store.get(info.log_cid, info.log_sha256))["explanations"]["probe_images"]
    assert n > 1
    assert set(bad) == {"log.heatmaps"}, bad
    assert f"lists {n - 1} heatmap(s) for a probe set of {n} image(s)" in bad["log.heatmaps"]


def test_a_heatmap_listed_many_times_is_fetched_once(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack a110 ``repeat``: round 2's log lists its first heatmap 200 more times. Before,
    log.heatmaps fetched and hashed every entry (a 32 MB log lists ~200,000 of a 4 MB image:
    hours of audit) and passed; now it fails on the count, and each distinct image is fetched
    once."""
    import fedtrail.auditor.verify as verify_mod

    fetched: list[str] = []
    real = verify_mod._fetch

    def counting(store: Any, cid: str, sha256: str, max_bytes: int | None = None) -> Any:
        fetched.append(cid)
        return real(store, cid, sha256, max_bytes)

    def edit(doc: dict[str, Any]) -> None:
        images = doc["explanations"]["images"]
        doc["explanations"]["images"] = images + [images[0]] * 200

    monkeypatch.setattr(verify_mod, "_fetch", counting)
    bad = _audit_with_log(fed, 2, edit, monkeypatch)
    assert set(bad) == {"log.heatmaps"}, bad
    assert "heatmap(s) for a probe set of" in bad["log.heatmaps"], bad
    info = fed.ledger.get_round(2)
    doc = json.loads(fed.store.get(info.log_cid, info.log_sha256))
    heatmaps = {i["cid"] for i in doc["explanations"]["images"]}
    assert sum(c in heatmaps for c in fetched) == len(heatmaps), len(fetched)


def test_a_log_of_many_unusable_heatmaps_stops_fetching_after_the_failures_shown(
    fed: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The distinct images are fetched several at a time (issue 18), but as the check reads
    them: a log naming 60 distinct unusable images (one heatmap's CID under 60 wrong sha256s)
    fails log.heatmaps with the rest "not fetched", after at most HEATMAP_FAILURES_SHOWN plus
    the 2 * FETCH_THREADS requested ahead, not 60."""
    import fedtrail.auditor.verify as verify_mod

    fetched: list[str] = []
    real = verify_mod._fetch

    def counting(store: Any, cid: str, sha256: str, max_bytes: int | None = None) -> Any:
        fetched.append(sha256)
        return real(store, cid, sha256, max_bytes)

    def edit(doc: dict[str, Any]) -> None:
        first = doc["explanations"]["images"][0]
        doc["explanations"]["images"] = [{**first, "sha256": f"{k + 1:064x}"} for k in range(60)]

    monkeypatch.setattr(verify_mod, "_fetch", counting)
    bad = _audit_with_log(fed, 2, edit, monkeypatch)
    assert set(bad) == {"log.heatmaps"}, bad
    assert "more not fetched" in bad["log.heatmaps"], bad
    assert "bytes do not match the sha256 the log names" in bad["log.heatmaps"], bad
    wrong = [s for s in fetched if s.startswith("0" * 40)]
    limit = verify_mod.HEATMAP_FAILURES_SHOWN + 2 * verify_mod.FETCH_THREADS
    assert verify_mod.HEATMAP_FAILURES_SHOWN - 1 <= len(wrong) <= limit, len(wrong)
