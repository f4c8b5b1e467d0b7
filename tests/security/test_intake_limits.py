"""Limits before work, identity before the body: a hostile client on the gateway's listener
cannot make it inflate, parse, keep or write more than bounded amounts, nor hold connections
open by sending slowly. Driven over real sockets against a real gateway process."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import brotli
import httpx2 as httpx
import pytest
import zstandard
from fakes.gateway import ALICE_KEY, Gateway, policy_text
from fakes.openai_upstream import FakeOpenAI

BOMB_DECODED = 256 * 1024 * 1024  # 8x the gateway's 32 MB decoded-body cap


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("intake")
    policy = root / "policy.yaml"
    policy.write_text(policy_text(fake_openai.url))
    gateway = Gateway(policy, root / "data")
    gateway.extra_args = ["--set", "codexgate_header_timeout=1", "--set", "codexgate_body_timeout=1"]
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    zeros = bytes(1024 * 1024)
    gzip_bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    zstd_bomb = zstandard.ZstdCompressor(level=3).compressobj()
    brotli_bomb = brotli.Compressor(quality=1)
    parts: dict[str, list[bytes]] = {"gzip": [], "zstd": [], "br": []}
    for _ in range(BOMB_DECODED // len(zeros)):
        parts["gzip"].append(gzip_bomb.compress(zeros))
        parts["zstd"].append(zstd_bomb.compress(zeros))
        parts["br"].append(brotli_bomb.process(zeros))
    parts["gzip"].append(gzip_bomb.flush())
    parts["zstd"].append(zstd_bomb.flush())
    parts["br"].append(brotli_bomb.finish())
    return {name: b"".join(chunks) for name, chunks in parts.items()}


def peak_rss_reset(pid: int) -> None:
    """Start a new peak-RSS measurement (Linux: writing 5 to clear_refs resets VmHWM)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def current_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def post(gateway: Gateway, body: bytes, headers: dict[str, str], key: str | None = ALICE_KEY) -> httpx.Response:
    all_headers = {"content-type": "application/json", **headers}
    if key:
        all_headers["authorization"] = f"Bearer {key}"
    return httpx.post(f"{gateway.base_url}/responses", content=body, headers=all_headers, timeout=60)


