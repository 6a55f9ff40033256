"""The auditor role (``fedtrail.auditor``): verify, query and report on a federation.

``verify`` replays every finalized round from the chain and the content store (weights, global
model bit for bit, the round log against its on-chain hash, optionally the scores with a
validation split); ``commands`` answers queries (rounds, sites, logs) and writes the HTML report
(``report``); ``explain_command`` explains any on-chain global model for clinicians. It imports
only the core, and never the aggregator: an auditor trusts no code path of the party it checks
beyond the shared, public rules.
"""
