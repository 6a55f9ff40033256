"""One federation set-up for the demo, the tests and the benchmarks.

:func:`build_federation` deploys the ledger (or takes a deployed one), registers the sites in
order, builds one production :class:`~fedtrail.node.daemon.SiteNode` per site that has training
data (a faulty site through :meth:`~fedtrail.simulation.faults.SiteFault.hooks`) and the
:class:`~fedtrail.aggregator.service.AggregatorService`, and returns them as a
:class:`Federation`. It is the only place outside the CLI that wires the roles together, so the
demo, the tests and the benchmarks run the same federation the operators' daemons form.

Folders under ``folder``: ``nodes/<site name>/`` per node and ``aggregator/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from fedtrail.aggregator.service import AggregatorService, AggregatorSettings, RoundOutcome
from fedtrail.chain import advance_time, block_timestamp, fund
from fedtrail.errors import ConfigError
from fedtrail.ledger import Deployment, Ledger, RoundPoll, checksum
from fedtrail.ml.datasets import ImageDataset
from fedtrail.ml.training import TrainConfig
from fedtrail.node.config import NodeConfig
from fedtrail.node.daemon import CLOCK_SLACK, NodeHooks, SiteNode
from fedtrail.simulation.faults import SiteFault
from fedtrail.storage.store import ContentStore
from fedtrail.valuation.limits import ThresholdLimits

__all__ = ["Federation", "SiteSetup", "build_federation", "make_sites"]


@dataclass(frozen=True, kw_only=True)
class SiteSetup:
    """One simulated site: its key, its name on chain, its data and how its node runs.

    A site without ``train`` is registered but gets no node: it submits by hand (the scale
    benchmark's synthetic sites, a test's tampering site). ``config`` defaults to
    ``NodeConfig()``; its ``name`` is always the site's. ``max_samples`` (the most samples the
    ledger lets the site claim) defaults to the size of ``train``; a site without data needs it.
    """

    account: LocalAccount
    name: str
    train: ImageDataset | None = None
    val: ImageDataset | None = None
    config: NodeConfig = field(default_factory=NodeConfig)
    fault: SiteFault = field(default_factory=SiteFault)
    max_samples: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a site needs a name")
        if self.train is None and (self.val is not None or self.fault != SiteFault()):
            raise ConfigError(f"site {self.name!r} has no training data, so no node to apply to")
        if self.train is None and self.max_samples is None:
            raise ConfigError(f"site {self.name!r} has no training data: give its max_samples")

    @property
    def sample_limit(self) -> int:
        """The most samples the ledger lets this site claim per update."""
        if self.max_samples is not None:
            return self.max_samples
        assert self.train is not None  # checked when built
        return len(self.train)


def make_sites(
    accounts: Sequence[LocalAccount],
    trains: Sequence[ImageDataset],
    *,
    names: Sequence[str] | None = None,
    training: TrainConfig | None = None,
    faults: Sequence[SiteFault] | None = None,
    val: ImageDataset | None = None,
    **node_config: Any,
) -> list[SiteSetup]:
    """One site per account, with the training data of the same index: named ``names[i]``
    (default ``site-<i>``), training with ``training`` seeded ``training.seed + i``, with
    ``faults[i]`` (default none) and the other :class:`NodeConfig` settings given."""
    training = training or TrainConfig()
    names = [f"site-{i}" for i in range(len(accounts))] if names is None else names
    faults = [SiteFault()] * len(accounts) if faults is None else faults
    try:
        config = NodeConfig(**node_config)
    except TypeError as exc:
        raise ConfigError(f"not a node setting: {exc}") from exc
    if not len(accounts) == len(trains) == len(names) == len(faults):
        raise ConfigError(
            f"{len(accounts)} accounts, {len(trains)} training sets, {len(names)} names and "
            f"{len(faults)} faults: give one of each per site"
        )
    return [
        SiteSetup(
            account=account,
            name=names[i],
            train=trains[i],
            val=val,
            config=replace(config, training=replace(training, seed=training.seed + i)),
            fault=faults[i],
        )
        for i, account in enumerate(accounts)
    ]


@dataclass(frozen=True, kw_only=True)
class Federation:
    """The parts of a simulated federation; ``nodes`` follow ``sites`` (those with data)."""

    ledger: Ledger
    deployment: Deployment | None
    """None when the ledger was deployed before :func:`build_federation`."""
    store: ContentStore
    coordinator: LocalAccount
    aggregator: LocalAccount
    sites: tuple[SiteSetup, ...]
    nodes: tuple[SiteNode, ...]
    service: AggregatorService
    folder: Path

    def node(
        self, index: int, *, hooks: NodeHooks | None = None, **config_changes: Any
    ) -> SiteNode:
        """A fresh node for site ``index`` over the same folder, as after a restart; keywords
        that are not None override its :class:`NodeConfig`, and ``hooks`` replace its fault's."""
        site = self.sites[index]
        if site.train is None:
            raise ConfigError(f"site {site.name!r} has no training data, so no node")
        config = site.config.with_overrides(**config_changes)
        return _site_node(
            replace(site, config=config), self.ledger, self.store, self.folder, hooks=hooks
        )

    def run_round(self) -> RoundOutcome | None:
        """Open the next round, let every node commit, move the chain's clock past the commit
        deadline, let every node store and reveal (copying sites last, so they find something
        to copy), value and finalize it; the outcome, or None when the round did not close.
        The clock moves past the reveal deadline too when a site has not revealed. In a peer
        round every node scores, commits and reveals its score vector in between."""
        round_id = self.service.open_next()
        for n in self.nodes:
            n.participate(round_id)  # train, encode, commit
        info = self.ledger.get_round(round_id)
        _pass(self.ledger, info.commit_deadline)
        copiers = {s.name for s in self.sites if s.fault.kind == "copy"}
        for n in sorted(self.nodes, key=lambda n: n.config.name in copiers):
            n.participate(round_id)  # store, reveal
        # the round, its peer record and the clock in the service's own poll, which its first
        # step then starts from when nothing happened since (issue 18: the round and the clock
        # for the readiness check, the peer record, then the step's poll: four round trips)
        poll, read_at = self.service.poll()
        polled: tuple[RoundPoll, float] | None = (poll, read_at)
        if poll.current != round_id or poll.info is None:
            polled = None
            ready = self.service.ready_to_value(round_id)
        else:
            ready = self.service.ready_to_value(
                round_id, info=poll.info, now=poll.pending_timestamp
            )
        if not ready:
            polled = None  # the clock moves: the step reads again
            _pass(self.ledger, info.reveal_deadline)
        peer = (
            poll.peer
            if polled is not None and poll.peer_read
            else self.ledger.get_peer_round(round_id)
        )
        if peer is not None:
            # A peer round: every node (update or not) scores the others and commits its
            # vector once the reveal window has closed, then reveals it after the score
            # commit deadline; the service then records the chain's medians.
            _pass(self.ledger, info.reveal_deadline)
            for n in self.nodes:
                n.scorer.score(round_id)  # score, commit
            _pass(self.ledger, peer.score_commit_deadline)
            for n in self.nodes:
                n.scorer.score(round_id)  # reveal
            scored = self.ledger.get_peer_round(round_id)
            if scored is None or scored.vote_count < len(self.nodes):
                _pass(self.ledger, peer.score_reveal_deadline)
        if peer is not None:
            polled = None  # the sites scored since the poll
        first = self.service.step(polled=polled)  # value (or cancel)
        if first is not None:
            return first
        return self.service.step()  # aggregate + finalize


