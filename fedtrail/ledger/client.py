"""Typed client of the FederationLedger contract.

Transactions are signed locally (the node never hands a key to the RPC endpoint), gas is
estimated first so a refusal surfaces as the contract's own custom error mapped to our exception
tree, and nonces come from one lock per sender so concurrent threads never collide.
"""

from __future__ import annotations

import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Final, cast

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account.datastructures import SignedTransaction
from eth_account.signers.local import LocalAccount
from eth_utils.abi import collapse_if_tuple
from hexbytes import HexBytes
from web3 import EthereumTesterProvider, Web3
from web3._utils.method_formatters import receipt_formatter
from web3.datastructures import AttributeDict
from web3.exceptions import (
    ContractLogicError,
    RequestTimedOut,
    TransactionNotFound,
    Web3RPCError,
)
from web3.providers.rpc import HTTPProvider
from web3.types import FilterParams, RPCEndpoint, TxParams, TxReceipt

from fedtrail.errors import (
    ChainFault,
    ConfigError,
    ContractNotFound,
    DeploymentMismatch,
    LedgerError,
    TransactionFailed,
    chain_read_error,
    transient_rpc_error,
)
from fedtrail.ledger.artifact import Artifact
from fedtrail.ledger.errors import RevertDecoder, ledger_error, looks_like_revert, revert_data
from fedtrail.ledger.records import (
    Deployment,
    LedgerEvent,
    PeerRoundInfo,
    PrivacyAccount,
    PrivacySpend,
    Registrations,
    RegistryHistory,
    RoundInfo,
    RoundPoll,
    SiteInfo,
    SiteRoundView,
    Submission,
    TxResult,
    ValidatorStanding,
    Valuation,
    checksum,
    declines_among,
    from_bytes32,
    pack_scores,
    score_vote_hash,
    to_bytes32,
)
from fedtrail.protocol.codes import DEFAULT_MIN_ROUND_WINDOW, MAX_ROUND_WINDOW, Decline, Phase
from fedtrail.protocol.peers import (
    InvalidVotes,
    PeerOutcome,
    PeerVote,
    address_key,
    drop_screened,
    drop_withheld,
    peer_outcome,
)
from fedtrail.protocol.weights import DEFAULT_REPUTATION_ALPHA, SCORE_SCALE


class _SenderLocks:
    """One lock per sender in this process: the nonce is read from the node's pending count and
    the transaction sent while the lock is held, so threads never reuse a nonce. Other processes
    using the same key are handled by signing again on the node's nonce errors, once the node
    said it holds none of the call's own transactions (:func:`_send`)."""

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
    "replacement transaction underpriced",
)
"""A node's refusals of a send because the nonce is taken: by this call's own transaction (the
node holds it, :func:`_own_transaction` finds it) or by another process with the same key."""
_DROP_UPDATES: Final = "dropUpdates(uint256,address[],address[],address[])"
"""The combined drop's signature (:meth:`Ledger.has_drop_updates` looks for its selector)."""

_HELD_ERRORS = ("already known", "already imported", "alreadyknown", "known transaction")
"""A node's refusals of a send because it already holds these very bytes (geth: "already
known"; Anvil: "transaction already imported")."""


# --------------------------------------------------------------------------- the client


