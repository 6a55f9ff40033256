"""The benchmarks' in-process simulation harness (scripts/bench/_sim.py) on a tiny federation:
every method gives finite metrics (plain and calibrated), the weights are the contract's rule,
runs are deterministic, the valuation runs the product path (value_round with a History carried
across rounds, metric balanced_loss, HISTORY_COMBINER), free-riders are caught.

Three sites, not two: multi-Krum scores updates only from 3 (below, it keeps them all)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.aggregation import AggregationRule
from fedtrail.ml.datasets import ImageDataset, Splits, load_bundled
from fedtrail.protocol.weights import SCORE_SCALE, onchain_weights
from fedtrail.simulation.faults import SiteFault
from fedtrail.storage.codec import Compression
from fedtrail.valuation import HISTORY_COMBINER, RoundValuation, value_round
from scripts.bench import _sim


def _balanced(ds: ImageDataset, per_class: int) -> ImageDataset:
    idx = np.concatenate([np.flatnonzero(ds.labels == c)[:per_class] for c in (0, 1)])
    return ds.subset(np.sort(idx))


@pytest.fixture(scope="module")
def tiny() -> Splits:
    s = load_bundled()
    return Splits(
        train=_balanced(s.train, 60), val=_balanced(s.val, 20), test=_balanced(s.test, 30)
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield None
    torch.set_num_threads(before)


CONFIG = _sim.SimConfig(
    sites=3,
    rounds=1,
    epochs=1,
    alpha=5.0,
    min_size=10,
    seed=3,
    faults=(SiteFault(), SiteFault(kind="label_noise", rate=0.4, seed=1), SiteFault()),
)


@pytest.mark.parametrize("method", _sim.METHODS)
def test_every_method_gives_finite_metrics(tiny: Splits, method: _sim.Method) -> None:
    res = _sim.run_method(method, CONFIG, tiny)
    assert res.method == method
    assert sum(res.site_samples) == len(tiny.train)
    for key in ("loss", "accuracy", "auc", "f1", "balanced_accuracy", "ece", "f1_calibrated"):
        assert math.isfinite(res.test[key]), key
    assert 0.0 <= res.test["auc"] <= 1.0
    assert 0.0 < res.test["threshold"] < 1.0
    if method == "local":
        assert len(res.per_site) == 3 and res.rounds == []
        assert res.test_honest is not None and math.isfinite(res.test_honest["auc"])
    else:
        (rec,) = res.rounds
        assert rec.submitted == res.site_names and not rec.skipped
        assert sum(rec.weights) == 10**18
        # the contract's rule over the sample counts and the (valuation or unit) scores
        assert rec.weights == onchain_weights(res.site_samples, rec.scores)


def test_fedavg_weights_are_the_onchain_sample_shares(tiny: Splits) -> None:
    res = _sim.run_method("fedavg", CONFIG, tiny)
    (rec,) = res.rounds
    assert rec.scores == [SCORE_SCALE] * 3
    assert rec.weights == onchain_weights(res.site_samples, [SCORE_SCALE] * 3)


def test_a_round_records_the_decision_threshold_of_its_calibrated_f1(tiny: Splits) -> None:
    # issue 12 (b), f1cal_rounds.py: the last round's threshold is the final model's
    res = _sim.run_method("fedavg", CONFIG, tiny)
    (rec,) = res.rounds
    assert 0.0 < rec.test_threshold < 1.0
    assert rec.test_threshold == res.test["threshold"]
    assert rec.test_f1_calibrated == res.test["f1_calibrated"]


def test_same_seed_same_numbers(tiny: Splits) -> None:
    for method in ("valuation", "local"):
        a = _sim.run_method(method, CONFIG, tiny)
        b = _sim.run_method(method, CONFIG, tiny)
        assert a.test == b.test
        assert [(r.scores, r.weights) for r in a.rounds] == [
            (r.scores, r.weights) for r in b.rounds
        ]
    other = _sim.run_method("fedavg", replace(CONFIG, seed=4), tiny)
    assert other.test != _sim.run_method("fedavg", CONFIG, tiny).test


def test_codec_dense_is_lossless_and_topk8_counts_fewer_bytes(tiny: Splits) -> None:
    plain = _sim.run_method("fedavg", CONFIG, tiny)
    dense_cfg = replace(CONFIG, compression=Compression(method="none"))
    dense = _sim.run_method("fedavg", dense_cfg, tiny)
    assert dense.test == plain.test
    topk_cfg = replace(CONFIG, compression=Compression(method="topk8", fraction=0.05))
    topk = _sim.run_method("fedavg", topk_cfg, tiny)
    assert plain.bytes_per_round == 0
    assert 0 < topk.bytes_per_round < 0.1 * dense.bytes_per_round


def test_krum_needs_three_sites(tiny: Splits) -> None:
    two = _sim.SimConfig(sites=2, rounds=1, min_size=10)
    with pytest.raises(ConfigError, match="at least 3 sites"):
        _sim.run_method("krum", two, tiny)


def test_valuation_carries_the_history_as_the_service_does(
    tiny: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 1 is the warm-up with no references; round 2 gets round 1's accumulated values,
    valued_rounds 1, every site's round-1 update and the global delta applied in round 1;
    round 3 those of round 2, then round 1's (stale_rounds 3), as the service names them."""
    calls: list[tuple[dict[str, object], RoundValuation]] = []

    def spy(**kwargs: object) -> RoundValuation:
        out = value_round(**kwargs)  # type: ignore[arg-type]
        calls.append((kwargs, out))
        return out

    monkeypatch.setattr(_sim, "value_round", spy)
    res = _sim.run_method("valuation", replace(CONFIG, rounds=3), tiny)
    assert len(calls) == 3
    (first, report1), (second, _), (third, _) = calls
    for kwargs in (first, second):
        assert kwargs["metric"] == "balanced_loss"
        assert kwargs["combiner"] is HISTORY_COMBINER
    h1, h2 = first["history"], second["history"]
    assert h1.valued_rounds == 0 and dict(h1.accumulated) == {} and dict(h1.references) == {}
    assert h2.valued_rounds == 1
    assert dict(h2.accumulated) == report1.accumulated
    sent1 = {c.site: c.delta for c in first["candidates"]}
    refs = dict(h2.references)
    round1 = [
        *(f"{site}'s update of round 1" for site in res.site_names),
        "the global delta of round 1",
    ]
    assert list(refs) == round1
    for site, delta in sent1.items():
        ref = refs[f"{site}'s update of round 1"]
        assert all(torch.equal(ref[k], delta[k]) for k in delta)
    round2 = [r.replace("round 1", "round 2") for r in round1]
    assert list(third["history"].references) == [*round2, *round1]
    g1, g2 = first["global_state"], second["global_state"]
    glob = refs["the global delta of round 1"]
    for k in glob:
        assert torch.allclose(g1[k] + glob[k], g2[k], atol=1e-6)
    assert res.rounds[1].accumulated is not None
    assert res.rounds[1].accumulated == calls[1][1].accumulated


