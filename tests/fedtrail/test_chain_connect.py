"""A connected Web3 asks the endpoint for its chain id once (issue 18): web3 asks for it
before every eth_call, gas estimate and signed transaction, 3 of a transaction's 7 requests.
Everything else still goes to the chain on every read."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from web3.providers.rpc import HTTPProvider

from fedtrail.chain import connect
from fedtrail.errors import ChainUnreachable, ConfigError, chain_read_error, without_passwords
from tests.fixtures.chain import free_port


@pytest.mark.anvil
def test_the_chain_id_is_asked_once_and_state_reads_every_time(
    anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: Counter[str] = Counter()
    make_request = HTTPProvider._make_request

    def counted(self: HTTPProvider, method: Any, request_data: bytes) -> bytes:
        sent[str(method)] += 1
        return make_request(self, method, request_data)

    monkeypatch.setattr(HTTPProvider, "_make_request", counted)
    w3 = connect(anvil_url)
    ids = {w3.eth.chain_id for _ in range(5)}
    for _ in range(3):
        w3.eth.call({"to": "0x" + "00" * 20, "data": "0x"})  # validated against the chain id
        w3.eth.block_number  # noqa: B018 - a state read
    assert ids == {31337}
    # 8 asks without the cache; web3 asks once more, uncached, to set its cache's policy
    assert sent["eth_chainId"] <= 2
    assert sent["eth_blockNumber"] == 3
    assert sent["eth_call"] == 3


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://127.0.0.1:port", "not a valid URL"),
        ("http://:8545", "names no host"),
    ],
)
def test_a_malformed_url_is_a_configuration_error(url: str, said: str) -> None:
    """Before, these were 'no JSON-RPC answer from URL (InvalidURL)': an endpoint down, exit 1."""
    with pytest.raises(ConfigError, match=said):
        connect(url)


@pytest.mark.anvil
def test_the_environment_is_read_once_when_connecting(
    anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy (and ``NO_PROXY``) in the environment is honoured as requests honours it, but
    read once, when connecting: requests read it again at every request (issue 18)."""
    for name in ("HTTP_PROXY", "NO_PROXY", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(ChainUnreachable):
        connect(anvil_url)  # through the proxy, which does not answer
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    w3 = connect(anvil_url)  # the chain itself
    monkeypatch.delenv("no_proxy")
    assert w3.eth.block_number >= 0  # still the chain itself: the environment was read once


@pytest.mark.anvil
def test_a_chain_that_stops_answering_is_unreachable_when_its_clock_is_read(
    anvil_url: str,
) -> None:
    """The clock reads every daemon makes each poll: a chain that goes away under a connected
    Web3 (Anvil restarted) raised requests' ConnectionError through them, which the node
    daemon did not retry (it died with a traceback between its commit and its reveal). Now
    ChainUnreachable, a LedgerError the daemons retry."""
    from web3 import Web3

    from fedtrail.chain import block_timestamp, next_block_timestamp

    w3 = connect(anvil_url)
    assert next_block_timestamp(w3) >= block_timestamp(w3) > 0
    gone = Web3(HTTPProvider(f"http://127.0.0.1:{free_port()}", request_kwargs={"timeout": 5}))
    for read in (block_timestamp, next_block_timestamp):
        with pytest.raises(ChainUnreachable, match="cannot read the chain's"):
            read(gone)


def test_an_unreachable_endpoints_password_is_not_in_the_error() -> None:
    """A login in the endpoint's URL (sent as basic auth) is shown as ``***`` in the error a
    daemon prints and logs; the user and the endpoint are still named."""
    url = f"http://alice:s3cret-pass@127.0.0.1:{free_port()}"
    with pytest.raises(ChainUnreachable) as caught:
        connect(url, timeout=2.0)
    message = str(caught.value)
    assert "s3cret-pass" not in message
    assert "alice:***@127.0.0.1" in message


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://u:p@h:8545/x", "http://u:***@h:8545/x"),
        (
            "from https://user:pa:ss@node/ and http://v:w@other",
            "from https://user:***@node/ and http://v:***@other",
        ),
        ("http://h:8545 (no login)", "http://h:8545 (no login)"),
        ("http://user@h (no password)", "http://user@h (no password)"),
    ],
)
def test_without_passwords(text: str, shown: str) -> None:
    assert without_passwords(text) == shown


def test_a_read_errors_quoted_url_loses_its_password() -> None:
    """requests quotes the URL, login included, in its errors: the daemons' error does not."""

    class HTTPError(Exception):
        pass

    exc = HTTPError("500 Server Error for url: http://alice:s3cret@10.0.0.5:8545/")
    exc.response = type("R", (), {"status_code": 500})()  # type: ignore[attr-defined]
    err = chain_read_error(exc, "get_round")
    assert "s3cret" not in str(err)
    assert "alice:***@10.0.0.5" in str(err)
