"""`python -m bench --smoke`: every scenario runs end to end with tiny counts, the table is
printed and the JSON written, so the benchmark cannot rot between the times it is run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import require_postgres, require_redis

pytestmark = pytest.mark.slow  # skipped by a plain `make test`: see tests/conftest.py

REPO = Path(__file__).resolve().parents[2]
ROWS = {
    "floor": ["floor"],
    "accept": ["accept"],
    "e2e": ["e2e", "e2e_normal", "e2e_half", "e2e_half_normal", "e2e_third"],
    "realistic": ["realistic", "realistic_rpc", "realistic_half"],
    "follow": ["follow", "follow_off"],
    "fanout": ["fanout"],
    "idle": ["idle"],
    "scaled": ["scaled_1", "scaled_2"],
}
TARGETS = {
    "accept",
    "e2e",
    "e2e_session",
    "e2e_half",
    "realistic",
    "realistic_half",
    "follow",
    "fanout",
    "idle",
    "scaled_2",
}


def bench_run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m <args>` from the repository, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_bench_smoke(tmp_path: Path) -> None:
    done = bench_run(["bench", "--smoke", "--results", str(tmp_path)], timeout=100)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "order_engine benchmark" in out
    assert "rate/s" in out and "p99 ms" in out and "RSS MiB" in out, out

    latest = tmp_path / "latest.json"
    assert latest.is_file(), list(tmp_path.iterdir())
    assert len(list(tmp_path.glob("2*.json"))) == 1  # the timestamped copy
    result = json.loads(latest.read_text())
    assert result["failures"] == {}
    summary = result["summary"]
    for scenario, rows in ROWS.items():
        if scenario == "scaled" and "scaled" in result["skipped"]:
            continue
        for row in rows:
            assert row in summary, f"{row} missing from {sorted(summary)}"
            assert row in out or summary[row]["label"] in out
    for row in ("floor", "accept", "e2e", "e2e_normal", "e2e_half", "realistic", "realistic_half"):
        assert summary[row]["rate"] > 0, (row, summary[row])
        assert summary[row]["latency_ms"]["p99"] > 0, (row, summary[row])
        assert summary[row]["peak_rss_bytes"] > 0, (row, summary[row])
    for row in ("e2e_half", "e2e_half_normal", "e2e_third", "realistic_half"):
        # The server's own part of each order (its event stamps) lies inside what the client
        # waited for it, so every percentile of it does too.
        inside = summary[row]["in_server_ms"]
        assert 0 < inside["p99"] <= summary[row]["latency_ms"]["p99"], (row, summary[row])
        steps = {"pending->routing", "building->submitted", "submitted->confirmed"}
        assert steps <= set(summary[row]["step_p99_ms"]), summary[row]
        # The rest of it, the way in and the way out, by the same clock: inside it too.
        for way in ("way_in_ms", "way_out_ms"):
            assert 0 < summary[row][way]["p99"] <= summary[row]["latency_ms"]["max"], summary[row]
    assert "inside the server" in out
    assert summary["fanout"]["received"] == summary["fanout"]["watchers"], summary["fanout"]
    assert summary["fanout"]["spread_ms"] is not None
    assert summary["idle"]["live"] == summary["idle"]["watchers"], summary["idle"]
    assert summary["idle"]["rss_after"] > 0
    assert summary["realistic_half"]["submitted_ms"]["p50"] > 0, summary["realistic_half"]
    assert summary["follow"]["updates_per_s"] > 0, summary["follow"]
    verdicts = {t["row"]: t for t in result["targets"]}
    assert set(verdicts) == TARGETS

    if "scaled" in result["skipped"]:
        # The note says why; then skip here (or fail under CI, which requires the services).
        assert "scaled: skipped" in out
        require_postgres()
        require_redis()
        raise AssertionError(f"PostgreSQL and Redis answer, yet: {result['skipped']['scaled']}")
    assert summary["scaled_2"]["rate"] > 0 and summary["scaled_1"]["rate"] > 0


def test_bench_compares_with_a_baseline_checkout(tmp_path: Path) -> None:
    """`--baseline-checkout` runs the e2e row on that checkout too (here: this one, with this
    interpreter), and the e2e row's target is the ratio of their CPU per order."""
    done = bench_run(
        [
            "bench",
            "--smoke",
            "--scenarios",
            "e2e",
            "--baseline-checkout",
            str(REPO),
            "--baseline-python",
            sys.executable,
            "--results",
            str(tmp_path),
        ],
        timeout=100,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "latest.json").read_text())
    base = result["summary"]["e2e_base"]
    assert base["rate"] > 0 and base["cpu_ms_per_op"] > 0, base
    assert "baseline" in base["label"] and base["label"] in done.stdout
    ratio = next(t for t in result["targets"] if t["goal"] == "CPU/order <= 0.5 x baseline")
    assert ratio["value"] is not None and ratio["value"] > 0, ratio


def test_triggers_bench_smoke() -> None:
    """`python -m bench.triggers` with tiny counts: every row is printed."""
    done = bench_run(
        [
            "bench.triggers",
            *("--orders", "300", "--crossed", "50", "--snipers", "5", "--seconds", "0.2"),
        ],
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "300" in done.stdout  # open limit orders
    assert "50 / 0" in done.stdout  # every crossed order confirmed
    assert "5 / 0" in done.stdout  # every sniper confirmed
    assert "landing slot - trigger slot" in done.stdout


def test_reads_bench_smoke() -> None:
    """`python -m bench.reads` with tiny counts: both rows are printed."""
    done = bench_run(["bench.reads", "--orders", "2000", "--scanners", "4"], timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "quiet" in done.stdout and "4 history scanners" in done.stdout
