"""Typed client of the FederationLedger contract.

Transactions are signed locally (the node never hands a key to the RPC endpoint), gas is
estimated first so a refusal surfaces as the contract's own custom error mapped to our exception
tree, and nonces come from one lock per sender so concurrent threads never collide.
"""

from __future__ import annotations

import ast
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from eth_abi.abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import Web3
from web3.types import TxReceipt

from fedtrail.errors import (
    ChainUnreachable,
    ConfigError,
    ContractNotFound,
    ContractRevert,
    DuplicateSubmission,
    InvalidArgument,
    InvalidValuation,
    LedgerError,
    RoundStateError,
    TransactionFailed,
    Unauthorized,
)
from fedtrail.protocol.codes import Phase
from fedtrail.protocol.weights import DEFAULT_REPUTATION_ALPHA, SCORE_SCALE

ARTIFACT_PATH = (
    Path(__file__).resolve().parent.parent / "contracts" / "build" / "FederationLedger.json"
)
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ZERO_HASH = "0" * 64


@dataclass(frozen=True)
class RoundInfo:
    id: int
    phase: Phase
    deadline: int
    opened_at: int
    submission_count: int
    start_cid: str
    start_sha256: str
    global_cid: str
    global_sha256: str
    log_cid: str
    log_sha256: str


@dataclass(frozen=True)
class Submission:
    """One site's update in one round. ``score``/``reason``/``weight`` are 0 until valued."""

    round: int
    site: str
    cid: str
    sha256: str
    num_samples: int
    score: int
    reason: int
    weight: int


@dataclass(frozen=True)
class SiteInfo:
    address: str
    registered: bool
    name: str
    reputation: int
    valued_rounds: int


@dataclass(frozen=True)
class Valuation:
    """What the aggregator posts for one update: score in [0, SCORE_SCALE] and a reason code."""

    site: str
    score: int
    reason: int

    def __post_init__(self) -> None:
        if not 0 <= self.score <= SCORE_SCALE:
            raise ConfigError(f"score {self.score} outside 0..{SCORE_SCALE}")
        if not 0 <= self.reason <= 255:
            raise ConfigError(f"reason code {self.reason} outside 0..255")


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int


@dataclass(frozen=True)
class LedgerEvent:
    name: str
    block_number: int
    tx_hash: str
    log_index: int
    args: dict[str, Any]


@dataclass(frozen=True)
class Deployment:
    """What an operator needs to reach a deployed ledger; written as JSON by ``chain deploy``."""

    address: str
    chain_id: int
    block_number: int
    tx_hash: str
    coordinator: str
    aggregator: str
    reputation_alpha: int
    artifact_sha256: str
    rpc_url: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> Deployment:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(**raw)
        except FileNotFoundError as exc:
            raise ConfigError(f"deployment file {path} does not exist") from exc
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(
                f"deployment file {path} is not a fedtrail deployment: {exc}"
            ) from exc


@dataclass(frozen=True)
class Artifact:
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    immutable_ranges: list[tuple[int, int]]
    sha256: str

    def matches(self, code: bytes) -> bool:
        """Whether deployed runtime ``code`` is this build (immutables masked out)."""
        expected = bytearray.fromhex(self.deployed_bytecode.removeprefix("0x"))
        actual = bytearray(code)
        if len(actual) != len(expected):
            return False
        for start, length in self.immutable_ranges:
            actual[start : start + length] = expected[start : start + length]
        return actual == expected

    @classmethod
    def load(cls, path: Path = ARTIFACT_PATH) -> Artifact:
        raw = path.read_bytes()
        doc = json.loads(raw)
        return cls(
            abi=doc["abi"],
            bytecode=doc["bytecode"],
            deployed_bytecode=doc["deployedBytecode"],
            immutable_ranges=[(int(a), int(b)) for a, b in doc["immutableRanges"]],
            sha256=hashlib.sha256(raw).hexdigest(),
        )


# --------------------------------------------------------------------------- helpers


def to_bytes32(hex_digest: str) -> bytes:
    """A 64-hex-digit sha256 (optionally 0x-prefixed) as the contract's bytes32."""
    digest = hex_digest.removeprefix("0x")
    if len(digest) != 64:
        raise ConfigError(f"expected a 32-byte hex digest, got {hex_digest!r}")
    try:
        return bytes.fromhex(digest)
    except ValueError as exc:
        raise ConfigError(f"not a hex digest: {hex_digest!r}") from exc


