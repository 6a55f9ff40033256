"""Connecting to a chain: the embedded in-process chain or any EVM JSON-RPC endpoint.

The embedded chain (py-evm through eth-tester) lives and dies with the Python process: it is
for the quick-start demo and fast unit tests. Everything users run between processes talks to a
JSON-RPC endpoint (Anvil locally).
"""

from __future__ import annotations

import http.client
import re
import select
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from fedtrail.errors import (
    ChainFault,
    ChainUnreachable,
    ConfigError,
    TransactionFailed,
    chain_read_error,
    without_passwords,
)

if TYPE_CHECKING:  # web3 and eth_account load in ~1 s: imported where used, so CLI help stays fast
    import requests
    from eth_account.signers.local import LocalAccount
    from web3 import Web3

EMBEDDED = "embedded"
DEFAULT_RPC_URL = "http://127.0.0.1:8545"
MAX_POLL_INTERVAL = 3600.0
"""Longest pause, in seconds, of a daemon between its looks at the chain (a site node's or the
aggregator's; round windows are minutes). NaN, infinity or more are configuration errors."""


def check_rpc_url(rpc_url: str) -> str:
    """``rpc_url`` when it is ``"embedded"`` or a well-formed http(s) URL; else ConfigError.
    Parses only: a malformed URL is the user's typo (exit 2), not an endpoint that is down."""
    if rpc_url == EMBEDDED:
        return rpc_url
    if not rpc_url.startswith(("http://", "https://")):
        raise ConfigError(f"rpc url must be http(s)://... or {EMBEDDED!r}, got {rpc_url!r}")
    try:
        parts = urlsplit(rpc_url)
        parts.port  # noqa: B018 - ValueError for a port outside 0..65535 or not a number
    except ValueError as exc:
        raise ConfigError(f"rpc url {rpc_url!r} is not a valid URL: {exc}") from None
    if not parts.hostname:
        raise ConfigError(f"rpc url {rpc_url!r} names no host")
    return rpc_url


def connect(rpc_url: str = DEFAULT_RPC_URL, *, timeout: float = 30.0) -> Web3:
    """A connected Web3 for ``rpc_url``, or a fresh in-process chain for ``"embedded"``."""
    from web3 import EthereumTesterProvider, Web3
    from web3.providers.rpc import HTTPProvider
    from web3.types import RPCEndpoint

    if check_rpc_url(rpc_url) == EMBEDDED:
        return Web3(EthereumTesterProvider())
    # The chain id is asked before every eth_call, gas estimate and signature (web3's
    # validation middleware, build_transaction): 3 of every 7 requests of a transaction. It
    # cannot change under an endpoint, so the provider answers it from its cache after the
    # first time; nothing else is cached (state reads must see the chain as it is).
    session = _session(rpc_url)
    provider = HTTPProvider(
        rpc_url,
        request_kwargs={"timeout": timeout},
        session=session,
        cache_allowed_requests=True,
        cacheable_requests={RPCEndpoint("eth_chainId")},
    )
    if _plain(rpc_url, session):
        manager: Any = provider._request_session_manager  # web3 has no hook for it
        provider._request_session_manager = _PostPool(manager, rpc_url)  # type: ignore[assignment]
    w3 = Web3(provider)
    try:
        w3.eth.chain_id  # noqa: B018 - the call is the connectivity check
    except Exception as exc:  # requests/aiohttp/OSError variants differ by transport
        reason = "connection refused" if "refused" in str(exc).lower() else type(exc).__name__
        shown = without_passwords(rpc_url)
        raise ChainUnreachable(f"no JSON-RPC answer from {shown} ({reason})") from exc
    return w3


def _session(rpc_url: str) -> requests.Session:
    """The HTTP session of a connection to ``rpc_url``, with what requests takes from the
    environment (proxies and ``NO_PROXY``, a ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``, a
    ``.netrc`` login) read once, here, for that URL. requests reads them again at every request
    (the proxy lookup walks the whole environment twice: 0.3 ms a request at load 8, ~80
    requests in a 5-site round); the endpoint is fixed, so every request gets what the first
    would have got."""
    import requests
    from requests.utils import get_netrc_auth

    session = requests.Session()
    env = session.merge_environment_settings(rpc_url, {}, None, None, None)
    session.proxies.update(env["proxies"])
    session.verify = env["verify"]
    session.auth = get_netrc_auth(rpc_url)
    session.trust_env = False
    return session