@dataclass
class Ledger:
    """A deployed FederationLedger reached through ``w3``.

    Get one from ``connect``, ``at`` or ``deploy``: they read the chain id and check that the
    code at the address is this build. The constructor itself makes no RPC call.
    """

    w3: Web3
    address: str
    chain_id: int
    artifact: Artifact
    from_block: int = 0
    poll_latency: float = 0.01
    receipt_timeout: float = 120.0

    def __post_init__(self) -> None:
        self.address = checksum(self.address)
        address = Web3.to_checksum_address(self.address)
        self._contract = self.w3.eth.contract(address=address, abi=self.artifact.abi)
        self._errors = RevertDecoder(self.artifact.abi)
        self._terminal: dict[int, RoundInfo] = {}
        """Finalized and cancelled rounds as read (their records no longer change)."""
        self._min_window: int | None = None
        self._created: int | None = None
        self._creation_tx = ""
        """The transaction that created this contract, once a receipt has shown it."""
        self._drop_updates: bool | None = None
        """Whether the ledger has ``dropUpdates`` (:meth:`has_drop_updates`), once read."""

    @classmethod
    def connect(
        cls, w3: Web3, address: str, *, from_block: int = 0, artifact: Artifact | None = None
    ) -> Ledger:
        """The ledger at ``address``; refuses an address without this FederationLedger build."""
        art = artifact or Artifact.load()
        address = checksum(address)
        try:
            code = bytes(w3.eth.get_code(address))  # type: ignore[arg-type]
            chain_id = int(w3.eth.chain_id)
        except Exception as exc:
            raise chain_read_error(exc, f"cannot read the code at {address}") from exc
        if not code:
            raise ContractNotFound(f"no contract at {address} on chain {chain_id}")
        if not art.matches(code):
            raise ContractNotFound(
                f"the code at {address} is not this FederationLedger build "
                f"(artifact sha256 {art.sha256[:12]}); wrong address or version"
            )
        return cls(w3, address, chain_id, art, from_block=from_block)

    # ------------------------------------------------------------------ deployment

    @classmethod
    def deploy(
        cls,
        w3: Web3,
        deployer: LocalAccount,
        *,
        aggregator: str | None = None,
        reputation_alpha: int = DEFAULT_REPUTATION_ALPHA,
        min_round_window: int = DEFAULT_MIN_ROUND_WINDOW,
        artifact: Artifact | None = None,
        rpc_url: str = "",
    ) -> tuple[Ledger, Deployment]:
        """Deploys a new ledger with ``deployer`` as coordinator (and aggregator by default);
        ``min_round_window`` seconds is the shortest commit and reveal window it accepts."""
        if not 0 <= min_round_window < 2**64:
            raise ConfigError(f"min_round_window {min_round_window} is not 0..2**64-1 seconds")
        if min_round_window > MAX_ROUND_WINDOW:
            raise ConfigError(
                f"a minimum round window of {min_round_window} s would deploy a ledger where no "
                f"round can open: the aggregator's windows are at most {MAX_ROUND_WINDOW} s "
                "(aggregator run --round-seconds, --reveal-seconds), and the contract needs the "
                "round's deadlines (now + each window) to fit in 64 bits"
            )
        art = artifact or Artifact.load()
        agg = checksum(aggregator or deployer.address)
        factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        receipt = _send(
            w3,
            deployer,
            factory.constructor(agg, reputation_alpha, min_round_window),
            decoder=RevertDecoder(art.abi),
            poll_latency=0.01,
            timeout=120.0,
        )
        address = receipt["contractAddress"]
        assert address is not None
        ledger = cls.connect(w3, address, from_block=int(receipt["blockNumber"]), artifact=art)
        ledger._created = ledger.from_block
        ledger._creation_tx = receipt["transactionHash"].hex()
        deployment = Deployment(
            address=ledger.address,
            chain_id=ledger.chain_id,
            block_number=int(receipt["blockNumber"]),
            tx_hash=receipt["transactionHash"].hex(),
            coordinator=checksum(deployer.address),
            aggregator=agg,
            reputation_alpha=reputation_alpha,
            min_round_window=min_round_window,
            artifact_sha256=art.sha256,
            rpc_url=rpc_url,
        )
        return ledger, deployment

    @classmethod
    def at(cls, w3: Web3, deployment: Deployment) -> Ledger:
        """The ledger a deployment file names, its ``block_number`` and ``tx_hash`` checked
        against the chain (:meth:`creation_block`): every event read starts at that block, so a
        later one would hide the events before it (registrations, whole rounds) from every
        reader, ``audit verify`` included; an earlier or a foreign transaction is refused too."""
        if int(w3.eth.chain_id) != deployment.chain_id:
            raise ContractNotFound(
                f"deployment is on chain {deployment.chain_id}, the endpoint serves chain "
                f"{w3.eth.chain_id}"
            )
        ledger = cls.connect(w3, deployment.address, from_block=deployment.block_number)
        created = ledger.creation_block(deployment.tx_hash)
        if deployment.block_number != created:
            raise DeploymentMismatch(
                f"the deployment file says {ledger.address} was created in block "
                f"{deployment.block_number}; the chain created it in block {created} (a later "
                "block would hide every event before it from the readers)"
            )
        if ledger._creation_tx != deployment.tx_hash and not ledger._creation_receipt(
            deployment.tx_hash
        ):
            raise DeploymentMismatch(
                f"the deployment file's tx_hash {deployment.tx_hash} is not the transaction "
                f"that created {ledger.address} on chain {ledger.chain_id}"
            )
        return ledger

    def creation_block(self, tx_hash: str = "") -> int:
        """The block whose transaction created this contract, read from the chain alone: the
        receipt of ``tx_hash`` when that transaction created this address (checked, not
        trusted), else the first block at which ``eth_getCode`` returns code, by binary search
        (the contract cannot self-destruct, so code once there stays). Raises
        ``ChainUnreachable`` when the endpoint does not answer, ``ChainFault`` when the node
        serves neither (a node without old state)."""
        if self._created is not None:
            return self._created
        receipt = self._creation_receipt(tx_hash)
        if receipt is not None:
            self._created = int(receipt["blockNumber"])
            self._creation_tx = tx_hash
            return self._created
        address = Web3.to_checksum_address(self.address)
        try:
            low, high = 0, int(self.w3.eth.block_number)
            while low < high:  # code at high, none before low
                middle = (low + high) // 2
                if bytes(self.w3.eth.get_code(address, block_identifier=middle)):
                    high = middle
                else:
                    low = middle + 1
        except Exception as exc:
            raise chain_read_error(
                exc,
                f"cannot find the block that created {self.address}: the node serves no "
                "receipt for the deployment's transaction and no code at past blocks",
            ) from exc
        self._created = low
        return low

    def check_from_block(self) -> None:
        """Refuses a ``from_block`` after the contract's creation (:meth:`creation_block`): the
        events before it would be missing from every read, silently."""
        if self.from_block > 0 and self.from_block > self.creation_block():
            raise DeploymentMismatch(
                f"events are read from block {self.from_block}, but {self.address} was created "
                f"in block {self.creation_block()}: the events between would be hidden"
            )

    def _creation_receipt(self, tx_hash: str) -> TxReceipt | None:
        """``tx_hash``'s receipt when that transaction succeeded and created this address."""
        digest = tx_hash.removeprefix("0x")
        if len(digest) != 64:
            return None
        try:
            receipt = self.w3.eth.get_transaction_receipt("0x" + digest)  # type: ignore[arg-type]
        except Exception:  # not found, or a node that cannot say: the search decides
            return None
        created = receipt.get("contractAddress")
        if not created or checksum(str(created)) != self.address or receipt["status"] != 1:
            return None
        return receipt

    # ------------------------------------------------------------------ transactions

    def _transact(
        self, signer: LocalAccount, call: Any, *, ready: _Preflight | None = None
    ) -> TxResult:
        receipt = _send(
            self.w3,
            signer,
            call,
            decoder=self._errors,
            poll_latency=self.poll_latency,
            timeout=self.receipt_timeout,
            contract=self._contract,
            ready_ahead=ready,
        )
        return TxResult(
            tx_hash=receipt["transactionHash"].hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            logs=tuple(receipt.get("logs") or ()),
        )

    def register_site(
        self, signer: LocalAccount, site: str, name: str, max_samples: int
    ) -> TxResult:
        """Registers ``site`` from the next round on, allowed to claim at most ``max_samples``
        samples per update (coordinator only)."""
        return self._transact(
            signer, self._fn.registerSite(checksum(site), name, _uint64(max_samples, "max_samples"))
        )

    def set_max_samples(self, signer: LocalAccount, site: str, max_samples: int) -> TxResult:
        """Changes the most samples ``site`` may claim, from its next reveal on."""
        return self._transact(
            signer, self._fn.setMaxSamples(checksum(site), _uint64(max_samples, "max_samples"))
        )

    def set_privacy_budget(
        self, signer: LocalAccount, site: str, epsilon_budget_micro: int
    ) -> TxResult:
        """Sets ``site``'s epsilon budget in micro-epsilon (coordinator only; 0: no budget).
        The contract refuses a budget below what the site already spent."""
        return self._transact(
            signer,
            self._fn.setPrivacyBudget(
                checksum(site), _uint64(epsilon_budget_micro, "epsilon_budget_micro")
            ),
        )

    def remove_site(self, signer: LocalAccount, site: str) -> TxResult:
        return self._transact(signer, self._fn.removeSite(checksum(site)))

    def set_aggregator(self, signer: LocalAccount, aggregator: str) -> TxResult:
        return self._transact(signer, self._fn.setAggregator(checksum(aggregator)))

    def transfer_coordinator(self, signer: LocalAccount, new_coordinator: str) -> TxResult:
        """Offers the coordinator role to ``new_coordinator`` (the zero address withdraws the
        offer); the role moves only when that account calls ``accept_coordinator``."""
        return self._transact(signer, self._fn.transferCoordinator(checksum(new_coordinator)))

    def accept_coordinator(self, signer: LocalAccount) -> TxResult:
        """Takes the coordinator role offered to ``signer``."""
        return self._transact(signer, self._fn.acceptCoordinator())

    def open_round(
        self,
        signer: LocalAccount,
        model_cid: str,
        model_sha256: str,
        *,
        terms_cid: str,
        terms_sha256: str,
        commit_seconds: int,
        reveal_seconds: int,
    ) -> tuple[int, TxResult]:
        """Opens the next round under the terms document ``terms_cid``/``terms_sha256``: the
        contract sets the commit deadline ``commit_seconds`` after the block that mines this
        transaction and the reveal deadline ``reveal_seconds`` after that (read them back from
        RoundOpened or :meth:`get_round`). Returns the round id (read from the RoundOpened
        event)."""
        result = self._transact(
            signer,
            self._fn.openRound(
                model_cid,
                to_bytes32(model_sha256),
                terms_cid,
                to_bytes32(terms_sha256),
                _uint64(commit_seconds, "commit_seconds"),
                _uint64(reveal_seconds, "reveal_seconds"),
            ),
        )
        return self._opened(result, "openRound"), result

    def open_peer_round(
        self,
        signer: LocalAccount,
        *,
        model_cid: str,
        model_sha256: str,
        terms_cid: str,
        terms_sha256: str,
        commit_seconds: int,
        reveal_seconds: int,
        score_commit_seconds: int,
        score_reveal_seconds: int,
        quorum: int,
    ) -> tuple[int, TxResult]:
        """Opens the next round as a peer round: like :meth:`open_round`, then validators
        commit score vectors for ``score_commit_seconds`` after the reveal deadline and reveal
        them for ``score_reveal_seconds`` after that (the contract sets both deadlines);
        ``quorum`` revealed vectors value it. Returns the round id."""
        if not 0 < int(quorum) < 2**32:
            raise ConfigError(f"quorum {quorum} does not fit the contract's uint32 (at least 1)")
        result = self._transact(
            signer,
            self._fn.openPeerRound(
                model_cid,
                to_bytes32(model_sha256),
                terms_cid,
                to_bytes32(terms_sha256),
                _uint64(commit_seconds, "commit_seconds"),
                _uint64(reveal_seconds, "reveal_seconds"),
                _uint64(score_commit_seconds, "score_commit_seconds"),
                _uint64(score_reveal_seconds, "score_reveal_seconds"),
                int(quorum),
            ),
        )
        return self._opened(result, "openPeerRound"), result

    def _opened(self, result: TxResult, function: str) -> int:
        """The id of the round ``result`` (a mined open transaction) opened."""
        return int(self.round_opened(result, function=function).args["round"])

    def round_opened(self, result: TxResult, *, function: str = "openRound") -> LedgerEvent:
        """The RoundOpened event of ``result``, a mined open transaction (its round id and
        deadlines): decoded from the receipt's logs that this ledger emitted (no request; issue
        18), else, when they hold none (a result built without them), read with
        ``eth_getLogs`` in its block as before. ``TransactionFailed`` when neither has it."""
        query = self._log_query(
            "RoundOpened", from_block=result.block_number, to_block=result.block_number
        )
        ours = [
            log
            for log in result.logs
            if str(log.get("address", "")).lower() == self.address.lower()
            and log.get("topics")
            and _bytes(log["topics"][0]) == query.codec.topic0
        ]
        opened = (
            query.decode(ours)
            if ours
            else self.events(
                "RoundOpened", from_block=result.block_number, to_block=result.block_number
            )
        )
        for event in opened:
            if event.tx_hash == result.tx_hash:
                return event
        raise TransactionFailed(f"{function} mined in {result.tx_hash} without a RoundOpened event")

    def commit_update(
        self,
        signer: LocalAccount,
        round_id: int,
        commitment: str,
        *,
        prepared: PreparedCommit | None = None,
    ) -> TxResult:
        """Commits ``signer`` to its update: ``commitment`` is
        ``fedtrail.ledger.commitment(signer.address, round_id, sha256, num_samples)``.
        ``prepared``: :meth:`prepare_commit`'s answer for the same commitment (its preflight
        is then not asked again; one for another commitment or signer is not used)."""
        call = self._fn.commitUpdate(round_id, to_bytes32(commitment))
        ready = None
        if prepared is not None and (prepared.signer, prepared.round_id, prepared.commitment) == (
            checksum(signer.address),
            round_id,
            commitment,
        ):
            ready = prepared.preflight
        return self._transact(signer, call, ready=ready)

    def prepare_commit(
        self, signer: LocalAccount, round_id: int, commitment: str
    ) -> PreparedCommit:
        """The chain's clock (the pending block's timestamp) and :meth:`commit_update`'s
        preflight (gas estimate, nonce, fees) in one JSON-RPC batch, for a site that reads the
        clock right before it commits (its chain-time measure, issue 18: one round trip a site
        and round fewer). Sends nothing and never raises: what it could not read is None, and
        is read the usual way by the caller and by :meth:`commit_update`."""
        call = self._fn.commitUpdate(round_id, to_bytes32(commitment))
        sender = checksum(signer.address)
        pending = (RPCEndpoint("eth_getBlockByNumber"), ["pending", False])
        ready, more = _preflight_with(self.w3, call, sender, self._contract, [pending])
        clock = None
        if more and "error" not in more[0]:
            clock = _block_timestamp(more[0].get("result"))
        return PreparedCommit(sender, round_id, commitment, clock, ready)

    def reveal_update(
        self,
        signer: LocalAccount,
        round_id: int,
        cid: str,
        sha256: str,
        num_samples: int,
        *,
        epsilon_micro: int | None = None,
    ) -> TxResult:
        """Reveals the update ``signer`` committed to (after the commit deadline). With
        ``epsilon_micro`` (the epsilon the update spent, micro-epsilon, positive) it is a
        private reveal that charges the site's privacy account; None is a plain reveal, which
        the contract refuses for a site with a budget."""
        args = (round_id, cid, to_bytes32(sha256), _uint64(num_samples, "num_samples"))
        if epsilon_micro is None:
            return self._transact(signer, self._fn.revealUpdate(*args))
        micro = _uint64(epsilon_micro, "epsilon_micro")
        return self._transact(signer, self._fn.revealPrivateUpdate(*args, micro))

    def commit_scores(self, signer: LocalAccount, round_id: int, commitment: str) -> TxResult:
        """Commits validator ``signer`` to its score vector in a peer round: ``commitment`` is
        ``fedtrail.ledger.score_commitment(signer.address, round_id, scores, salt)``."""
        return self._transact(signer, self._fn.commitScores(round_id, to_bytes32(commitment)))

    def reveal_scores(
        self, signer: LocalAccount, round_id: int, scores: Sequence[int], salt: bytes
    ) -> TxResult:
        """Reveals the score vector ``signer`` committed to (entry i scores the i-th revealed
        update in ascending site address order), with the 32-byte ``salt`` of its commitment."""
        if len(salt) != 32:
            raise ConfigError(f"the salt must be 32 bytes, not {len(salt)}")
        values = [_score(x) for x in scores]
        return self._transact(signer, self._fn.revealScores(round_id, values, bytes(salt)))

    def record_peer_valuation(
        self,
        signer: LocalAccount,
        round_id: int,
        sites: Sequence[str],
        votes: Sequence[PeerVote],
        withheld: Sequence[str] | None = None,
        medians: Sequence[int] | None = None,
    ) -> TxResult:
        """Values a peer round from its revealed votes (any account may send it): ``sites``
        are the revealed updates and ``votes`` every revealed vector, each aligned with the
        sites in address order; ``withheld`` the validators that committed scores and did not
        reveal them (None: read from the chain, :meth:`peer_withheld`); all are put in the
        contract's (address) order here. ``medians`` (aligned with the sites in address order)
        are what the contract checks, not computes, so that its cost stays linear; None:
        :meth:`peer_medians`. The vectors travel packed, 4 bytes an entry."""
        ordered_sites = sorted((checksum(s) for s in sites), key=address_key)
        ordered = sorted(votes, key=lambda v: address_key(v.validator))
        packed = [pack_scores(v.scores) for v in ordered]  # refuses a bad entry before any read
        if withheld is None:
            withheld = self.peer_withheld(round_id)
        if medians is None:
            medians = self.peer_medians(round_id, ordered_sites, ordered)
        return self._transact(
            signer,
            self._fn.recordPeerValuation(
                round_id,
                ordered_sites,
                [checksum(v.validator) for v in ordered],
                packed,
                [_score(m) for m in medians],
                sorted((checksum(w) for w in withheld), key=address_key),
            ),
        )

    def peer_medians(
        self, round_id: int, sites: Sequence[str], votes: Sequence[PeerVote]
    ) -> list[int]:
        """Each site's median as ``recordPeerValuation`` checks it: the rule of
        :func:`fedtrail.protocol.peers.peer_outcome` over ``sites`` and ``votes`` (address
        order) with the validator standing earlier rounds left and the round's quorum. Zeros
        for input the rule refuses (or an aggregator round): the contract then names the
        problem with its own error."""
        info = self.get_peer_round(round_id)
        if info is None:
            return [0] * len(sites)
        try:
            outcome = peer_outcome(
                sites, votes, standing=self.validator_ratings_before(round_id), quorum=info.quorum
            )
        except InvalidVotes:
            return [0] * len(sites)
        return list(outcome.scores)

    def record_valuation(
        self, signer: LocalAccount, round_id: int, valuations: Sequence[Valuation]
    ) -> TxResult:
        """Posts the valuation of every revealed update; sites are put in the contract's
        required (address) order."""
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

    def drop_withheld(
        self, signer: LocalAccount, round_id: int, sites: Sequence[str], dropped: Sequence[str]
    ) -> TxResult:
        """Drops the weighted updates of valued peer round ``round_id`` that cannot be read back
        (``dropped``) and re-derives the others' weights; ``sites`` are the round's revealed
        updates. Both are put in the contract's (address) order here."""
        return self._transact(
            signer,
            self._fn.dropWithheld(
                round_id,
                sorted((checksum(s) for s in sites), key=address_key),
                sorted((checksum(d) for d in dropped), key=address_key),
            ),
        )

    def drop_screened(
        self, signer: LocalAccount, round_id: int, sites: Sequence[str], dropped: Sequence[str]
    ) -> TxResult:
        """Drops the weighted updates of valued peer round ``round_id`` that the round's public
        free-rider screen marks (``dropped``; round terms ``valuation.public_screen``) and
        re-derives the others' weights; ``sites`` are the round's revealed updates. Both are put
        in the contract's (address) order here."""
        return self._transact(
            signer,
            self._fn.dropScreened(
                round_id,
                sorted((checksum(s) for s in sites), key=address_key),
                sorted((checksum(d) for d in dropped), key=address_key),
            ),
        )

    def drop_updates(
        self,
        signer: LocalAccount,
        round_id: int,
        sites: Sequence[str],
        *,
        withheld: Sequence[str] = (),
        screened: Sequence[str] = (),
    ) -> tuple[TxResult, ...]:
        """Drops from valued peer round ``round_id`` the weighted updates that cannot be read
        back (``withheld``, as :meth:`drop_withheld`) and those its public screen marks
        (``screened``, as :meth:`drop_screened`); ``sites`` are the round's revealed updates.
        With both, one ``dropUpdates`` transaction: one re-weighting instead of two (issue 14's
        gas bar), the same final state and the same per-site events as the two calls in that
        order. With one kind only, or on a ledger deployed before ``dropUpdates``
        (:meth:`has_drop_updates`), ``dropWithheld`` then ``dropScreened``. :class:`ConfigError`,
        before anything is sent, for empty lists or a site in both (the contract refuses the
        latter too: ``DroppedTwice``). The receipts, in order."""
        withheld = sorted((checksum(d) for d in withheld), key=address_key)
        screened = sorted((checksum(d) for d in screened), key=address_key)
        if not withheld and not screened:
            raise ConfigError(f"round {round_id}: no update to drop")
        keys = {address_key(d) for d in withheld}
        both = [d for d in screened if address_key(d) in keys]
        if both:  # two calls would not be atomic: refused here, before anything is sent
            raise ConfigError(
                f"round {round_id}: {', '.join(both)} listed both as withheld and as screened: "
                "one drop per update"
            )
        if withheld and screened and self.has_drop_updates():
            ordered = sorted((checksum(s) for s in sites), key=address_key)
            call = self._fn.dropUpdates(round_id, ordered, withheld, screened)
            return (self._transact(signer, call),)
        out = [self.drop_withheld(signer, round_id, sites, withheld)] if withheld else []
        if screened:
            out.append(self.drop_screened(signer, round_id, sites, screened))
        return tuple(out)

    def has_drop_updates(self) -> bool:
        """Whether this ledger has ``dropUpdates`` (session 59): its artifact's ABI names it and
        the code at its address holds the function's selector (solc's dispatcher pushes every
        external function's selector, PUSH4). A ledger deployed before it has neither;
        :meth:`connect` refuses code that is not the artifact's, so an old ledger is reached
        only through its own artifact, or through a ledger made directly on an address. Read
        once per ledger object."""
        if self._drop_updates is None:
            in_abi = any(
                item.get("type") == "function" and item.get("name") == "dropUpdates"
                for item in self.artifact.abi
            )
            if not in_abi:
                self._drop_updates = False
            else:
                selector = bytes(Web3.keccak(text=_DROP_UPDATES))[:4]
                try:
                    code = bytes(self.w3.eth.get_code(Web3.to_checksum_address(self.address)))
                except Exception as exc:
                    raise chain_read_error(exc, f"cannot read the code at {self.address}") from exc
                self._drop_updates = b"\x63" + selector in code
        return self._drop_updates

    # ------------------------------------------------------------------ views

    @property
    def _fn(self) -> Any:
        return self._contract.functions

    def _view(self, call: Any) -> Any:
        try:
            return _call(self.w3, self.address, call, self._contract)
        except Exception as exc:
            cause = _with_revert_data(exc, call, {})
            what = f"call to the ledger at {self.address} failed"
            error = ledger_error(cause, self._errors, what, reverted=ChainFault)
            if type(error) is LedgerError:  # no revert: an outage, or an answer that stays
                error = chain_read_error(cause, what)
            raise error from cause

    def coordinator(self) -> str:
        return str(self._view(self._fn.coordinator()))

    def aggregator(self) -> str:
        return str(self._view(self._fn.aggregator()))

    def pending_coordinator(self) -> str | None:
        """The account offered the coordinator role, or None."""
        addr = str(self._view(self._fn.pendingCoordinator()))
        return None if int(addr, 16) == 0 else checksum(addr)

    def reputation_alpha(self) -> int:
        return int(self._view(self._fn.reputationAlpha()))

    def min_round_window(self) -> int:
        """The shortest commit and reveal window; immutable in the contract, so read once per
        client (issue 18: a request at every round's open)."""
        if self._min_window is None:
            self._min_window = int(self._view(self._fn.minRoundWindow()))
        return self._min_window

    def current_round(self) -> int:
        return int(self._view(self._fn.currentRound()))

    def last_finalized_round(self) -> int:
        return int(self._view(self._fn.lastFinalizedRound()))

    def active_site_count(self) -> int:
        return int(self._view(self._fn.activeSiteCount()))

    def get_round(self, round_id: int, *, fresh: bool = False) -> RoundInfo:
        """One round; CIDs come from its RoundOpened/RoundFinalized events. The view and both
        event queries go in one JSON-RPC batch (:meth:`_batch`; one by one where the provider
        takes no batch). A finalized or cancelled round's record can no longer change (the
        contract moves it out of neither phase): it is kept and answered without a read,
        unless ``fresh``: a reorganisation deeper than the round's closing can drop its
        ``openRound`` and the round be opened again (a node checking the opening it recorded
        reads it each time; a kept record the read finds open again is forgotten)."""
        done = None if fresh else self._terminal.get(round_id)
        if done is not None:
            return done
        view = self._fn.getRound(round_id)
        queries = [
            self._log_query(name, argument_filters={"round": round_id})
            for name in ("RoundOpened", "RoundFinalized")
        ]
        batch = self._batch([view], queries)
        if batch is None:
            raw = self._view(view)
            opened = self.events("RoundOpened", argument_filters={"round": round_id})
            finalized = (
                self.events("RoundFinalized", argument_filters={"round": round_id})
                if Phase(raw[1]) == Phase.FINALIZED
                else []
            )
        else:
            raw, (opened, finalized) = batch.views[0], batch.events
        info = _round(raw, opened, finalized)
        if info.phase in (Phase.FINALIZED, Phase.CANCELLED):
            self._terminal[round_id] = info
        else:
            self._terminal.pop(round_id, None)  # closed once, on a branch a reorg dropped
        return info

    def rounds(self) -> list[RoundInfo]:
        return [self.get_round(r) for r in range(1, self.current_round() + 1)]

    def update_cids(self, round_id: int) -> dict[str, str]:
        """Site -> CID of its revealed update in ``round_id`` (CIDs live in event data only)."""
        return _update_cids(self.events("UpdateSubmitted", argument_filters={"round": round_id}))

    def commit_orders(self, round_id: int) -> dict[str, int]:
        """Site -> 1-based commit order in ``round_id``: the chain order (block, log index) of
        the round's UpdateCommitted events, which the contract does not store."""
        return _commit_orders(self.events("UpdateCommitted", argument_filters={"round": round_id}))

    def get_submissions(
        self, round_id: int, *, include_unrevealed: bool = False
    ) -> list[Submission]:
        """The revealed updates of the round (what its valuation covers), ordered by site
        address (the aggregation order); with ``include_unrevealed``, every commitment."""
        view = self._fn.getSubmissions(round_id)
        queries = self._submissions_queries(round_id)
        batch = self._batch([view], queries)  # the view and both event queries, one round trip
        if batch is None:
            return self._submissions_from(round_id, self._view(view), None, include_unrevealed)
        return self._submissions_from(round_id, batch.views[0], batch.events, include_unrevealed)

    def _submissions_queries(self, round_id: int) -> list[_LogQuery]:
        """The events :meth:`get_submissions` reads beside its view: the round's reveals (their
        CIDs) and commitments (their order)."""
        return [
            self._log_query(name, argument_filters={"round": round_id})
            for name in ("UpdateSubmitted", "UpdateCommitted")
        ]

    def _submissions_from(
        self,
        round_id: int,
        raw: Any,
        events: Sequence[list[LedgerEvent]] | None,
        include_unrevealed: bool,
    ) -> list[Submission]:
        """:meth:`get_submissions`' answer from its view's result ``raw`` and its events as the
        same batch read them (None: read here, one request each)."""
        if not include_unrevealed:
            raw = [item for item in raw if item[1]]
        if not raw:
            return []
        if events is None:
            cids, orders = self.update_cids(round_id), self.commit_orders(round_id)
        else:
            cids, orders = _update_cids(events[0]), _commit_orders(events[1])
        return [self._submission(round_id, item, cids, orders) for item in raw]

    def declines(self, round_id: int) -> dict[str, Decline]:
        """Site -> the reason it declared for refusing ``round_id``'s committed terms
        (:func:`~fedtrail.ledger.records.declines_among` of every commitment of the round)."""
        return declines_among(
            self.get_submissions(round_id, include_unrevealed=True),
            round_id,
            self.get_round(round_id).terms_sha256,
        )

    def get_submission(self, round_id: int, site: str) -> Submission | None:
        """``site``'s commitment (and update, once revealed) in the round; None without one.
        The view and the two event queries go in one JSON-RPC batch (:meth:`_batch`)."""
        view = self._fn.getSubmission(round_id, checksum(site))
        batch = self._batch([view], self._submission_queries(round_id, site))
        if batch is None:
            raw = self._view(view)
            if int(raw[0], 16) == 0:
                return None
            return self._submission(
                round_id, raw, self.update_cids(round_id), self.commit_orders(round_id)
            )
        return self._submission_of(round_id, batch.views[0], batch.events)

    def _submission_queries(self, round_id: int, site: str) -> list[_LogQuery]:
        """The events :meth:`_submission_of` reads: ``site``'s reveal of ``round_id`` (its CID)
        and every commitment of the round (the commit order is the site's place among them)."""
        return [
            self._log_query(
                "UpdateSubmitted", argument_filters={"round": round_id, "site": checksum(site)}
            ),
            self._log_query("UpdateCommitted", argument_filters={"round": round_id}),
        ]

    def _submission_of(
        self, round_id: int, raw: Any, events: Sequence[list[LedgerEvent]]
    ) -> Submission | None:
        if int(raw[0], 16) == 0:
            return None
        return self._submission(round_id, raw, _update_cids(events[0]), _commit_orders(events[1]))

    def site_round(self, round_id: int, site: str) -> SiteRoundView:
        """What a site node reads at each step of ``round_id`` (:class:`SiteRoundView`): the
        round (as :meth:`get_round`), ``site``'s commitment (as :meth:`get_submission`), the
        pending block's timestamp, the last finalized round, ``site``'s privacy account, its
        cap (as :meth:`get_site`) and the round's peer record (as :meth:`get_peer_round`), in
        one JSON-RPC batch of six views, four event queries and the pending block; one by one
        where the provider takes no batch or an entry answers with an error (which the single
        request then raises)."""
        views = [
            self._fn.getRound(round_id),
            self._fn.getSubmission(round_id, checksum(site)),
            self._fn.lastFinalizedRound(),
            self._fn.privacyAccount(checksum(site)),
            self._fn.getSite(checksum(site)),
            self._fn.getPeerRound(round_id),
        ]
        queries = [
            self._log_query(name, argument_filters={"round": round_id})
            for name in ("RoundOpened", "RoundFinalized")
        ] + self._submission_queries(round_id, site)
        pending = (RPCEndpoint("eth_getBlockByNumber"), ["pending", False])
        batch = self._batch(views, queries, extra=[pending])
        timestamp = None if batch is None else _block_timestamp(batch.extra[0])
        if batch is None or timestamp is None:
            budget, spent = self._view(views[3])
            known = self.get_site(site)
            return SiteRoundView(
                info=self.get_round(round_id),
                submission=self.get_submission(round_id, site),
                pending_timestamp=_get_block_timestamp(self.w3, "pending"),
                last_finalized=self.last_finalized_round(),
                privacy=PrivacyAccount(budget_micro=int(budget), spent_micro=int(spent)),
                max_samples=None if known is None else known.max_samples,
                peer=self.get_peer_round(round_id),
            )
        raw_round, raw_sub, last, (budget, spent), raw_site, raw_peer = batch.views
        opened, finalized, *submitted = batch.events
        info = _round(raw_round, opened, finalized)
        if info.phase in (Phase.FINALIZED, Phase.CANCELLED):
            self._terminal[round_id] = info
        else:
            self._terminal.pop(round_id, None)  # closed once, on a branch a reorg dropped
        return SiteRoundView(
            info=info,
            submission=self._submission_of(round_id, raw_sub, submitted),
            pending_timestamp=timestamp,
            last_finalized=int(last),
            privacy=PrivacyAccount(budget_micro=int(budget), spent_micro=int(spent)),
            max_samples=None if int(raw_site[0], 16) == 0 else _site(raw_site).max_samples,
            peer=_peer_round(raw_peer),
        )

    @staticmethod
    def _submission(
        round_id: int, raw: Any, cids: dict[str, str], orders: dict[str, int]
    ) -> Submission:
        site = checksum(raw[0])
        revealed = bool(raw[1])
        return Submission(
            round=round_id,
            site=site,
            cid=cids.get(site, "") if revealed else "",
            sha256=from_bytes32(raw[3]) if revealed else "",
            num_samples=int(raw[4]),
            score=int(raw[5]),
            reason=int(raw[6]),
            weight=int(raw[7]),
            commitment=from_bytes32(raw[2]),
            commit_order=orders.get(site, 0),
            revealed=revealed,
        )

    def get_site(self, site: str) -> SiteInfo | None:
        raw = self._view(self._fn.getSite(checksum(site)))
        if int(raw[0], 16) == 0:
            return None
        return _site(raw)

    def names_at_finalize(self, round_id: int) -> dict[str, str]:
        """Site -> the name it was registered under when ``round_id`` was finalized (its last
        ``SiteRegistered`` event before the round's ``RoundFinalized``; every registration so
        far for a round not finalized). A removed site may be registered again under another
        name, and ``getSite`` holds only the latest: a round's log names its sites as the
        registry did when the aggregator wrote it. Reads every registration: an audit of
        many rounds reads :meth:`registrations` once and asks it (``names_at``)."""
        return self.registrations(round_id).names_at(round_id)

    def registrations(self, round_id: int | None = None) -> Registrations:
        """Every ``SiteRegistered`` event and every round's finalization (``round_id``'s only,
        when given), in two event reads; the finalizations first, so a registration mined
        between the two reads comes after every finalization read and no round's names gain
        it."""
        filters = None if round_id is None else {"round": round_id}
        finalized = {
            int(e.args["round"]): (e.block_number, e.log_index)
            for e in self.events("RoundFinalized", argument_filters=filters)
        }
        return Registrations(
            events=tuple(
                ((e.block_number, e.log_index), checksum(e.args["site"]), str(e.args["name"]))
                for e in self.events("SiteRegistered")  # in chain order
            ),
            finalized=finalized,
        )

    def registry_history(self, round_id: int | None = None) -> RegistryHistory:
        """The registry's history (:class:`RegistryHistory`) for every round, or only for
        ``round_id`` when given, read once: each of ``RoundOpened``, ``RoundValued``,
        ``RoundFinalized`` (filtered by round when given), ``SiteRegistered``, ``SiteRemoved``,
        ``MaxSamplesSet`` and ``PrivacyBudgetSet`` in one event read, and the timestamp of each
        block holding a removal, cap or budget set after a round read opened, once per block.
        The rounds' events first (as in :meth:`registrations`), so a registry change mined
        between the reads comes after every opening, valuation and finalization read."""
        filters = None if round_id is None else {"round": round_id}
        opened: dict[int, tuple[int, int]] = {}
        valued: dict[int, tuple[int, int]] = {}
        for name, first in (("RoundOpened", opened), ("RoundValued", valued)):
            for e in self.events(name, argument_filters=filters):
                first.setdefault(int(e.args["round"]), (e.block_number, e.log_index))
        registrations = self.registrations(round_id)
        earliest = min(opened.values(), default=None)
        kinds = {
            "SiteRemoved": ("removed", None),
            "MaxSamplesSet": ("cap", "maxSamples"),
            "PrivacyBudgetSet": ("budget", "epsilonBudgetMicro"),
        }
        found = []
        for name, (kind, field) in kinds.items():
            # a removal before any opening still decides who took part; a cap or budget set
            # before the first opening read is no round's move
            from_block = None if kind == "removed" or earliest is None else earliest[0]
            for e in self.events(name, from_block=from_block):
                value = None if field is None else e.args.get(field)
                found.append(
                    (
                        (e.block_number, e.log_index),
                        kind,
                        checksum(e.args["site"]),
                        None if value is None else int(value),
                    )
                )
        changes = tuple(sorted(found, key=lambda c: c[0]))
        stamps: dict[int, int] = {}
        for at, *_ in changes:
            if earliest is not None and at > earliest and at[0] not in stamps:
                stamps[at[0]] = _get_block_timestamp(self.w3, at[0])
        return RegistryHistory(
            registrations=registrations,
            changes=changes,
            opened=opened,
            valued=valued,
            stamps=stamps,
        )

    def get_sites(self) -> list[SiteInfo]:
        return [_site(raw) for raw in self._view(self._fn.getSites())]

    def privacy(self, site: str) -> PrivacyAccount:
        """``site``'s privacy budget and cumulative spend (zeros for an unknown address)."""
        budget, spent = self._view(self._fn.privacyAccount(checksum(site)))
        return PrivacyAccount(budget_micro=int(budget), spent_micro=int(spent))

    def privacy_spends(
        self, round_id: int | None = None, *, site: str | None = None
    ) -> list[PrivacySpend]:
        """Every private reveal's charge (of ``round_id`` only, of ``site`` only, when given),
        in chain order, from the ``PrivacySpent`` events."""
        filters: dict[str, Any] = {}
        if round_id is not None:
            filters["round"] = round_id
        if site is not None:
            filters["site"] = checksum(site)
        return [
            PrivacySpend(
                round=int(e.args["round"]),
                site=checksum(e.args["site"]),
                epsilon_micro=int(e.args["epsilonMicro"]),
                total_micro=int(e.args["totalMicro"]),
            )
            for e in self.events("PrivacySpent", argument_filters=filters or None)
        ]

    def get_peer_round(self, round_id: int) -> PeerRoundInfo | None:
        """A peer round's scoring record; None for an aggregator round."""
        return _peer_round(self._view(self._fn.getPeerRound(round_id)))

    def round_poll(
        self, round_id: int = 0, *, peer: bool = True, submissions: bool = False
    ) -> RoundPoll:
        """What the aggregator reads at each poll (:class:`RoundPoll`): the current round, the
        last finalized round, the pending block's timestamp and, for ``round_id`` > 0, that
        round's record (as :meth:`get_round`), with ``peer`` its peer record (as
        :meth:`get_peer_round`) and with ``submissions`` its revealed updates (as
        :meth:`get_submissions`: what a finalize reads next), in one JSON-RPC batch (issue 18:
        a request each before).
        ``round_id`` is the caller's guess of the current round (the last it saw): its record
        is given back only when it is the current one, else the caller reads the current
        round's. One by one where the provider takes no batch, an entry answers with an error
        or the pending block has no readable timestamp (the single request then raises what it
        raises); the record and the peer record then only when ``round_id`` is current."""
        views = [self._fn.currentRound(), self._fn.lastFinalizedRound()]
        queries: list[_LogQuery] = []
        known = self._terminal.get(round_id)
        if round_id > 0 and known is None:
            views.append(self._fn.getRound(round_id))
            queries = [
                self._log_query(name, argument_filters={"round": round_id})
                for name in ("RoundOpened", "RoundFinalized")
            ]
        if round_id > 0 and peer:
            views.append(self._fn.getPeerRound(round_id))
        submissions = submissions and round_id > 0
        if submissions:
            views.append(self._fn.getSubmissions(round_id))
            queries += self._submissions_queries(round_id)
        pending = (RPCEndpoint("eth_getBlockByNumber"), ["pending", False])
        batch = self._batch(views, queries, extra=[pending])
        timestamp = None if batch is None else _block_timestamp(batch.extra[0])
        if batch is None or timestamp is None:
            current = self.current_round()
            asked = 0 < round_id == current
            return RoundPoll(
                current=current,
                last_finalized=self.last_finalized_round(),
                pending_timestamp=_get_block_timestamp(self.w3, "pending"),
                info=self.get_round(round_id) if asked else None,
                peer=self.get_peer_round(round_id) if asked and peer else None,
                peer_read=asked and peer,
                submissions=(
                    tuple(self.get_submissions(round_id)) if asked and submissions else None
                ),
            )
        current, last, *rest = batch.views
        events = list(batch.events)
        info = known
        if round_id > 0 and known is None:
            info = _round(rest.pop(0), *events[:2])
            del events[:2]
            if info.phase in (Phase.FINALIZED, Phase.CANCELLED):
                self._terminal[round_id] = info
        current_is_asked = 0 < round_id == int(current)
        peer_record = rest.pop(0) if round_id > 0 and peer else None
        subs = None
        if submissions and current_is_asked:
            subs = tuple(self._submissions_from(round_id, rest[0], events, False))
        return RoundPoll(
            current=int(current),
            last_finalized=int(last),
            pending_timestamp=timestamp,
            info=info if current_is_asked else None,
            peer=_peer_round(peer_record) if current_is_asked and peer else None,
            peer_read=current_is_asked and peer,
            submissions=subs,
        )

    def score_vote(self, round_id: int, validator: str) -> tuple[str, bool]:
        """``validator``'s stored score vote in ``round_id`` (hex; zeros without one: the
        commitment, and after the reveal the hash of the vector) and whether ``round_id`` is the
        last round it revealed scores in (false for an earlier round even when it revealed
        there: the ScoresRevealed event is that reveal's record)."""
        stored, revealed = self._view(self._fn.scoreVote(round_id, checksum(validator)))
        return from_bytes32(stored), bool(revealed)

    def peer_votes(self, round_id: int) -> list[PeerVote]:
        """Every revealed score vector of peer round ``round_id``, in ascending validator order,
        from its ScoresRevealed events; each is checked against the hash the contract stored
        (:class:`LedgerError` when an event does not match the state). Works for any past round:
        the event is the record of the reveal, the stored hash pins its vector."""
        votes: dict[str, PeerVote] = {}
        for event in self.events("ScoresRevealed", argument_filters={"round": round_id}):
            validator = checksum(event.args["validator"])
            scores = tuple(int(x) for x in event.args["scores"])
            stored, _ = self.score_vote(round_id, validator)
            if stored != score_vote_hash(round_id, validator, scores):
                raise LedgerError(
                    f"the ScoresRevealed event of {validator} in round {round_id} does not "
                    "match the vote the ledger stored"
                )
            votes[validator] = PeerVote(validator=validator, scores=scores)
        return [votes[v] for v in sorted(votes, key=address_key)]

    def peer_withheld(self, round_id: int, votes: Sequence[PeerVote] | None = None) -> list[str]:
        """The validators that committed a score vector in peer round ``round_id`` and have not
        revealed it (ascending address order): its ScoresCommitted events less its revealed
        ``votes`` (default: :meth:`peer_votes`, each checked against the stored vote)."""
        if votes is None:
            votes = self.peer_votes(round_id)
        revealed = {address_key(v.validator) for v in votes}
        committed = {
            checksum(event.args["validator"])
            for event in self.events("ScoresCommitted", argument_filters={"round": round_id})
        }
        return sorted((w for w in committed if address_key(w) not in revealed), key=address_key)

    def peer_dropped(self, round_id: int) -> list[str]:
        """The sites whose weighted updates the aggregator dropped from valued peer round
        ``round_id`` as unreadable (``UpdateWithheld`` events; ascending address order)."""
        return sorted(
            {
                checksum(event.args["site"])
                for event in self.events("UpdateWithheld", argument_filters={"round": round_id})
            },
            key=address_key,
        )

    def peer_screened(self, round_id: int) -> list[str]:
        """The sites whose weighted updates the aggregator dropped from valued peer round
        ``round_id`` as the public screen's free-riders (``UpdateScreened`` events; ascending
        address order)."""
        return sorted(
            {
                checksum(event.args["site"])
                for event in self.events("UpdateScreened", argument_filters={"round": round_id})
            },
            key=address_key,
        )

    def reputation_history(self, site: str | None = None) -> dict[str, list[tuple[int, int]]]:
        """Each site's reputation after every round that valued it, ``(round, reputation)`` in
        round order (``site``: that site only): ``UpdateValued``'s, replaced by
        ``UpdateWithheld``'s or ``UpdateScreened``'s for a round whose update was dropped
        afterwards (the drop takes the round's credit back, so the valuation's figure is not
        what the round left)."""
        filters = None if site is None else {"site": checksum(site)}
        after: dict[str, dict[int, int]] = {}
        # a drop comes after its valuation; an update is dropped at most once (weighted)
        for name in ("UpdateValued", "UpdateWithheld", "UpdateScreened"):
            for event in self.events(name, argument_filters=filters):
                who = checksum(event.args["site"])
                after.setdefault(who, {})[int(event.args["round"])] = int(event.args["reputation"])
        return {who: sorted(rounds.items()) for who, rounds in after.items()}

    def validator_ratings_before(
        self, round_id: int, rated: Sequence[LedgerEvent] | None = None
    ) -> dict[str, tuple[int, int]]:
        """Each validator's (validator reputation, rated rounds) as rounds before ``round_id``
        left it, from the ValidatorRated events (``rated``: those already read, in chain order;
        absent from the answer: never rated before): what the contract's reputation gate read
        when it valued ``round_id``, at any later time."""
        before: dict[str, tuple[int, int]] = {}
        for event in self.events("ValidatorRated") if rated is None else rated:
            if int(event.args["round"]) >= round_id:
                continue
            who = checksum(event.args["validator"])
            before[who] = (int(event.args["validatorReputation"]), before.get(who, (0, 0))[1] + 1)
        return before

    def peer_outcome(
        self,
        round_id: int,
        *,
        sites: Sequence[str] | None = None,
        votes: Sequence[PeerVote] | None = None,
    ) -> PeerOutcome:
        """What ``recordPeerValuation`` records (or recorded) for peer round ``round_id``: the
        contract's rule (:func:`fedtrail.protocol.peers.peer_outcome`) over its revealed updates
        (``sites``, default: the chain's, address order), its revealed ``votes`` (default:
        :meth:`peer_votes`), the validator standing earlier rounds left, its quorum and the
        vectors withheld, then the updates dropped as unreadable (``dropWithheld``) and as the
        public screen's free-riders (``dropScreened``). :class:`ConfigError` for an aggregator
        round."""
        info = self.get_peer_round(round_id)
        if info is None:
            raise ConfigError(f"round {round_id} is not a peer round")
        if sites is None:
            sites = [s.site for s in self.get_submissions(round_id)]
        if votes is None:
            votes = self.peer_votes(round_id)
        outcome = peer_outcome(
            sites,
            votes,
            standing=self.validator_ratings_before(round_id),
            quorum=info.quorum,
            withheld=self.peer_withheld(round_id, votes),
        )
        dropped = self.peer_dropped(round_id)
        outcome = drop_withheld(outcome, dropped) if dropped else outcome
        screened = self.peer_screened(round_id)
        return drop_screened(outcome, screened) if screened else outcome

    def validator_standing(self, address: str) -> ValidatorStanding:
        """``address``'s validator reputation and rated rounds (zeros when never rated)."""
        reputation, rated = self._view(self._fn.validatorReputation(checksum(address)))
        return ValidatorStanding(reputation=int(reputation), rated_rounds=int(rated))

    # ------------------------------------------------------------------ events

    def events(
        self,
        name: str,
        *,
        from_block: int | None = None,
        to_block: int | str = "latest",
        argument_filters: dict[str, Any] | None = None,
    ) -> list[LedgerEvent]:
        """Decoded events of one kind, in chain order.

        Read with one ``eth_getLogs`` and decoded with eth_abi directly (:class:`_EventCodec`):
        web3's ``get_logs`` ran its formatters over every argument of every event, 0.17 of the
        0.25 s ``get_submissions`` took for a 100-site round. Filters on indexed arguments
        become topics; the others are compared after decoding."""
        query = self._log_query(
            name, from_block=from_block, to_block=to_block, argument_filters=argument_filters
        )
        try:
            raw = _get_logs(self.w3, query.params)
        except Exception as exc:
            raise chain_read_error(exc, f"cannot read {name} events") from exc
        return query.decode(raw)

    def _log_query(
        self,
        name: str,
        *,
        from_block: int | None = None,
        to_block: int | str = "latest",
        argument_filters: dict[str, Any] | None = None,
    ) -> _LogQuery:
        codec = _EventCodec.of(self.artifact.abi, name, key=self.artifact.sha256)
        # None matches anything, as in web3; a name the event lacks is a caller's error
        filters = {k: v for k, v in (argument_filters or {}).items() if v is not None}
        unknown = sorted(set(filters) - {n for n, _ in (*codec.indexed, *codec.data)})
        if unknown:
            raise ConfigError(f"the {name} event has no argument(s) {unknown}")
        try:
            params = {
                "address": self.address,
                "fromBlock": self.from_block if from_block is None else from_block,
                "toBlock": to_block,
                "topics": codec.topics(filters),
            }
        except Exception as exc:
            raise LedgerError(f"cannot read {name} events: {exc}") from exc
        return _LogQuery(name, codec, filters, params)

    def _batch(
        self,
        calls: Sequence[Any],
        queries: Sequence[_LogQuery],
        *,
        extra: Sequence[tuple[RPCEndpoint, Any]] = (),
    ) -> _Batch | None:
        """The views ``calls`` (``eth_call``, decoded as :meth:`_view` decodes them) and the
        event ``queries`` (``eth_getLogs``) asked in one JSON-RPC batch: one round trip instead
        of one each. None where the provider is not the node's HTTP endpoint (the embedded
        chain), the node refuses batches (a single error answer), or any entry answered with an
        error (a revert, a node without the method): the caller then asks one by one, which
        raises that error as a single request does (a revert as the contract's own error).
        ``ChainUnreachable`` when the endpoint does not answer, ``ChainFault`` (not retried)
        when the answer is malformed (not one entry per request, an entry with neither result
        nor error, a result that is not what the request returns). ``extra``: other requests
        asked after them in the same batch, their results given back undecoded
        (:attr:`_Batch.extra`)."""
        provider = self.w3.provider
        if not isinstance(provider, HTTPProvider):
            return None
        requests: list[tuple[RPCEndpoint, Any]] = [
            (
                RPCEndpoint("eth_call"),
                [{"to": self.address, "data": _calldata(self._contract, c)}, "latest"],
            )
            for c in calls
        ]
        requests += [
            (
                RPCEndpoint("eth_getLogs"),
                [{k: hex(v) if isinstance(v, int) else v for k, v in q.params.items()}],
            )
            for q in queries
        ]
        requests += extra
        what = f"the node's answer to a batch of {len(requests)} requests"
        try:
            answers = provider.make_batch_request(requests)
        except Exception as exc:
            raise chain_read_error(
                exc,
                f"cannot read the ledger at {self.address} (a batch of {len(requests)} requests)",
            ) from exc
        if isinstance(answers, dict) and "error" in answers:
            return None  # a node that takes no batch: one error for the whole batch
        if not isinstance(answers, list) or len(answers) != len(requests):
            raise ChainFault(f"{what} is malformed: {str(answers)[:300]}")
        if any(
            not isinstance(a, dict) or ("result" not in a and "error" not in a) for a in answers
        ):
            raise ChainFault(f"{what} has an entry without result or error: {str(answers)[:300]}")
        if any("error" in a for a in answers):
            return None
        results = [a["result"] for a in answers]
        try:
            views = [
                _returned_by(c, _bytes(r), strict=True)
                for c, r in zip(calls, results, strict=False)
            ]
        except Exception as exc:
            raise ChainFault(f"{what} holds an unreadable view result: {exc}") from exc
        logs = results[len(calls) : len(calls) + len(queries)]
        for query, raw in zip(queries, logs, strict=True):
            if not isinstance(raw, list):
                raise ChainFault(f"{what} answers {query.name} events with {str(raw)[:300]}")
        return _Batch(
            views,
            [q.decode(raw) for q, raw in zip(queries, logs, strict=True)],
            results[len(calls) + len(queries) :],
        )

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


