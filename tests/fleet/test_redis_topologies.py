"""The counter store on Redis Cluster and behind Sentinel, through `open_store` as the gateway
opens it: one slot for every key, and a master failover the store rides out without charging
anything twice. (The whole store contract runs against both too: tests/stores.)"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fakes.redis_topology import SERVICE, RedisCluster, SentinelGroup, wait_until

from codexgate.stores.base import Amounts, Counter, StoreUnavailable
from codexgate.stores.factory import CLUSTER_PREFIX, check_store_spec, open_store

DAY = 86400.0
FAILOVER_BOUND = 60.0  # seconds: only a failover that never completes takes this long


def _budget(now: float, counter_id: str = "team:platform/usd/1d", limit: float = 10.0) -> Counter:
    start = now - now % DAY
    return Counter(counter_id, "usd", limit, start, DAY, DAY, start + DAY)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    made = RedisCluster(tmp_path / "cluster")
    yield made
    made.kill()


def test_cluster_store_keeps_every_key_in_one_slot(cluster: RedisCluster, tmp_path: Path) -> None:
    now = time.time()
    counters = [_budget(now, f"{level}/usd/1d") for level in ("key:alice", "team:platform", "org:acme")]

    async def main() -> list[float]:
        store = open_store(cluster.url, str(tmp_path))
        try:
            for i in range(5):
                admission = await store.reserve(f"req-{i}", counters, Amounts(usd=1.0), now)
                assert admission.admitted
                assert await store.settle(f"req-{i}", Amounts(usd=0.5))
            assert (await store.reserve("req-open", counters, Amounts(usd=1.0), now)).admitted
            return [state.used for state in await store.snapshot(counters, now)]
        finally:
            await store.close()

    assert asyncio.run(main()) == [3.5, 3.5, 3.5]
    keys: list[str] = []
    slots: set[int] = set()
    for port in cluster.ports:
        node = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
        mine = [k for k in node.keys(CLUSTER_PREFIX + "*")]
        keys += mine
        slots |= {node.cluster("keyslot", k) for k in mine}
        node.close()
    assert len(keys) >= 5 and len(slots) == 1, (keys, slots)  # counters, reservation, index: one slot


def _tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA, and a node certificate from it for localhost and 127.0.0.1 (cluster nodes announce
    their IP address in MOVED replies, so the certificate must name it), usable as server and as
    client certificate (nodes authenticate each other on the cluster bus; mitmproxy's CA limits
    itself to server certificates, so this one is made here)."""
    now = datetime.datetime.now(datetime.UTC)

    def issue(subject: str, key: rsa.RSAPrivateKey, issuer: x509.Name, signer: rsa.RSAPrivateKey, ca: bool):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "codexgate test CA")])
    ca_cert = issue("codexgate test CA", ca_key, ca_name, ca_key, ca=True)
    node_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    node_cert = issue("localhost", node_key, ca_name, ca_key, ca=False)
    cert_file, key_file, ca_file = tmp_path / "node.pem", tmp_path / "node.key", tmp_path / "ca.pem"
    cert_file.write_bytes(node_cert.public_bytes(serialization.Encoding.PEM))
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        node_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file, ca_file


def test_tls_cluster_store_follows_moved_over_tls_and_refuses_an_unknown_ca(tmp_path: Path) -> None:
    tls = _tls_files(tmp_path)
    cluster = RedisCluster(tmp_path / "cluster", tls=tls)
    now = time.time()
    counters = [_budget(now, f"key:user{i}/usd/1d") for i in range(3)]

    async def main(url: str) -> list[float]:
        store = open_store(url, str(tmp_path))
        try:
            assert (await store.reserve("tls-1", counters, Amounts(usd=1.0), now)).admitted
            assert await store.settle("tls-1", Amounts(usd=0.75))
            return [state.used for state in await store.snapshot(counters, now)]
        finally:
            await store.close()

    try:
        assert asyncio.run(main(cluster.url)) == [0.75, 0.75, 0.75]
        with pytest.raises(StoreUnavailable, match="cannot connect"):
            asyncio.run(main(cluster.url.split("?")[0]))  # the system CAs do not vouch for this one
    finally:
        cluster.kill()


def test_cluster_failover_store_follows_the_promoted_replica_without_double_charge(tmp_path: Path) -> None:
    cluster = RedisCluster(tmp_path / "cluster", replicas=1)
    now = time.time()
    budget = [_budget(now)]
    key = CLUSTER_PREFIX + "c:" + budget[0].counter_id
    try:
        old_owner = cluster.owner_of(key)

        async def main() -> tuple[float, int]:
            store = open_store(cluster.url, str(tmp_path))
            try:
                assert (await store.reserve("before", budget, Amounts(usd=2.0), now)).admitted
                assert await store.settle("before", Amounts(usd=1.5))
                owner = redis.Redis(host="127.0.0.1", port=old_owner)
                assert owner.execute_command("WAIT", 1, 5000) == 1  # its replica has the charge
                owner.close()
                cluster.kill_node(old_owner)
                failures = 0
                deadline = time.monotonic() + FAILOVER_BOUND
                while True:
                    try:
                        admission = await store.reserve("during", budget, Amounts(usd=1.0), now)
                        break
                    except StoreUnavailable:
                        failures += 1
                        assert time.monotonic() < deadline, "the store did not continue after the cluster failover"
                        await asyncio.sleep(0.1)
                assert admission.admitted
                assert await store.settle("during", Amounts(usd=0.25))
                return (await store.snapshot(budget, now))[0].used, failures
            finally:
                await store.close()

        used, failures = asyncio.run(main())
        assert failures >= 1
        assert cluster.owner_of(key) != old_owner
        assert used == 1.75
    finally:
        cluster.kill()


