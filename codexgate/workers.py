"""`codexgate up --workers N`: N gateway processes on the same listeners, one data dir.

mitmproxy runs one event loop on one core, so a second core needs a second process. The
supervisor here holds the data dir's lock (codexgate/datadir.py) for the whole deployment and
starts N workers, each the ordinary gateway master (codexgate/master.py) with:

- **the same listeners, shared by `SO_REUSEPORT`**: mitmproxy 12.2 binds each TCP mode with
  `asyncio.start_server(handler, host, port)` (`mitmproxy/proxy/mode_servers.py`,
  `ServerInstance.listen`), which takes `reuse_port`; a worker sets it, and the kernel spreads
  new connections across the workers' accept queues (no accept loop in the supervisor, no
  descriptor passing, no extra hop). Before starting any worker the supervisor binds each port
  once WITHOUT `SO_REUSEPORT`, so a port another program (or another fleet) listens on is a
  clear error at start rather than silently shared.
- **its own writer id `w<i>`**: its own audit chain and write-ahead log (`audit verify` checks
  every chain) and its own accounting file `accounting-w<i>.jsonl` (`codexgate usage` reads them
  all). The id is the worker's slot, so a restarted worker recovers its predecessor's log.
- **one CA, one policy, one data dir, one store**: the arguments are the same for every worker.
  The embedded store is SQLite in WAL mode whose reservations are `BEGIN IMMEDIATE`
  transactions (codexgate/stores/embedded.py), so admission is atomic across processes; a Redis
  store is shared as it is across hosts.
- **metrics in prometheus-client's multiprocess mode**: each worker writes its samples to
  memory-mapped files in `DATA_DIR/metrics-workers/` (emptied at start); the supervisor serves
  the admin port and sums them (counters and histograms over every worker that ever ran, the
  in-flight gauge over live workers, the budget gauge the most recent write).

Failover cooldowns are shared: with the embedded store, through `DATA_DIR/cooldowns.sqlite3`
(codexgate/health_shared.py), with Redis as across hosts; a deployment one worker finds failing
is skipped by all.

Each worker tells the supervisor the admin port it bound and that it is ready on a pipe of its own
(`codexgate_status_fd`, codexgate/worker_status.py), not in its log: a quieted log
(`--set termlog_verbosity=warn`) or a reworded line changes nothing. Its log is relayed, each line
prefixed with its name, and nothing more.

SIGTERM (or Ctrl-C) is passed to every worker, which drains as a single gateway does
(addons/lifecycle.py); the supervisor exits when all have. A worker that dies otherwise is
logged and restarted (after 1 s, doubling while it keeps dying young, at most 30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codexgate import worker_status

logger = logging.getLogger(__name__)

METRICS_DIR = "metrics-workers"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"
RESTART_DELAY_SECONDS = 1.0
RESTART_DELAY_MAX_SECONDS = 30.0
STABLE_AFTER_SECONDS = 30.0  # a worker that ran this long starts the restart delay from the beginning again
WORKER_PROBE_TIMEOUT_SECONDS = 2.0
STATUS_DRAIN_SECONDS = 1.0  # after a worker exits, for the last of its status lines (the pipe closes with it)
MALFORMED_REPORTED = 3  # odd status lines reported per worker process; the rest only counted
SUPERVISOR_PID_ENV = "CODEXGATE_SUPERVISOR_PID"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may run on (`os.process_cpu_count()` from Python 3.13), and no more
    than its cgroup's CPU quota allows: a container limited to 2 CPUs on a 64-core node sees 64
    cores but gets the time of 2, and 64 workers would only compete for it."""
    counter = getattr(os, "process_cpu_count", None)
    cores = int(counter() or 1) if counter is not None else 0
    if not cores:
        try:
            cores = len(os.sched_getaffinity(0)) or 1
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError, IndexError):
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    return cores


def default_workers() -> int:
    """`--workers` when not given: $CODEXGATE_WORKERS, else the cores available."""
    raw = os.environ.get("CODEXGATE_WORKERS", "").strip()
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            raise SystemExit(f"CODEXGATE_WORKERS={raw!r}: a whole number of worker processes") from None
    return available_cores()


def check_ports_free(host: str, ports: list[int]) -> str | None:
    """Why one of the ports cannot be ours (bound without SO_REUSEPORT, so a listener there refuses),
    or None."""
    for port in ports:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host or "0.0.0.0", port))
            except OSError as exc:
                return f"port {port} on {host or '*'}: {exc.strerror}"
    return None