def _plain(rpc_url: str, session: requests.Session) -> bool:
    """Whether requests would send to ``rpc_url`` directly: plain http, no proxy for it, no
    login (a ``.netrc`` entry, or a ``user:password@`` in the URL, which requests sends as
    basic auth). Only then does :class:`_PostPool` carry the requests. A proxy for it is one
    requests would pick (``select_proxy``): a ``no_proxy`` that names other hosts, or an
    ``https_proxy`` alone, leaves ``session.proxies`` not empty and the endpoint direct."""
    from requests.utils import select_proxy

    parts = urlsplit(rpc_url)
    return (
        rpc_url.startswith("http://")
        and select_proxy(rpc_url, session.proxies) is None
        and session.auth is None
        and not (parts.username or parts.password)
    )


_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
"""The statuses ``requests`` follows (with a ``Location``)."""


class _PostPool:
    """web3's HTTP session manager for one plain-http endpoint, its POSTs sent over pooled
    HTTP/1.1 keep-alive connections (``http.client``) instead of a ``requests`` session.

    A JSON-RPC request through ``requests`` costs ~1 ms of CPU beside the node's own answer
    (preparing the request, the cookie jar, urllib3's pool, parsing the answer's headers with
    the email package): ~1.1 ms more wall and ~0.7 ms more CPU a request than ``http.client``
    on the same connection (load 13), and a 5-site round makes ~55 (issue 18). The bytes sent and
    the answers are the same; so are the failures: each is raised as the ``requests``
    exception that ``requests`` raises for it (refused or reset: ``ConnectionError``; no
    answer in time: ``ConnectTimeout`` / ``ReadTimeout``, but a body that stops coming after
    the headers: ``ConnectionError``, which web3 does not retry; a body cut short:
    ``ChunkedEncodingError``; an HTTP error status: ``HTTPError`` with the answer as its
    ``response``, from requests' own ``raise_for_status``), so web3's retries and
    :func:`fedtrail.errors.chain_read_error` act as before. Like urllib3, a pooled connection
    the node closed while idle (readable before a request is sent: its EOF) is dropped, never
    reused, and a request is never sent twice. Anything else (another URL, a streamed answer,
    a timeout given as a pair; every request after a redirect, which requests follows) goes to
    web3's own manager, as every other attribute does."""

    def __init__(self, fallback: Any, url: str) -> None:
        self._fallback = fallback
        self._url = url
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or "", parts.port or 80
        from requests.utils import requote_uri  # the path as requests sends it (a space or
        # a non-ASCII letter quoted, an unreserved character unquoted)

        self._path = requote_uri((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._redirected = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_fallback", "_idle", "_lock", "_redirected"):
            raise AttributeError(name)  # not yet set (copy, pickle, a failed __init__)
        return getattr(self._fallback, name)

    def __del__(self) -> None:
        # a provider dropped without a close (web3 has none): no socket left to the GC
        for conn in getattr(self, "_idle", ()):
            conn.close()

    def _take(self, timeout: float) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            sock = conn.sock
            try:  # poll, not select: any descriptor number (select refuses those >= 1024)
                watch = select.poll()
                watch.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
                readable = bool(watch.poll(0))
            except (OSError, ValueError, TypeError):  # closed already (no socket, fd -1)
                readable = True
            if sock is None or readable:  # closed by the node while idle, or it sent unasked
                conn.close()
                continue
            conn.timeout = timeout
            sock.settimeout(timeout)
            return conn

    def make_post_request(self, endpoint_uri: str, data: Any, **kwargs: Any) -> bytes:
        timeout = kwargs.get("timeout", 30.0)
        if (
            endpoint_uri != self._url
            or self._redirected
            or kwargs.get("stream")
            or not isinstance(data, bytes)
            or not isinstance(timeout, int | float)
            or set(kwargs) - {"timeout", "headers", "stream"}
        ):
            return bytes(self._fallback.make_post_request(endpoint_uri, data, **kwargs))
        import requests

        conn = self._take(float(timeout))
        reusable = False
        try:
            if conn.sock is None:
                try:
                    conn.connect()
                except TimeoutError as exc:
                    raise requests.exceptions.ConnectTimeout(str(exc)) from exc
                except OSError as exc:
                    raise requests.exceptions.ConnectionError(str(exc)) from exc
            try:
                conn.request("POST", self._path, body=data, headers=kwargs.get("headers") or {})
            except (OSError, http.client.HTTPException) as exc:  # a send that timed out too:
                # requests' "Connection aborted.", a ConnectionError (web3 does not retry it)
                raise requests.exceptions.ConnectionError(str(exc)) from exc
            try:
                resp = conn.getresponse()
            except TimeoutError as exc:
                raise requests.exceptions.ReadTimeout(str(exc)) from exc
            except (OSError, http.client.HTTPException) as exc:
                raise requests.exceptions.ConnectionError(str(exc)) from exc
            try:
                body = resp.read()
            except TimeoutError as exc:  # requests: a ConnectionError once the headers came,
                # not a Timeout (which web3 retries, eth_sendRawTransaction among them)
                raise requests.exceptions.ConnectionError(str(exc)) from exc
            except (OSError, http.client.HTTPException) as exc:
                raise requests.exceptions.ChunkedEncodingError(str(exc)) from exc
            reusable = not resp.will_close
            if resp.status in _REDIRECTS and resp.getheader("Location"):
                # requests follows it (307/308 with the body, 301-303 as a GET): so does web3's
                # own manager, from now on for every request (the endpoint said "not here")
                self._redirected = True
                return bytes(self._fallback.make_post_request(endpoint_uri, data, **kwargs))
            if resp.status >= 400:
                answer = requests.Response()
                answer.status_code, answer.reason = resp.status, resp.reason
                answer._content = body  # the body requests would have read
                answer.url = requests.Request("POST", endpoint_uri).prepare().url or ""
                answer.raise_for_status()
            return body
        finally:
            if reusable:
                with self._lock:
                    self._idle.append(conn)
            else:
                conn.close()


def is_embedded(w3: Web3) -> bool:
    from web3 import EthereumTesterProvider

    return isinstance(w3.provider, EthereumTesterProvider)


def funded_accounts(w3: Web3) -> list[LocalAccount]:
    """Pre-funded accounts with their keys: the embedded chain's test accounts.

    On a JSON-RPC chain there are none we can know; create keystores and fund them instead.
    """
    from eth_account import Account

    if not is_embedded(w3):
        return []
    backend: Any = w3.provider.ethereum_tester.backend  # type: ignore[attr-defined]
    return [Account.from_key(k.to_bytes()) for k in backend.account_keys]


# Anvil's and Ganache's well-known development mnemonic ("test test ... junk"): public test keys,
# never used outside a local development chain.
DEV_MNEMONIC = "test test test test test test test test test test test junk"


def dev_account(index: int) -> LocalAccount:
    """Account ``index`` of the public development mnemonic that Anvil pre-funds."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    account: LocalAccount = Account.from_mnemonic(
        DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}"
    )
    return account


def block_timestamp(w3: Web3) -> int:
    return _timestamp(w3, "latest")


def next_block_timestamp(w3: Web3) -> int:
    """The timestamp a transaction sent now would see: the pending block's. On an idle Anvil
    (automine) the latest block's timestamp stands still while the clock runs, so deadlines
    are compared with this one."""
    return _timestamp(w3, "pending")


_QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,16}")


def _timestamp(w3: Web3, block: str) -> int:
    """``block``'s timestamp. Over HTTP it is read from the node's answer as sent (a hex
    quantity): web3's ``get_block`` runs the whole block through its middleware and formatters
    first (~1 ms a read at load 8, a dozen reads a 5-site round). An answer that is an error or
    not a block with a timestamp is asked again through ``get_block``. An endpoint that does
    not answer raises :class:`ChainUnreachable` and a passing JSON-RPC error
    :class:`LedgerError`: the daemons retry both (a chain restarted under a running node used
    to end it with requests' ConnectionError and a traceback, read here between its commit
    and its reveal). Anything else (an endpoint that refuses the ``pending`` tag, an answer
    that does not decode) raises :class:`ChainFault`, which ends them: no retry changes it
    (:func:`fedtrail.errors.chain_read_error`)."""
    from web3.providers.rpc import HTTPProvider
    from web3.types import RPCEndpoint

    provider = w3.provider
    try:
        if isinstance(provider, HTTPProvider):
            answer = provider.make_request(RPCEndpoint("eth_getBlockByNumber"), [block, False])
            found = answer.get("result") if isinstance(answer, dict) else None
            stamp = found.get("timestamp") if isinstance(found, dict) else None
            if isinstance(stamp, str) and _QUANTITY.fullmatch(stamp):
                return int(stamp, 16)
        return int(w3.eth.get_block(block)["timestamp"])  # type: ignore[arg-type]
    except Exception as exc:
        raise chain_read_error(exc, f"cannot read the chain's {block} block's timestamp") from exc


def balance(w3: Web3, address: str) -> int:
    """``address``'s balance in wei; a read that fails is the clear error every chain read
    raises (:func:`fedtrail.errors.chain_read_error`), not web3's or requests' traceback (the
    one-shot commands' balance checks read it raw)."""
    from web3 import Web3

    try:
        return int(w3.eth.get_balance(Web3.to_checksum_address(address)))
    except Exception as exc:
        raise chain_read_error(exc, f"cannot read the balance of {address}") from exc


def advance_time(w3: Web3, seconds: int) -> None:
    """Moves the chain's clock forward (test and demo chains only) and mines a block. (It
    returned the new block's timestamp, a request of its own that no caller read: issue 18.)"""
    if seconds < 0:
        raise ConfigError("cannot move the chain clock backwards")
    if is_embedded(w3):
        tester: Any = w3.provider.ethereum_tester  # type: ignore[attr-defined]
        tester.time_travel(block_timestamp(w3) + seconds)
        tester.mine_blocks(1)
    else:
        w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def fund(w3: Web3, source: LocalAccount, target: str, wei: int) -> None:
    """Sends ``wei`` from ``source`` to ``target`` and waits for the receipt. A send whose
    answer is lost (a timeout, a dropped connection) is not called failed while the node holds
    the signed transfer: it is waited for, so an operator who would rerun a failed ``chain
    fund`` does not pay twice. A mined transfer that failed raises."""
    from web3 import Web3
    from web3.exceptions import TransactionNotFound

    what = f"sending {wei} wei to {target}"
    try:
        nonce = w3.eth.get_transaction_count(source.address, "pending")
        chain_id = w3.eth.chain_id
        latest = w3.eth.get_block("latest")
    except Exception as exc:  # read raw before: a chain gone meant a traceback
        raise chain_read_error(exc, f"{what}: cannot read the nonce and the fees") from exc
    base_fee = latest.get("baseFeePerGas")
    if not isinstance(base_fee, int):
        raise ChainFault(
            f"{what}: the chain's latest block has no base fee (a chain without EIP-1559 "
            "fees); nothing was sent"
        )
    tx: dict[str, Any] = {
        "to": Web3.to_checksum_address(target),
        "value": wei,
        "gas": 21_000,
        "nonce": nonce,
        "chainId": chain_id,
        "maxFeePerGas": 2 * base_fee + 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    signed = source.sign_transaction(tx)
    unknown = (
        f"{what}: the outcome is unknown (transaction {signed.hash.to_0x_hex()}); check "
        f"{target}'s balance and {source.address}'s nonce before sending again"
    )
    h = None
    for attempt in range(2):  # a lost answer: the same signed bytes once more, never a new one
        try:
            h = w3.eth.send_raw_transaction(signed.raw_transaction)
            break
        except Exception as exc:  # web3's RPC errors (insufficient funds...) differ by node
            try:
                w3.eth.get_transaction(signed.hash)
            except TransactionNotFound:
                if attempt == 0 and _lost_answer(exc):
                    continue
                if _lost_answer(exc):
                    raise TransactionFailed(f"{unknown} ({exc})") from exc
                raise TransactionFailed(f"{what} failed: {exc}") from exc
            except Exception as look:
                raise TransactionFailed(
                    f"{unknown}: the send failed ({exc}) and the look-up too ({look})"
                ) from exc
            h = signed.hash  # the node took it: its answer was lost
            break
    assert h is not None
    try:
        receipt = w3.eth.wait_for_transaction_receipt(h, poll_latency=0.01)
    except Exception as exc:
        raise TransactionFailed(
            f"{what}: transaction {signed.hash.to_0x_hex()} not mined: {exc}"
        ) from exc
    if int(receipt["status"]) != 1:
        raise TransactionFailed(f"{what}: transaction {signed.hash.to_0x_hex()} failed")


def _lost_answer(exc: BaseException) -> bool:
    """Whether a send error may hide a transaction the node took (no answer, not a refusal):
    a timeout or a dropped connection, not a JSON-RPC error the node answered with."""
    import requests

    text = str(exc).lower()
    return (
        isinstance(
            exc,
            requests.exceptions.ConnectionError
            | requests.exceptions.Timeout
            | TimeoutError
            | ConnectionError,
        )
        or "timed out" in text
        or "timeout" in text
    )


MIN_WAKE = 0.25
"""The shortest wait between two polls when a deadline is near (:func:`wake_delay`): a chain
whose clock lags the wall's is not polled more often than this while a daemon waits for it."""


@dataclass(frozen=True)
class Wake:
    """A step that waits for the chain's clock: it can be taken once the clock reaches ``due``
    (chain seconds); the clock read ``clock`` at ``at`` (this process's monotonic time)."""

    due: int
    clock: int
    at: float


def wake_delay(poll_interval: float, wake: Wake | None, now: float) -> float:
    """Seconds a daemon waits before its next poll at monotonic time ``now``: ``poll_interval``,
    or less when ``wake``'s deadline comes sooner (the chain's clock taken to run with this
    process's, from its last read), but at least :data:`MIN_WAKE` (issue 18: a site revealed at
    its first poll after the commit deadline, and the aggregator valued at its first poll after
    the reveals or the reveal deadline, each up to a whole ``poll_interval`` late). Waking early
    only costs a poll: the step checks the chain's clock again."""
    if wake is None:
        return poll_interval
    left = wake.due - wake.clock - (now - wake.at)
    return min(poll_interval, max(MIN_WAKE, left))