def from_bytes32(value: bytes) -> str:
    return bytes(value).hex()


def checksum(address: str) -> str:
    if not Web3.is_address(address):
        raise ConfigError(f"not an Ethereum address: {address!r}")
    return str(Web3.to_checksum_address(address))


# ---------------------------------------------------------------- custom error decoding

_PREFIX = "FederationLedger__"

_ERROR_CLASSES: dict[str, type[ContractRevert]] = {
    "NotCoordinator": Unauthorized,
    "NotAggregator": Unauthorized,
    "UnknownSite": Unauthorized,
    "UnknownRound": RoundStateError,
    "WrongPhase": RoundStateError,
    "PreviousRoundNotClosed": RoundStateError,
    "StartModelMismatch": RoundStateError,
    "DeadlineInPast": RoundStateError,
    "DeadlinePassed": RoundStateError,
    "RoundStillOpen": RoundStateError,
    "AlreadySubmitted": DuplicateSubmission,
    "DuplicateUpdate": DuplicateSubmission,
    "SiteAlreadyRegistered": DuplicateSubmission,
    "LengthMismatch": InvalidValuation,
    "SitesNotSorted": InvalidValuation,
    "NotSubmitted": InvalidValuation,
    "MissingScores": InvalidValuation,
    "ScoreOutOfRange": InvalidValuation,
    "ZeroTotalWeight": InvalidValuation,
    "ZeroAddress": InvalidArgument,
    "InvalidParameter": InvalidArgument,
}

_MESSAGES: dict[str, str] = {
    "NotCoordinator": "{caller} is not the federation's coordinator",
    "NotAggregator": "{caller} is not the federation's aggregator",
    "UnknownSite": "{site} is not a registered site",
    "UnknownRound": "round {round} does not exist",
    "WrongPhase": "round {round} is {actual}, the call needs it {expected}",
    "PreviousRoundNotClosed": "round {round} is still running; finalize or cancel it first",
    "StartModelMismatch": "the new round must start from the last finalized model "
    "(sha256 {expected}), not {given}",
    "DeadlineInPast": "deadline {deadline} is not after the chain time {nowTimestamp}",
    "DeadlinePassed": "round {round} closed for submissions at {deadline}",
    "RoundStillOpen": "round {round} is open until {deadline} and not every site submitted",
    "AlreadySubmitted": "{site} already submitted an update in round {round}",
    "DuplicateUpdate": "an update with sha256 {sha256} was already submitted in round {round} "
    "by {firstSubmitter} (a copied update)",
    "SiteAlreadyRegistered": "{site} is already registered",
    "LengthMismatch": "valuation arrays differ in length: {sites} sites, {scores} scores, "
    "{reasons} reasons",
    "SitesNotSorted": "valuation sites must be strictly ascending (position {index})",
    "NotSubmitted": "{site} submitted no update in round {round}",
    "MissingScores": "round {round} has {expected} submissions but the valuation scores {given}",
    "ScoreOutOfRange": "score {score} for {site} is above 1000000",
    "ZeroTotalWeight": "every update of round {round} has weight zero; cancel the round instead",
    "ZeroAddress": "the zero address is not allowed here",
    "InvalidParameter": "invalid {what}",
}


class _ErrorDecoder:
    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._by_selector: dict[bytes, tuple[str, list[str], list[str]]] = {}
        for item in abi:
            if item.get("type") != "error":
                continue
            types = [i["type"] for i in item["inputs"]]
            names = [i["name"] for i in item["inputs"]]
            signature = f"{item['name']}({','.join(types)})"
            self._by_selector[keccak(text=signature)[:4]] = (item["name"], types, names)

    def decode(self, data: bytes) -> ContractRevert | None:
        if len(data) < 4:
            return None
        if data[:4] == keccak(text="Error(string)")[:4]:
            (reason,) = abi_decode(["string"], data[4:])
            return ContractRevert("Error", {"reason": reason}, f"contract reverted: {reason}")
        entry = self._by_selector.get(data[:4])
        if entry is None:
            return None
        full_name, types, names = entry
        values = abi_decode(types, data[4:])
        args: dict[str, Any] = {}
        for name, typ, value in zip(names, types, values, strict=True):
            if typ == "bytes32":
                value = from_bytes32(value)
            elif typ == "address":
                value = checksum(value)
            args[name] = value
        name = full_name.removeprefix(_PREFIX)
        shown = dict(args)
        if name == "WrongPhase":
            shown["actual"] = Phase(args["actual"]).label
            shown["expected"] = Phase(args["expected"]).label
        message = _MESSAGES.get(name, name).format(**shown)
        cls = _ERROR_CLASSES.get(name, ContractRevert)
        return cls(name, args, f"{full_name}: {message}")


