"""The site role (``fedtrail.node``): one hospital's daemon and its commands.

A node watches the ledger for open rounds, fetches and checks the global model, trains on its
own images (:mod:`fedtrail.ml.training`), stores the encoded update and submits its hash on chain,
resuming at the last recorded step after a crash. It imports only the core (``fedtrail.*`` below
the roles); simulated faults reach it as hooks from :mod:`fedtrail.simulation`, never as settings.
"""