@dataclass(frozen=True)
class _LogQuery:
    """One ``eth_getLogs`` of :meth:`Ledger.events`: its parameters, and how to decode and
    filter what the node answers."""

    name: str
    codec: _EventCodec
    filters: dict[str, Any]
    params: dict[str, Any]

    def decode(self, raw: Sequence[Any]) -> list[LedgerEvent]:
        out = []
        for log in raw:
            try:
                args = self.codec.decode(log["topics"], log["data"])
                block, index = _int(log["blockNumber"]), _int(log["logIndex"])
                tx_hash = _bytes(log["transactionHash"]).hex()
            except Exception as exc:
                raise ChainFault(f"cannot decode a {self.name} event: {exc}") from exc
            if any(args.get(k) != self.codec.filter_value(k, v) for k, v in self.filters.items()):
                continue
            out.append(
                LedgerEvent(
                    name=self.name, block_number=block, tx_hash=tx_hash, log_index=index, args=args
                )
            )
        out.sort(key=lambda e: (e.block_number, e.log_index))
        return out


@dataclass(frozen=True)
class _Batch:
    """What :meth:`Ledger._batch` read: each view's value, each query's events."""

    views: list[Any]
    events: list[list[LedgerEvent]]
    extra: list[Any]


def _get_block_timestamp(w3: Web3, block: str | int) -> int:
    """``block``'s timestamp through web3 (the batch's fallback): an endpoint that does not
    answer raises :class:`ChainUnreachable`, a passing JSON-RPC error :class:`LedgerError`,
    which the daemons retry (web3's own errors ended them with a traceback); anything else
    :class:`ChainFault`, which ends them (:func:`~fedtrail.errors.chain_read_error`)."""
    try:
        return int(w3.eth.get_block(block)["timestamp"])  # type: ignore[arg-type]
    except Exception as exc:
        raise chain_read_error(
            exc, f"cannot read the timestamp of the chain's block {block}"
        ) from exc