def _with_settings(argv: list[str], settings: dict[str, str]) -> list[str]:
    """`argv` with these `--set NAME=VALUE` instead of any it had (mitmproxy refuses an option set twice)."""
    kept: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--set" and i + 1 < len(argv) and argv[i + 1].split("=", 1)[0] in settings:
            skip = True
            continue
        kept.append(arg)
    for name, value in settings.items():
        kept += ["--set", f"{name}={value}"]
    return kept


def _last_setting(argv: list[str], name: str) -> str | None:
    value = None
    for i, arg in enumerate(argv[:-1]):
        if arg == "--set" and argv[i + 1].startswith(f"{name}="):
            value = argv[i + 1].split("=", 1)[1]
    return value


async def status_pipe(loop: asyncio.AbstractEventLoop) -> tuple[int, asyncio.StreamReader, asyncio.ReadTransport]:
    """A new status pipe (codexgate/worker_status.py): the end a worker writes, to pass it, and the
    supervisor's reader of the other (the transport closes it). Both ends are non-inheritable
    (PEP 446): a worker started meanwhile gets neither unless passed it."""
    read_fd, write_fd = os.pipe()
    read_end = open(read_fd, "rb", buffering=0)  # noqa: SIM115 (the transport owns it)
    try:
        reader = asyncio.StreamReader(limit=worker_status.MAX_LINE_BYTES)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), read_end)
    except BaseException:
        read_end.close()
        os.close(write_fd)
        raise
    return write_fd, reader, transport


@dataclass
class Worker:
    index: int
    admin_port: int = 0  # its admin server's, from its status pipe; 0 until it listens
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    exited: list[int] = field(default_factory=list)
    ever_ready: bool = False  # a worker that never got ready has a problem a restart does not fix
    malformed: int = 0  # odd lines on the current process's status pipe

    @property
    def name(self) -> str:
        return f"w{self.index}"


