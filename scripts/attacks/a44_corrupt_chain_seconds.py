"""a44: a state.json whose ``chain_seconds`` is not a whole number of seconds.

The a43 mechanism reads each round's measured training time (``chain_seconds``) back from the
node's state file to decide whether to decline a short commit window. Before the fix,
``NodeState.load`` took any JSON value there: a string or null crashed the window check later
with a bare TypeError, a negative, boolean or fractional value was silently used as (or dropped
from) the measure. Exit 0: every such file is refused with ``NodeStateError`` naming it;
exit 1: one loaded (the hole is open).

Run: .venv/bin/python scripts/attacks/a44_corrupt_chain_seconds.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from fedtrail.node.daemon import NodeState, NodeStateError

BAD: list[object] = ["x", None, -5, True, 1.5, [30]]


def main() -> int:
    opened = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.json"
        for value in BAD:
            record = {"round": 1, "phase": "revealed", "chain_seconds": value}
            path.write_text(json.dumps({"rounds": {"1": record}}), encoding="utf-8")
            try:
                NodeState.load(path)
            except NodeStateError as exc:
                print(f"chain_seconds={value!r}: refused ({exc})")
            else:
                opened += 1
                print(f"chain_seconds={value!r}: LOADED (hole open)")
    print(f"{opened} of {len(BAD)} corrupt values loaded")
    return 1 if opened else 0


if __name__ == "__main__":
    sys.exit(main())