def _block_timestamp(block: Any) -> int | None:
    """The timestamp of a block as ``eth_getBlockByNumber`` answers it (a hex quantity); None
    when the answer is not a block with one (the caller then asks again the usual way)."""
    stamp = block.get("timestamp") if isinstance(block, dict) else None
    if not isinstance(stamp, str) or not re.fullmatch(r"0x[0-9a-fA-F]{1,16}", stamp):
        return None
    return int(stamp, 16)


def _get_logs(w3: Web3, params: dict[str, Any]) -> list[Any]:
    """``eth_getLogs`` as the node answers it over HTTP (hex strings), or web3's ``get_logs``
    on other providers (the embedded chain needs web3's middleware to be asked at all). web3's
    log formatters took half the time of reading a 100-site round's events, to turn hex into
    what :class:`_EventCodec` and :func:`_int` read from either form."""
    provider = w3.provider
    if not isinstance(provider, HTTPProvider):
        return list(w3.eth.get_logs(cast(FilterParams, params)))
    request = {k: hex(v) if isinstance(v, int) else v for k, v in params.items()}
    answer = provider.make_request(RPCEndpoint("eth_getLogs"), [request])
    if "error" in answer or not isinstance(answer.get("result"), list):
        error = answer.get("error")
        said = f"eth_getLogs answered {str(error or answer)[:300]}"
        raise LedgerError(said) if transient_rpc_error(error) else ChainFault(said)
    return list(answer["result"])


