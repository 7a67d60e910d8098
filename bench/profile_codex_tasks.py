"""Where does ``facteur serve`` spend its time on ``POST /codex/tasks``? (an investigation aid, not a test)

Starts ``facteur serve`` like bench/codex_tasks.py does (fresh database, server and wrk on separate CPUs),
drives it with unique (or replayed) deliveries and samples it with py-spy, then groups the samples of all
threads into cost categories (leaf-most frame that matches a rule wins) and prints the CPU used by each
thread. py-spy is not a project dependency: install it into the venv for the investigation only
(``uv pip install py-spy``).

Usage: ``python bench/profile_codex_tasks.py [--database sqlite|postgresql] [--executor none|local]
[--mode unique|replay] [--seconds N] [--native]``; the raw samples are kept in bench/results/.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as harness  # sibling modules, not a package
import codex_tasks as bench

#: (category, regular expression over "function (file:line)") — the first rule matching the leaf-most frame
RULES: list[tuple[str, str]] = [
    (
        "DB driver calls (sqlite3 / psycopg C code, incl. re-taking the GIL)",
        r"(^|\.)do_(execute|commit|rollback|ping|begin)\w* ",
    ),
    (
        "DB driver calls (sqlite3 / psycopg C code, incl. re-taking the GIL)",
        r"\(psycopg/|\(sqlite3/|_pysqlite",
    ),
    ("SQLAlchemy: statement building, cache key, compile (sqlalchemy.sql)", r"\(sqlalchemy/sql/"),
    ("SQLAlchemy: connection/transaction/execution context/results", r"\(sqlalchemy/"),
    ("audit hash chain (canonical JSON + sha256)", r"\(facteur/domain/events\.py"),
    ("JSON (json module)", r"\(json/"),
    ("protobuf decode + task checks", r"\(google/protobuf|codex_task_pb2|\(facteur/domain/codex_task\.py"),
    ("logging", r"\(logging/|\(facteur/telemetry/"),
    (
        "local executor (files, subprocess)",
        r"\(facteur/executors/|\(subprocess\.py|asyncio/(subprocess|unix_events)",
    ),
    (
        "HTTP framework (uvicorn, Starlette, FastAPI, pydantic)",
        r"\((uvicorn|starlette|fastapi|pydantic|h11|httptools)/",
    ),
    ("thread hop (executor queue, futures, threading)", r"\((concurrent/futures/|threading\.py|queue\.py)"),
    ("event loop (uvloop/asyncio: I/O, callbacks, tasks)", r"\(asyncio/|uvloop|Runner\.run"),
    ("uuid4 / datetime / dataclasses", r"\((uuid\.py|datetime\.py|dataclasses\.py)|__create_fn__"),
    ("Facteur code (intake, store, dispatch)", r"\(facteur/"),
]
#: inclusive shares: the share of samples whose stack contains a frame matching the expression
INCLUSIVE: list[tuple[str, str]] = [
    ("store: ingest transaction (SqlStore._ingest)", r"^SqlStore\._ingest "),
    ("store: audit append (SqlStore._append_event)", r"^SqlStore\._append_event "),
    ("store: BEGIN (IMMEDIATE) listener", r"_on_begin "),
    ("store: group commit batch (BatchWriter._execute)", r"^BatchWriter\._execute "),
    (
        "store: value conversion for compiled statements (facteur.store.compiled)",
        r"\(facteur/store/compiled\.py",
    ),
    ("dispatch: submit (Dispatcher.submit)", r"^Dispatcher\.submit "),
    ("store: connection checkout + pre-ping (pool)", r"\(sqlalchemy/pool/"),
    ("store: commit", r"^(Transaction\.commit|RootTransaction\._do_commit) "),
    ("dispatch after commit (Dispatcher.dispatch)", r"^Dispatcher\.dispatch "),
    ("dispatch: update_run transaction (SqlStore._update_run)", r"^SqlStore\._update_run "),
    ("dispatch: get_run/run_payload reads (_get_one)", r"^_get_one "),
    ("replay check (_find_delivery)", r"^_find_delivery "),
    (
        "SQLAlchemy statement construction (.values/.where/select)",
        r"^(ValuesBase\.values|Select\.where|select|Insert\.__init__|DMLWhereBase\.where|_generative)",
    ),
    ("SQLAlchemy compile cache lookup/key (_compile_w_cache)", r"^ClauseElement\._compile_w_cache "),
    ("HTTP request handling (the ASGI app, incl. the endpoint)", r"^RequestResponseCycle\.run_asgi "),
    ("intake: decode (CodexTaskIntake.decode)", r"^CodexTaskIntake\.decode "),
    ("intake: to_task_message + json.dumps", r"^to_task_message "),
    ("logging calls", r"^(Logger\.(info|_log|handle)|Handler\.handle) "),
]


def classify(frames: list[str]) -> str:
    for frame in reversed(frames):
        for category, pattern in RULES:
            if re.search(pattern, frame):
                return category
    return f"other ({frames[-1] if frames else '?'})"


def summarise(raw: Path) -> str:
    by_category: collections.Counter[str] = collections.Counter()
    by_thread: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = re.sub(r"^thread \(\d+\): ", "", frames[0]) if frames[0].startswith("thread ") else "?"
        frames = frames[1:] if frames[0].startswith("thread ") else frames
        total += count
        by_thread[re.sub(r"_\d+$", "", thread)] += count
        by_category[classify(frames)] += count
        for label, pattern in INCLUSIVE:
            if any(re.search(pattern, frame) for frame in frames):
                inclusive[label] += count
    if not total:
        return "no samples"
    lines = [f"{total} active samples (threads on CPU or in C calls), all threads", "", "by category:"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in by_category.most_common()]
    lines += ["", "by thread:"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in by_thread.most_common()]
    lines += ["", "inclusive (a sample may count in several):"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in inclusive.most_common()]
    return "\n".join(lines)


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds used so far by each thread of a process, by thread id."""
    ticks = float(os.sysconf("SC_CLK_TCK"))
    usage: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            usage[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return usage


def thread_names(raw: Path) -> dict[int, str]:
    """Thread id -> Python thread name, from py-spy's "thread (TID): name" stack roots."""
    names: dict[int, str] = {}
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        match = re.match(r"thread \((\d+)\): ([^;]+);", line)
        if match:
            names[int(match.group(1))] = match.group(2)
    return names


@contextlib.contextmanager
def facteur_server(
    args: argparse.Namespace, workdir: Path, server_cpus: str | None
) -> Iterator[harness.Server]:
    variant = bench.Variant("facteur", args.database, args.executor, args.mode, args.log_level)
    postgres = harness.Postgres() if args.database == "postgresql" else None
    try:
        with harness.database_for(variant, workdir, postgres) as (url, _target):
            server = bench.server_for(
                variant, url=url, port=harness.free_port(), workdir=workdir, cpus=server_cpus
            )
            server.start()
            try:
                yield server
            finally:
                server.stop()
    finally:
        if postgres is not None:
            postgres.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description="Profile facteur serve on POST /codex/tasks with py-spy.")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--executor", choices=("none", "local"), default="none")
    parser.add_argument("--mode", choices=("unique", "replay"), default="unique")
    parser.add_argument("--log-level", choices=("WARNING", "INFO"), default="WARNING")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="also sample C frames (py-spy --native)")
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 120:
        parser.error("--seconds must be between 1 and 120")
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists() or shutil.which("wrk") is None:
        print("needs py-spy (uv pip install py-spy) and wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    server_cpus, wrk_cpus = ("1", "0") if pin else (None, None)
    prefix_hex = bench.task_prefix().hex()
    out_dir = bench.RESULTS_JSON.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"profile-{args.database}-{args.executor}-{args.mode}.txt"
    with (
        tempfile.TemporaryDirectory(prefix="facteur-profile-") as tmp,
        facteur_server(args, Path(tmp), server_cpus) as server,
    ):
        assert server.process is not None
        if args.mode == "replay":
            bench.seed_replays(server.port, bytes.fromhex(prefix_hex))
        common = {
            "mode": args.mode,
            "prefix_hex": prefix_hex,
            "cpus": wrk_cpus,
            "connections": args.connections,
        }
        bench.run_wrk(server.port, tag="w", seconds=2, **common)
        results: list[bench.WrkResult] = []
        load = threading.Thread(
            target=lambda: results.append(
                bench.run_wrk(server.port, tag="m", seconds=args.seconds + 2, **common)
            )
        )
        load.start()
        time.sleep(1)
        before = thread_cpu(server.process.pid)
        command = [
            spy,
            "record",
            "-p",
            str(server.process.pid),
            "-d",
            str(args.seconds),
            "-r",
            str(args.rate),
            "-f",
            "raw",
            "-o",
            str(raw),
            "--threads",
            "--nonblocking",
        ]
        if args.native:
            command.remove("--nonblocking")
            command.append("--native")
        subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 60, check=False)
        after = thread_cpu(server.process.pid)
        load.join(timeout=args.seconds + 90)
    print(
        f"profile of facteur serve: {args.database}, executor {args.executor}, {args.mode} deliveries, "
        f"{args.connections} connections, {args.seconds} s at {args.rate} Hz (raw samples: {raw})"
    )
    if results:
        r = results[0]
        print(f"throughput while sampled: {r.rps:,.0f} req/s, p50 {r.p50_ms:.2f} ms")
    names = thread_names(raw)
    print("CPU per thread while sampled (% of one core, from /proc):")
    for tid in sorted(after, key=lambda t: -(after[t] - before.get(t, 0.0))):
        used = after[tid] - before.get(tid, 0.0)
        if used > 0:
            print(f"  {100 * used / args.seconds:5.1f} %  {names.get(tid, 'native thread')} ({tid})")
    print(summarise(raw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
