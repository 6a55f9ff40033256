"""The aggregator role (``fedtrail.aggregator``): the service that runs the rounds.

Opens each round on the ledger, fetches and validates the submitted updates, values them with
:mod:`fedtrail.valuation`, posts the scores, reads the weights the contract fixed, aggregates
with :mod:`fedtrail.ml.aggregation`, and finalizes with the global model and the round log
(:mod:`fedtrail.protocol.roundlog`). It imports only the core; what it computes, an auditor
recomputes from public data with the same core functions.
"""