def _int(value: Any) -> int:
    """A quantity as web3 formats it (int) or as the node sends it (hex string)."""
    return int(value, 16) if isinstance(value, str) else int(value)


def _bytes(value: Any) -> bytes:
    """Data as web3 formats it (bytes) or as the node sends it (0x-hex string)."""
    return bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)


def _calldata(contract: Any, call: Any) -> str:
    """``call``'s transaction data: its public ``selector`` and its arguments encoded by eth_abi
    for its ``argument_types``, the bytes web3's public ``Contract.encode_abi`` gives (which
    looks the function up in the ABI again: 0.5 ms a call, ~50 calls a round), or that when
    eth_abi refuses an argument web3 would normalize first (a hex string for bytes)."""
    try:
        data = abi_encode(list(call.argument_types), list(call.args))
        return "0x" + str(call.selector).removeprefix("0x") + data.hex()
    except Exception:
        return str(contract.encode_abi(call.abi_element_identifier, args=call.args))


def _call(w3: Web3, address: str, call: Any, contract: Any) -> Any:
    """``call.call()``: the same ``eth_call``, its answer decoded with eth_abi and given back as
    web3 gives it (:func:`_returned`). web3's return normalizers walk every value through a
    dozen generic formatters and checksum every address afresh (a keccak each): 15 of the 17
    ms ``getSubmissions`` took for 100 sites. An answer eth_abi cannot decode (no contract at
    the address: empty) goes to ``call.call()``, which raises what it raised before."""
    tx = cast(TxParams, {"to": address, "data": _calldata(contract, call)})
    provider = w3.provider
    if isinstance(provider, HTTPProvider):
        # as the node sends it, as :meth:`Ledger._batch` reads its views: web3's ``eth.call``
        # runs the request through its middleware and formatters (the chain id checked eight
        # times over, the parameters formatted twice), ~2 ms a view at load 8 beside the
        # request's own ~2 ms. An error answer is asked again through web3, which raises it
        # as before (a revert with the contract's error).
        answer = provider.make_request(RPCEndpoint("eth_call"), [tx, "latest"])
        found = answer.get("result") if isinstance(answer, dict) else None
        if "error" not in answer and isinstance(found, str) and _HEX.fullmatch(found):
            return _returned_by(call, bytes.fromhex(found[2:]))
    return _returned_by(call, bytes(w3.eth.call(tx)))


