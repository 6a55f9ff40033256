"""fedtrail on Flower's deployment runtime (flwr 1.42, the Message API).

A Flower App whose ServerApp (:mod:`fedtrail.flower.server_app`) runs the fedtrail
aggregator's rounds (open on the ledger, value, finalize:
:class:`~fedtrail.aggregator.service.AggregatorService`) and whose ClientApp
(:mod:`fedtrail.flower.client_app`) runs each site's node (:class:`~fedtrail.node.daemon.SiteNode`)
with the site's own key. For an existing Flower project,
:class:`~fedtrail.flower.strategy.LedgerStrategy` wraps its strategy and
:data:`~fedtrail.flower.mod.ledger_mod` goes on its ClientApp: the project's own training, on
the ledger. Flower carries the messages
(which round, what a site submitted); the chain stays the record: every reply is checked against
it (:mod:`fedtrail.flower.replies`) and weights come from the chain's valuation only.

Nothing else in fedtrail imports this package (an import-linter contract): ``flwr`` stays the
optional extra ``flower``.
"""
