"""Throwaway Redis topologies on loopback for tests: a three-master Redis Cluster, and a master
with one replica watched by three Sentinels. Real redis-server / redis-sentinel processes, no
persistence, each in its own directory, killed at teardown."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

SERVICE = "cgmaster"


def _require(program: str) -> str:
    exe = shutil.which(program)
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(f"{program} is required in CI (./dev test installs it)")
        pytest.skip(f"{program} not found on PATH: ./dev test installs it")
    return exe


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if _port_free(port) and _port_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until[T](what: str, probe: Callable[[], T], timeout: float = 30.0) -> T:
    """`probe()`'s first truthy result (exceptions count as not yet), or a failure naming `what`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except Exception as exc:  # not up yet (connection refused, ...): the timeout reports the last one
            last = exc
        else:
            if result:
                return result
            last = result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class _Processes:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, port: int, argv: list[str]) -> None:
        directory = self.workdir / str(port)
        directory.mkdir(exist_ok=True)
        with open(directory / "log", "wb") as log:
            self.procs[port] = subprocess.Popen(argv, cwd=directory, stdout=log, stderr=subprocess.STDOUT)

    def wait_ping(self, port: int, password: str | None = None) -> None:
        client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=1)
        try:
            wait_until(f"redis on {port}", client.ping, timeout=15)
        finally:
            client.close()

    def kill(self, port: int) -> None:
        proc = self.procs[port]
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)

    def kill_all(self) -> None:
        for port in list(self.procs):
            self.kill(port)

    def log(self, port: int) -> str:
        return (self.workdir / str(port) / "log").read_text(errors="replace")


class RedisCluster:
    """Three masters, no replicas, slots spread by `redis-cli --cluster create`.

    With `tls` (certificate file, key file, CA file) the nodes speak TLS only, to clients and to
    each other, and the URL is rediss+cluster://… with ssl_ca_certs."""

    def __init__(self, workdir: Path, tls: tuple[Path, Path, Path] | None = None, replicas: int = 0) -> None:
        server = _require("redis-server")
        cli = _require("redis-cli")
        self.processes = _Processes(workdir)
        self.ports = [_cluster_port() for _ in range(3 * (1 + replicas))]
        tls_client: dict[str, object] = {}
        cli_tls: list[str] = []
        for port in self.ports:
            argv = [server, "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no",
                    "--cluster-node-timeout", "1000"]  # fmt: skip
            if tls is None:
                argv += ["--port", str(port)]
            else:
                cert, key, ca = (str(p) for p in tls)
                argv += ["--port", "0", "--tls-port", str(port), "--tls-cluster", "yes", "--tls-cert-file", cert,
                         "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]  # fmt: skip
                tls_client = {"ssl": True, "ssl_ca_certs": ca}
                cli_tls = ["--tls", "--cacert", ca]
            self.processes.spawn(port, argv)
        try:
            for port in self.ports:
                client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, **tls_client)  # type: ignore[arg-type]
                wait_until(f"redis on {port}", client.ping, timeout=15)
                client.close()
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            subprocess.run([cli, *cli_tls, "--cluster", "create", *nodes, "--cluster-replicas", str(replicas),
                            "--cluster-yes"], check=True, capture_output=True, timeout=60)  # fmt: skip
            for port in self.ports:
                client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, **tls_client)  # type: ignore[arg-type]
                wait_until(f"cluster state ok on {port}", lambda c=client: c.cluster("info")["cluster_state"] == "ok")
                client.close()
        except BaseException:
            self.kill()
            raise
        self.client_options = tls_client
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        self.url = f"redis+cluster://{hosts}" if tls is None else f"rediss+cluster://{hosts}?ssl_ca_certs={tls[2]}"

    def owner_of(self, key: str) -> int:
        """The port of the master serving `key`'s slot, as the cluster sees it now."""
        for port in self.ports:
            if self.processes.procs[port].poll() is not None:
                continue
            client = redis.Redis(host="127.0.0.1", port=port, **self.client_options)  # type: ignore[arg-type]
            try:
                slot = client.cluster("keyslot", key)
                for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end:
                        return int(master[1])
            finally:
                client.close()
        raise AssertionError(f"no live node knows the owner of {key!r}")

    def kill_node(self, port: int) -> None:
        self.processes.kill(port)

    def begin_migration(self, key: str) -> SlotMigration:
        """Starts moving `key`'s slot to another master, as `redis-cli --cluster reshard` does:
        IMPORTING on the target, then MIGRATING on the source; keys move with `SlotMigration.move`."""
        source = self.owner_of(key)
        target = next(port for port in self.ports if port != source and self.processes.procs[port].poll() is None)
        return SlotMigration(self, key, source, target)

    def kill(self) -> None:
        self.processes.kill_all()


