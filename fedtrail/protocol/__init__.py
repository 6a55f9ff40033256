"""The protocol every role shares: what the chain stores and the rules that follow from it.

``codes`` (round phases, score reasons), ``weights`` (score and weight scales, the on-chain
weight rule, reputation) and ``roundlog`` (the per-round explanation log: schema, canonical bytes,
builder and reader). Nothing here does I/O or imports a role.
"""
