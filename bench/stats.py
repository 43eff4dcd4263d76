"""Percentiles and medians, without numpy."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of latencies given in seconds, in milliseconds."""
    ordered = sorted(latencies_s)
    return {
        "p50": percentile(ordered, 50) * 1000,
        "p95": percentile(ordered, 95) * 1000,
        "p99": percentile(ordered, 99) * 1000,
        "max": (ordered[-1] if ordered else math.nan) * 1000,
    }


def median(values: Sequence[float | None]) -> float | None:
    """Median of the values that were measured; None when none was."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else None