class Supervisor:
    def __init__(self, count: int, argv: list[str], data_dir: Path, lock_fd: int, flags: tuple[str, ...]) -> None:
        self.count = count
        self.argv = argv
        self.flags = flags  # the interpreter's, as `codexgate up` would run a single gateway
        self.data_dir = data_dir
        self.lock_fd = lock_fd
        self.metrics_port = int(_last_setting(argv, "codexgate_metrics_port") or 0)
        self.metrics_host = _last_setting(argv, "codexgate_metrics_host") or "127.0.0.1"
        self.metrics_dir = data_dir / METRICS_DIR
        self.workers = [Worker(i) for i in range(count)]
        self.draining = False
        self.exit_code = 0
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._admin: Any = None  # codexgate.admin_http.AdminServer, on the public admin port

    # -- the workers -------------------------------------------------------------------------

    def _command(self, worker: Worker, status_fd: int) -> list[str]:
        settings = {
            "codexgate_writer_id": worker.name,
            "codexgate_metrics_port": "0",
            worker_status.STATUS_FD_OPTION: str(status_fd),
        }
        if self.metrics_port:
            # The supervisor serves the public admin port and asks each worker's on loopback. The worker
            # binds a port the kernel picks and names it on its status pipe: a port picked here and bound
            # by the worker seconds later (it imports mitmproxy first) could be taken in between, and the
            # worker would exit before it was ready, stopping the whole deployment.
            settings["codexgate_metrics_port"] = "-1"
            settings["codexgate_metrics_host"] = "127.0.0.1"
        entry = "from codexgate.workers import worker_main; worker_main()"
        return [sys.executable, *self.flags, "-c", entry, *_with_settings(self.argv, settings)]

    async def _start(self, worker: Worker) -> tuple[asyncio.StreamReader, asyncio.ReadTransport]:
        """Start the slot's worker; the read end of its status pipe."""
        assert self._loop is not None
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            SUPERVISOR_PID_ENV: str(os.getpid()),
            # Its log is a pipe to the supervisor: line by line, not in 8 KiB blocks.
            "PYTHONUNBUFFERED": "1",
        }
        worker.admin_port = 0
        worker.malformed = 0
        # A pipe per process: what comes on it is that process's, and it closes when the process ends.
        write_fd, reader, transport = await status_pipe(self._loop)
        try:
            worker.process = await asyncio.create_subprocess_exec(
                *self._command(worker, write_fd),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                # the data dir's lock, which the worker adopts (addons/data_dir.py), and its status pipe
                pass_fds=(self.lock_fd, write_fd),
                start_new_session=True,  # Ctrl-C reaches the supervisor only, which drains the workers with SIGTERM
            )
        except BaseException:
            transport.close()
            raise
        finally:
            os.close(write_fd)  # the worker's copy only: the pipe reads EOF once it is gone
        worker.started = time.monotonic()
        print(f"codexgate: worker {worker.name} started (pid {worker.process.pid})", flush=True)
        return reader, transport

    async def _relay_output(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        """The worker's log, each line prefixed with its name. For people: nothing here is acted on."""
        assert process.stdout is not None
        prefix = f"[{worker.name}] ".encode()
        out = sys.stdout.buffer
        while line := await process.stdout.readline():
            out.write(prefix + line)
            out.flush()

    async def _read_status(self, worker: Worker, status: asyncio.StreamReader) -> None:
        """The worker's status pipe, until it closes (codexgate/worker_status.py)."""
        while True:
            try:
                line = await status.readline()
            except ValueError:  # longer than a status line can be: dropped up to its end
                self._malformed(worker, f"longer than {worker_status.MAX_LINE_BYTES} bytes")
                continue
            if not line:
                return
            try:
                message = worker_status.parse(line)
            except worker_status.MalformedStatus as exc:
                self._malformed(worker, str(exc))
                continue
            self._on_status(worker, message)

    def _on_status(self, worker: Worker, message: worker_status.StatusMessage) -> None:
        match message:
            case worker_status.AdminBound(port=port):
                worker.admin_port = port  # a worker that rebinds says so again: the latest is the one
            case worker_status.Ready():
                if not worker.ever_ready:
                    worker.ever_ready = True
                    if self._admin is not None:
                        # Like a single gateway's, the probes answer once it serves: a balancer or the
                        # image's health check must not see a supervisor whose workers are still starting.
                        self._admin.loop = self._loop

    def _malformed(self, worker: Worker, why: str) -> None:
        # Ignored, never fatal: whatever wrote it, the worker's state is still what its /readyz says.
        # The line itself is not echoed (a status pipe carries no secret, but an odd line may).
        worker.malformed += 1
        if worker.malformed <= MALFORMED_REPORTED:
            print(
                f"codexgate: worker {worker.name}: a status line ignored ({why})"
                + ("; further ones are not reported" if worker.malformed == MALFORMED_REPORTED else ""),
                file=sys.stderr,
                flush=True,
            )

    async def _keep(self, worker: Worker) -> None:
        """Run one worker slot until the supervisor stops: restart the worker whenever it dies."""
        assert self._stop is not None
        delay = RESTART_DELAY_SECONDS
        while not self._stop.is_set():
            status, status_transport = await self._start(worker)
            process = worker.process
            assert process is not None
            if self._stop.is_set():  # the stop came while this one was starting: it drains too
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
            relay = asyncio.create_task(self._relay_output(worker, process))
            reading = asyncio.create_task(self._read_status(worker, status))
            code = await process.wait()
            await relay
            # The pipe closed with the worker: what it wrote last is read before its end is judged
            # (a worker that got ready and died at once did get ready). Bounded: a process it started
            # could hold the pipe open, were it not non-inheritable there.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reading, STATUS_DRAIN_SECONDS)
            status_transport.close()
            self._mark_dead(process.pid)
            if self._stop.is_set():
                print(f"codexgate: worker {worker.name} (pid {process.pid}) stopped (exit {code})", flush=True)
                return
            worker.exited.append(code)
            if not worker.ever_ready:
                # A bad option, a port taken meanwhile, ...: every restart would fail the same way.
                print(
                    f"codexgate up: worker {worker.name} exited (exit {code}) before it was ready; stopping",
                    file=sys.stderr,
                    flush=True,
                )
                self.exit_code = code or 1
                self._stop_all()
                return
            lived = time.monotonic() - worker.started
            delay = RESTART_DELAY_SECONDS if lived >= STABLE_AFTER_SECONDS else delay
            print(
                f"codexgate: worker {worker.name} (pid {process.pid}) died (exit {code}) after {lived:.1f} s; "
                f"restarting in {delay:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, RESTART_DELAY_MAX_SECONDS)

    def _mark_dead(self, pid: int) -> None:
        # The live-sum gauges of a dead process are dropped; its counters keep counting in the sum.
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, str(self.metrics_dir))

    def _begin_stop(self, signum: int) -> None:
        assert self._stop is not None
        if not self._stop.is_set():
            print(f"codexgate: {signal.Signals(signum).name}: draining {self.count} worker(s)", flush=True)
            self._stop_all()

    def _stop_all(self) -> None:
        assert self._stop is not None
        self.draining = True
        self._stop.set()
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)

    # -- the admin port ----------------------------------------------------------------------

    async def _readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {"draining": "yes: SIGTERM received" if self.draining else "no"}
        results = await asyncio.gather(*(asyncio.to_thread(self._probe, worker) for worker in self.workers))
        for worker, result in zip(self.workers, results, strict=True):
            checks[worker.name] = result
        # Ready while any worker is: the kernel only hands connections to workers that listen, and a
        # restarting worker must not take its healthy siblings out of the balancer.
        ready = not self.draining and any(result == "ready" for result in results)
        return ready, checks

    def _probe(self, worker: Worker) -> str:
        process = worker.process
        if process is None or process.returncode is not None:
            return "not running (restarting)"
        if not worker.admin_port:
            return "starting"
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{worker.admin_port}/readyz", timeout=WORKER_PROBE_TIMEOUT_SECONDS
            ) as answer:
                return "ready" if answer.status == 200 else f"not ready ({answer.status})"
        except urllib.error.HTTPError as exc:
            with contextlib.suppress(Exception):
                checks = json.loads(exc.read()).get("checks", {})
                failing = {k: v for k, v in checks.items() if v not in ("ok", "no")}
                return f"not ready: {failing}"
            return f"not ready ({exc.code})"
        except OSError as exc:
            return f"not answering: {exc}"

    def _admin_server(self) -> Any:
        from prometheus_client import CollectorRegistry, multiprocess

        from codexgate.admin_http import AdminServer

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.metrics_dir))
        return AdminServer(self.metrics_host, self.metrics_port, registry, self._readiness)

    # -- running -----------------------------------------------------------------------------

    def prepare(self) -> None:
        # Files of an earlier run would be summed into this one's counters.
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(mode=0o700)

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, self._begin_stop, signum)
        if self.metrics_port:
            try:
                self._admin = self._admin_server()
            except OSError as exc:
                print(f"codexgate up: codexgate_metrics_port {self.metrics_port}: {exc.strerror}", file=sys.stderr)
                return 1
        print(f"codexgate: supervisor pid {os.getpid()} running {self.count} workers", flush=True)
        try:
            await asyncio.gather(*(self._keep(worker) for worker in self.workers))
        finally:
            if self._admin is not None:
                self._admin.stop()
        print("codexgate: all workers stopped", flush=True)
        return self.exit_code


