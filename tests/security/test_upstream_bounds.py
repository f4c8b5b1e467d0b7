"""Every upstream bounded, on the direct (single-route) path: a provider that hangs, stalls, cuts,
is dead, or answers garbage costs the client a bounded wait and a clear answer — and a request
that got nothing back is charged nothing."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from fakes.gateway import ALICE_KEY, Gateway
from fault_upstream import Blackhole, Fault, FaultUpstream, refused_url

from codexgate.policies.keys import hash_key

BUDGET_KEY = "sk-cg-bounds-budget-key-000000000000000000000"
# Each request to a priced model reserves about $0.5 (500 output tokens at $1000/MTok).
PRICE = "price: {input_per_mtok: 1000, output_per_mtok: 1000}, output_allowance: 500"


class NotHttpServer:
    """Accepts, reads a little, answers bytes that are not HTTP, closes."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH_9.6 not a web server\r\n\r\n")

    def close(self) -> None:
        self.server.close()


def bounds_policy(upstream: FaultUpstream, dead: str, blackhole: int, not_http: int) -> str:
    names = ("hang", "stall", "cut", "garbage", "slowstream")
    providers = "\n".join(
        f'  {name}: {{kind: openai, base_url: "http://127.0.0.1:{upstream.port}/f/{name}", '
        f'keys: [{{value: "env:CG_TEST_UPSTREAM_KEY"}}]}}'
        for name in names
    )
    models = "\n".join(f"  m-{name}: {{routes: [{{provider: {name}}}], {PRICE}}}" for name in names)
    key = '[{value: "env:CG_TEST_UPSTREAM_KEY"}]'
    return f"""\
gateway:
  resilience: {{connect_timeout: 1, first_byte_timeout: 2, idle_timeout: 2, total_timeout: 4, cooldown_seconds: 0}}
providers:
{providers}
  dead: {{kind: openai, base_url: "{dead.rsplit("/", 1)[0]}/v1", keys: {key}}}
  blackhole: {{kind: openai, base_url: "http://127.0.0.1:{blackhole}/v1", keys: {key}}}
  nothttp: {{kind: openai, base_url: "http://127.0.0.1:{not_http}/v1", keys: {key}}}
models:
{models}
  m-dead: {{routes: [{{provider: dead}}], {PRICE}}}
  m-blackhole: {{routes: [{{provider: blackhole}}], {PRICE}}}
  m-nothttp: {{routes: [{{provider: nothttp}}], {PRICE}}}
orgs: {{acme: {{}}}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}"}}
  - {{name: budget, team: platform, hash: "{hash_key(BUDGET_KEY)}", budgets: [{{limit_usd: 1.2, period: 1d}}]}}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstream]:
    fake = FaultUpstream().start()
    fake.script("hang", Fault.hang_headers())
    fake.script("stall", Fault.hang_mid(events=2))
    fake.script("cut", Fault.reset_after(events=2))
    fake.script("slowstream", Fault.trickle(chunks=60, interval=0.25))  # never silent for long, but endless
    fake.script("garbage", Fault("status", code=200, body=b"<html>gateway of the provider</html>",
                                 headers={"content-type": "text/html"}))  # fmt: skip
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory, upstream: FaultUpstream) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("bounds")
    blackhole = Blackhole()
    not_http = NotHttpServer()
    policy = root / "policy.yaml"
    policy.write_text(bounds_policy(upstream, refused_url(), blackhole.port, not_http.port))
    gateway = Gateway(policy, root / "data").start()
    yield gateway
    gateway.stop()
    not_http.close()
    blackhole.server.close()


def post(gateway: Gateway, model: str, session: str, stream: bool = False, key: str = ALICE_KEY) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/responses",
        json={"model": model, "input": "hello", "stream": stream},
        headers={"authorization": f"Bearer {key}", "session-id": session},
        timeout=30,
    )


def error_of(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.text[:300]
    return response.json()["error"]


def test_provider_that_never_answers_gets_a_bounded_json_error_and_no_charge(bounded: Gateway) -> None:
    answer = post(bounded, "m-hang", "hang-1")
    assert answer.status_code == 504
    error = error_of(answer)
    assert error["code"] == "upstream_timeout" and "no answer within 2 s" in error["message"]
    (line,) = bounded.wait_accounting(lambda r: r["session_id"] == "hang-1")
    assert line["charge"] == "release" and line["cost_usd"] == 0
    assert "first_byte_timeout" in bounded.wait_log("first_byte_timeout")


def test_unreachable_connect_is_bounded(bounded: Gateway) -> None:
    answer = post(bounded, "m-blackhole", "blackhole-1")
    assert answer.status_code == 504
    assert "did not accept a connection within 1 s" in error_of(answer)["message"]


def test_dead_provider_is_a_json_502_without_addresses_and_charges_nothing(bounded: Gateway) -> None:
    # Each request reserves ~$0.5 of a $1.2 budget: were failures charged, the third would be refused (402).
    for attempt in range(4):
        session = f"dead-{attempt}"
        answer = post(bounded, "m-dead", session, key=BUDGET_KEY)
        assert answer.status_code == 502, answer.text
        error = error_of(answer)
        assert error["code"] == "upstream_unavailable"
        assert "127.0.0.1" not in answer.text and "<html" not in answer.text.lower()
        (line,) = bounded.wait_accounting(lambda r, s=session: bool(r["session_id"] == s))
        assert line["cost_usd"] == 0 and line["charge"] == "release"
        assert line["decision"] == "upstream_unavailable"


def test_non_json_200_is_a_502(bounded: Gateway) -> None:
    answer = post(bounded, "m-garbage", "garbage-1")
    assert answer.status_code == 502
    assert error_of(answer)["code"] == "upstream_invalid_response"
    (line,) = bounded.wait_accounting(lambda r: r["session_id"] == "garbage-1")
    assert line["cost_usd"] == 0


def test_non_http_answer_is_a_502(bounded: Gateway) -> None:
    answer = post(bounded, "m-nothttp", "nothttp-1")
    assert answer.status_code == 502
    assert error_of(answer)["code"] == "upstream_invalid_response"
    assert "SSH" not in answer.text


def _stream_text(gateway: Gateway, model: str, session: str) -> str:
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/responses",
        json={"model": model, "input": "hello", "stream": True},
        headers={"authorization": f"Bearer {ALICE_KEY}", "session-id": session},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        # After its response.failed the answer ends cleanly: reading it to the end raises nothing.
        return "".join(response.iter_text())


def _failed_event(text: str) -> dict:
    blocks = [b for b in text.split("\n\n") if b.startswith("event: response.failed")]
    assert len(blocks) == 1, text
    data = json.loads(blocks[0].split("data: ", 1)[1])
    assert data["type"] == "response.failed" and data["response"]["status"] == "failed"
    return data


@pytest.mark.parametrize(
    ("model", "words"),
    [("m-stall", "stalled for 2 s"), ("m-cut", "broke off"), ("m-slowstream", "took longer than 4 s")],
    ids=["stall", "cut", "total"],
)
def test_stream_that_stalls_or_is_cut_ends_with_response_failed_charged_once(
    bounded: Gateway, model: str, words: str
) -> None:
    session = f"{model}-stream"
    text = _stream_text(bounded, model, session)
    assert '"n":0' in text and '"n":1' in text  # what arrived before the fault was passed on
    assert words in _failed_event(text)["response"]["error"]["message"]
    lines = bounded.wait_accounting(lambda r: r["session_id"] == session)
    assert len(lines) == 1
    assert lines[0]["charge"] == "estimate" and lines[0]["cost_usd"] > 0


def test_upstream_failures_never_show_mitmproxy_pages(bounded: Gateway, tmp_path: Path) -> None:
    answers = [post(bounded, model, f"pages-{model}") for model in ("m-dead", "m-nothttp", "m-garbage")]
    for answer in answers:
        assert "mitmproxy" not in answer.text.lower() and "<html" not in answer.text.lower()
        assert answer.json()["error"]["type"] == "server_error"


def test_http2_client_through_the_proxy_gets_json_too(bounded: Gateway) -> None:
    context = ssl.create_default_context(cafile=str(bounded.ca_cert))
    with httpx.Client(proxy=bounded.proxy_url, verify=context, http2=True, timeout=30) as client:
        answer = client.post(
            "https://api.openai.com/v1/responses",
            json={"model": "m-dead", "input": "hello"},
            headers={"authorization": f"Bearer {ALICE_KEY}"},
        )
    assert answer.http_version == "HTTP/2"
    assert answer.status_code == 502
    assert answer.headers["content-type"] == "application/json"
    assert error_of(answer)["code"] == "upstream_unavailable"


def test_cut_stream_to_an_http2_client_in_proxy_mode_ends_cleanly_after_response_failed(bounded: Gateway) -> None:
    """HTTP/2 (Codex in proxy mode may negotiate it): the failure event, then END_STREAM — not a
    reset stream the client would report as a transport error."""
    context = ssl.create_default_context(cafile=str(bounded.ca_cert))
    with (
        httpx.Client(proxy=bounded.proxy_url, verify=context, http2=True, timeout=30) as client,
        client.stream(
            "POST",
            "https://api.openai.com/v1/responses",
            json={"model": "m-cut", "input": "hello", "stream": True},
            headers={"authorization": f"Bearer {ALICE_KEY}", "session-id": "m-cut-h2"},
        ) as response,
    ):
        assert response.http_version == "HTTP/2" and response.status_code == 200
        text = "".join(response.iter_text())
    assert '"n":0' in text
    assert "broke off" in _failed_event(text)["response"]["error"]["message"]
    assert len(bounded.wait_accounting(lambda r: r["session_id"] == "m-cut-h2")) == 1
