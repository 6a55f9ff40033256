"""The decision a site node takes from a finalized round's log (``SiteNode._log_bias``: its
personalisation starts from it): attack a111 by the node's door."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

from fedtrail.ml.models import ModelSpec
from fedtrail.node.daemon import SiteNode
from fedtrail.protocol.roundlog import to_bytes
from fedtrail.storage.store import LocalStore

LOGS = Path(__file__).parents[1] / "fedtrail" / "protocol" / "data"


def _bias_of(tmp_path: Path, after: dict[str, object]) -> tuple[object, str]:
    """``_log_bias`` of round 4 whose log's ``metrics.after`` is updated with ``after``."""
    store = LocalStore(tmp_path / "store")
    doc = json.loads((LOGS / "round-log-real.json").read_bytes())
    doc["metrics"]["after"] |= after
    blob = to_bytes(doc)
    info = SimpleNamespace(log_cid=store.put(blob), log_sha256=hashlib.sha256(blob).hexdigest())
    node = SimpleNamespace(
        ledger=SimpleNamespace(get_round=lambda _r: info),
        store=store,
        config=SimpleNamespace(model=ModelSpec()),
    )
    bias, source = SiteNode._log_bias(node, 4)  # type: ignore[arg-type]
    return bias, source


def test_a_log_whose_bias_and_threshold_disagree_gives_the_default(tmp_path: Path) -> None:
    """a83's lie (bias [0, 2], threshold 0.119; the threshold field says 0.3, what audit log and
    the report show): verify fails it, and the node decided with its bias; now the default,
    saying why. The same log with its threshold the bias's gives the bias."""
    bias, source = _bias_of(tmp_path, {"threshold": 0.3, "bias": [0.0, 2.0]})
    assert bias is None, bias
    assert source == "default: round 4's log's metrics disagree with themselves", source
    honest = [0.0, math.log(0.7 / 0.3)]
    bias, source = _bias_of(tmp_path, {"threshold": 0.3, "bias": honest})
    assert bias == tuple(honest) and source == "round 4's log", (bias, source)
