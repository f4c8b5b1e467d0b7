"""Three gateway processes behind HAProxy (its health check on each /readyz), sharing one CA and a
Redis watched by Sentinel: a rate limit holds across the instances; a gateway killed mid-stream
is taken out and new requests succeed on the others; the Redis master killed, Sentinel promotes
the replica and the fleet goes on. Every admitted request is counted exactly once throughout:
the key's limit admits exactly its number of requests, no more (lost charge) and no fewer
(double charge or phantom reservation)."""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx2 as httpx
import pytest
import redis
from fakes.codex_cli import run_codex
from fakes.gateway import ALICE_KEY, Gateway, free_port
from fakes.openai_upstream import FakeOpenAI
from fakes.redis_server import RedisServer
from fakes.redis_topology import SentinelGroup, wait_until

from codexgate.policies.keys import hash_key

LIMIT = 8  # requests per day for alice, across the fleet
BOUND = 60.0  # seconds: only something that never happens takes this long


def _policy(upstream: str) -> str:
    return f"""\
providers:
  openai: {{kind: openai, base_url: "{upstream}", keys: [{{value: "env:CG_TEST_UPSTREAM_KEY"}}]}}
  local: {{kind: mock, output_tokens: 5}}
models:
  gpt-test: {{routes: [{{provider: openai}}], price: {{input_per_mtok: 1.0, output_per_mtok: 8.0}}}}
  mock-model: {{routes: [{{provider: local}}], price: {{input_per_mtok: 0, output_per_mtok: 0}}}}
orgs: {{acme: {{}}}}
teams: {{platform: {{org: acme}}}}
keys:
  - {{name: alice, team: platform, hash: "{hash_key(ALICE_KEY)}", rate_limits: [{{requests: {LIMIT}, per: 1d}}]}}
"""