def _revert_data(exc: BaseException) -> bytes | None:
    """Revert data from whatever the provider raised.

    web3 over JSON-RPC puts hex in ``exc.data``; eth-tester wraps py-evm's ``Revert(bytes)`` in
    its own exceptions (and decodes a custom error's string argument as if it were a reason), so
    the raw bytes are found by walking the exception chain.
    """
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        data = getattr(current, "data", None)
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
            try:
                return bytes.fromhex(data[2:])
            except ValueError:
                pass
        if isinstance(data, bytes | bytearray) and data:
            return bytes(data)
        for arg in getattr(current, "args", ()):
            if isinstance(arg, bytes | bytearray) and len(arg) >= 4:
                return bytes(arg)
            if isinstance(arg, BaseException):
                stack.append(arg)
            if isinstance(arg, dict):  # Ganache: {"result": "0x<revert data>", ...}
                for value in (arg.get("result"), arg.get("data")):
                    if isinstance(value, str) and value.startswith("0x") and len(value) >= 10:
                        try:
                            return bytes.fromhex(value[2:])
                        except ValueError:
                            pass
            if isinstance(arg, str) and "execution reverted: b" in arg:
                try:
                    value = ast.literal_eval(arg.split("execution reverted: ", 1)[1])
                except (ValueError, SyntaxError):
                    continue
                if isinstance(value, bytes) and len(value) >= 4:
                    return value
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)
    return None


class _SenderLocks:
    """One lock per sender in this process: the nonce is read from the node's pending count and
    the transaction sent while the lock is held, so threads never reuse a nonce. Other processes
    using the same key are handled by retrying on the node's nonce errors."""

    _guard = threading.Lock()
    _locks: ClassVar[dict[str, threading.Lock]] = {}

    @classmethod
    @contextmanager
    def hold(cls, key: str) -> Iterator[None]:
        with cls._guard:
            lock = cls._locks.setdefault(key, threading.Lock())
        with lock:
            yield


_NONCE_ERRORS = (
    "nonce too low",
    "invalid transaction nonce",
    "already known",
    "replacement transaction underpriced",
)


# --------------------------------------------------------------------------- the client


