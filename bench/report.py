"""Medians over runs, the targets, the one table, and the JSON file."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.scenarios import Row
from bench.stats import median

MIB = 1024 * 1024
GIB = 1024 * MIB
# A load generator above this share of one core is the limit of its row, not the server.
CLIENT_BOUND = 0.9

_NUMERIC = (
    "rate",
    "completed",
    "peak_rss_bytes",
    "cpu_ms_per_op",
    "loadgen_cpu_util",
    "server_cpu_s",
    "offered_rate",
    "spread_ms",
    "commit_to_last_ms",
    "release_to_last_ms",
    "watchers",
    "received",
    "live",
    "open_s",
    "rss_before",
    "rss_after",
    "rss_per_conn",
    "host_busy_cores",
    "chain_cpu_s",
    "cpu_util",
    "updates_per_s",
    "follow_cost_util",
    "follow_cost_per_500",
)

Run = dict[str, Row]  # row name -> that row's measurement in one run


def summarize(runs: Sequence[Run]) -> dict[str, Row]:
    """Per row: the median of every number over the runs, errors summed."""
    names = list(dict.fromkeys(name for run in runs for name in run))
    out: dict[str, Row] = {}
    for name in names:
        rows = [run[name] for run in runs if name in run]
        merged: Row = {"label": rows[0]["label"], "runs": len(rows)}
        for key in _NUMERIC:
            if any(key in r for r in rows):
                merged[key] = median([r.get(key) for r in rows])
        for latency in ("latency_ms", "submitted_ms", "in_server_ms", "way_in_ms", "way_out_ms"):
            if any(latency in r for r in rows):
                merged[latency] = {
                    q: median([r.get(latency, {}).get(q) for r in rows])
                    for q in ("p50", "p95", "p99", "max")
                }
        steps = list(dict.fromkeys(k for r in rows for k in r.get("step_p99_ms", {})))
        if steps:
            merged["step_p99_ms"] = {
                k: median([r.get("step_p99_ms", {}).get(k) for r in rows]) for k in steps
            }
        errors: Counter[str] = Counter()
        for r in rows:
            errors.update(r.get("errors", {}))
        merged["errors"] = dict(errors)
        out[name] = merged
    return out


@dataclass(frozen=True, slots=True)
class Target:
    row: str  # printed on this row
    goal: str
    value: float | None  # median over runs of the per-run value
    shown: str
    passed: bool | None  # None: not measured


def _get(run: Run, row: str, key: str, sub: str | None = None) -> float | None:
    value = run.get(row, {}).get(key)
    if sub is not None:
        value = value.get(sub) if isinstance(value, dict) else None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass(frozen=True, slots=True)
class _Goal:
    row: str
    goal: str
    per_run: Callable[[Run], float | None]
    ok: Callable[[float], bool]
    shown: Callable[[float], str]


_GOALS = (
    _Goal(
        "e2e",
        "CPU/order <= 0.5 x baseline",
        lambda r: _ratio(_get(r, "e2e", "cpu_ms_per_op"), _get(r, "e2e_base", "cpu_ms_per_op")),
        lambda v: v <= 0.5,
        lambda v: f"{v:.2f} x baseline",
    ),
    _Goal(
        "e2e",
        "e2e >= 0.5 x floor",
        lambda r: _ratio(_get(r, "e2e", "rate"), _get(r, "floor", "rate")),
        lambda v: v >= 0.5,
        lambda v: f"{v:.3f} x floor",
    ),
    _Goal(
        "accept",
        "accept >= 0.5 x floor",
        lambda r: _ratio(_get(r, "accept", "rate"), _get(r, "floor", "rate")),
        lambda v: v >= 0.5,
        lambda v: f"{v:.2f} x floor",
    ),
    _Goal(
        "e2e_session",
        ">= 3 x e2e",
        lambda r: _ratio(_get(r, "e2e_session", "rate"), _get(r, "e2e", "rate")),
        lambda v: v >= 3,
        lambda v: f"{v:.2f} x e2e",
    ),
    _Goal(
        "e2e_half",
        "p99 <= 25 ms",
        lambda r: _get(r, "e2e_half", "latency_ms", "p99"),
        lambda v: v <= 25,
        lambda v: f"p99 {v:.1f} ms",
    ),
    _Goal(
        "realistic",
        ">= 0.8 x e2e",
        lambda r: _ratio(_get(r, "realistic", "rate"), _get(r, "e2e", "rate")),
        lambda v: v >= 0.8,
        lambda v: f"{v:.2f} x e2e",
    ),
    _Goal(
        "realistic_half",
        "POST->submitted p50 <= 10 ms",
        lambda r: _get(r, "realistic_half", "submitted_ms", "p50"),
        lambda v: v <= 10,
        lambda v: f"p50 {v:.1f} ms",
    ),
    _Goal(
        "follow",
        "following 500 updates/s <= 5% of a core",
        lambda r: _get(r, "follow", "follow_cost_per_500"),
        lambda v: v <= 0.05,
        lambda v: f"{v * 100:.1f}% of a core",
    ),
    _Goal(
        "fanout",
        "all within 100 ms",
        lambda r: _get(r, "fanout", "spread_ms"),
        lambda v: v <= 100,
        lambda v: f"spread {v:.1f} ms",
    ),
    _Goal(
        "idle",
        "< 1 GiB RSS",
        lambda r: _get(r, "idle", "rss_after"),
        lambda v: v < GIB,
        lambda v: f"{v / GIB:.3f} GiB",
    ),
    _Goal(
        "scaled_2",
        ">= 1.3 x 1 process",
        lambda r: _ratio(_get(r, "scaled_2", "rate"), _get(r, "scaled_1", "rate")),
        lambda v: v >= 1.3,
        lambda v: f"{v:.2f} x",
    ),
)


def targets(runs: Sequence[Run]) -> list[Target]:
    """Each target from each run's own rows (ratios of rows measured minutes apart on a
    noisy machine would mix its moods), then the median over runs."""
    out = []
    for g in _GOALS:
        value = median([g.per_run(run) for run in runs])
        if value is None:
            out.append(Target(g.row, g.goal, None, "not measured", None))
        else:
            out.append(Target(g.row, g.goal, value, g.shown(value), g.ok(value)))
    return out


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None or math.isnan(value) else fmt.format(value)


def table(summary: dict[str, Row], goals: Sequence[Target]) -> str:
    by_row: dict[str, list[Target]] = {}
    for goal in goals:
        by_row.setdefault(goal.row, []).append(goal)
    header = (
        "row",
        "rate/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "RSS MiB",
        "CPU ms/op",
        "client",
        "target",
        "measured",
        "",
    )
    lines = [header]
    for name, r in summary.items():
        lat = r.get("latency_ms", {})
        rss = r.get("rss_after") if name == "idle" else r.get("peak_rss_bytes")
        util = r.get("loadgen_cpu_util")
        row_goals = by_row.get(name, [])
        judged = [t.passed for t in row_goals if t.passed is not None]
        verdict = "" if not judged else ("PASS" if all(judged) else "MISS")
        lines.append(
            (
                r["label"],
                _num(r.get("rate")),
                _num(lat.get("p50"), "{:.2f}"),
                _num(lat.get("p95"), "{:.2f}"),
                _num(lat.get("p99"), "{:.2f}"),
                _num(rss / MIB if rss is not None else None, "{:.0f}"),
                _num(r.get("cpu_ms_per_op"), "{:.2f}"),
                _num(util * 100 if util is not None else None, "{:.0f}%"),
                "; ".join(t.goal for t in row_goals),
                "; ".join(t.shown for t in row_goals),
                verdict,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {1, 2, 3, 4, 5, 6, 7}

    def fmt(line: Sequence[str]) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths).rstrip()
    return "\n".join([fmt(lines[0]), rule, *(fmt(line) for line in lines[1:])])


def notes(summary: dict[str, Row], skipped: dict[str, str]) -> list[str]:
    out = [
        "client = the load generator's CPU, share of one core; CPU ms/op and RSS are the"
        " measured server process(es) only (not the chain service, PostgreSQL or Redis)"
    ]
    for name, r in summary.items():
        util = r.get("loadgen_cpu_util")
        if util is not None and util >= CLIENT_BOUND:
            out.append(
                f"{name}: the load generator used {util:.0%} of a core: this row is bound by"
                " the client, the server could do more"
            )
        if r["errors"]:
            errors = ", ".join(f"{k} x{v}" for k, v in sorted(r["errors"].items()))
            out.append(f"{name}: not completed: {errors}")
        if "in_server_ms" in r:
            inside, steps = r["in_server_ms"], r.get("step_p99_ms", {})
            way_in, way_out = r.get("way_in_ms", {}), r.get("way_out_ms", {})
            out.append(
                f"{name}: inside the server (event ts, pending -> last) p50"
                f" {_num(inside['p50'])} p99 {_num(inside['p99'])} ms; p99 of each step: "
                + ", ".join(f"{k} {_num(v)}" for k, v in steps.items())
                + f"; p99 of the way in (arrival -> pending) {_num(way_in.get('p99'))},"
                f" of the way out (last event -> read) {_num(way_out.get('p99'))}"
            )
    for name in ("scaled_1", "scaled_2"):
        if name in summary and summary[name].get("host_busy_cores") is not None:
            r = summary[name]
            out.append(
                f"{name}: the machine was busy {r['host_busy_cores']:.2f} cores in the window"
                f" (chain service {_num(r.get('chain_cpu_s'), '{:.1f}')} CPU s)"
            )
    if "fanout" in summary:
        f = summary["fanout"]
        out.append(
            f"fanout: event ts -> last watcher {_num(f.get('commit_to_last_ms'))} ms, chain"
            f" release -> last watcher {_num(f.get('release_to_last_ms'))} ms"
        )
    if "idle" in summary:
        i = summary["idle"]
        per = i.get("rss_per_conn")
        out.append(
            f"idle: {_num(per / 1024 if per is not None else None)} KiB per connection"
            f" (RSS {_num((i.get('rss_before') or 0) / MIB, '{:.0f}')} ->"
            f" {_num((i.get('rss_after') or 0) / MIB, '{:.0f}')} MiB); rate/s = connections"
            " opened per second"
        )
    out.extend(f"{name}: skipped: {why}" for name, why in skipped.items())
    return out


def write(
    directory: Path,
    *,
    meta: dict[str, Any],
    runs: Sequence[Run],
    summary: dict[str, Row],
    goals: Sequence[Target],
    skipped: dict[str, str],
    failures: dict[str, str],
) -> Path:
    """`<timestamp>.json` and `latest.json` (the same content)."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = {
        **meta,
        "finished": stamp,
        "runs": list(runs),
        "summary": summary,
        "targets": [asdict(t) for t in goals],
        "skipped": skipped,
        "failures": failures,
    }
    body = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    path = directory / f"{stamp}.json"
    path.write_bytes(body)
    (directory / "latest.json").write_bytes(body)
    return path