_HEX: Final = re.compile(r"0x(?:[0-9a-fA-F]{2})*")


def _returned_by(call: Any, raw: bytes, *, strict: bool = False) -> Any:
    """What ``call.call()`` returns for the ``eth_call`` answer ``raw`` (:func:`_call`); an
    answer eth_abi cannot decode is asked again through ``call.call()``, or with ``strict``
    raises eth_abi's error."""
    outputs = call.abi.get("outputs", [])
    # a ``string`` decoded as the ``bytes`` it is encoded as, then read as events read it
    # (:func:`_text`): the contract stores whatever bytes a sender gave (a site's name), and a
    # strict UTF-8 decode of one name made every ``getSites`` reader raise (attack a58)
    values: Sequence[Any] | None = _static_rows(outputs, raw)
    if values is None:
        types = [_STRING.sub("bytes", collapse_if_tuple(o)) for o in outputs]
        try:
            values = abi_decode(types, raw)
        except Exception:
            if strict:
                raise
            return call.call()
    out = [_returned(o, v) for o, v in zip(outputs, values, strict=True)]
    return out[0] if len(out) == 1 else out


def _static_rows(outputs: Sequence[dict[str, Any]], raw: bytes) -> list[Any] | None:
    """eth_abi's decode of ``raw`` when ``outputs`` is one array of structs of static words
    (``getSubmissions``: eight a site) in its canonical encoding (offset 32, the length, then
    the words, nothing after them), each word read by :func:`_word_decode` (eth_abi's strict
    refusals); None for any other output or layout, or a word eth_abi refuses, which eth_abi
    itself then decodes or refuses. eth_abi's generic decoder took 16 ms for 100 sites,
    this 2.5."""
    if len(outputs) != 1 or outputs[0].get("type") != "tuple[]":
        return None
    types = [str(c.get("type")) for c in outputs[0].get("components", [])]
    if not types or not all(_is_word(t) for t in types) or len(raw) < 64:
        return None
    if int.from_bytes(raw[:32], "big") != 32:
        return None
    size = 32 * len(types)
    if len(raw) != 64 + int.from_bytes(raw[32:64], "big") * size:
        return None
    try:
        rows = [
            tuple(_word_decode(t, raw[at + 32 * k : at + 32 * k + 32]) for k, t in enumerate(types))
            for at in range(64, len(raw), size)
        ]
    except ValueError:
        return None
    return [rows]


def _returned(output: dict[str, Any], value: Any) -> Any:
    """An eth_abi value as web3's ``call()`` returns it: addresses checksummed, arrays as
    lists, structs as tuples, everything else as decoded."""
    typ = str(output["type"])
    if typ.endswith("]"):
        element = {**output, "type": typ[: typ.rindex("[")]}
        return [_returned(element, v) for v in value]
    if typ == "tuple":
        return tuple(_returned(c, v) for c, v in zip(output["components"], value, strict=True))
    if typ == "address":
        return checksum(value)
    if typ == "string":
        return _text(value)
    return value


_STRING: Final = re.compile(r"\bstring\b")
"""The ``string`` type in an ABI type string (``string``, ``string[]``, inside a tuple)."""


def _round(raw: Any, opened: Sequence[LedgerEvent], finalized: Sequence[LedgerEvent]) -> RoundInfo:
    """A round from its ``getRound`` view and its RoundOpened and RoundFinalized events (the
    latter read only for a finalized round)."""
    phase = Phase(raw[1])
    start_cid = str(opened[-1].args["modelCid"]) if opened else ""
    terms_cid = str(opened[-1].args["termsCid"]) if opened else ""
    global_cid = log_cid = ""
    if phase == Phase.FINALIZED and finalized:
        global_cid = str(finalized[-1].args["globalCid"])
        log_cid = str(finalized[-1].args["logCid"])
    return RoundInfo(
        id=int(raw[0]),
        phase=phase,
        commit_deadline=int(raw[2]),
        reveal_deadline=int(raw[3]),
        opened_at=int(raw[4]),
        active_at_open=int(raw[5]),
        submission_count=int(raw[6]),
        start_cid=start_cid,
        start_sha256=from_bytes32(raw[7]),
        terms_cid=terms_cid,
        terms_sha256=from_bytes32(raw[8]),
        global_cid=global_cid,
        global_sha256=from_bytes32(raw[9]),
        log_cid=log_cid,
        log_sha256=from_bytes32(raw[10]),
    )


def _peer_round(raw: Any) -> PeerRoundInfo | None:
    """A round's ``getPeerRound`` view as a peer record; None for an aggregator round (no
    quorum)."""
    if int(raw[2]) == 0:
        return None
    return PeerRoundInfo(
        score_commit_deadline=int(raw[0]),
        score_reveal_deadline=int(raw[1]),
        quorum=int(raw[2]),
        commit_count=int(raw[3]),
        vote_count=int(raw[4]),
    )


def _update_cids(submitted: Sequence[LedgerEvent]) -> dict[str, str]:
    """Site -> CID of its revealed update, from a round's UpdateSubmitted events."""
    return {checksum(e.args["site"]): str(e.args["cid"]) for e in submitted}


def _commit_orders(committed: Sequence[LedgerEvent]) -> dict[str, int]:
    """Site -> 1-based commit order, from a round's UpdateCommitted events in chain order."""
    order: dict[str, int] = {}
    for event in committed:  # already in chain order; a site commits once per round
        order.setdefault(checksum(event.args["site"]), len(order) + 1)
    return order


def _site(raw: Any) -> SiteInfo:
    return SiteInfo(
        address=checksum(raw[0]),
        registered=bool(raw[1]),
        name=str(raw[2]),
        reputation=int(raw[3]),
        valued_rounds=int(raw[4]),
        max_samples=int(raw[5]),
        active_from=int(raw[6]),
    )