@dataclass
class Ledger:
    """A deployed FederationLedger reached through ``w3``."""

    w3: Web3
    address: str
    from_block: int = 0
    poll_latency: float = 0.01
    receipt_timeout: float = 120.0
    artifact: Artifact = field(default_factory=Artifact.load)

    def __post_init__(self) -> None:
        self.address = checksum(self.address)
        address = Web3.to_checksum_address(self.address)
        self._contract = self.w3.eth.contract(address=address, abi=self.artifact.abi)
        self._errors = _ErrorDecoder(self.artifact.abi)
        try:
            code = bytes(self.w3.eth.get_code(self.address))  # type: ignore[arg-type]
            self.chain_id = int(self.w3.eth.chain_id)
        except LedgerError:
            raise
        except Exception as exc:
            raise ChainUnreachable(f"cannot read the chain: {exc}") from exc
        if not code:
            raise ContractNotFound(f"no contract at {self.address} on chain {self.chain_id}")
        if not self.artifact.matches(code):
            raise ContractNotFound(
                f"the code at {self.address} is not this FederationLedger build "
                f"(artifact sha256 {self.artifact.sha256[:12]}); wrong address or version"
            )

    # ------------------------------------------------------------------ deployment

    @classmethod
    def deploy(
        cls,
        w3: Web3,
        deployer: LocalAccount,
        *,
        aggregator: str | None = None,
        reputation_alpha: int = DEFAULT_REPUTATION_ALPHA,
        artifact: Artifact | None = None,
        rpc_url: str = "",
    ) -> tuple[Ledger, Deployment]:
        """Deploys a new ledger with ``deployer`` as coordinator (and aggregator by default)."""
        art = artifact or Artifact.load()
        agg = checksum(aggregator or deployer.address)
        factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        receipt = _send(
            w3,
            deployer,
            factory.constructor(agg, reputation_alpha),
            decoder=_ErrorDecoder(art.abi),
            poll_latency=0.01,
            timeout=120.0,
        )
        address = receipt["contractAddress"]
        assert address is not None
        ledger = cls(w3, address, from_block=int(receipt["blockNumber"]), artifact=art)
        deployment = Deployment(
            address=ledger.address,
            chain_id=ledger.chain_id,
            block_number=int(receipt["blockNumber"]),
            tx_hash=receipt["transactionHash"].hex(),
            coordinator=checksum(deployer.address),
            aggregator=agg,
            reputation_alpha=reputation_alpha,
            artifact_sha256=art.sha256,
            rpc_url=rpc_url,
        )
        return ledger, deployment

    @classmethod
    def at(cls, w3: Web3, deployment: Deployment) -> Ledger:
        if int(w3.eth.chain_id) != deployment.chain_id:
            raise ContractNotFound(
                f"deployment is on chain {deployment.chain_id}, the endpoint serves chain "
                f"{w3.eth.chain_id}"
            )
        return cls(w3, deployment.address, from_block=deployment.block_number)

    # ------------------------------------------------------------------ transactions

    def _transact(self, signer: LocalAccount, call: Any) -> TxResult:
        receipt = _send(
            self.w3,
            signer,
            call,
            decoder=self._errors,
            poll_latency=self.poll_latency,
            timeout=self.receipt_timeout,
        )
        return TxResult(
            tx_hash=receipt["transactionHash"].hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
        )

    def register_site(self, signer: LocalAccount, site: str, name: str = "") -> TxResult:
        return self._transact(signer, self._fn.registerSite(checksum(site), name))

    def remove_site(self, signer: LocalAccount, site: str) -> TxResult:
        return self._transact(signer, self._fn.removeSite(checksum(site)))

    def set_aggregator(self, signer: LocalAccount, aggregator: str) -> TxResult:
        return self._transact(signer, self._fn.setAggregator(checksum(aggregator)))

    def open_round(
        self, signer: LocalAccount, model_cid: str, model_sha256: str, deadline: int
    ) -> tuple[int, TxResult]:
        """Opens the next round; returns its id (read from the RoundOpened event)."""
        result = self._transact(
            signer, self._fn.openRound(model_cid, to_bytes32(model_sha256), int(deadline))
        )
        opened = self.events(
            "RoundOpened", from_block=result.block_number, to_block=result.block_number
        )
        for event in opened:
            if event.tx_hash == result.tx_hash:
                return int(event.args["round"]), result
        raise TransactionFailed(f"openRound mined in {result.tx_hash} without a RoundOpened event")

    def submit_update(
        self, signer: LocalAccount, round_id: int, cid: str, sha256: str, num_samples: int
    ) -> TxResult:
        return self._transact(
            signer, self._fn.submitUpdate(round_id, cid, to_bytes32(sha256), int(num_samples))
        )

    def record_valuation(
        self, signer: LocalAccount, round_id: int, valuations: Sequence[Valuation]
    ) -> TxResult:
        """Posts the valuation; sites are put in the contract's required (address) order."""
        ordered = sorted(valuations, key=lambda v: int(checksum(v.site), 16))
        return self._transact(
            signer,
            self._fn.recordValuation(
                round_id,
                [checksum(v.site) for v in ordered],
                [v.score for v in ordered],
                [v.reason for v in ordered],
            ),
        )

    def finalize_round(
        self,
        signer: LocalAccount,
        round_id: int,
        *,
        global_cid: str,
        global_sha256: str,
        log_cid: str,
        log_sha256: str,
    ) -> TxResult:
        return self._transact(
            signer,
            self._fn.finalizeRound(
                round_id, global_cid, to_bytes32(global_sha256), log_cid, to_bytes32(log_sha256)
            ),
        )

    def cancel_round(self, signer: LocalAccount, round_id: int) -> TxResult:
        return self._transact(signer, self._fn.cancelRound(round_id))

    # ------------------------------------------------------------------ views

    @property
    def _fn(self) -> Any:
        return self._contract.functions

    def _view(self, call: Any) -> Any:
        try:
            return call.call()
        except Exception as exc:
            raise self._map_error(exc) from exc

    def _map_error(self, exc: BaseException) -> LedgerError:
        data = _revert_data(exc)
        decoded = self._errors.decode(data) if data else None
        if decoded is not None:
            return decoded
        return LedgerError(f"call to the ledger at {self.address} failed: {exc}")

    def coordinator(self) -> str:
        return str(self._view(self._fn.coordinator()))

    def aggregator(self) -> str:
        return str(self._view(self._fn.aggregator()))

    def reputation_alpha(self) -> int:
        return int(self._view(self._fn.reputationAlpha()))

    def current_round(self) -> int:
        return int(self._view(self._fn.currentRound()))

    def last_finalized_round(self) -> int:
        return int(self._view(self._fn.lastFinalizedRound()))

    def active_site_count(self) -> int:
        return int(self._view(self._fn.activeSiteCount()))

    def get_round(self, round_id: int) -> RoundInfo:
        """One round; CIDs come from its RoundOpened/RoundFinalized events."""
        raw = self._view(self._fn.getRound(round_id))
        phase = Phase(raw[1])
        opened = self.events("RoundOpened", argument_filters={"round": round_id})
        start_cid = str(opened[-1].args["modelCid"]) if opened else ""
        global_cid = log_cid = ""
        if phase == Phase.FINALIZED:
            finalized = self.events("RoundFinalized", argument_filters={"round": round_id})
            if finalized:
                global_cid = str(finalized[-1].args["globalCid"])
                log_cid = str(finalized[-1].args["logCid"])
        return RoundInfo(
            id=int(raw[0]),
            phase=phase,
            deadline=int(raw[2]),
            opened_at=int(raw[3]),
            submission_count=int(raw[4]),
            start_cid=start_cid,
            start_sha256=from_bytes32(raw[5]),
            global_cid=global_cid,
            global_sha256=from_bytes32(raw[6]),
            log_cid=log_cid,
            log_sha256=from_bytes32(raw[7]),
        )

    def rounds(self) -> list[RoundInfo]:
        return [self.get_round(r) for r in range(1, self.current_round() + 1)]

    def update_cids(self, round_id: int) -> dict[str, str]:
        """Site -> CID of its update in ``round_id`` (CIDs live in event data only)."""
        events = self.events("UpdateSubmitted", argument_filters={"round": round_id})
        return {checksum(e.args["site"]): str(e.args["cid"]) for e in events}

    def get_submissions(self, round_id: int) -> list[Submission]:
        """Every submission of the round, ordered by site address (the aggregation order)."""
        raw = self._view(self._fn.getSubmissions(round_id))
        cids = self.update_cids(round_id) if raw else {}
        return [self._submission(round_id, item, cids) for item in raw]

    def get_submission(self, round_id: int, site: str) -> Submission | None:
        raw = self._view(self._fn.getSubmission(round_id, checksum(site)))
        if int(raw[0], 16) == 0:
            return None
        return self._submission(round_id, raw, self.update_cids(round_id))

    @staticmethod
    def _submission(round_id: int, raw: Any, cids: dict[str, str]) -> Submission:
        site = checksum(raw[0])
        return Submission(
            round=round_id,
            site=site,
            cid=cids.get(site, ""),
            sha256=from_bytes32(raw[1]),
            num_samples=int(raw[2]),
            score=int(raw[3]),
            reason=int(raw[4]),
            weight=int(raw[5]),
        )

    def submitter_of(self, round_id: int, sha256: str) -> str | None:
        addr = str(self._view(self._fn.submitterOf(round_id, to_bytes32(sha256))))
        return None if int(addr, 16) == 0 else checksum(addr)

    def get_site(self, site: str) -> SiteInfo | None:
        raw = self._view(self._fn.getSite(checksum(site)))
        if int(raw[0], 16) == 0:
            return None
        return _site(raw)

    def get_sites(self) -> list[SiteInfo]:
        return [_site(raw) for raw in self._view(self._fn.getSites())]

    # ------------------------------------------------------------------ events

    def events(
        self,
        name: str,
        *,
        from_block: int | None = None,
        to_block: int | str = "latest",
        argument_filters: dict[str, Any] | None = None,
    ) -> list[LedgerEvent]:
        """Decoded events of one kind, in chain order."""
        try:
            event = getattr(self._contract.events, name)
        except AttributeError as exc:
            raise ConfigError(f"the ledger has no event {name!r}") from exc
        try:
            logs = event.get_logs(
                from_block=self.from_block if from_block is None else from_block,
                to_block=to_block,
                argument_filters=argument_filters,
            )
        except Exception as exc:
            raise LedgerError(f"cannot read {name} events: {exc}") from exc
        out = [
            LedgerEvent(
                name=name,
                block_number=int(log["blockNumber"]),
                tx_hash=log["transactionHash"].hex(),
                log_index=int(log["logIndex"]),
                args={k: _plain(v) for k, v in dict(log["args"]).items()},
            )
            for log in logs
        ]
        out.sort(key=lambda e: (e.block_number, e.log_index))
        return out

    def wait_for(
        self,
        predicate: Callable[[], bool],
        *,
        timeout: float,
        interval: float = 0.5,
        stop: Callable[[], bool] | None = None,
    ) -> bool:
        """Polls ``predicate`` until true, the timeout, or ``stop()``; returns the last value."""
        end = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= end or (stop is not None and stop()):
                return False
            time.sleep(interval)


