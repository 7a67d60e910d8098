"""A Kafka-protocol broker for tests: ``noida-db`` (dev dependency), started by the tests themselves.

One broker per test session on a free port with a fresh data directory. It can be stopped and started again
on the same port and data directory, to test outages. Readiness means: the port answers a Kafka Metadata
request.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.support.services import free_port

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class KafkaUnavailable(Exception):
    """The test broker could not be started."""


def noida_command() -> Path:
    command = Path(sys.executable).parent / "noida-db"
    if not command.exists():
        raise KafkaUnavailable(f"{command} is missing: install the dev dependencies (uv sync)")
    return command


def metadata_answered(port: int, timeout: float = 1.0) -> bool:
    """Whether 127.0.0.1:port answers a Kafka Metadata (v0, all topics) request."""
    client_id = b"facteur-tests"
    correlation_id = 7
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _read(sock, 8)
    except OSError:
        return False
    if header is None:
        return False
    size, answered_id = struct.unpack(">ii", header)
    return bool(size >= 4 and answered_id == correlation_id)


def _read(sock: socket.socket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


@dataclass
class KafkaServer:
    port: int
    data_dir: Path
    log_path: Path
    _process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                str(noida_command()),
                "start",
                "--only",
                "kafka",
                "--kafka-port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the wrapper script and the broker stop together
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise KafkaUnavailable(f"noida-db exited with {self._process.returncode}: {self.log_tail()}")
            if metadata_answered(self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise KafkaUnavailable(f"noida-db did not answer on port {self.port} in {START_TIMEOUT}s")

    def stop(self) -> None:
        """Stop like Ctrl-C does (the broker saves its data); kill it if it does not stop in time."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None
        deadline = time.monotonic() + STOP_TIMEOUT
        while metadata_answered(self.port, timeout=0.2) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line for line in text.strip().splitlines()[-lines:] if "GLIBC" not in line)


def start_kafka() -> KafkaServer:
    """A broker on a free port with a fresh data directory; raise :class:`KafkaUnavailable` if it fails."""
    base = Path(tempfile.mkdtemp(prefix="facteur-kafka-"))
    server = KafkaServer(port=free_port(), data_dir=base / "data", log_path=base / "noida.log")
    server.start()
    return server
