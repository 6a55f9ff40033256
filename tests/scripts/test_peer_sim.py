"""Peer mode of the benchmarks' in-process simulation (scripts/bench/_sim.py, issue 14) on a tiny
federation (one round: the tiny sites' second-round updates fall below the free-rider norm):
each site validates on its own shard of the val split, the scores are the median
rule of fedtrail.protocol.peers over the revealed vectors, adversarial validators lie as
configured and lose validator reputation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedtrail.errors import ConfigError
from fedtrail.ml.datasets import ImageDataset, Splits, load_bundled
from fedtrail.protocol.codes import Reason
from fedtrail.protocol.peers import PeerVote, peer_outcome
from fedtrail.protocol.weights import SCORE_SCALE, onchain_weights
from scripts.bench import _sim


def _balanced(ds: ImageDataset, per_class: int) -> ImageDataset:
    idx = np.concatenate([np.flatnonzero(ds.labels == c)[:per_class] for c in (0, 1)])
    return ds.subset(np.sort(idx))


@pytest.fixture(scope="module")
def tiny() -> Splits:
    s = load_bundled()
    return Splits(
        train=_balanced(s.train, 150), val=_balanced(s.val, 30), test=_balanced(s.test, 30)
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield None
    torch.set_num_threads(before)


def _config(**kw: object) -> _sim.SimConfig:
    base: dict[str, object] = {
        "sites": 5,
        "rounds": 1,
        "alpha": 100.0,
        "min_size": 10,
        "seed": 1,
        "valuation_mode": "peers",
    }
    base.update(kw)
    return _sim.SimConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def honest(tiny: Splits) -> _sim.SimResult:
    return _sim.run_method("valuation", _config(), tiny)


def _addr(res: _sim.SimResult, name: str) -> str:
    return _sim.peer_address(res.site_names.index(name))


def test_each_site_validates_on_its_own_shard_of_the_val_split(tiny: Splits) -> None:
    shards = _sim.validation_shards(tiny.val, _config())
    assert len(shards) == 5
    assert sum(len(s) for s in shards) == len(tiny.val)
    images = np.concatenate([s.images.reshape(len(s), -1) for s in shards])
    assert (
        np.unique(images, axis=0).shape[0]
        == np.unique(tiny.val.images.reshape(len(tiny.val), -1), axis=0).shape[0]
    )


def test_proportional_shards_hold_out_each_sites_own_class_mix(tiny: Splits) -> None:
    config = _config(alpha=1.0, validation_shards="proportional")
    shards = _sim.validation_shards(tiny.val, config, tiny.train)
    parts = _sim.site_splits(tiny.train, config)
    assert sum(len(s) for s in shards) == len(tiny.val)
    images = np.concatenate([s.images.reshape(len(s), -1) for s in shards])
    assert np.unique(images, axis=0).shape[0] == len(tiny.val)  # disjoint, together the split
    for c in (0, 1):
        val_c = int(np.sum(tiny.val.labels == c))
        train_c = int(np.sum(tiny.train.labels == c))
        for shard, part in zip(shards, parts, strict=True):
            share = int(np.sum(part.labels == c)) * val_c / train_c
            assert abs(int(np.sum(shard.labels == c)) - share) < 1  # its own fraction, rounded
    again = _sim.validation_shards(tiny.val, config, tiny.train)
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(shards, again, strict=True))
    sizes = [len(s) for s in _sim.validation_shards(tiny.val, _config(alpha=1.0))]
    assert sizes != [len(s) for s in shards]  # the default draw is another one
    with pytest.raises(ConfigError, match="need the training split"):
        _sim.validation_shards(tiny.val, config)
    with pytest.raises(ConfigError, match="validation_shards must be one of"):
        _config(validation_shards="even")


def test_peer_scores_are_the_median_rule_over_the_revealed_vectors(
    honest: _sim.SimResult,
) -> None:
    assert honest.valuation_mode == "peers"
    for rec in honest.rounds:
        assert not rec.skipped and rec.votes
        sites = [_addr(honest, s) for s in rec.submitted]
        votes = [
            PeerVote(validator=_addr(honest, v), scores=tuple(s)) for v, s in rec.votes.items()
        ]
        for v, vector in rec.votes.items():  # the validator's own entry is 0
            assert vector[rec.submitted.index(v)] == 0
        out = peer_outcome(sites, votes, standing={}, quorum=1)  # one round: nobody rated yet
        assert rec.scores == list(out.scores)
        assert rec.reasons == [r.name for r in out.reasons]
        assert rec.weights == onchain_weights(honest.site_samples, rec.scores)
        assert set(rec.scoring_seconds) == set(rec.votes)
        assert set(rec.training_seconds) == set(rec.submitted)
    # reputations tracked from the first closed round on, for every validator that voted
    (rec,) = honest.rounds
    assert set(rec.validator_reputations) == set(rec.votes)


def test_an_inverting_validator_reveals_the_inverse_and_loses_reputation(
    tiny: Splits, honest: _sim.SimResult
) -> None:
    liar = _sim.AdversarialValidator(site=0, kind="invert")
    res = _sim.run_method("valuation", _config(adversaries=(liar,)), tiny)
    (first,), (clean,) = res.rounds, honest.rounds  # round 1: the same global model
    lie, truth = first.votes["site-00"], clean.votes["site-00"]
    assert lie[0] == 0
    assert lie[1:] == [SCORE_SCALE - s for s in truth[1:]]
    assert {k: v for k, v in first.votes.items() if k != "site-00"} == {
        k: v for k, v in clean.votes.items() if k != "site-00"
    }
    reps = first.validator_reputations
    assert reps["site-00"] < min(v for k, v in reps.items() if k != "site-00")
    # the inverter alone cannot zero an honest site: every site keeps a positive score
    assert first.reasons == [Reason.OK.name] * 5


def test_colluders_zero_only_their_target_in_their_vectors(
    tiny: Splits, honest: _sim.SimResult
) -> None:
    cartel = tuple(_sim.AdversarialValidator(site=s, kind="collude", target=2) for s in (3, 4))
    res = _sim.run_method("valuation", _config(adversaries=cartel), tiny)
    (rec,), (clean,) = res.rounds, honest.rounds
    for name in ("site-03", "site-04"):
        assert rec.votes[name][2] == 0
        assert [s for i, s in enumerate(rec.votes[name]) if i != 2] == [
            s for i, s in enumerate(clean.votes[name]) if i != 2
        ]
    assert rec.scores[2] > 0  # two of five cannot zero it: the median of its four peers


def test_the_min_class_experiment_silences_exactly_the_validators_short_of_a_class(
    tiny: Splits, honest: _sim.SimResult
) -> None:
    """``validator_min_class`` (the benches' ``VALIDATOR_MIN_CLASS``): a validator whose shard
    holds fewer than K images of a class abstains; the others vote as without it."""
    shards = _sim.validation_shards(tiny.val, _config())
    fewest = {
        f"site-{i:02d}": int(np.bincount(s.labels, minlength=2).min()) for i, s in enumerate(shards)
    }
    k = sorted(set(fewest.values()))[1]  # above the smallest: some validators, not all, fall short
    short = {name for name, n in fewest.items() if n < k}
    assert short and len(short) < 5
    res = _sim.run_method("valuation", _config(validator_min_class=k), tiny)
    (rec,), (clean,) = res.rounds, honest.rounds
    assert set(rec.abstained) == short and not clean.abstained
    assert rec.votes == {name: v for name, v in clean.votes.items() if name not in short}


def test_peer_mode_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="valuation_mode"):
        _config(valuation_mode="committee")
    with pytest.raises(ConfigError, match="need valuation_mode 'peers'"):
        _config(
            valuation_mode="aggregator",
            adversaries=(_sim.AdversarialValidator(site=0, kind="invert"),),
        )
    with pytest.raises(ConfigError, match="target"):
        _sim.AdversarialValidator(site=0, kind="collude")
    with pytest.raises(ConfigError, match="not a site"):
        _config(adversaries=(_sim.AdversarialValidator(site=7, kind="invert"),))


def test_the_public_screen_reads_only_the_inputs_the_medians_name(tiny: Splits) -> None:
    """Session 56 (h-228's gap): the bench's public screen ran over every revealed update; the
    aggregator's runs over the chain's inputs only (a positive peer median), so an update its
    peers zeroed is never screened (here a stale resend of the last global delta, which the
    screen marks when it reads it: before, ``screened`` named it in round 2 with median 0)."""
    cartel = tuple(_sim.AdversarialValidator(site=s, kind="collude", target=2) for s in (0, 1, 3))
    stale = (_sim.Stale(site=2, source="global"),)
    res = _sim.run_method(
        "valuation",
        _config(rounds=2, public_screen=True, adversaries=cartel, stale=stale),
        tiny,
    )
    second = res.rounds[1]
    assert second.scores[2] == 0  # three of its four peers zero it: median 0, no input
    assert "site-02" not in second.screened, second.screened
    alone = _sim.run_method(
        "valuation", _config(rounds=2, public_screen=True, stale=stale), tiny
    ).rounds[1]
    assert "site-02" in alone.screened, alone.screened  # read as an input, the screen marks it
