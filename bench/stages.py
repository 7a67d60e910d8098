"""Benchmark Facteur's own cost per stage run on the embedded default: ``facteur demo`` (SQLite, the local
executor, the local forge, the example agent) end to end, and for each run the time Facteur recorded for it
(created → its ``completed`` report arrived) minus the time its agent ran (``timing.json`` of the run).

That difference is everything Facteur does around the agent: dispatch, starting the stage process,
reading settings and the event, the reports, bootstrapping the checkout, committing, pushing, the pull
request, the progress comment, the artifacts, and the server's handling of the reports. The same demo is
run with the warm stage host (the default: stage runs forked from a preloaded interpreter) and, as the
baseline of the same run, with a new interpreter per stage run (``executor.local.warm_stage_host: false``).

Figures are printed and, for a full run, written into bench/README.md (between the ``stages`` result markers)
and bench/results/stages.json. Nothing asserts on timings.

Usage: ``python bench/stages.py [--rounds N] [--baseline-rounds N] [--write-readme yes|no|auto]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Section, add_write_readme, host, machine_line, percentile, run_of, wants_readme

from facteur.demo.session import DemoOptions, run_demo

SECTION = Section("stages", "orchestration overhead per stage")
TARGET_MS = 300.0
STAGES = ("planning", "implementation", "review")


def one(warm: bool) -> dict[str, list[float]]:
    """One demo; per stage, each run's overhead in milliseconds."""
    with tempfile.TemporaryDirectory(prefix="facteur-bench-stages-") as scratch:
        summary = asyncio.run(
            run_demo(DemoOptions(directory=Path(scratch) / "demo", warm_stage_host=warm), lambda _line: None)
        )
    if not summary.succeeded:
        raise SystemExit(f"the demo did not succeed (idea {summary.state}): no figures")
    found: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for run in summary.runs:
        if run["overhead_seconds"] is not None:
            found[run["stage"]].append(1000 * run["overhead_seconds"])
    return found


def collect(rounds: int, warm: bool) -> dict[str, list[float]]:
    total: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for n in range(rounds):
        for stage, values in one(warm).items():
            total[stage].extend(values)
        print(f"  {'warm' if warm else 'cold'} round {n + 1}/{rounds} done", file=sys.stderr)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="demos with the warm stage host (default 5)")
    parser.add_argument("--baseline-rounds", type=int, default=2, help="demos with a new interpreter per run")
    add_write_readme(parser)
    args = parser.parse_args()
    warm = collect(args.rounds, True)
    cold = collect(args.baseline_rounds, False) if args.baseline_rounds else {s: [] for s in STAGES}
    rows = [
        "| stage | runs | warm p50 | warm max | new interpreter p50 | ratio | target |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    document: dict[str, Any] = {"target_ms": TARGET_MS, "stages": {}}
    for stage in STAGES:
        values = sorted(warm[stage])
        base = sorted(cold[stage])
        if not values:
            raise SystemExit(f"no {stage} run was timed: no figures")
        p50 = percentile(values, 0.5, nearest=True)
        base_p50 = percentile(base, 0.5, nearest=True) if base else None
        ratio = f"\u00d7{base_p50 / p50:.1f}" if base_p50 else "-"
        rows.append(
            f"| {stage} | {len(values)} | {p50:.0f} ms | {values[-1]:.0f} ms | "
            f"{f'{base_p50:.0f} ms' if base_p50 else '-'} | {ratio} | \u2264 {TARGET_MS:.0f} ms |"
        )
        met = values[-1] <= TARGET_MS
        verdict = "met" if met else "NOT met"
        verdicts.append(f"- {stage}: {verdict} (worst run {values[-1]:.0f} ms, target {TARGET_MS:.0f} ms)")
        document["stages"][stage] = {"warm_ms": values, "baseline_ms": base}
    info = host(("uvicorn", "uvloop", "httpx", "sqlalchemy"))
    text = "\n".join(
        [
            run_of(),
            "",
            machine_line(info),
            "",
            *rows,
            "",
            "Targets (overhead of every run, warm host):",
            "",
            *verdicts,
        ]
    )
    print(text)
    full = args.rounds >= 5 and args.baseline_rounds >= 2
    if wants_readme(args, full):
        SECTION.write(text, {**document, "machine": info})
    return 0


if __name__ == "__main__":
    sys.exit(main())
