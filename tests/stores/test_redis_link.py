"""The counter store's Redis connection (`RedisLink`) against a real redis-server: concurrent calls
share one pipelined connection and each gets its own reply; AUTH and SELECT from the URL; TLS
with the CA checked; a connection the server drops is replaced; a flushed script cache is
refilled; calls after a timeout never get a late reply; unknown URL options are refused — by
`codexgate up` before it starts, and by the gateway master with the cause printed."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fakes.redis_server import RedisServer
from mitmproxy import certs

from codexgate.cli import _embedded_policy, ensure_data_dir, main
from codexgate.stores.base import Amounts, Counter
from codexgate.stores.redis_link import LinkError, RedisLink, ReplyError
from codexgate.stores.redis_store import RedisStore

HANG_GUARD = 10.0  # seconds: only a hang (not a slow machine) takes this long
T = 1_700_000_000.0


def _budget() -> Counter:
    return Counter("key:alice/usd/1d", "usd", 10.0, T, 86400.0, 86400.0, T + 86400.0)


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def _clients(raw: redis.Redis) -> int:
    return int(raw.info("clients")["connected_clients"])


def test_concurrent_calls_share_one_connection_and_get_their_own_replies(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    prefix = f"link-{uuid.uuid4().hex[:8]}:"

    async def body() -> None:
        link = RedisLink(redis_server.url, 1.0, 1.0)
        try:
            before = _clients(raw)
            # INCRBY answers with the key's new value, so a reply handed to the wrong caller shows.
            replies = await asyncio.wait_for(
                asyncio.gather(*(link.call("INCRBY", f"{prefix}{i}", i + 1) for i in range(300))), HANG_GUARD
            )
            assert replies == [i + 1 for i in range(300)]
            assert _clients(raw) == before + 1
            assert await link.call("ECHO", "x" * 100_000) == b"x" * 100_000  # a reply in many reads
            with pytest.raises(ReplyError, match="WRONGTYPE"):
                await link.call("LPUSH", f"{prefix}0", "v")  # an error reply is the caller's, not the link's
            assert await link.call("GET", f"{prefix}0") == b"1"  # and the connection is still in step
        finally:
            await link.close()

    asyncio.run(body())


def test_password_and_db_from_the_url(fresh_redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(fresh_redis_server.url, decode_responses=True)
    admin.config_set("requirepass", "s3cret-pw")
    admin.close()
    base = fresh_redis_server.url.removeprefix("redis://").rsplit("/", 1)[0]

    async def body() -> None:
        wrong = RedisLink(f"redis://:not-it@{base}/0", 1.0, 1.0)
        with pytest.raises(LinkError) as caught:
            await asyncio.wait_for(wrong.call("PING"), HANG_GUARD)
        assert "AUTH refused" in str(caught.value) and "not-it" not in str(caught.value)
        await wrong.close()

        link = RedisLink(f"redis://:s3cret-pw@{base}/3", 1.0, 1.0)
        try:
            assert await link.call("SET", "in-db-3", "yes") == b"OK"
        finally:
            await link.close()

    asyncio.run(body())
    check = redis.Redis.from_url(f"redis://:s3cret-pw@{base}/3", decode_responses=True)
    assert check.get("in-db-3") == "yes"
    check.close()
    check = redis.Redis.from_url(f"redis://:s3cret-pw@{base}/0", decode_responses=True)
    assert check.get("in-db-3") is None
    check.close()


def test_dropped_connection_is_replaced_and_flushed_scripts_reloaded(
    redis_server: RedisServer, raw: redis.Redis
) -> None:
    prefix = f"drop-{uuid.uuid4().hex[:8]}:"

    async def body() -> None:
        store = RedisStore(redis_server.url, prefix=prefix)
        try:
            assert (await store.reserve("a", [_budget()], Amounts(usd=1), T + 1)).admitted
            killed = raw.client_kill_filter(_type="normal", skipme=True)
            assert killed >= 1
            raw.script_flush()
            # A new connection, and EVALSHA's NOSCRIPT answered by loading the script again.
            admission = await asyncio.wait_for(store.reserve("b", [_budget()], Amounts(usd=2), T + 2), HANG_GUARD)
            assert admission.admitted
            assert [s.used for s in admission.states] == [pytest.approx(1.0)]
            assert await asyncio.wait_for(store.settle("a", Amounts(usd=0.5)), HANG_GUARD) is True
            (state,) = await store.snapshot([_budget()], T + 3)
            assert state.used == pytest.approx(0.5 + 2)
        finally:
            await store.close()

    asyncio.run(body())


def test_unknown_url_options_are_refused() -> None:
    with pytest.raises(ValueError, match="socket_keepalive"):
        RedisLink("redis://127.0.0.1:6379/0?socket_keepalive=true", 1.0, 1.0)
    RedisLink("rediss://127.0.0.1:6379/0?ssl_cert_reqs=none", 1.0, 1.0)  # TLS options are understood


def test_calls_after_a_timeout_use_a_fresh_connection(fresh_redis_server: RedisServer) -> None:
    async def body() -> None:
        link = RedisLink(fresh_redis_server.url, 1.0, 0.3)
        try:
            assert await link.call("PING") == b"PONG"
            fresh_redis_server.proc.send_signal(signal.SIGSTOP)  # accepts on the socket, never answers
            with pytest.raises(LinkError, match="no reply within 0.3 s"):  # the watchdog, not a lost connection
                await asyncio.wait_for(link.call("ECHO", "before"), HANG_GUARD)
            fresh_redis_server.proc.send_signal(signal.SIGCONT)
            # The server answers the old call late; that answer must not be taken for this one's.
            assert await asyncio.wait_for(link.call("ECHO", "after"), HANG_GUARD) == b"after"
        finally:
            await link.close()

    asyncio.run(body())


def test_tls_url_connects_with_the_given_ca_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    """rediss:// (managed Redis offerings speak TLS only): the certificate is checked against
    ssl_ca_certs and the host name; a server the CA does not vouch for is refused."""
    store = certs.CertStore.from_store(tmp_path / "ca", "testca", 2048)
    entry = store.get_cert("localhost", [x509.DNSName("localhost")])
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(entry.cert.to_pem())
    key.write_bytes(
        entry.privatekey.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ca = tmp_path / "ca" / "testca-ca-cert.pem"
    server = RedisServer(tmp_path / "redis", tls=(cert, key, ca))
    try:

        async def body() -> None:
            link = RedisLink(f"{server.url}?ssl_ca_certs={ca}", 2.0, 2.0)
            try:
                assert await asyncio.wait_for(link.call("SET", "over-tls", "yes"), HANG_GUARD) == b"OK"
                assert await link.call("GET", "over-tls") == b"yes"
            finally:
                await link.close()
            untrusted = RedisLink(server.url, 2.0, 2.0)  # the system CAs do not know this one
            with pytest.raises(LinkError, match="cannot connect"):
                await asyncio.wait_for(untrusted.call("PING"), HANG_GUARD)
            await untrusted.close()

        asyncio.run(body())
    finally:
        server.kill()


def test_codexgate_up_refuses_a_bad_store_url_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The message names the problem (mitmproxy's option rollback would otherwise print an
    unrelated one) and never the URL's password."""
    data = str(tmp_path / "data")
    assert main(["up", "--data-dir", data, "--store", "redis://gate:s3cret@127.0.0.1:1/0?socket_keepalive=1"]) == 2
    err = capsys.readouterr().err
    assert "--store: unsupported Redis URL option(s): socket_keepalive" in err and "s3cret" not in err
    assert main(["up", "--data-dir", data, "--store", "memcached://gate:s3cret@127.0.0.1"]) == 2
    err = capsys.readouterr().err
    assert "expected 'embedded' or a redis://" in err and "s3cret" not in err


def test_gateway_master_reports_the_option_error_that_stopped_it(tmp_path: Path) -> None:
    """Started directly (as `codexgate up` does after its own checks), a bad store option stops
    the master, and the cause is printed, not only mitmproxy's rollback complaint."""
    data = tmp_path / "data"
    policy, _ = _embedded_policy(ensure_data_dir(data))
    started = subprocess.run(
        [sys.executable, "-c", "from codexgate.master import main; main()", "--mode", "regular@127.0.0.1:0"]
        + ["--set", f"codexgate_policy={policy}", "--set", f"codexgate_data_dir={data}"]
        + ["--set", "codexgate_store=redis://127.0.0.1:1/0?socket_keepalive=1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "codexgate: codexgate_store: unsupported Redis URL option(s): socket_keepalive" in started.stderr