def _uint64(value: int, what: str) -> int:
    """``value`` when it fits the contract's uint64, else a ConfigError naming ``what``
    (web3 would refuse it with a less helpful message)."""
    if not 0 <= int(value) < 2**64:
        raise ConfigError(f"{what} {value} does not fit the contract's uint64")
    return int(value)


def _score(value: int) -> int:
    """A score entry when it is in the contract's range, else a ConfigError."""
    if not 0 <= int(value) <= SCORE_SCALE:
        raise ConfigError(f"score {value} outside 0..{SCORE_SCALE}")
    return int(value)


@dataclass(frozen=True)
class _EventCodec:
    """One event's ABI: its topic and how to decode its indexed and data arguments."""

    topic0: bytes
    indexed: tuple[tuple[str, str], ...]
    data: tuple[tuple[str, str], ...]

    _cache: ClassVar[dict[tuple[str, str], _EventCodec]] = {}

    @classmethod
    def of(cls, abi: Sequence[dict[str, Any]], name: str, *, key: str) -> _EventCodec:
        """The codec of event ``name`` of ``abi``; cached under ``key`` (the artifact's sha256:
        one entry per artifact and event, however many ledgers are opened)."""
        cache_key = (key, name)
        found = cls._cache.get(cache_key)
        if found is not None:
            return found
        entry = next((e for e in abi if e.get("type") == "event" and e["name"] == name), None)
        if entry is None:
            raise ConfigError(f"the ledger has no event {name!r}")
        inputs = entry["inputs"]
        types = ",".join(_abi_type(i) for i in inputs)
        codec = cls(
            topic0=bytes(Web3.keccak(text=f"{name}({types})")),
            indexed=tuple((i["name"], _abi_type(i)) for i in inputs if i["indexed"]),
            data=tuple((i["name"], _abi_type(i)) for i in inputs if not i["indexed"]),
        )
        if any(t in {"string", "bytes"} or t.endswith("]") for _, t in codec.indexed):
            raise ConfigError(f"event {name!r} indexes a dynamic type: its value is hashed")
        cls._cache[cache_key] = codec
        return codec

    def topics(self, filters: dict[str, Any]) -> list[Any]:
        """``[topic0, one topic or None per indexed argument]``, trailing Nones dropped."""
        out: list[Any] = ["0x" + self.topic0.hex()]
        for name, typ in self.indexed:
            value = filters.get(name)
            out.append(None if value is None else "0x" + abi_encode([typ], [value]).hex())
        while out[-1] is None:
            out.pop()
        return out

    def decode(self, topics: Sequence[Any], data: Any) -> dict[str, Any]:
        """One log's arguments; topics and data as bytes (web3) or 0x-hex (the node)."""
        if len(topics) != 1 + len(self.indexed) or _bytes(topics[0]) != self.topic0:
            raise ValueError("topics do not match the event's signature")
        args: dict[str, Any] = {}
        for (name, typ), topic in zip(self.indexed, topics[1:], strict=True):
            args[name] = _decoded(typ, _word_decode(typ, _bytes(topic)))
        raw = _bytes(data)
        if len(raw) == 32 * len(self.data) and all(_is_word(t) for _, t in self.data):
            values = [
                _word_decode(t, raw[32 * k : 32 * k + 32]) for k, (_, t) in enumerate(self.data)
            ]
        else:
            # a string is read as its bytes first: the contract takes any bytes as a string (a
            # site's CID), and one that is not UTF-8 must not make every event of its kind
            # unreadable
            values = list(abi_decode(["bytes" if t == "string" else t for _, t in self.data], raw))
        for (name, typ), value in zip(self.data, values, strict=True):
            args[name] = _text(value) if typ == "string" else _decoded(typ, value)
        return args

    def filter_value(self, name: str, value: Any) -> Any:
        """``value`` as :meth:`decode` reads argument ``name`` (a filter compares the two)."""
        typ = dict(self.indexed + self.data).get(name)
        if typ is None or value is None:
            return _plain(value)
        if typ != "address" and isinstance(value, str):
            return value  # a string (or hex) argument is compared as given, never checksummed
        return _decoded(typ, value)


_UINT_BITS = {f"uint{n}": n for n in range(8, 257, 8)}


def _is_word(typ: str) -> bool:
    """Whether :func:`_word_decode` reads ``typ`` itself (one static 32-byte word)."""
    return typ in _UINT_BITS or typ in {"address", "bytes32", "bool"}


def _word_decode(typ: str, word: bytes) -> Any:
    """One ABI word of static type ``typ`` as eth_abi's strict ``decode([typ], word)[0]`` gives
    it (an address as 0x-hex, bytes32 as bytes), refusing what it refuses (nonzero padding, a
    bool other than 0 or 1) with ValueError; other types and lengths go to eth_abi itself.
    eth_abi's generic decoder was most of reading a 100-site round's events (three decodes a
    log)."""
    if len(word) != 32 or not _is_word(typ):
        return abi_decode([typ], word)[0]
    if typ == "bytes32":
        return word
    if typ == "address":
        if any(word[:12]):
            raise ValueError(f"address word with nonzero padding: {word.hex()}")
        return "0x" + word[12:].hex()
    value = int.from_bytes(word, "big")
    if typ == "bool":
        if value > 1:
            raise ValueError(f"bool word of value {value}")
        return bool(value)
    if value >> _UINT_BITS[typ]:
        raise ValueError(f"{typ} word with nonzero padding: {word.hex()}")
    return value


def _text(raw: bytes) -> str:
    """An event's ``string`` argument: its UTF-8 text with each backslash doubled and each byte
    that is not UTF-8 (the contract accepts any bytes from whoever sent them) as ``\\xNN``.
    Every reader gets the same text, which any JSON document can carry, none of it is a valid
    CID, and two different byte strings never read alike: before the backslash was doubled, the
    byte 0xff and the four characters ``\\xff`` gave one text. A text without a backslash that
    is UTF-8 (every name fedtrail's tooling registers) reads as itself."""
    data = bytes(raw)
    if b"\\" not in data:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return "".join(
        "\\\\"
        if ch == "\\"
        else f"\\x{ord(ch) - 0xDC00:02x}"
        if 0xDC80 <= ord(ch) <= 0xDCFF
        else ch
        for ch in data.decode("utf-8", errors="surrogateescape")
    )


def _decoded(typ: str, value: Any) -> Any:
    """A decoded argument as events carry it: addresses checksummed, bytes as hex, arrays as
    lists. Only ``address`` values are checksummed: a string that happens to be 40 hex digits
    (a site's name) is returned as written, as ``getSite`` returns it."""
    if typ == "address":
        return checksum(value)
    if typ.endswith("]"):
        return list(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    return value


def _abi_type(entry: dict[str, Any]) -> str:
    """An ABI input's canonical type (an enum is its uint8 in the ABI already)."""
    return str(entry["type"])


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, str) and Web3.is_address(value):
        return checksum(value)
    return value


def _with_revert_data(
    exc: BaseException, call: Any, tx: dict[str, Any], block: int | str = "latest"
) -> BaseException:
    """``exc``, or the same call's revert replayed as a gas estimate when ``exc`` reverted
    without data: eth-tester's ``eth_call`` keeps only text, its ``estimate_gas`` the bytes."""
    if revert_data(exc) is not None or not looks_like_revert(exc):
        return exc
    try:
        call.estimate_gas(tx, block_identifier=block)
    except Exception as replayed:
        if revert_data(replayed) is not None:
            return replayed
    return exc


_EMBEDDED_GAS = 12_000_000
"""Gas limit of a transaction on the embedded chain (unused gas is refunded; deploying the
ledger takes about 5.2M)."""


def _embedded_dry_run(w3: Web3, call: Any, sender: str) -> int | None:
    """On the embedded chain, one dry run instead of a gas estimate (eth-tester estimates by
    bisection, running the transaction a dozen times) and a fixed gas limit; None elsewhere.
    The dry run is against the pending block, whose timestamp the transaction is mined with
    (eth-tester's "latest" call keeps the last block's clock, so a window that just opened
    would look closed). eth-tester's ``eth_call`` keeps only the text of a revert, so a failing
    dry run is replayed as an estimate, whose exception carries the contract's error."""
    if not isinstance(w3.provider, EthereumTesterProvider):
        return None
    tx = call.build_transaction({"from": sender, "gas": _EMBEDDED_GAS})
    try:
        dry = cast(TxParams, {k: tx[k] for k in ("from", "to", "data", "value") if k in tx})
        w3.eth.call(dry, "pending")
    except Exception:
        call.estimate_gas({"from": sender}, block_identifier="latest")
        raise
    return _EMBEDDED_GAS


def _estimate_block(w3: Web3) -> str:
    """The block a transaction is checked against before it is sent: the pending one, whose
    timestamp is the one it will be mined with. The latest block's clock lags (on an idle
    automining Anvil it stands still), so a deadline already past would pass the estimate and
    the transaction revert once mined, its gas spent. The embedded chain (eth-tester) has no
    pending estimate; it mines every transaction at once anyway."""
    return "latest" if isinstance(w3.provider, EthereumTesterProvider) else "pending"


@dataclass(frozen=True)
class _Preflight:
    """What :func:`_preflight` read for a transaction, and its data."""

    gas: int
    nonce: int
    fees: dict[str, int]
    to: str
    data: str


def _preflight(w3: Web3, call: Any, sender: str, contract: Any) -> _Preflight | None:
    """The gas estimate (against the pending block, as :func:`_estimate_block`), the sender's
    pending nonce and the fees web3 would fill (``maxPriorityFeePerGas`` from the node,
    ``maxFeePerGas`` = that + 2 x the latest block's base fee, web3's own default) in one
    JSON-RPC batch: four round trips each a transaction made one at a time. None where the
    provider takes no batch (the embedded chain) or any answer is an error or not as expected
    (a revert, a node without the method, a chain without base fee): the caller then asks one
    by one, which raises what failed exactly as before."""
    return _preflight_with(w3, call, sender, contract, [])[0]


def _preflight_with(
    w3: Web3, call: Any, sender: str, contract: Any, extra: list[tuple[RPCEndpoint, list[Any]]]
) -> tuple[_Preflight | None, list[Any] | None]:
    """:func:`_preflight` with ``extra`` requests in its batch (issue 18: a read the caller
    makes right before the transaction rides on its round trip): (the preflight or None as
    :func:`_preflight` gives it, the extra entries' answers or None where the batch failed or
    is not taken). An extra entry's error does not touch the preflight, nor the other way."""
    provider = w3.provider
    if contract is None or not isinstance(provider, HTTPProvider):
        return None, None
    try:
        tx = {"from": sender, "to": call.address, "data": _calldata(contract, call)}
        answers = provider.make_batch_request(
            [
                (RPCEndpoint("eth_estimateGas"), [tx, "pending"]),
                (RPCEndpoint("eth_getTransactionCount"), [sender, "pending"]),
                (RPCEndpoint("eth_maxPriorityFeePerGas"), []),
                (RPCEndpoint("eth_getBlockByNumber"), ["latest", False]),
                *extra,
            ]
        )
        if not isinstance(answers, list) or len(answers) != 4 + len(extra):
            return None, None
    except Exception:
        return None, None
    more = answers[4:]
    answers = answers[:4]
    try:
        if any("error" in a or "result" not in a for a in answers):
            return None, more
        gas, nonce, tip = (int(a["result"], 16) for a in answers[:3])
        base = int(answers[3]["result"]["baseFeePerGas"], 16)
    except Exception:
        return None, more
    fees = {"maxPriorityFeePerGas": tip, "maxFeePerGas": tip + 2 * base}
    return _Preflight(gas, nonce, fees, tx["to"], tx["data"]), more


