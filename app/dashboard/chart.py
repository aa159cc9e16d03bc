"""A small server-side bar chart (inline SVG): reports received (Redis, fleet-wide, app/reports_counter.py) and
jobs finished (tasks table) per minute/hour."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from app.dashboard.queries import cached, tasks

log = logging.getLogger(__name__)

RANGES = {"hour": ("minute", 60), "day": ("hour", 24)}
WIDTH, HEIGHT, PAD = 1200, 150, 18


@dataclass
class Series:
    name: str
    css: str
    values: list[int]


async def build(pool, redis, counter, span: str = "hour") -> dict:
    """counter: the app's ReportsCounter (None: no reports series)."""
    span = span if span in RANGES else "hour"
    return await cached(("chart", id(pool), span), lambda: _build(pool, redis, counter, span))


async def _build(pool, redis, counter, span: str) -> dict:
    bucket, n = RANGES[span]
    jobs = await tasks.jobs_per_bucket(pool, bucket, n)
    times = list(jobs)
    reports = None
    if counter is not None:
        try:
            reports = await counter.series(redis, bucket, times)
        except Exception as exc:  # Redis away: the chart shows the jobs and says so
            log.warning("chart: reports series unavailable (%s)", type(exc).__name__)
    series = [
        Series("jobs finished", "s-jobs", [jobs[t]["finished"] for t in times]),
        Series("jobs failed", "s-failed", [jobs[t]["failed"] for t in times]),
    ]
    if reports is not None:
        series.insert(0, Series("reports received", "s-reports", [reports.get(t, 0) for t in times]))
    top = max([1] + [v for s in series for v in s.values])
    slot = WIDTH / max(1, len(times))
    bar = max(1.0, (slot - 2) / len(series))
    bars = []
    for i, t in enumerate(times):
        for j, s in enumerate(series):
            v = s.values[i]
            h = (HEIGHT - PAD) * v / top
            label = f"{t:%H:%M}" if bucket == "minute" else f"{t:%d %H:00}"
            bars.append(
                {"x": round(i * slot + 1 + j * bar, 1), "y": round(HEIGHT - PAD - h, 1), "w": round(bar, 1),
                 "h": round(h, 1), "css": s.css, "title": f"{label} {s.name}: {v}"}
            )
    ticks = []
    step = max(1, len(times) // 6)
    for i in range(0, len(times), step):
        t = times[i]
        ticks.append({"x": round(i * slot, 1), "label": f"{t:%H:%M}" if bucket == "minute" else f"{t:%H}h"})
    return {
        "span": span, "width": WIDTH, "height": HEIGHT, "bars": bars, "ticks": ticks, "top": top,
        "series": [{"name": s.name, "css": s.css, "total": sum(s.values)} for s in series],
        "reports_available": reports is not None,
    }
