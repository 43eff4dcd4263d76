"""`python -m bench`: run the scenarios, print one table, write the JSON.

python -m bench                         # every scenario once, 5 s windows
python -m bench --runs 3 --duration 8   # medians of 3 runs (what `make bench` does)
python -m bench --scenarios e2e,fanout  # some scenarios only
python -m bench --smoke                 # tiny counts, seconds in all (the test suite)
python -m bench --scenarios e2e --baseline-checkout ../old   # e2e against an older commit too
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.processes import raise_nofile_limit
from bench.scenarios import ROWS, SCENARIOS, Checkout, Context, Plan, services_reachable
from tests.support.processes import REPO

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {', '.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per row")
    parser.add_argument("--runs", type=int, default=1, help="repeat everything; report medians")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, a few seconds in all")
    parser.add_argument(
        "--results", type=Path, default=REPO / "bench" / "results", help="where the JSON goes"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES),
        help="server for the scaled scenario; a fresh schema is made and dropped",
    )
    parser.add_argument("--keep", action="store_true", help="keep the servers' logs and files")
    parser.add_argument(
        "--server-checkout",
        type=Path,
        help="run another checkout's engine in every row (its .venv unless --server-python)",
    )
    parser.add_argument("--server-python", help="the interpreter for --server-checkout")
    parser.add_argument(
        "--baseline-checkout",
        type=Path,
        help="also run the e2e row on this checkout (row e2e_base), in the same runs, and"
        " compare CPU per order (its .venv unless --baseline-python)",
    )
    parser.add_argument("--baseline-python", help="the interpreter for --baseline-checkout")
    return parser


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _run(
    names: Sequence[str], runs: int, ctx: Context
) -> tuple[list[report.Run], dict[str, str]]:
    """Runs are interleaved (every scenario once, then again), so a slow spell of a shared
    machine spreads over all rows instead of sinking one."""
    results: list[report.Run] = []
    failures: dict[str, str] = {}
    for n in range(runs):
        run: report.Run = {}
        for name in names:
            started = time.monotonic()
            _progress(f"run {n + 1}/{runs}: {name} ...")
            try:
                rows = await SCENARIOS[name](ctx)
            except Exception as exc:  # one broken scenario must not lose the others' rows
                failures[f"{name} (run {n + 1})"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
                continue
            for row in rows:
                run[row["row"]] = row
            _progress(f"run {n + 1}/{runs}: {name} done in {time.monotonic() - started:.1f} s")
        results.append(run)
    return results, failures


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    if args.runs < 1 or args.duration <= 0:
        print("--runs must be at least 1 and --duration positive", file=sys.stderr)
        return 2
    skipped: dict[str, str] = {}
    if "scaled" in names and (why := services_reachable(args.postgres_url)):
        names.remove("scaled")
        skipped["scaled"] = why
    plan = Plan.smoke() if args.smoke else Plan.full(args.duration)
    runs = 1 if args.smoke else args.runs
    raise_nofile_limit()
    workdir = Path(tempfile.mkdtemp(prefix="order-engine-bench-"))
    started = datetime.now(UTC)
    failures: dict[str, str] = {"benchmark": "interrupted"}
    try:
        server = (
            Checkout.other(args.server_checkout, args.server_python)
            if args.server_checkout
            else Checkout()
        )
        baseline = (
            Checkout.other(args.baseline_checkout, args.baseline_python)
            if args.baseline_checkout
            else None
        )
        ctx = Context(plan, workdir, args.postgres_url, server, baseline)
        results, failures = asyncio.run(_run(names, runs, ctx))
    finally:
        if args.keep or failures:
            _progress(f"servers' logs and files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = report.summarize(results)
    goals = report.targets(results)
    meta: dict[str, Any] = {
        "started": started.isoformat(),
        "command": ["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])],
        "options": {"scenarios": names, "runs": runs, "smoke": args.smoke, "plan": asdict(plan)},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "rows": {name: list(ROWS[name]) for name in names},
    }
    path = report.write(
        args.results,
        meta=meta,
        runs=results,
        summary=summary,
        goals=goals,
        skipped=skipped,
        failures=failures,
    )
    title = f"order_engine benchmark: {runs} run(s), medians"
    title += (
        " (smoke: tiny counts, not a measurement)"
        if args.smoke
        else f", {plan.duration:g} s windows"
    )
    print(title)
    print(report.table(summary, goals))
    for line in report.notes(summary, skipped):
        print(f"  note: {line}")
    for what, why in failures.items():
        print(f"  FAILED: {what}: {why}")
    print(f"results: {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