@dataclass(frozen=True)
class PreparedCommit:
    """A commitment's transaction read ahead of its send (:meth:`Ledger.prepare_commit`): its
    preflight and the pending block's timestamp in one JSON-RPC batch. ``clock``: that
    timestamp, None where it was not read so (the embedded chain, a failed batch or entry: the
    caller reads it the usual way, which raises what failed as before). ``preflight``: None
    where :func:`_preflight` would give None; the send then asks one by one, as before."""

    signer: str
    round_id: int
    commitment: str
    clock: int | None
    preflight: _Preflight | None


_NO_SYNC: weakref.WeakSet[HTTPProvider] = weakref.WeakSet()
"""Providers whose node answered ``eth_sendRawTransactionSync`` as a method it does not have."""


_HELD_LOOKUPS = (0.1, 0.3, 0.6)
"""Seconds before each look-up again after a node said it holds a transaction it did not
return (``already known``): 1 s in all."""


def _own_transaction(w3: Web3, hashes: Sequence[HexBytes], failure: object) -> HexBytes | None:
    """The first of ``hashes`` (the transactions signed for one call) that the node holds,
    pooled or mined (``eth_getTransactionByHash``); None when it holds none of them. Asked
    after a send that failed or whose answer was lost (``failure``, for the message): a
    transaction of the call that reached the node is waited for, never signed again. A look-up
    that fails raises LedgerError: without its answer the client cannot tell a transaction in
    the pool from one the node never got, and signing another could run the call twice."""
    for tx_hash in hashes:
        try:
            w3.eth.get_transaction(tx_hash)
        except TransactionNotFound:
            continue
        except Exception as exc:
            raise LedgerError(
                f"sending transaction {tx_hash.to_0x_hex()} failed ({failure}) and asking the "
                f"node whether it holds it failed too ({exc}): not signed again; it may still "
                "be mined (compare the sender's nonce with the node's)"
            ) from exc
        return tx_hash
    return None


def _lost_answer(w3: Web3, exc: BaseException) -> bool:
    """Whether ``exc``, raised by a send, may hide a transaction the node took: a timeout, a
    dropped connection, an unreadable reply. The node's own JSON-RPC refusal (an error it
    answered) is not; nor is anything on the embedded chain, which has no transport."""
    if isinstance(w3.provider, EthereumTesterProvider):
        return False
    text = str(exc).lower()
    if isinstance(exc, RequestTimedOut) or "timed out" in text or "timeout" in text:
        return True  # a gateway's or the node's own timeout: the send may still go through
    return not isinstance(exc, Web3RPCError | ContractLogicError)


def _send_sync(w3: Web3, raw: bytes, tx_hash: HexBytes) -> TxReceipt | HexBytes | None:
    """Sends the signed ``raw`` transaction with ``eth_sendRawTransactionSync`` (EIP-7966; Anvil
    since 1.3), which answers once it is mined, with its receipt: one round trip for the send
    and the receipt poll after it (issue 18). Returns the receipt (as web3 formats
    ``eth_getTransactionReceipt``'s); ``tx_hash`` when the node answered otherwise (an error, a
    timeout) but holds the transaction, whose receipt the caller then waits for as before; None
    when the node does not hold it (a node without the method, a rejected transaction, one
    still on its way): the caller sends the same signed bytes as before
    (``eth_sendRawTransaction`` through web3), which raises what it raised. A failed look-up
    raises LedgerError (:func:`_own_transaction`)."""
    provider = w3.provider
    if not isinstance(provider, HTTPProvider) or provider in _NO_SYNC:
        return None
    answer: Any = None
    lost: Exception | None = None
    try:
        answer = provider.make_request(
            RPCEndpoint("eth_sendRawTransactionSync"), [HexBytes(raw).to_0x_hex()]
        )
    except Exception as exc:  # no answer (a timeout, a dropped connection): did the node take it?
        lost = exc
    result = answer.get("result") if isinstance(answer, dict) else None
    if (
        isinstance(result, dict)
        and str(result.get("transactionHash", "")).lower() == tx_hash.to_0x_hex()
        and result.get("blockNumber") is not None
        and "status" in result
    ):
        return cast(TxReceipt, AttributeDict.recursive(receipt_formatter(result)))
    error = answer.get("error") if isinstance(answer, dict) else None
    if _own_transaction(w3, [tx_hash], lost or error or answer) is not None:
        return tx_hash
    if isinstance(error, dict) and (
        error.get("code") == -32601 or "method" in str(error.get("message", "")).lower()
    ):
        _NO_SYNC.add(provider)
    return None


_SEND_ATTEMPTS: Final = 4
"""Sends of one call's transaction, counting each resend of the same signed bytes (its answer
lost) and each signature after another process took the nonce."""


def _send(
    w3: Web3,
    signer: LocalAccount,
    call: Any,
    *,
    decoder: RevertDecoder,
    poll_latency: float,
    timeout: float,
    contract: Any = None,
    ready_ahead: _Preflight | None = None,
) -> TxReceipt:
    """Estimate (surfacing reverts as our errors), sign locally, send, wait for the receipt.
    ``contract``: the contract ``call`` belongs to (its gas estimate, nonce and fees are then
    asked in one batch, :func:`_preflight`). ``ready_ahead``: that batch's answer for this
    call, read by the caller just before (:meth:`Ledger.prepare_commit`), used for the first
    attempt in place of asking it again; a nonce taken since is the nonce retry's, as any.

    One call is never signed twice while a transaction signed for it may reach the node. A
    send that fails (a nonce error, a timeout, a dropped connection, any error) asks the node
    whether it holds any transaction signed for this call (:func:`_own_transaction`); if it
    does, that one's receipt is the answer (its revert raised as any other). If not, the same
    signed bytes are sent again after a lost answer; a new signature, with the node's next
    nonce, only after the node said the nonce is taken (by another process with this key).
    """

    sender = Web3.to_checksum_address(signer.address)

    def fail(exc: BaseException, what: str) -> LedgerError:
        if "insufficient funds" in str(exc).lower():  # Anvil's and geth's words for it
            return TransactionFailed(
                f"{what}: {sender} has too little ETH on this chain to pay for the "
                "gas; fund it (fedtrail chain fund, or node register --fund) or sign "
                f"with a funded account ({exc})"
            )
        return ledger_error(exc, decoder, what, reverted=TransactionFailed)

    try:
        gas = _embedded_dry_run(w3, call, sender)
    except Exception as exc:
        raise fail(exc, "the transaction would fail") from exc
    chain_id = int(w3.eth.chain_id)
    key = f"{chain_id}:{sender}"  # one lock per account and chain in this process
    tx_hash: HexBytes | None = None
    receipt: TxReceipt | None = None
    hashes: list[HexBytes] = []  # every transaction signed for this call, in order
    again: SignedTransaction | None = None  # sent, answer lost, not held: the same bytes again
    for attempt in range(_SEND_ATTEMPTS):
        with _SenderLocks.hold(key):
            signed, ready = again, None
            if signed is None:
                fees: dict[str, int] = {}
                first = gas is None and attempt == 0
                if first:
                    ready = ready_ahead
                    if ready is None:
                        ready = _preflight(w3, call, sender, contract)
                if ready is not None:
                    gas, nonce, fees = ready.gas, ready.nonce, ready.fees
                else:
                    if gas is None:
                        try:
                            block = _estimate_block(w3)
                            gas = int(call.estimate_gas({"from": sender}, block_identifier=block))
                        except Exception as exc:
                            raise fail(exc, "the transaction would fail") from exc
                    nonce = int(w3.eth.get_transaction_count(sender, "pending"))
                fields: dict[str, Any] = {
                    "from": sender,
                    "nonce": nonce,
                    "gas": gas + gas // 5 + 10_000,
                    "chainId": chain_id,
                    **fees,
                }
            try:
                if signed is None:
                    if ready is not None:
                        # the fields web3's ``build_transaction`` gives with these (value 0,
                        # to, data), with the data the estimate ran: it encodes the call again
                        # and validates it against the ABI (2.4 ms a transaction at load 8)
                        tx: Any = {"value": 0, **fields, "to": ready.to, "data": ready.data}
                    else:
                        tx = call.build_transaction(cast(TxParams, fields))
                    signed = signer.sign_transaction(tx)
                    hashes.append(HexBytes(signed.hash))
                    sent = _send_sync(w3, signed.raw_transaction, hashes[-1]) if ready else None
                    if sent is not None and not isinstance(sent, HexBytes):
                        receipt, tx_hash = sent, hashes[-1]  # mined: its receipt, in the answer
                        break
                    tx_hash = sent or w3.eth.send_raw_transaction(signed.raw_transaction)
                else:
                    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
                break
            except LedgerError:
                raise  # a failed look-up (_send_sync): never guessed past
            except Exception as exc:
                if signed is None:  # building or signing failed: nothing went out
                    raise fail(exc, "sending the transaction failed") from exc
                tx_hash = _own_transaction(w3, hashes, exc)
                if tx_hash is not None:
                    break  # it reached the node: its receipt below, whatever the error said
                text = str(exc).lower()
                if any(s in text for s in _HELD_ERRORS):
                    # a node behind a balancer may answer from a back end that lags the one
                    # that pooled it: asked again a few times before giving up
                    for wait in _HELD_LOOKUPS:
                        time.sleep(wait)
                        tx_hash = _own_transaction(w3, hashes, exc)
                        if tx_hash is not None:
                            break
                    if tx_hash is not None:
                        break
                    raise LedgerError(
                        f"the node says it holds transaction {hashes[-1].to_0x_hex()} ({exc}) "
                        "but does not return it: not signed again"
                    ) from exc
                taken = any(s in text for s in _NONCE_ERRORS)
                lost = _lost_answer(w3, exc)
                if attempt == _SEND_ATTEMPTS - 1 and lost and not taken:
                    raise fail(
                        exc,
                        "the outcome of transaction "
                        + ", ".join(h.to_0x_hex() for h in hashes)
                        + " is unknown (the node's answers were lost and it does not hold it "
                        "now; it may still be mined: compare the sender's nonce with the "
                        "node's before sending the call again)",
                    ) from exc
                if attempt == _SEND_ATTEMPTS - 1 or not (taken or lost):
                    raise fail(exc, "sending the transaction failed") from exc
                again = None if taken else signed
                time.sleep(0.05 * (attempt + 1))
    assert tx_hash is not None
    if receipt is None:
        try:
            receipt = w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=timeout, poll_latency=poll_latency
            )
        except Exception as exc:
            raise TransactionFailed(f"transaction {tx_hash.hex()} not mined: {exc}") from exc
    if receipt["status"] != 1:
        # Replay before the mined block to recover the custom error (state changed since the
        # estimate); a gas estimate carries the revert data on every provider.
        try:
            call.estimate_gas({"from": sender}, block_identifier=receipt["blockNumber"] - 1)
        except Exception as exc:
            raise fail(exc, f"transaction {tx_hash.hex()} reverted") from exc
        raise TransactionFailed(f"transaction {tx_hash.hex()} reverted")
    return receipt