class SlotMigration:
    """One slot on its way from `source` to `target` (ports of two masters of `cluster`)."""

    def __init__(self, cluster: RedisCluster, key: str, source: int, target: int) -> None:
        self.cluster, self.source, self.target = cluster, source, target
        self.nodes = {
            port: redis.Redis(host="127.0.0.1", port=port, decode_responses=True, **cluster.client_options)  # type: ignore[arg-type]
            for port in cluster.ports
        }
        self.slot = int(self.nodes[source].cluster("keyslot", key))
        self.ids = {port: str(node.execute_command("CLUSTER MYID")) for port, node in self.nodes.items()}
        self.nodes[target].execute_command("CLUSTER SETSLOT", self.slot, "IMPORTING", self.ids[source])
        self.nodes[source].execute_command("CLUSTER SETSLOT", self.slot, "MIGRATING", self.ids[target])

    def keys_left(self) -> list[str]:
        """The slot's keys still on the source."""
        return list(self.nodes[self.source].execute_command("CLUSTER GETKEYSINSLOT", self.slot, 10000))

    def move(self, keys: list[str]) -> None:
        """MIGRATEs these keys (those still on the source) to the target, atomically as a batch."""
        if keys:
            self.nodes[self.source].execute_command("MIGRATE", "127.0.0.1", self.target, "", 0, 10000, "KEYS", *keys)

    def finish(self) -> None:
        """Moves what is left, then hands the slot to the target: the target first, then the source,
        then every other master (redis-cli's order)."""
        while left := self.keys_left():
            self.move(left)
        for port in [self.target, self.source, *(p for p in self.cluster.ports if p not in (self.source, self.target))]:
            if self.cluster.processes.procs[port].poll() is None:
                self.nodes[port].execute_command("CLUSTER SETSLOT", self.slot, "NODE", self.ids[self.target])
        for node in self.nodes.values():
            node.close()

    def error_count(self, port: int, error: str) -> int:
        """How many replies starting with `error` (e.g. TRYAGAIN, ASK) a node has sent so far."""
        stats = self.nodes[port].info("errorstats")
        return int(stats.get(f"errorstat_{error}", {}).get("count", 0))


class SentinelGroup:
    """A master, one replica and three Sentinels (quorum 2) watching them as `SERVICE`."""

    def __init__(
        self,
        workdir: Path,
        down_after_ms: int = 1000,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        server = _require("redis-server")
        sentinel = _require("redis-sentinel")
        self.processes = _Processes(workdir)
        self.master_port, self.replica_port = _free_port(), _free_port()
        self.sentinel_ports = [_free_port() for _ in range(3)]
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if password:
            common += ["--requirepass", password, "--masterauth", password]
        self.password, self.sentinel_password = password, sentinel_password
        try:
            self.processes.spawn(self.master_port, [server, "--port", str(self.master_port), *common])
            self.processes.spawn(self.replica_port, [server, "--port", str(self.replica_port), *common,
                                                     "--replicaof", "127.0.0.1", str(self.master_port)])  # fmt: skip
            for port in (self.master_port, self.replica_port):
                self.processes.wait_ping(port, password)
            replica = redis.Redis(host="127.0.0.1", port=self.replica_port, password=password, decode_responses=True)
            wait_until("replica in sync", lambda: replica.info("replication")["master_link_status"] == "up")
            replica.close()
            for port in self.sentinel_ports:
                directory = self.processes.workdir / str(port)
                directory.mkdir(exist_ok=True)
                config = directory / "sentinel.conf"
                config.write_text(
                    f"port {port}\nbind 127.0.0.1\n"
                    f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
                    f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
                    f"sentinel failover-timeout {SERVICE} 10000\n"
                    f"sentinel parallel-syncs {SERVICE} 1\n"
                    + (f"sentinel auth-pass {SERVICE} {password}\n" if password else "")
                    + (f"requirepass {sentinel_password}\n" if sentinel_password else "")
                )
                self.processes.spawn(port, [sentinel, str(config)])
            for port in self.sentinel_ports:
                self.processes.wait_ping(port, sentinel_password)
                client = redis.Redis(host="127.0.0.1", port=port, password=sentinel_password, decode_responses=True)
                # Failover needs each Sentinel to know the replica and a majority of its peers.
                wait_until(f"sentinel {port} sees the replica", lambda c=client: c.sentinel_slaves(SERVICE))
                wait_until(f"sentinel {port} sees its peers", lambda c=client: len(c.sentinel_sentinels(SERVICE)) >= 2)
                client.close()
        except BaseException:
            self.kill()
            raise
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        self.url = f"redis+sentinel://{hosts}/{SERVICE}/0"

    def master_address(self) -> tuple[str, int]:
        client = redis.Redis(
            host="127.0.0.1", port=self.sentinel_ports[0], password=self.sentinel_password, decode_responses=True
        )
        try:
            host, port = client.sentinel_get_master_addr_by_name(SERVICE)
        finally:
            client.close()
        return host, int(port)

    def kill_master(self) -> None:
        self.processes.kill(self.master_port)

    def kill(self) -> None:
        self.processes.kill_all()