def _pass(ledger: Ledger, deadline: int) -> None:
    """Moves a test chain's clock just past ``deadline`` (if it is not already)."""
    now = block_timestamp(ledger.w3)
    if now <= deadline:
        advance_time(ledger.w3, deadline - now + 1 + CLOCK_SLACK)


def _site_node(
    site: SiteSetup,
    ledger: Ledger,
    store: ContentStore,
    folder: Path,
    *,
    hooks: NodeHooks | None = None,
) -> SiteNode:
    assert site.train is not None
    return SiteNode(
        ledger=ledger,
        store=store,
        account=site.account,
        config=replace(site.config, name=site.name),
        folder=folder / "nodes" / site.name,
        train=site.train,
        val=site.val,
        hooks=site.fault.hooks() if hooks is None else hooks,
    )


def _consenting(accept: ThresholdLimits, settings: AggregatorSettings) -> ThresholdLimits:
    """``accept`` widened to take ``settings``' thresholds (each limit the looser of the two;
    none to take without a combiner), its payment settings (standing off, its games, metric
    and rule), its running-statistics rule and its windows (``min_commit_seconds``,
    ``min_reveal_seconds``)."""
    optional = (settings.large_game, settings.validator_game)
    games = (settings.valuation, *(g for g in optional if g is not None))
    accept = accept.taking(
        rule=settings.rule, standing=settings.standing, games=games, metric=settings.metric
    )
    widened = accept if settings.combiner is None else accept.widened(settings.combiner)
    # the windows the aggregator opens (a peer round's score commit window: the reveal window
    # by default), down to which the sites' floor goes
    windows = [settings.round_seconds]
    if settings.valuation_mode == "peers":
        windows.append(settings.score_commit_seconds or settings.reveal_seconds)
    floor = min(widened.min_commit_seconds, *windows)
    if floor != widened.min_commit_seconds:
        widened = replace(widened, min_commit_seconds=floor)
    reveals = [settings.reveal_seconds]
    if settings.valuation_mode == "peers":
        reveals.append(settings.score_reveal_seconds or settings.reveal_seconds)
    floor = min(widened.min_reveal_seconds, *reveals)
    if floor != widened.min_reveal_seconds:
        widened = replace(widened, min_reveal_seconds=floor)
    rule = settings.rule.statistics
    if rule in widened.statistics:
        return widened
    return replace(widened, statistics=(*widened.statistics, rule))


