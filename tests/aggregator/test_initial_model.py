"""The round-1 start model is bound to the deployment (attack a23): two federations with the
same aggregator seed used to start from the same model, so one federation's update, replayed
byte for byte in the other, was a well-aligned update there and was paid."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from flwr.serverapp.strategy import FedAvg

from fedtrail.aggregator.service import AggregatorSettings, fresh_or_recorded_salt
from fedtrail.chain import connect
from fedtrail.flower.strategy import LedgerStrategy
from fedtrail.ml.models import ModelSpec, federated_state, initial_model
from fedtrail.protocol.terms import RoundTerms, seeded_salt
from fedtrail.simulation.federation import Federation
from fedtrail.storage.codec import encode_model
from tests.auditor.test_verify import federation

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sha(spec: ModelSpec, seed: int) -> str:
    blob = encode_model(federated_state(initial_model(spec, seed)), spec=spec, round=0)
    return hashlib.sha256(blob).hexdigest()


def test_two_deployments_with_the_same_seed_start_from_different_models(tmp_path: Path) -> None:
    # one chain, two contracts (two fresh embedded chains deploy the same address: same
    # deployer, same nonce, same chain id, so the same deployment identity)
    w3 = connect("embedded")
    a = federation(tmp_path / "a", rounds=0, w3=w3)
    b = federation(tmp_path / "b", rounds=0, w3=w3)
    assert a.service.settings.seed == b.service.settings.seed == 0
    assert a.ledger.address != b.ledger.address
    starts = []
    for fed in (a, b):
        round_id = fed.service.open_next()
        info = fed.ledger.get_round(round_id)
        terms = RoundTerms.from_bytes(fed.store.get(info.terms_cid, info.terms_sha256))
        assert terms.initial_model == "deployment"
        assert terms.seed == 0
        starts.append(info.start_sha256)
    assert starts[0] != starts[1]
    # neither is the model every seed-0 deployment used to share
    assert _sha(a.service.spec, 0) not in starts


def _opened(fed: Federation) -> tuple[str, RoundTerms]:
    info = fed.ledger.get_round(fed.service.open_next())
    return info.start_sha256, RoundTerms.from_bytes(
        fed.store.get(info.terms_cid, info.terms_sha256)
    )


def test_twin_deployments_with_other_salts_start_from_different_models(tmp_path: Path) -> None:
    """Two fresh embedded chains deploy the same contract address on the same chain id (a
    twin, like any fresh Anvil's first contract): only the terms' ``initial_salt`` parts
    their start models. The seeded salt (the default) is shared, so the twins are too."""
    salts = ("11" * 32, "22" * 32, None, None)
    feds = [
        federation(
            tmp_path / str(i),
            rounds=0,
            settings=AggregatorSettings(valuation="loo", initial_salt=salt),
        )
        for i, salt in enumerate(salts)
    ]
    assert len({(f.ledger.chain_id, f.ledger.address) for f in feds}) == 1  # twins
    opened = [_opened(f) for f in feds]
    assert [t.initial_salt for _, t in opened] == [
        "11" * 32,
        "22" * 32,
        seeded_salt(0),
        seeded_salt(0),
    ]
    starts = [start for start, _ in opened]
    assert starts[0] != starts[1]
    assert starts[2] == starts[3] not in starts[:2]  # the seeded salt: reproducible, shared


def test_a_deployment_rebuilds_its_start_model_bit_for_bit(tmp_path: Path) -> None:
    fed = federation(tmp_path, rounds=0)
    seed = fed.service.initial_seed()
    assert seed == fed.service.initial_seed() != fed.service.settings.seed
    info = fed.ledger.get_round(fed.service.open_next())
    assert info.start_sha256 == _sha(fed.service.spec, seed)


def test_the_flower_strategy_starts_from_the_model_the_service_opens(tmp_path: Path) -> None:
    """Before any round, ``LedgerStrategy.start_arrays`` builds the deployment's start model
    (the one ``open_next`` puts on the chain), not the unbound seed-0 one."""
    fed = federation(tmp_path, rounds=0)
    strategy = LedgerStrategy(FedAvg(), service=fed.service)
    before = strategy.start_arrays().to_torch_state_dict()
    info = fed.ledger.get_round(fed.service.open_next())
    opened = strategy.start_arrays().to_torch_state_dict()  # the open round's stored start model
    assert fed.ledger.get_round(1).start_sha256 == info.start_sha256
    assert set(before) == set(opened)
    assert all(torch.equal(before[k], opened[k]) for k in before)
    unbound = federated_state(initial_model(fed.service.spec, 0))
    assert not all(torch.equal(before[k], unbound[k]) for k in unbound)


def test_a_restarted_aggregator_keeps_the_recorded_salt_and_a_new_ledger_draws_one(
    tmp_path: Path,
) -> None:
    """``aggregator run``'s default salt: fresh random bytes before any round (two draws
    differ), the latest round's terms' salt once one is open (a restart must not move the start
    model of a round 1 it reopens)."""
    fed = federation(
        tmp_path, rounds=0, settings=AggregatorSettings(valuation="loo", initial_salt="33" * 32)
    )
    first, second = (fresh_or_recorded_salt(fed.ledger, fed.store) for _ in range(2))
    assert first != second and all(len(s) == 64 and int(s, 16) >= 0 for s in (first, second))
    fed.service.open_next()
    assert fresh_or_recorded_salt(fed.ledger, fed.store) == "33" * 32


def test_the_initial_salt_option_takes_seeded_hex_or_random_and_refuses_other_text(
    tmp_path: Path,
) -> None:
    """``aggregator run --initial-salt``: 'seeded' is the seed's reproducible salt, 64 hex
    digits are taken as given, 'random' draws, anything else is a usage error (exit 2)."""
    import click

    from fedtrail.aggregator.commands import _initial_salt

    fed = federation(tmp_path, rounds=0)
    assert _initial_salt("seeded", fed.ledger, fed.store, 5) == seeded_salt(5) != seeded_salt(0)
    assert _initial_salt("ab" * 32, fed.ledger, fed.store, 0) == "ab" * 32
    drawn = _initial_salt("random", fed.ledger, fed.store, 0)
    assert drawn not in (seeded_salt(0), _initial_salt("random", fed.ledger, fed.store, 0))
    for bad in ("AB" * 32, "ab" * 31, "yes"):
        with pytest.raises(click.BadParameter):
            _initial_salt(bad, fed.ledger, fed.store, 0)