def _site(raw: Any) -> SiteInfo:
    return SiteInfo(
        address=checksum(raw[0]),
        registered=bool(raw[1]),
        name=str(raw[2]),
        reputation=int(raw[3]),
        valued_rounds=int(raw[4]),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, str) and Web3.is_address(value):
        return checksum(value)
    return value


def _send(
    w3: Web3,
    signer: LocalAccount,
    call: Any,
    *,
    decoder: _ErrorDecoder,
    poll_latency: float,
    timeout: float,
) -> TxReceipt:
    """Estimate (surfacing reverts as our errors), sign locally, send, wait for the receipt."""

    def revert_or(exc: BaseException, fallback: str) -> LedgerError:
        data = _revert_data(exc)
        decoded = decoder.decode(data) if data else None
        if decoded is not None:
            return decoded
        text = str(exc)
        if "execution reverted" in text or "revert" in text.lower():
            return TransactionFailed(f"{fallback}: {text}")
        return LedgerError(f"{fallback}: {text}")

    sender = Web3.to_checksum_address(signer.address)
    try:
        gas = int(call.estimate_gas({"from": sender}))
    except Exception as exc:
        raise revert_or(exc, "the transaction would fail") from exc
    chain_id = int(w3.eth.chain_id)
    key = f"{chain_id}:{sender}"  # one lock per account and chain in this process
    tx_hash = None
    for attempt in range(4):
        with _SenderLocks.hold(key):
            nonce = int(w3.eth.get_transaction_count(sender, "pending"))
            try:
                tx = call.build_transaction(
                    {
                        "from": sender,
                        "nonce": nonce,
                        "gas": gas + gas // 5 + 10_000,
                        "chainId": chain_id,
                    }
                )
                signed = signer.sign_transaction(tx)
                tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
                break
            except Exception as exc:
                if any(s in str(exc).lower() for s in _NONCE_ERRORS) and attempt < 3:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise revert_or(exc, "sending the transaction failed") from exc
    assert tx_hash is not None
    try:
        receipt = w3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=timeout, poll_latency=poll_latency
        )
    except Exception as exc:
        raise TransactionFailed(f"transaction {tx_hash.hex()} not mined: {exc}") from exc
    if receipt["status"] != 1:
        # Replay at the mined block to recover the custom error (state changed since estimate).
        try:
            call.call({"from": sender}, block_identifier=receipt["blockNumber"] - 1)
        except Exception as exc:
            raise revert_or(exc, f"transaction {tx_hash.hex()} reverted") from exc
        raise TransactionFailed(f"transaction {tx_hash.hex()} reverted")
    return receipt