def test_sentinel_failover_store_continues_without_double_charge(tmp_path: Path) -> None:
    group = SentinelGroup(tmp_path / "sentinel")
    try:
        _failover(group, tmp_path)
    finally:
        group.kill()


def _failover(group: SentinelGroup, tmp_path: Path) -> None:
    now = time.time()
    budget = [_budget(now)]
    old_master = group.master_address()

    async def main() -> tuple[float, int]:
        store = open_store(group.url, str(tmp_path))
        try:
            assert (await store.reserve("before", budget, Amounts(usd=2.0), now)).admitted
            assert await store.settle("before", Amounts(usd=1.5))
            # Replication is asynchronous: make sure the replica has what was charged before the kill.
            master = redis.Redis(host=old_master[0], port=old_master[1])
            assert master.execute_command("WAIT", 1, 5000) == 1
            master.close()
            group.kill_master()
            failures = 0
            deadline = time.monotonic() + FAILOVER_BOUND
            while True:  # the same request, again and again, as a client retrying a 503 would
                try:
                    admission = await store.reserve("during", budget, Amounts(usd=1.0), now)
                    break
                except StoreUnavailable:
                    failures += 1
                    assert time.monotonic() < deadline, "the store did not continue after the failover"
                    await asyncio.sleep(0.1)
            assert admission.admitted
            assert await store.settle("during", Amounts(usd=0.25))
            assert not await store.settle("during", Amounts(usd=0.25))  # settled once only
            used = (await store.snapshot(budget, now))[0].used
            return used, failures
        finally:
            await store.close()

    used, failures = asyncio.run(main())
    assert failures >= 1  # the master really was gone for a while
    wait_until("Sentinel names a new master", lambda: group.master_address() != old_master)
    assert group.master_address()[1] == group.replica_port
    assert used == 1.75  # 1.5 settled before, 0.25 after: nothing charged twice, nothing lost


def test_sentinel_with_passwords_for_servers_and_sentinels(tmp_path: Path) -> None:
    group = SentinelGroup(tmp_path / "sentinel", password="server-secret", sentinel_password="sentinel-secret")
    hosts = group.url.removeprefix("redis+sentinel://")
    good = f"redis+sentinel://:server-secret@{hosts}?sentinel_password=sentinel-secret"
    wrong = f"redis+sentinel://:server-secret@{hosts}?sentinel_password=guessed-secret"
    now = time.time()

    async def main(url: str) -> float:
        store = open_store(url, str(tmp_path))
        try:
            assert (await store.reserve("one", [_budget(now)], Amounts(usd=1.0), now)).admitted
            assert await store.settle("one", Amounts(usd=0.5))
            return (await store.snapshot([_budget(now)], now))[0].used
        finally:
            await store.close()

    try:
        assert asyncio.run(main(good)) == 0.5
        with pytest.raises(StoreUnavailable) as refused:
            asyncio.run(main(wrong))
        assert "no Sentinel named the master" in str(refused.value) and "AUTH refused" in str(refused.value)
        assert "guessed-secret" not in str(refused.value) and "server-secret" not in str(refused.value)
    finally:
        group.kill()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("redis+sentinel://127.0.0.1:26379", "service name is missing"),
        ("redis+sentinel://127.0.0.1:26379/svc/x", "[/db]"),
        ("redis+cluster://127.0.0.1:7000/1", "only database 0"),
        ("redis+cluster://127.0.0.1:7000?sentinel_password=x", "are for redis+sentinel"),
        ("redis+cluster://127.0.0.1", "host:port"),
        ("redis+sentinel://:secret@127.0.0.1:1/svc?bogus=1", "unsupported Redis URL option"),
    ],
)
def test_topology_urls_are_checked_before_anything_connects(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_store_spec(spec)
    assert message in str(caught.value)
    assert "secret" not in str(caught.value)


def test_topology_urls_accept_tls_auth_and_several_hosts() -> None:
    check_store_spec(f"rediss+sentinel://user:pw@h1:26379,h2:26379/{SERVICE}/2?sentinel_password=s&ssl_cert_reqs=none")
    check_store_spec("rediss+cluster://:pw@h1:7000,h2:7001,[::1]:7002?ssl_check_hostname=false")