def error_of(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.text[:300]
    return response.json()["error"]


def raw_exchange(gateway: Gateway, data: bytes, wait_for_close: float = 20) -> bytes:
    """Send `data` on a fresh connection and read until the gateway closes it (bounded)."""
    received = b""
    with socket.create_connection(("127.0.0.1", gateway.gateway_port), timeout=wait_for_close) as sock:
        with contextlib.suppress(OSError):  # the gateway may close while we still send
            sock.sendall(data)
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
    return received


def json_of_raw(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), answer[:300]
    return status, json.loads(body)["error"]


def test_gzip_bomb_without_key_is_refused_at_the_head_without_inflating(limited: Gateway, bombs: dict) -> None:
    pid = limited.process.pid  # type: ignore[union-attr]
    before = current_rss(pid)
    peak_rss_reset(pid)
    answer = post(limited, bombs["gzip"], {"content-encoding": "gzip"}, key=None)
    assert answer.status_code == 401
    assert error_of(answer)["code"] == "missing_api_key"
    # Not decoded, not even kept: the peak stays far below the 256 MiB the body inflates to.
    assert peak_rss(pid) - before < 32 * 1024 * 1024


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_bomb_with_key_is_capped_while_decompressing(limited: Gateway, bombs: dict, encoding: str) -> None:
    pid = limited.process.pid  # type: ignore[union-attr]
    before = current_rss(pid)
    peak_rss_reset(pid)
    answer = post(limited, bombs[encoding], {"content-encoding": encoding})
    assert answer.status_code == 413
    assert error_of(answer)["code"] == "request_too_large"
    # At most the cap (32 MB) is ever decoded, not the 256 MiB the body holds.
    assert peak_rss(pid) - before < 96 * 1024 * 1024


def test_invalid_body_without_key_is_a_401_not_a_parse_error(limited: Gateway) -> None:
    answer = post(limited, b"\x1f\x8b not gzip at all", {"content-encoding": "gzip"}, key=None)
    assert answer.status_code == 401


def test_compressed_body_is_forwarded_decoded(limited: Gateway, fake_openai: FakeOpenAI) -> None:
    body = json.dumps({"model": "gpt-test", "input": "compressed hello"}).encode()
    answer = post(limited, zlib.compress(body), {"content-encoding": "deflate"})
    assert answer.status_code == 200, answer.text
    (received,) = [r for r in fake_openai.received if b"compressed hello" in r.body]
    assert "content-encoding" not in received.headers  # the provider gets the body plain
    assert json.loads(received.body)["input"] == "compressed hello"


@pytest.mark.parametrize("depth", [150, 5000])
def test_deep_json_is_a_400(limited: Gateway, depth: int) -> None:
    body = b'{"model": "gpt-test", "input": ' + b"[" * depth + b"]" * depth + b"}"
    answer = post(limited, body, {})
    assert answer.status_code == 400
    assert error_of(answer)["code"] == "json_too_deep"
    assert "Traceback" not in limited.log_text()


def test_oversized_declared_body_is_refused_at_the_head(limited: Gateway) -> None:
    head = (
        f"POST /v1/responses HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {ALICE_KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
    ).encode()
    status, error = json_of_raw(raw_exchange(limited, head + b"{"))
    assert status == 413 and error["code"] == "request_too_large"


def test_huge_header_value_is_431_and_not_forwarded(limited: Gateway) -> None:
    head = b"POST /v1/responses HTTP/1.1\r\nHost: gw\r\nX-Huge: " + b"a" * (8 * 1024 * 1024) + b"\r\n\r\n"
    status, error = json_of_raw(raw_exchange(limited, head))
    assert status == 431 and error["code"] == "request_header_fields_too_large"


def test_a_hundred_thousand_headers_are_431(limited: Gateway) -> None:
    head = b"POST /v1/responses HTTP/1.1\r\nHost: gw\r\n" + b"X-A: b\r\n" * 100_000 + b"\r\n"
    status, _ = json_of_raw(raw_exchange(limited, head))
    assert status == 431


def test_too_many_small_headers_are_431(limited: Gateway) -> None:
    headers = {f"x-filler-{i}": "1" for i in range(150)}
    answer = post(limited, b'{"model": "gpt-test", "input": "hi"}', headers)
    assert answer.status_code == 431
    assert error_of(answer)["code"] == "request_header_fields_too_large"


@pytest.mark.parametrize("key", [ALICE_KEY, None], ids=["with-key", "without-key"])
def test_huge_model_is_refused_and_written_nowhere_unbounded(limited: Gateway, key: str | None) -> None:
    session = f"huge-model-{bool(key)}"
    marker = "m" * 1_000_000
    answer = post(limited, json.dumps({"model": marker, "input": "x"}).encode(), {"session-id": session}, key=key)
    assert answer.status_code == (400 if key else 401)
    if key:
        assert error_of(answer)["code"] == "invalid_model"
    assert len(answer.content) < 4096
    (line,) = limited.wait_accounting(lambda r: r["session_id"] == session)
    assert len(json.dumps(line)) < 4096
    audit = "".join(path.read_text() for path in (limited.data_dir / "audit").glob("*.jsonl"))
    assert "m" * 1000 not in audit
    assert "m" * 1000 not in limited.log_text()
    assert "m" * 1000 not in (limited.data_dir / "accounting.jsonl").read_text()


def _wait_closed(gateway: Gateway, data: bytes) -> bytes:
    """What the gateway sends before it closes the connection; fails if it keeps it open."""
    with socket.create_connection(("127.0.0.1", gateway.gateway_port), timeout=1) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + 30  # a loop bound, not the assertion: the gateway must close
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue  # still open: keep waiting
            except OSError:  # reset: closed
                return received
            if not chunk:
                return received
            received += chunk
    raise AssertionError("the gateway kept the slow connection open")


def test_slow_request_head_is_closed(limited: Gateway) -> None:
    answer = _wait_closed(limited, b"POST /v1/responses HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408")
    assert "for its request head" in limited.wait_log("for its request head")


def test_slow_request_body_is_closed(limited: Gateway) -> None:
    head = (
        f"POST /v1/responses HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {ALICE_KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    ).encode()
    answer = _wait_closed(limited, head)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408")


def test_unparseable_request_gets_json_not_html(limited: Gateway) -> None:
    status, error = json_of_raw(raw_exchange(limited, b"NOT A REQUEST LINE\r\n\r\n"))
    assert status == 400 and error["code"] == "invalid_request"


def test_ordinary_requests_still_pass(limited: Gateway) -> None:
    answer = post(limited, json.dumps({"model": "gpt-test", "input": "ordinary"}).encode(), {})
    assert answer.status_code == 200, answer.text