def supervise(
    count: int, argv: list[str], data_dir: Path, lock_fd: int, host: str, ports: list[int], flags: list[str]
) -> int:
    problem = check_ports_free(host, ports)
    if problem:
        print(f"codexgate up: {problem}", file=sys.stderr)
        return 1
    supervisor = Supervisor(count, argv, data_dir, lock_fd, tuple(flags))
    supervisor.prepare()
    return asyncio.run(supervisor.run())


def _listen_with_reuse_port() -> None:
    """mitmproxy's listeners (`ServerInstance.listen` calls `asyncio.start_server`) bind with
    SO_REUSEPORT in a worker, so all workers accept on the same ports."""
    original = asyncio.start_server

    async def start_server(*args: Any, **kwargs: Any) -> asyncio.Server:
        port = kwargs.get("port", args[2] if len(args) > 2 else None)
        if port:  # not the in-process relays' ephemeral ports (port 0): those stay each worker's own
            kwargs.setdefault("reuse_port", True)
        return await original(*args, **kwargs)

    asyncio.start_server = start_server  # type: ignore[assignment]


def _stop_with_supervisor(supervisor_pid: int) -> None:
    """SIGTERM (a graceful drain) when the supervisor dies, even by kill -9: a worker left behind
    would keep the ports and the data dir's lock."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def worker_main() -> None:
    """One worker: the gateway master on listeners shared with its siblings."""
    raw = os.environ.get(SUPERVISOR_PID_ENV, "")
    if raw.isdigit() and sys.platform == "linux":
        _stop_with_supervisor(int(raw))
    _listen_with_reuse_port()
    from codexgate.master import main

    main()
