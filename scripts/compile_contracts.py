#!/usr/bin/env python3
"""Compile contracts/FederationLedger.sol into contracts/build/FederationLedger.json.

Runs py-solc-x's ``compile_standard`` against ``scripts/solc``, a shim over the npm ``solc``
package (py-solc-x cannot download a native solc here). The artifact is deterministic: the
same source and compiler give byte-identical JSON, so ``--check`` can tell a stale artifact.

    python scripts/compile_contracts.py          # write the artifact
    python scripts/compile_contracts.py --check  # exit 1 when the committed artifact is stale
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import solcx

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "contracts" / "FederationLedger.sol"
ARTIFACT = ROOT / "contracts" / "build" / "FederationLedger.json"
SHIM = ROOT / "scripts" / "solc"
CONTRACT = "FederationLedger"
# Shanghai: the newest EVM that Anvil, Ganache 7 and py-evm all execute.
SETTINGS: dict[str, Any] = {
    # The runtime code must stay under the 24,576-byte limit (EIP-170). The IR pipeline at
    # 800 runs gives 20,094 bytes; the legacy one gave 23,897 at 800 runs and 24,589 at 1,000
    # (100,000 runs, used before issue 14, give 28 kB legacy, 26.9 kB via IR).
    "optimizer": {"enabled": True, "runs": 800},
    "evmVersion": "shanghai",
    "viaIR": True,
    "metadata": {"bytecodeHash": "none"},
    "outputSelection": {
        "*": {
            "*": [
                "abi",
                "evm.bytecode.object",
                "evm.deployedBytecode.object",
                "evm.deployedBytecode.immutableReferences",
            ]
        }
    },
}


def build_artifact() -> dict[str, Any]:
    source = SOURCE.read_text(encoding="utf-8")
    if not (ROOT / "node_modules" / "solc").is_dir():
        raise SystemExit("npm `solc` is missing: run `npm ci` in the repository root first")
    out = solcx.compile_standard(
        {
            "language": "Solidity",
            "sources": {SOURCE.name: {"content": source}},
            "settings": SETTINGS,
        },
        solc_binary=str(SHIM),
    )
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise SystemExit("\n".join(e["formattedMessage"] for e in errors))
    warnings = [e for e in out.get("errors", []) if e.get("severity") == "warning"]
    for w in warnings:
        print(w["formattedMessage"], file=sys.stderr)
    contract = out["contracts"][SOURCE.name][CONTRACT]
    compiler = solcx.wrapper.get_solc_version(SHIM, with_commit_hash=True)
    return {
        "contractName": CONTRACT,
        "sourceName": f"contracts/{SOURCE.name}",
        "sourceSha256": hashlib.sha256(source.encode("utf-8")).hexdigest(),
        "compiler": {"name": "solc", "version": str(compiler), "settings": SETTINGS},
        "abi": contract["abi"],
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
        "deployedBytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
        # Byte ranges of the runtime code that hold immutables (set at deployment), so a client
        # can compare deployed code with this artifact.
        "immutableRanges": sorted(
            [ref["start"], ref["length"]]
            for refs in contract["evm"]["deployedBytecode"].get("immutableReferences", {}).values()
            for ref in refs
        ),
    }


def render(artifact: dict[str, Any]) -> str:
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the artifact is stale")
    args = parser.parse_args()
    text = render(build_artifact())
    if args.check:
        current = ARTIFACT.read_text(encoding="utf-8") if ARTIFACT.exists() else ""
        if current != text:
            print(f"{ARTIFACT.relative_to(ROOT)} is stale: run scripts/compile_contracts.py")
            return 1
        print(f"{ARTIFACT.relative_to(ROOT)} is up to date")
        return 0
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(text, encoding="utf-8")
    print(f"wrote {ARTIFACT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