def test_zero_and_stale_free_riders_get_free_rider(tiny: Splits) -> None:
    config = _sim.SimConfig(
        sites=3,
        rounds=2,
        alpha=5.0,
        min_size=10,
        seed=3,
        faults=(SiteFault(), SiteFault(kind="scale", factor=0.0), SiteFault()),
        stale=(_sim.Stale(2, "own"),),
    )
    res = _sim.run_method("valuation", config, tiny)
    assert res.site_faults == ["none", "scale", "stale_own"]
    r1, r2 = res.rounds
    # the zero delta from the start; the stale site trains in round 1, resends it in round 2
    assert r1.reasons[1] == "FREE_RIDER" and r1.reasons[2] != "FREE_RIDER"
    assert r2.reasons[1:] == ["FREE_RIDER", "FREE_RIDER"]
    assert r2.reasons[0] == "OK" and r2.scores[1:] == [0, 0]
    fed = _sim.run_method("fedavg", config, tiny)
    assert res.weight_share(["site-01", "site-02"]) < fed.weight_share(["site-01", "site-02"])


def test_a_noisy_stale_copy_carries_noise_of_the_given_norm_fresh_each_round() -> None:
    copy = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[0.0, 4.0]])}  # norm 5
    plain = _sim.Stale(1, "global")
    assert plain.label == "stale_global"
    sent = plain.resend(copy, round_id=2)
    assert all(torch.equal(sent[k], copy[k]) for k in copy)
    noisy = _sim.Stale(1, "global", noise=0.1, seed=7)
    assert noisy.label == "stale_global_noisy"
    r2, r3 = noisy.resend(copy, round_id=2), noisy.resend(copy, round_id=3)
    for sent in (r2, r3):
        assert {k: v.shape for k, v in sent.items()} == {k: v.shape for k, v in copy.items()}
        gap = math.sqrt(sum(float(((sent[k] - copy[k]) ** 2).sum()) for k in copy))
        assert gap == pytest.approx(0.5, rel=1e-5)  # 10% of the copy's norm 5 (float32 bits)
    assert not torch.equal(r2["a"], r3["a"])  # fresh noise every round
    again = noisy.resend(copy, round_id=2)
    assert all(torch.equal(again[k], r2[k]) for k in copy)  # seeded
    assert all(torch.equal(copy[k], v) for k, v in {"a": torch.tensor([3.0, 0.0])}.items())