def _haproxy_config(gateways: list[Gateway], port: int, proxy_port: int, stats_port: int) -> str:
    servers = "\n".join(
        f"    server gw{i} 127.0.0.1:{g.gateway_port} check port {g.metrics_port}" for i, g in enumerate(gateways)
    )
    proxies = "\n".join(
        f"    server gw{i} 127.0.0.1:{g.proxy_port} check port {g.metrics_port}" for i, g in enumerate(gateways)
    )
    return f"""\
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 2
    option redispatch
    default-server inter 300ms fall 1 rise 2

frontend base_url
    bind 127.0.0.1:{port}
    default_backend gateways

backend gateways
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    http-response set-header x-served-by %[srv_name]
{servers}

frontend proxy
    mode tcp
    bind 127.0.0.1:{proxy_port}
    default_backend proxies

backend proxies
    mode tcp
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{proxies}

frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""


class HAProxy:
    def __init__(self, workdir: Path, gateways: list[Gateway]) -> None:
        exe = shutil.which("haproxy")
        if exe is None:
            if os.environ.get("CI"):
                pytest.fail("haproxy is required in CI (./dev test installs it)")
            pytest.skip("haproxy not installed: ./dev test installs it")
        self.port, self.proxy_port, self.stats_port = free_port(), free_port(), free_port()
        config = workdir / "haproxy.cfg"
        config.write_text(_haproxy_config(gateways, self.port, self.proxy_port, self.stats_port))
        self.log = workdir / "haproxy.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([exe, "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT)
        for port in (self.port, self.proxy_port, self.stats_port):
            wait_until(f"haproxy listening on {port}", lambda p=port: _listening(p), timeout=15)

    def __repr__(self) -> str:
        return f"HAProxy(port={self.port}, log={self.log})"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def states(self) -> dict[str, str]:
        text = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=5).text.lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == "gateways" and row["svname"].startswith("gw")
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def _ask(url: str, model: str = "mock-model") -> httpx.Response:
    return httpx.post(
        f"{url}/responses", json={"model": model, "input": "hi"}, headers={"authorization": f"Bearer {ALICE_KEY}"},
        timeout=20,
    )  # fmt: skip


def test_fleet_behind_haproxy_with_sentinel(tmp_path: Path, upstream: FakeOpenAI) -> None:
    group = SentinelGroup(tmp_path / "sentinel")
    policy = tmp_path / "policy.yaml"
    policy.write_text(_policy(upstream.url))
    gateways: list[Gateway] = []
    balancer: HAProxy | None = None
    try:
        for i in range(3):
            gateway = Gateway(policy, tmp_path / f"gw{i}")
            gateway.store = group.url
            gateway.metrics_port = free_port()
            gateways.append(gateway.start())
        balancer = HAProxy(tmp_path, gateways)
        wait_until("all three gateways in rotation", lambda: set(balancer.states().values()) == {"UP"})
        admitted = 0

        # 1. Spread over the instances, the key's requests count against one limit.
        served_by = set()
        for _ in range(4):
            answer = _ask(balancer.url)
            assert answer.status_code == 200, answer.text
            served_by.add(answer.headers["x-served-by"])
            admitted += 1
        assert len(served_by) >= 2, served_by

        # 2. A stream in flight; its gateway is killed. HAProxy's check takes it out.
        upstream.hold_stream.set()
        with httpx.stream(
            "POST", f"{balancer.url}/responses", json={"model": "gpt-test", "input": "stream", "stream": True},
            headers={"authorization": f"Bearer {ALICE_KEY}"}, timeout=20,
        ) as stream:  # fmt: skip
            assert stream.status_code == 200
            admitted += 1
            victim = gateways[int(stream.headers["x-served-by"].removeprefix("gw"))]
            chunks = stream.iter_bytes()
            next(chunks)  # the first event arrived: the answer is mid-stream
            assert victim.process is not None
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(10)
            with pytest.raises(httpx.HTTPError):
                for _ in chunks:
                    pass
        upstream.release_stream.set()
        victim_name = f"gw{gateways.index(victim)}"
        wait_until("the killed gateway out of rotation", lambda: balancer.states()[victim_name].startswith("DOWN"))
        answer = _ask(balancer.url)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-served-by"] != victim_name
        admitted += 1

        # 3. The Redis master killed (idle, its writes replicated): Sentinel promotes the replica.
        old_master = group.master_address()
        master = redis.Redis(host=old_master[0], port=old_master[1])
        assert master.execute_command("WAIT", 1, 5000) == 1
        master.close()
        group.kill_master()
        refused = 0
        deadline = time.monotonic() + BOUND
        while (answer := _ask(balancer.url)).status_code != 200:
            assert answer.status_code == 503, answer.text  # store unavailable, or no instance ready
            refused += 1
            assert time.monotonic() < deadline, "the fleet did not continue after the failover"
            time.sleep(0.1)
        admitted += 1
        assert refused >= 1
        assert group.master_address() != old_master

        # 4. Exactly LIMIT admitted in all: the last ones fill it, the next is refused.
        while admitted < LIMIT:
            answer = _ask(balancer.url)
            assert answer.status_code == 200, answer.text
            admitted += 1
        refused_answer = _ask(balancer.url)
        assert refused_answer.status_code == 429, refused_answer.text

        # Each answered request was accounted once, by the one gateway that served it.
        ids = [line.get("request_id") for g in gateways for line in g.accounting() if line.get("status") == 200]
        assert len(ids) == len(set(ids))
    finally:
        upstream.release_stream.set()
        if balancer is not None:
            balancer.stop()
        for gateway in gateways:
            gateway.stop()
        group.kill()


@pytest.mark.e2e
def test_codex_exec_through_haproxy_in_proxy_mode_trusts_the_one_ca(
    tmp_path: Path, upstream: FakeOpenAI, redis_server: RedisServer
) -> None:
    """Real Codex, HTTPS_PROXY = the balancer, CODEX_CA_CERTIFICATE = the fleet's one CA: whichever
    gateway each of its connections lands on presents a certificate from that CA."""
    made = subprocess.run([sys.executable, "-m", "codexgate.cli", "ca", "--data-dir", str(tmp_path / "ca")],
                          capture_output=True, text=True, check=True)  # fmt: skip
    shared_cert = Path(made.stdout.strip())
    bundle = tmp_path / "ca.pem"
    subprocess.run([sys.executable, "-m", "codexgate.cli", "ca", "--data-dir", str(tmp_path / "ca"), "export",
                    "--out", str(bundle)], check=True, capture_output=True)  # fmt: skip
    policy = tmp_path / "policy.yaml"
    policy.write_text(_policy(upstream.url))
    gateways: list[Gateway] = []
    balancer: HAProxy | None = None
    try:
        for i in range(2):
            gateway = Gateway(policy, tmp_path / f"gw{i}")
            gateway.store = redis_server.url
            gateway.metrics_port = free_port()
            gateway.extra_args = ["--ca-file", str(bundle)]
            gateways.append(gateway.start())
        balancer = HAProxy(tmp_path, gateways)
        wait_until("both gateways in rotation", lambda: set(balancer.states().values()) == {"UP"})
        entry = SimpleNamespace(proxy_url=balancer.proxy_url, base_url=balancer.url, ca_cert=shared_cert)
        marker = f"marker-{uuid.uuid4().hex[:10]}"
        result = run_codex(entry, "proxy", f"please run `echo {marker}` and tell me what it printed", tmp_path)  # type: ignore[arg-type]
        assert result.returncode == 0, result.stdout + result.stderr
        assert marker in result.stdout
        answered = [r for g in gateways for r in g.accounting() if r.get("decision") == "answered"]
        assert len(answered) >= 2 and {r["mode"] for r in answered} == {"proxy"}
    finally:
        if balancer is not None:
            balancer.stop()
        for gateway in gateways:
            gateway.stop()
