"""scripts/bench/valuation_trace.py on a saved accuracy run: the per-site rows and the summary
come from the recorded diagnostics (a hand-made run whose numbers are known)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench" / "valuation_trace.py"


def _round(n: int, cos: dict[str, float], norms: dict[str, float]) -> dict[str, object]:
    return {
        "round": n,
        "submitted": list(cos),
        "scores": [1_000_000] * len(cos),
        "shares": None if n == 1 else {s: 0.0 for s in cos},
        "cosines": cos,
        "norm_ratios": norms,
    }


def _run(tmp_path: Path) -> Path:
    names = ["site-00", "site-01", "site-02"]
    cosines = [
        {"site-00": 0.9, "site-01": -0.8, "site-02": -0.95},
        {"site-00": 0.8, "site-01": -0.75, "site-02": 0.1},
        {"site-00": 0.7, "site-01": -0.9, "site-02": -0.99},
    ]
    norms = [
        {"site-00": 1.0, "site-01": 2.0, "site-02": 9.0},
        {"site-00": 1.0, "site-01": 4.0, "site-02": 12.0},
        {"site-00": 1.0, "site-01": 0.5, "site-02": 10.0},
    ]
    run = {
        "method": "valuation",
        "seed": 7,
        "test": {"auc": 0.9},
        "site_names": names,
        "site_samples": [10, 20, 30],
        "site_faults": ["none", "none", "scale"],
        "rounds": [
            _round(i + 1, c, n) for i, (c, n) in enumerate(zip(cosines, norms, strict=True))
        ],
    }
    # round 3's records: the median (-0.2) and site-01's are negative
    run["rounds"][2]["accumulated"] = {"site-00": -0.1, "site-01": -0.2, "site-02": -0.3}
    old = dict(run, seed=8, rounds=[{"round": 1, "submitted": names, "scores": [0, 0, 0]}])
    doc = {"settings": {"alpha": 1.0}, "scenarios": {"c": {"runs": [run, old]}}}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(doc))
    return path


def test_summary_reads_the_recorded_statistics(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(_run(tmp_path)), "--summary-only"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Over 1 valuation run(s)" in out  # the run without diagnostics is skipped
    # honest norms 1, 1, 1, 2, 4, 0.5: median (nearest rank) 1.00, max 4.00
    assert "honest norm / median norm (6 updates): median 1.00" in out
    assert "max 4.00" in out
    assert "scale norm / median norm (3 updates): min 9.00, median 10.00" in out
    # site-01 is below -0.7 in all three rounds; site-02 in rounds 1 and 3, not 2
    assert "longest honest streak below cosine -0.7: 3 round(s)" in out
    assert "site-01, lowest cosine -0.90" in out
    # valued rounds 2-3, honest site-00 and site-01: site-01 below -0.7 in both, and in round 3
    # its record and the median record are negative
    assert (
        "alpha 1 (c): honest site-rounds (valued rounds) below cosine -0.7: 2/4; of them with a "
        "negative record beside a negative median record (where relief_cosine acts): 1"
    ) in out
    assert "site-02 (scale): longest streak 1, lowest cosine -0.99" in out


def test_rows_show_each_round(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(_run(tmp_path)), "--seed", "7"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("site-02"))
    assert line.split()[-3:] == ["-0.95", "+0.10", "-0.99"]


def test_no_diagnostics_is_a_usage_error(tmp_path: Path) -> None:
    path = _run(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "--seed", "8"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "no valuation run with recorded diagnostics" in proc.stderr


def _what_if_run(tmp_path: Path, d_norms: tuple[float, ...] = (3.0, 3.0, 3.0)) -> Path:
    """Four sites of 10 samples: honest A and B, C sign-flipped (cosine -0.9, its positive
    value withheld by credit_cosine), D scaled (``d_norms`` times the median norm, one a
    round); round 1 is the warm-up (no shares), every recorded score full."""
    names = ["A", "B", "C", "D"]
    cos = {"A": 0.9, "B": 0.8, "C": -0.9, "D": 0.9}
    values = {"A": 0.2, "B": 0.3, "C": 0.5, "D": 0.0}

    def rnd(n: int) -> dict[str, object]:
        return {
            "round": n,
            "submitted": names,
            "scores": [1_000_000] * 4,
            "weights": [25 * 10**16] * 4,
            "skipped": False,
            "shares": None if n == 1 else {"A": 0.2, "B": 0.3, "C": 0.0, "D": 0.0},
            "cosines": cos,
            "norm_ratios": {"A": 1.0, "B": 1.0, "C": 1.0, "D": d_norms[n - 1]},
            "values": values,
        }

    run = {
        "method": "valuation",
        "seed": 7,
        "test": {"auc": 0.9},
        "site_names": names,
        "site_samples": [10] * 4,
        "site_faults": ["none", "none", "sign_flip", "scale"],
        "rounds": [rnd(n) for n in range(1, len(d_norms) + 1)],
    }
    doc = {"settings": {"alpha": 1.0}, "scenarios": {"c": {"runs": [run]}}}
    path = tmp_path / "whatif.json"
    path.write_text(json.dumps(doc))
    return path


def test_what_if_replays_the_candidate_rules(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(_what_if_run(tmp_path)), "--summary-only", "--what-if"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = {x.split(":")[0].strip(): x for x in out.splitlines() if "faulty share mean" in x}
    # today's rule: C's +0.5 withheld (0), nobody demoted: C and D hold half the weight
    assert "faulty share mean 0.5000, honest zeroed 0/6" in lines["recorded rule"]
    assert "(recorded 0.500)" in lines["recorded rule"]
    # withheld as -0.5: C reaches -demote_scale after round 2, so rounds 2-3 pay D alone of 3
    assert "faulty share mean 0.3889" in lines["withheld negative"]
    # D's running median ratio 3 > 2.5 from its third update: zeroed in round 3 only
    assert "faulty share mean 0.4444" in lines["norm persist 2.5"]
    # both: round 2 pays D (1/3), round 3 neither
    assert "faulty share mean 0.2778, honest zeroed 0/6" in lines["both (2.5)"]
    # boost_clip 0.5: D is 0.9 x 3 = 2.7 median norms along the consensus, over the bound of 2,
    # so it keeps (2 / 2.7)^2 of its score in every round (the warm-up too): C and D hold
    # (1 + 0.5487) / 3.5487 of the weight; off, the recorded half
    assert "faulty share mean 0.4364, honest zeroed 0/6" in lines["boost_clip 0.5"]
    assert "faulty share mean 0.5000" in lines["boost_clip 0 (off)"]
    # a higher bound spares D
    args = [str(_what_if_run(tmp_path)), "--summary-only", "--what-if", "--norm-persist", "3.5"]
    higher = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert any(
        x.strip().startswith("norm persist 3.5: faulty share mean 0.5000")
        for x in higher.splitlines()
    )


def test_norm_window_reads_only_the_latest_updates(tmp_path: Path) -> None:
    path = _what_if_run(tmp_path, d_norms=(9.0, 9.0, 1.0, 1.0))

    def norm_line(*extra: str) -> str:
        out = subprocess.run(
            [sys.executable, str(SCRIPT), str(path), "--summary-only", "--what-if", *extra],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return next(x for x in out.splitlines() if x.strip().startswith("norm persist"))

    # all updates: medians 9 (round 3) and 5 (round 4), D zeroed in both: (.5+.5+1/3+1/3)/4
    assert "faulty share mean 0.4167" in norm_line()
    # the latest 3: round 4 reads 9, 1, 1 (median 1), so D is paid again: (.5+.5+1/3+.5)/4
    assert "faulty share mean 0.4583" in norm_line("--norm-window", "3")


def test_oracle_rows_bound_what_recognising_the_faulty_sites_could_reach(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(_what_if_run(tmp_path)), "--summary-only", "--what-if"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = {
        x.split(": faulty share")[0].strip(): x for x in out.splitlines() if "faulty share" in x
    }
    # the warm-up pays C and D half the weight; from round 2 on D (scale) is zeroed and C holds
    # 1/3: (1/2 + 1/3 + 1/3) / 3
    assert (
        "faulty share mean 0.3889, honest zeroed 0/6" in lines["oracle: scale zeroed from round 2"]
    )
    assert "faulty share mean 0.3333" in lines["oracle: scale zeroed from round 1"]
    # both zeroed from round 2: only the warm-up's half is left, (1/2 + 0 + 0) / 3
    assert (
        "faulty share mean 0.1667, honest zeroed 0/6"
        in lines["oracle: scale+sign_flip zeroed from round 2"]
    )


def test_rows_show_each_rounds_weight_share(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(_what_if_run(tmp_path))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    weights = [x.split() for x in out.splitlines() if x.strip().startswith("weight")]
    assert len(weights) == 4  # one row per site
    assert all(row[1:] == ["0.250", "0.250", "0.250"] for row in weights)


def _norm_rules_run(tmp_path: Path, *, screened_first: bool = False) -> Path:
    """Four sites of 10 samples, every cosine positive: honest A and B, C valued below zero
    (-0.1, then -0.2 of the round's share), D three median norms long, valued +0.4 in round 2
    and -0.2 in round 3; with ``screened_first`` D is rejected by a screen in the warm-up (a
    norm ratio, no value, score 0). Round 2 carries a game_probe record of A with a negative
    slope."""
    names = ["A", "B", "C", "D"]
    values = [
        {"A": 0.2, "B": 0.3, "C": -0.1, "D": 0.4},
        {"A": 0.2, "B": 0.3, "C": -0.1, "D": 0.4},
        {"A": 0.3, "B": 0.3, "C": -0.2, "D": -0.2},
    ]
    if screened_first:
        values[0] = {"A": 0.2, "B": 0.3, "C": -0.1}
    rounds = []
    for n, v in enumerate(values, start=1):
        scores = [1_000_000 if s in v else 0 for s in names]
        rounds.append(
            {
                "round": n,
                "submitted": names,
                "scores": scores,
                "weights": [10 * x for x in scores],
                "skipped": False,
                "shares": None if n == 1 else v,
                "cosines": {"A": 0.9, "B": 0.8, "C": 0.5, "D": 0.9},
                "norm_ratios": {"A": 1.0, "B": 1.0, "C": 1.0, "D": 3.0},
                "values": v,
            }
        )
    run = {
        "method": "valuation",
        "seed": 7,
        "test": {"auc": 0.9},
        "site_names": names,
        "site_samples": [10] * 4,
        "site_faults": ["none", "none", "sign_flip", "scale"],
        "rounds": rounds,
    }
    probe = [{"run": 0, "round": 2, "site": "A", "samples": 10, "slope": -0.01}]
    doc = {"settings": {"alpha": 1.0}, "scenarios": {"c": {"runs": [run]}}, "game_probe": probe}
    path = tmp_path / "norm_rules.json"
    path.write_text(json.dumps(doc))
    return path


def _what_if_lines(path: Path, *extra: str) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "--summary-only", "--what-if", *extra],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {x.split(": faulty share")[0].strip(): x for x in out.splitlines() if "faulty sh" in x}


def test_norm_and_slope_rules_replay_by_hand(tmp_path: Path) -> None:
    lines = _what_if_lines(_norm_rules_run(tmp_path))
    # today's rule: C at 0.8 then 0.4 of its score, D full: (1/2 + 18/38 + 14/34) / 3
    assert "faulty share mean 0.4618, honest zeroed 0/6" in lines["recorded rule"]
    # credit_norm 2: D's +0.4 withheld, its -0.2 demotes it to 0.6 in round 3:
    # (1/2 + 18/38 + 10/30) / 3
    assert "faulty share mean 0.4357" in lines["credit_norm 2"]
    # harm_norm 1: D's -0.2 counts 3 times: -0.6 against its +0.4, the same 0.6 in round 3
    assert "faulty share mean 0.4357" in lines["harm_norm 1"]
    # harm_norm 2 alone: -0.3 against +0.4 leaves D's record positive: today's figure
    assert "faulty share mean 0.4618" in lines["harm_norm 2"]
    # both at 2: D's record 0, then -0.3: 0.4 of its score in round 3: (1/2 + 18/38 + 8/28) / 3
    assert "faulty share mean 0.4198" in lines["credit_norm + harm_norm 2"]
    # slope negative: A's round-2 share counts -0.2 (score 0.6 that round), back in round 3:
    # (1/2 + 18/34 + 14/34) / 3
    assert "faulty share mean 0.4804, honest zeroed 0/6" in lines["slope negative"]
    # no screen rejected anyone: the strike rule changes nothing
    assert "faulty share mean 0.4618" in lines["screened harmful 1"]


def test_screened_harmful_is_a_strike_a_later_positive_share_may_not_undo(
    tmp_path: Path,
) -> None:
    lines = _what_if_lines(_norm_rules_run(tmp_path, screened_first=True))
    # D rejected in the warm-up (C holds 1/3), then full again: (1/3 + 18/38 + 14/34) / 3
    assert "faulty share mean 0.4063" in lines["recorded rule"]
    # strike 0.5: D's record -0.5 + 0.4 = -0.1 (0.8), then -0.3 (0.4), as C's:
    # (1/3 + 16/36 + 8/28) / 3
    assert "faulty share mean 0.3545" in lines["screened harmful 0.5"]
    # strike 1: -0.6 and -0.8, D scores 0 in rounds 2-3: (1/3 + 8/28 + 4/24) / 3
    assert "faulty share mean 0.2619, honest zeroed 0/6" in lines["screened harmful 1"]


def test_decomposition_splits_each_faulty_sites_share_by_round_and_score(tmp_path: Path) -> None:
    """Three closed rounds of four 10-sample sites: C (sign_flip) and D (scale) full in
    rounds 1-2 (0.25 of each round); in round 3 C scores 0 and D half (weights 10, 10, 0, 5:
    0.2 of the round), so D's parts are 0.25/3 (round 1), 0.25/3 (full) and 0.2/3 (demoted)."""
    path = _norm_rules_run(tmp_path)
    doc = json.loads(path.read_text())
    last = doc["scenarios"]["c"]["runs"][0]["rounds"][2]
    last["scores"] = [1_000_000, 1_000_000, 0, 500_000]
    last["weights"] = [10 * x for x in last["scores"]]
    path.write_text(json.dumps(doc))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "--summary-only"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert (
        "alpha 1 (c) seed 7 C (sign_flip, 10 samples): 0.1667 of the mean share: round 1 0.0833, "
        "later rounds at full score 0.0833, demoted 0.0000; paid 0 in 1 later round(s)"
    ) in out
    assert (
        "alpha 1 (c) seed 7 D (scale, 10 samples): 0.2333 of the mean share: round 1 0.0833, "
        "later rounds at full score 0.0833, demoted 0.0667; paid 0 in 0 later round(s)"
    ) in out


def test_weight_factor_rules_replay_by_hand(tmp_path: Path) -> None:
    # _what_if_run: A, B, C at the median norm, D at 3x; C points against (cosine -0.9)
    lines = _what_if_lines(_what_if_run(tmp_path))
    # max_norm_ratio 2: D keeps 2/3 of its score in every round: (1 + 2/3) / (3 + 2/3)
    assert "faulty share mean 0.4545, honest zeroed 0/6, cut 0" in lines["max_norm_ratio 2"]
    # power 2: (2/3)^2 = 4/9: (1 + 4/9) / (3 + 4/9)
    assert "faulty share mean 0.4194, honest zeroed 0/6, cut 0" in lines["max_norm_ratio 2 power 2"]
    # against 0.5: C (below credit_cosine -0.7) keeps half: (0.5 + 1) / 3.5
    assert "faulty share mean 0.4286, honest zeroed 0/6, cut 0" in lines["against 0.5"]
    # both: (0.5 + 4/9) / (2.5 + 4/9)
    assert "faulty share mean 0.3208" in lines["against 0.5 + max_norm_ratio 2 power 2"]


def test_an_honest_update_cut_by_a_weight_factor_is_counted(tmp_path: Path) -> None:
    path = _what_if_run(tmp_path)
    doc = json.loads(path.read_text())
    for r in doc["scenarios"]["c"]["runs"][0]["rounds"]:
        r["norm_ratios"]["A"] = 4.0  # honest A at 4x the median norm in every round
    path.write_text(json.dumps(doc))
    lines = _what_if_lines(path)
    assert "honest zeroed 0/6, cut 3" in lines["max_norm_ratio 2"]
    assert "honest zeroed 0/6, cut 0" in lines["against 0.5"]


def test_loo_rules_turn_a_withheld_share_into_the_leave_one_out_loss(tmp_path: Path) -> None:
    path = _what_if_run(tmp_path)
    doc = json.loads(path.read_text())
    # game_probe records (accuracy.py --game-probe): C's leave-one-out gain -0.5 in rounds 2-3
    # (the rounds' values sum to 1 in absolute value, so its share is -0.5), A's +0.1
    doc["game_probe"] = [
        {"run": 0, "round": n, "site": s, "slope": None, "loo": loo}
        for n in (2, 3)
        for s, loo in (("A", 0.1), ("C", -0.5))
    ]
    path.write_text(json.dumps(doc))
    lines = _what_if_lines(path)
    # C's record -0.5 after round 2 (demote_scale): 0 in rounds 2-3, D 1/3 of the weight;
    # round 1 as recorded (C and D half): (1/2 + 1/3 + 1/3) / 3
    assert "faulty share mean 0.3889, honest zeroed 0/6" in lines["loo withheld"]
    assert "faulty share mean 0.3889, honest zeroed 0/6" in lines["loo negative (any)"]
    # without the records the rows are today's rule
    plain = _what_if_lines(_what_if_run(tmp_path))
    assert "faulty share mean 0.5000" in plain["loo withheld"]


def _sinking_run(tmp_path: Path) -> Path:
    """Honest A, B and E, faulty D (10 samples each), every cosine positive: E's shares are
    -0.4 in rounds 2-4 and +0.3 in round 5 (round 1 is the warm-up)."""
    names = ["A", "B", "D", "E"]
    e_values = [-0.4, -0.4, -0.4, -0.4, 0.3]
    rounds = []
    for n, e in enumerate(e_values, start=1):
        values = {"A": 0.3, "B": 0.3, "D": 0.0 if e < 0 else 0.1, "E": e}
        rounds.append(
            {
                "round": n,
                "submitted": names,
                "scores": [1_000_000] * 4,
                "weights": [10**6] * 4,
                "skipped": False,
                "shares": None if n == 1 else values,
                "cosines": {"A": 0.9, "B": 0.8, "D": 0.7, "E": 0.6},
                "norm_ratios": {"A": 1.0, "B": 1.0, "D": 1.0, "E": 1.0},
                "values": values,
            }
        )
    run = {
        "method": "valuation",
        "seed": 7,
        "test": {"auc": 0.9},
        "site_names": names,
        "site_samples": [10] * 4,
        "site_faults": ["none", "none", "scale", "none"],
        "rounds": rounds,
    }
    doc = {"settings": {"alpha": 3.0}, "scenarios": {"a": {"runs": [run]}}}
    path = tmp_path / "sinking.json"
    path.write_text(json.dumps(doc))
    return path


def test_record_floor_and_decay_let_a_sunk_record_climb_back(tmp_path: Path) -> None:
    lines = _what_if_lines(_sinking_run(tmp_path))
    # today's rule: E's record -0.4 (score 0.2), -0.8, -1.2, -0.9: zeroed in rounds 3-5
    assert "honest zeroed 3/15" in lines["recorded rule"]
    # floor 0.5: -0.4, then -0.8 and -0.9 each kept at -0.5 (score 0 either way), then
    # -0.5 + 0.3 = -0.2: score 0.6 in round 5
    assert "honest zeroed 2/15" in lines["record floor 0.5"]
    # floor 1: -0.4, -0.8, -1.2 kept at -1, then -0.7: still 0
    assert "honest zeroed 3/15" in lines["record floor 1"]
    # decay 0.5: -0.4, -0.6, -0.7, -0.35 + 0.3 = -0.05 (score 0.9)
    assert "honest zeroed 2/15" in lines["decay 0.5"]


def test_negative_below_counts_a_withheld_share_only_below_its_bound(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(_what_if_run(tmp_path)), "--summary-only", "--what-if"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = {x.split(":")[0].strip(): x for x in out.splitlines() if "faulty share mean" in x}
    # C (cosine -0.9) is below -0.85: its withheld +0.5 counts -0.5, score 0 from round 2 (the
    # floor keeps its record at -0.5, still 0): rounds 2-3 pay D alone of 3, as withheld negative
    assert (
        "faulty share mean 0.3889, honest zeroed 0/6"
        in lines["record floor 0.5 + negative below -0.85"]
    )
    # -0.9 is not below -0.9 nor -0.93: C keeps its record 0 and the full score
    assert "faulty share mean 0.5000" in lines["record floor 0.5 + negative below -0.9"]
    assert "faulty share mean 0.5000" in lines["record floor 0.5 + negative below -0.93"]
    assert "faulty share mean 0.5000" in lines["record floor 0.5 + negative below -1"]


def test_the_record_floor_replayed_is_the_products_rule(tmp_path: Path) -> None:
    """--what-if kept its own copy of the floor: at ``record_floor`` alone, applied after the
    round's scores. The product floors at ``max(record_floor, demote_scale)`` (a raised record
    always scores 0): a floor of 0.25 (below the demote scale 0.5) is the floor of 0.5. The
    copy let E's record climb from -0.25 to +0.05 in round 5 (full score) where the product's
    -0.5 + 0.3 = -0.2 scores 0.6, so faulty D's share differed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("valuation_trace", SCRIPT)
    assert spec is not None and spec.loader is not None
    trace = importlib.util.module_from_spec(spec)
    sys.modules["valuation_trace"] = trace  # its dataclasses look their module up
    spec.loader.exec_module(trace)
    doc = json.loads(_sinking_run(tmp_path).read_text())
    run = doc["scenarios"]["a"]["runs"][0]

    def replayed(floor: float) -> object:
        rule = trace.Rule(f"floor {floor:g}", relief_cosine=-0.7, record_floor=floor)
        return trace.replay(run, rule, credit_cosine=0.0)

    assert replayed(0.25) == replayed(0.5) != replayed(0.0)
    assert replayed(0.5) != replayed(1.0)


@pytest.mark.parametrize(
    ("settings", "extra", "zeroed", "floor"),
    [
        ({"record_floor": 0.5}, (), "2/15", "0.5"),  # a floored run: its floor replayed
        ({"record_floor": None}, (), "2/15", "0.5"),  # null: the product's default, 0.5
        ({}, (), "3/15", "0 (off)"),  # saved before the floor: off
        ({"record_floor": 0.0}, (), "3/15", "0 (off)"),  # run with --record-floor 0
        ({"record_floor": 0.5}, ("--record-floor", "0"), "3/15", "0 (off)"),  # overridden
    ],
)
def test_the_recorded_rule_replays_the_runs_record_floor(
    tmp_path: Path, settings: dict[str, object], extra: tuple[str, ...], zeroed: str, floor: str
) -> None:
    """Session 58: the ``recorded rule`` row replayed every run without the floor, so on a run
    valued with the product's floor (0.5 by default) it did not reproduce the run. E's record
    -0.4, -0.8, -1.2, -0.9 zeroes it in rounds 3-5 unfloored; floored at -0.5 it climbs to -0.2
    in round 5 (score 0.6)."""
    path = _sinking_run(tmp_path)
    doc = json.loads(path.read_text())
    doc["settings"].update(settings)
    path.write_text(json.dumps(doc))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "--summary-only", "--what-if", *extra],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = {x.split(": faulty share")[0].strip(): x for x in out.splitlines() if "faulty sh" in x}
    assert f"honest zeroed {zeroed}" in lines["recorded rule"]
    assert "honest zeroed 3/15" in lines["recorded rule, no floor"]
    assert f"  the recorded rule's record floor (the runs'): {floor}\n" in out


def test_a_negative_record_floor_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(_sinking_run(tmp_path)), "--record-floor", "-1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "--record-floor must be a number >= 0" in proc.stderr


def _warm_up_run() -> dict[str, object]:
    """Round 1 (the warm-up, its shares recorded as under ``warm_up_floor`` 0.5): A, B and G
    valued +1 (shares 1/6), F -3 (share -0.5); round 2: A, B, G +1, F 0. G (50 samples) is
    vouched and larger than F (40), so under ``warm_up_scope`` 1 F does not outweigh it: full
    score in round 1 and nothing recorded, full score in round 2 (faulty share 40/110 in
    both). Under scope 0 F is scored from its -0.5 (0, floored to 0.5: 20/90) and recorded,
    so round 2 scores it 0."""
    names = ["A", "B", "G", "F"]
    cos = {"A": 0.9, "B": 0.8, "G": 0.7, "F": -0.5}
    norms = dict.fromkeys(names, 1.0)

    def rnd(n: int, values: dict[str, float]) -> dict[str, object]:
        return {
            "round": n,
            "skipped": False,
            "submitted": names,
            "values": values,
            "shares": {},
            "cosines": cos,
            "norm_ratios": norms,
        }

    return {
        "site_names": names,
        "site_samples": [10, 10, 50, 40],
        "site_faults": ["none", "none", "none", "sign_flip"],
        "rounds": [
            rnd(1, {"A": 1.0, "B": 1.0, "G": 1.0, "F": -3.0}),
            rnd(2, {"A": 1.0, "B": 1.0, "G": 1.0, "F": 0.0}),
        ],
    }


@pytest.mark.parametrize(
    ("warm_up", "rule_scope", "share"),
    [
        ((0.5, 1), None, 40 / 110),  # the run's own: scope 1, F not outweighing
        ((0.5, 1), 0, (20 / 90 + 0) / 2),  # replayed at scope 0
        ((0.5, 0), None, (20 / 90 + 0) / 2),  # a run valued at scope 0
    ],
)
def test_the_replay_scores_the_warm_up_as_the_run_did(
    warm_up: tuple[float, int], rule_scope: int | None, share: float
) -> None:
    """Session 63's warm-up (``warm_up_floor`` 0.5, ``warm_up_scope`` 1) records the warm-up's
    shares; the replay read them as an ordinary round's (F scored 0 and recorded at -0.5:
    share 0), so on (c) alpha 1 seed 0 its ``recorded rule`` gave 0.088 against the recorded
    0.104."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("valuation_trace", SCRIPT)
    assert spec is not None and spec.loader is not None
    trace = importlib.util.module_from_spec(spec)
    sys.modules["valuation_trace"] = trace  # its dataclasses look their module up
    spec.loader.exec_module(trace)
    run = _warm_up_run()
    run[trace.RUN_WARM_UP] = warm_up
    rule = trace.Rule("x", relief_cosine=-0.7, record_floor=0.5, warm_up_scope=rule_scope)
    out = trace.replay(run, rule, credit_cosine=-0.7)
    assert out is not None
    assert out.faulty_share == pytest.approx(share)


def test_recorded_warm_up_reads_the_runs_settings() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("valuation_trace", SCRIPT)
    assert spec is not None and spec.loader is not None
    trace = importlib.util.module_from_spec(spec)
    sys.modules["valuation_trace"] = trace
    spec.loader.exec_module(trace)
    assert trace.recorded_warm_up({}) == (1.0, 0)  # saved before the rule: off
    assert trace.recorded_warm_up({"warm_up_floor": 0.5, "warm_up_scope": 1}) == (0.5, 1)