def test_a_stale_site_must_be_an_honest_site() -> None:
    noisy = (SiteFault(), SiteFault(kind="label_noise", rate=0.4, seed=1), SiteFault())
    with pytest.raises(ConfigError, match="stale site 1"):
        _sim.SimConfig(sites=3, faults=noisy, stale=(_sim.Stale(1, "global"),))
    with pytest.raises(ConfigError, match="stale site 3"):
        _sim.SimConfig(sites=3, stale=(_sim.Stale(3, "own"),))


def _figures(*, auc: float, worst: float, share: float, fed_share: float, lower: int) -> dict:
    paired = {"n": 5, "diff_mean": auc, "diff_worst": worst}
    return {
        "seeds": [0, 1, 2, 3, 4],
        "auc": {"paired": paired, "valuation_min": 0.9, "valuation": 0.9},
        "f1_calibrated": {"paired": {"n": 5, "diff_mean": 0.03, "diff_worst": 0.0}},
        "faulty_share": {
            "valuation_mean": share,
            "fedavg_mean": fed_share,
            "seeds_lower": lower,
            "worst_ratio": share / fed_share,
        },
        "honest_zeroed": {"zeroed": 1, "total": 100},
    }


def test_the_accuracy_benchmark_checks_issue_12s_bars() -> None:
    """(b) at alpha 100 needs the noisy share at most half of FedAvg's; at alpha 1 only below
    it in 4 of 5 seeds. A miss is reported with its figures (the script then exits 1)."""
    from scripts.bench import accuracy

    good = _figures(auc=0.001, worst=-0.005, share=0.15, fed_share=0.4, lower=5)
    half = _figures(auc=0.001, worst=-0.005, share=0.25, fed_share=0.4, lower=5)
    bars = {
        name: (met, fig)
        for name, met, fig in accuracy.issue12_bars(
            [("100", "b", good), ("1", "b", half), ("100 default", "b", half)]
        )
    }
    assert bars["alpha 100 (b): noisy share at most half of FedAvg's"][0]
    assert not bars["alpha 100 default (b): noisy share at most half of FedAvg's"][0]
    assert bars["alpha 100 default (b): noisy share at most half of FedAvg's"][1] == "0.62x"
    assert "alpha 1 (b): noisy share at most half of FedAvg's" not in bars
    assert bars["alpha 1 (b): noisy share below FedAvg's, lower in >= 4 of 5 seeds"][0]
    assert accuracy._print_bars([("x", True, "")]) == 0
    assert accuracy._print_bars([("x", True, ""), ("y", False, "")]) == 1


def test_noisy_copies_are_held_to_the_free_rider_bar() -> None:
    from scripts.bench import accuracy

    paid = _figures(auc=0.0, worst=0.0, share=0.47, fed_share=0.40, lower=2)
    cut = _figures(auc=0.0, worst=0.0, share=0.15, fed_share=0.40, lower=5)
    bars = {n: m for n, m, _ in accuracy.issue12_bars([("1", "h", paid), ("100", "h", cut)])}
    assert bars["alpha 1 (h): free-riders' share at most half of FedAvg's in every seed"] is False
    assert bars["alpha 100 (h): free-riders' share at most half of FedAvg's in every seed"]