def build_federation(
    *,
    store: ContentStore,
    folder: Path,
    coordinator: LocalAccount,
    sites: Sequence[SiteSetup],
    validation: ImageDataset,
    w3: Web3 | None = None,
    ledger: Ledger | None = None,
    aggregator: LocalAccount | None = None,
    settings: AggregatorSettings | None = None,
    fund_wei: int = 0,
) -> Federation:
    """Deploy a ledger on ``w3`` (or take the deployed ``ledger``), register ``sites`` in order
    (sending each ``fund_wei`` for gas first when positive), and build their nodes and the
    aggregator service. ``aggregator`` defaults to the coordinator; ``settings`` to the
    service's defaults."""
    if (w3 is None) == (ledger is None):
        raise ConfigError("give exactly one of w3 (deploy a new ledger) or ledger (deployed)")
    if not sites:
        raise ConfigError("a federation needs at least one site")
    if fund_wei < 0:
        raise ConfigError(f"fund_wei must be non-negative, got {fund_wei}")
    names = [s.name for s in sites]
    addresses = [checksum(s.account.address) for s in sites]
    for what, values in (("name", names), ("account", addresses)):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(f"two sites share a {what}: {repeated}")
    agg = aggregator or coordinator
    deployment = None
    if w3 is not None:
        ledger, deployment = Ledger.deploy(w3, coordinator, aggregator=agg.address)
    assert ledger is not None
    if checksum(ledger.aggregator()) != checksum(agg.address):
        raise ConfigError(f"{agg.address} is not the aggregator of the ledger {ledger.address}")
    for site in sites:
        if fund_wei:
            fund(ledger.w3, coordinator, site.account.address, fund_wei)
        ledger.register_site(coordinator, site.account.address, site.name, site.sample_limit)
    folder = Path(folder)
    if settings is not None:
        # simulated sites consent to their simulated aggregator's thresholds (a real site
        # widens its config.toml's [accept] itself; its node refuses stricter terms otherwise)
        sites = [
            replace(s, config=replace(s.config, accept=_consenting(s.config.accept, settings)))
            for s in sites
        ]
    nodes = tuple(_site_node(s, ledger, store, folder) for s in sites if s.train is not None)
    service = AggregatorService(
        ledger=ledger,
        store=store,
        account=agg,
        validation=validation,
        settings=settings or AggregatorSettings(),
        folder=folder / "aggregator",
    )
    return Federation(
        ledger=ledger,
        deployment=deployment,
        store=store,
        coordinator=coordinator,
        aggregator=agg,
        sites=tuple(sites),
        nodes=nodes,
        service=service,
        folder=folder,
    )
