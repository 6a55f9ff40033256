"""Storage layer: where blobs live and what their bytes are.

- ``store``: content-addressed stores (``IpfsStore`` over an IPFS daemon's RPC API,
  ``LocalStore`` a directory); every read is checked against the sha256 the chain recorded.
- ``cid``: the CID IPFS gives some bytes, and strict offline validation of untrusted CIDs.
- ``codec``: the canonical safetensors wire format of models, updates and residuals (the bytes
  whose sha256 goes on chain) and the validation of untrusted blobs.
- ``topk8``: the ``topk8`` compression method (top-k + int8), registered with the codec.
- ``residual``: the node's error-feedback residual file.

Part of the core, below the CLI and the roles (node, aggregator, auditor), which never reach
past it to IPFS or safetensors; it uses ``fedtrail.ml.models`` for the model spec (tensor
layout and spec hash) and nothing else above ``fedtrail.errors`` and ``fedtrail.fsutil``.
"""