def test_small_step_attackers_are_checked_against_fedavg_and_the_clean_run() -> None:
    from scripts.bench import accuracy

    clean = _figures(auc=0.0, worst=0.0, share=0.1, fed_share=0.4, lower=5)
    clean["auc"]["valuation"] = 0.90
    attacked = _figures(auc=0.0, worst=0.0, share=0.45, fed_share=0.4, lower=0)
    attacked["auc"]["valuation"] = 0.87
    bars = {n: m for n, m, _ in accuracy.issue12_bars([("1", "a", clean), ("1", "f", attacked)])}
    assert bars["alpha 1 (f): small-step sites paid no more than FedAvg pays them"] is False
    assert bars["alpha 1 (f): global AUC within 0.02 of the clean run (a)"] is False


def test_valuation_records_the_data_free_statistics_and_credited_shares(
    tiny: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each valued round records every usable update's cosine to the coordinate-wise median
    update and its norm over the median norm (re-derived here with numpy from the updates the
    valuation saw), and the shares the standing credited (None in the warm-up round)."""
    seen: list[dict[str, dict[str, torch.Tensor]]] = []

    def spy(**kwargs: object) -> RoundValuation:
        seen.append({c.site: c.delta for c in kwargs["candidates"]})  # type: ignore[attr-defined]
        return value_round(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_sim, "value_round", spy)
    five = replace(
        CONFIG,
        sites=5,
        rounds=2,
        faults=(*(SiteFault() for _ in range(4)), SiteFault(kind="sign_flip", seed=2)),
    )
    res = _sim.run_method("valuation", five, tiny)
    assert len(seen) == 2
    for record, deltas in zip(res.rounds, seen, strict=True):
        # the statistics cover the usable updates (an update the warm-up's harm check
        # rejected has none), every update scored OK among them
        usable = set(record.cosines)
        ok = {s for s, r in zip(record.submitted, record.reasons, strict=True) if r == "OK"}
        assert ok <= usable <= set(deltas) and len(usable) >= 3
        assert set(record.norm_ratios) == usable
        rows = {
            s: np.concatenate([d[k].double().numpy().ravel() for k in d])
            for s, d in deltas.items()
            if s in usable
        }
        median = np.median(np.stack(list(rows.values())), axis=0)
        norms = {s: float(np.linalg.norm(v)) for s, v in rows.items()}
        median_norm = float(np.median(list(norms.values())))
        for s, v in rows.items():
            cos = float(v @ median) / (norms[s] * float(np.linalg.norm(median)))
            assert record.cosines[s] == pytest.approx(cos, abs=1e-9)
            assert record.norm_ratios[s] == pytest.approx(norms[s] / median_norm, rel=1e-9)
    warm, valued = res.rounds
    # the warm-up's shares are recorded too under the default warm_up_floor (0.5 since session
    # 63, h-314: below 1 the warm-up round's values are accumulated)
    assert warm.shares is not None and set(warm.shares) <= set(res.site_names)
    assert valued.shares is not None and set(valued.shares) <= set(res.site_names)
    # normalised by the round's total absolute value; credit_cosine only withholds positives
    assert math.fsum(abs(v) for v in valued.shares.values()) <= 1.0 + 1e-12


def test_server_momentum_moves_the_model_the_sites_train_from(
    tiny: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With server momentum B each round after the first starts from the previous global model
    plus B times its last change (heavy ball); B = 0 starts from the global model itself."""
    starts: list[dict[str, torch.Tensor]] = []
    real = _sim.train_local

    def spy(state, *a, **k):  # type: ignore[no-untyped-def]
        starts.append({n: v.clone() for n, v in state.items()})
        return real(state, *a, **k)

    monkeypatch.setattr(_sim, "train_local", spy)
    config = replace(CONFIG, rounds=3, faults=(SiteFault(),) * 3)
    _sim.run_method("fedavg", replace(config, server_momentum=0.5), tiny)
    with_momentum, starts[:] = list(starts), []
    _sim.run_method("fedavg", config, tiny)
    plain = list(starts)
    # round 1 (sites 0-2) is identical; each round's sites all start from one model
    assert all(torch.equal(with_momentum[0][k], plain[0][k]) for k in plain[0])
    r1, r2, r3 = (with_momentum[3 * i] for i in range(3))
    for i in range(3):
        for j in range(1, 3):
            assert all(
                torch.equal(with_momentum[3 * i][k], with_momentum[3 * i + j][k]) for k in r1
            )
    # round 2 starts at round 1's end (its start plus its aggregate, the plain run's round-2
    # start: the same updates) plus half of that change: start + 1.5 x round 1's aggregate
    moved = {k: plain[3][k] - plain[0][k] for k in r1}
    for k in r1:
        torch.testing.assert_close(r2[k], r1[k] + 1.5 * moved[k], rtol=1e-5, atol=1e-7)
    assert not all(torch.equal(r3[k], plain[6][k]) for k in r1)


def test_value_window_values_the_mean_or_sum_of_a_sites_latest_updates() -> None:
    """Issue 16's experiment: with value_window 3 the valued update is the mean (or sum) of the
    site's last three, older ones dropped; window 1 values the update itself."""
    updates = [{"w": torch.full((2,), float(v))} for v in (1.0, 2.0, 4.0, 8.0)]
    mean = _sim.SimConfig(value_window=3)
    past: list[_sim.Delta] = []
    got = [_sim._windowed(past, u, mean)["w"][0].item() for u in updates]
    assert got == pytest.approx([1.0, 1.5, 7.0 / 3.0, 14.0 / 3.0])
    assert len(past) == 3
    summed = replace(mean, value_window_sum=True)
    past = []
    assert [_sim._windowed(past, u, summed)["w"][1].item() for u in updates] == [1, 3, 7, 14]
    one = _sim.SimConfig()
    assert _sim._windowed([], updates[0], one) is updates[0]
    with pytest.raises(ConfigError):
        _sim.SimConfig(value_window=0)


def test_issue_12s_c_as_worded_sends_two_updates_at_minus_ten_and_is_held_to_cs_bars() -> None:
    """(j) is issue 12's (c) read literally (both poisoners x -10; the bench's (c) is one
    sign flip and one x10 boost): its faults and the two (c) bars, decided by its own figures."""
    from scripts.bench import accuracy

    faults = accuracy.SCENARIOS["j"].faults(3)
    assert accuracy.SCENARIOS["j"].sites == len(faults) == 10
    assert [(f.kind, f.factor) for f in faults[8:]] == [("scale", -10.0), ("scale", -10.0)]
    assert all(f.kind != "scale" for f in faults[:8])
    low = _figures(auc=0.0, worst=0.0, share=0.035, fed_share=0.28, lower=5)
    low["auc"]["valuation_min"] = 0.763
    bars = {n: m for n, m, _ in accuracy.issue12_bars([("1", "j", low)])}
    assert bars["alpha 1 (j): poisoned weight share <= 5%"] is True
    assert bars["alpha 1 (j): AUC >= 0.85 in every seed"] is False


def test_valuation_rule_norm_clip_aggregates_the_valuation_run_only(
    tiny: Splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``valuation_rule`` "norm_clip" (accuracy.py --valuation-rule, issue 12 (j)): the
    valuation run aggregates through the product's norm_clip rule at the median norm (max_norm
    unset), FedAvg through the weighted mean; the default leaves the valuation run weighted."""
    seen: list[tuple[str, str, float | None]] = []
    real = _sim.aggregate

    def spy(rule: AggregationRule, *args: object, **kwargs: object) -> object:
        seen.append((method, rule.name, rule.max_norm))
        return real(rule, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_sim, "aggregate", spy)
    clip = replace(CONFIG, valuation_rule="norm_clip")
    for method, config in (("valuation", clip), ("fedavg", clip), ("valuation", CONFIG)):
        _sim.run_method(method, config, tiny)  # type: ignore[arg-type]
    assert seen == [
        ("valuation", "norm_clip", None),
        ("fedavg", "weighted", None),
        ("valuation", "weighted", None),
    ]


def test_a_seed_option_that_names_no_seed_is_refused() -> None:
    """``--seeds 0`` is a count of zero: it used to run nothing and write an empty run that
    rendered as if measured (a helper lost a run to it); one seed is ``S-S``."""
    assert _sim.parse_seeds("3") == [0, 1, 2]
    assert _sim.parse_seeds("0-0") == [0]
    assert _sim.parse_seeds("2,5-6") == [2, 5, 6]
    for text in ("0", "3-1"):
        with pytest.raises(SystemExit) as raised:
            _sim.parse_seeds(text)
        assert raised.value.code == 2  # a usage error, as argparse's
