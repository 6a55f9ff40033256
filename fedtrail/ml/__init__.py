"""The machine-learning pieces every role shares: models, datasets, metrics, local training,
the aggregation rules an auditor replays, explanations (captum) and the shortcut marker probe.

Pure functions and small dataclasses over torch and numpy; nothing here touches the chain or a
store, so the same code trains at a site, aggregates at the aggregator and replays at an auditor.
"""
