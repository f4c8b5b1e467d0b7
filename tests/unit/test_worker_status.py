"""The status pipe between a worker and its supervisor (codexgate/worker_status.py): the lines the
worker's addons write are the ones the supervisor reads, in a format pinned here, and an odd line
is ignored without stopping anything."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from codexgate import worker_status
from codexgate.addons.lifecycle import GracefulShutdown
from codexgate.addons.metrics_export import MetricsExport
from codexgate.metrics import GatewayMetrics
from codexgate.worker_status import AdminBound, MalformedStatus, Ready
from codexgate.workers import Supervisor, Worker, status_pipe

# The format on the wire, written out: a change on either side fails here before it fails a fleet.
ADMIN_WIRE = b'{"codexgate_worker":1,"event":"admin","port":4321}\n'
READY_WIRE = b'{"codexgate_worker":1,"event":"ready"}\n'


def test_the_format_on_the_wire_is_pinned() -> None:
    assert worker_status.encode(AdminBound(4321)) == ADMIN_WIRE
    assert worker_status.encode(Ready()) == READY_WIRE
    assert worker_status.parse(ADMIN_WIRE) == AdminBound(4321)
    assert worker_status.parse(READY_WIRE) == Ready()
    # Key order and spacing are the writer's business; the reader takes any JSON object of the format.
    assert worker_status.parse(b'{ "port": 80, "event": "admin", "codexgate_worker": 1 }\n') == AdminBound(80)


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"\n",
        b"codexgate ready\n",  # the log line is not a status line
        b"metrics at http://127.0.0.1:4321/metrics\n",
        READY_WIRE[:-1],  # not a whole line: the worker died mid-write, or a hostile writer
        b"\xff\xfe\n",
        b"[1, 2]\n",
        b'"ready"\n',
        b'{"event":"ready"}\n',  # no version
        b'{"codexgate_worker":2,"event":"ready"}\n',
        b'{"codexgate_worker":true,"event":"ready"}\n',
        b'{"codexgate_worker":"1","event":"ready"}\n',
        b'{"codexgate_worker":1,"event":"admin"}\n',
        b'{"codexgate_worker":1,"event":"admin","port":"4321"}\n',
        b'{"codexgate_worker":1,"event":"admin","port":true}\n',
        b'{"codexgate_worker":1,"event":"admin","port":4321.0}\n',
        b'{"codexgate_worker":1,"event":"admin","port":0}\n',
        b'{"codexgate_worker":1,"event":"admin","port":65536}\n',
        b'{"codexgate_worker":1,"event":"admin","port":-1}\n',
        b'{"codexgate_worker":1,"event":"admin","port":4321,"host":"10.0.0.1"}\n',
        b'{"codexgate_worker":1,"event":"ready","port":4321}\n',
        b'{"codexgate_worker":1,"event":"draining"}\n',
        b'{"codexgate_worker":1,"event":null}\n',
        b"[" * 200 + b"]" * 200 + b"\n",
        b'{"codexgate_worker":1,"event":"ready","pad":"' + b"x" * 1000 + b'"}\n',
    ],
)
def test_anything_else_is_refused_by_the_reader(line: bytes) -> None:
    with pytest.raises(MalformedStatus):
        worker_status.parse(line)


def _supervisor(tmp_path: Path) -> tuple[Supervisor, Worker]:
    supervisor = Supervisor(1, [], tmp_path, lock_fd=-1, flags=())
    supervisor._loop = asyncio.get_running_loop()
    return supervisor, supervisor.workers[0]


async def _read_as_the_supervisor(supervisor: Supervisor, worker: Worker, reader: asyncio.StreamReader) -> None:
    await asyncio.wait_for(supervisor._read_status(worker, reader), 10)


def test_what_the_worker_addons_write_is_what_the_supervisor_reads(tmp_path: Path) -> None:
    async def scenario() -> tuple[Worker, int]:
        supervisor, worker = _supervisor(tmp_path)
        write_fd, reader, transport = await status_pipe(asyncio.get_running_loop())
        export, shutdown = MetricsExport(GatewayMetrics()), GracefulShutdown()
        try:
            with taddons.context(export, shutdown) as tctx:
                # As `codexgate up --workers` sets each worker (Supervisor._command).
                tctx.options.update(codexgate_metrics_port=-1, codexgate_status_fd=write_fd)
                assert export._server is not None
                port = export._server.port
                shutdown.running()  # the chain's last `running` hook: the worker is ready
        finally:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
            gc.unfreeze()
            export._stop()
            os.close(write_fd)  # the worker is gone: the supervisor reads to the end
        assert not worker.ever_ready and not worker.admin_port
        await _read_as_the_supervisor(supervisor, worker, reader)
        transport.close()
        return worker, port

    worker, port = asyncio.run(scenario())
    assert worker.admin_port == port > 0
    assert worker.ever_ready
    assert worker.malformed == 0


def test_odd_lines_are_ignored_and_the_good_ones_still_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def scenario() -> Worker:
        supervisor, worker = _supervisor(tmp_path)
        write_fd, reader, transport = await status_pipe(asyncio.get_running_loop())
        lines = [
            b"codexgate ready\n",
            b'{"codexgate_worker":1,"event":"admin","port":"secret-ish"}\n',
            b"x" * 100_000 + b"\n",  # far past the reader's limit: dropped, the next line still read
            worker_status.encode(AdminBound(1111)),
            b"\xff" * 50 + b"\n",
            worker_status.encode(AdminBound(2222)),  # rebound: the latest counts
            worker_status.encode(Ready()),
            b'{"codexgate_worker":1,"event":"ready"',  # cut off at EOF
        ]

        async def write() -> None:
            for line in lines:  # in a thread: 100 kB is more than a pipe holds
                await asyncio.to_thread(_write_all, write_fd, line)
            os.close(write_fd)

        writing = asyncio.create_task(write())
        await _read_as_the_supervisor(supervisor, worker, reader)
        await writing
        transport.close()
        return worker

    worker = asyncio.run(scenario())
    assert worker.admin_port == 2222
    assert worker.ever_ready
    assert worker.malformed >= 5
    err = capsys.readouterr().err
    assert err.count("a status line ignored") == 3  # reported, not flooded
    assert "further ones are not reported" in err
    assert "secret-ish" not in err and "xxx" not in err  # the lines are not echoed


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def test_the_worker_side_refuses_a_descriptor_that_is_not_a_status_pipe(tmp_path: Path) -> None:
    export = MetricsExport(GatewayMetrics())
    read_fd, write_fd = os.pipe()
    regular = os.open(tmp_path / "file", os.O_WRONLY | os.O_CREAT)
    try:
        with taddons.context(export) as tctx:
            closed_fd, other = os.pipe()  # here: the context's own descriptors could take its number
            os.close(closed_fd)
            os.close(other)
            for fd, why in [(2, "stderr"), (regular, "not a pipe"), (read_fd, "not open for writing"),
                            (closed_fd, "not open")]:  # fmt: skip
                with pytest.raises(exceptions.OptionsError, match=f"codexgate_status_fd {fd}: .*{why}"):
                    tctx.options.update(codexgate_status_fd=fd)
            tctx.options.update(codexgate_status_fd=write_fd)
            assert not os.get_inheritable(write_fd)  # a process the worker starts does not hold it open
            assert not os.get_blocking(write_fd)  # a stalled supervisor never blocks the event loop
    finally:
        for fd in (read_fd, write_fd, regular):
            os.close(fd)


def test_a_worker_whose_supervisor_is_gone_keeps_going() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        assert worker_status.send(write_fd, Ready()) is False  # EPIPE, not raised
    finally:
        os.close(write_fd)
    assert worker_status.send(0, Ready()) is False  # no status pipe: a gateway on its own


def test_each_worker_is_given_its_status_pipe(tmp_path: Path) -> None:
    supervisor = Supervisor(2, ["--set", "codexgate_metrics_port=9090"], tmp_path, lock_fd=-1, flags=("-O",))
    command = supervisor._command(supervisor.workers[1], 7)
    assert "codexgate_status_fd=7" in command
    assert "codexgate_metrics_port=-1" in command and "codexgate_writer_id=w1" in command
