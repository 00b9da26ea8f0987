"""The service's monitoring report: computed on demand, kept for a while, one at a time.

A report reads two windows of the scoring log and rebuilds a sample of inputs (seconds on
a large log), so the endpoint and the board page share one cached report per worker:
fresh for ``monitor_cache_s``, computed by one thread at a time while the others wait
for it, and off the event loop. Each new report also updates the Prometheus gauges.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import Engine

from monitoring.report import MonitorReport, build_report
from monitoring.settings import MonitorSettings
from serving import metrics
from serving.model_store import ServedModel


@dataclass(frozen=True)
class _Cached:
    report: MonitorReport
    version: str
    made_at: float


class ReportCache:
    """The latest report for the served model version, recomputed when stale."""

    def __init__(self, engine: Engine, max_age_s: float) -> None:
        self._engine = engine
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._cached: _Cached | None = None

    def get(self, served: ServedModel, *, refresh: bool = False) -> MonitorReport:
        """The report for ``served`` (blocking: call it from a thread pool)."""
        with self._lock:
            cached = self._cached
            fresh = (
                cached is not None
                and cached.version == served.version
                and time.monotonic() - cached.made_at < self._max_age_s
            )
            if fresh and not refresh and cached is not None:
                return cached.report
            report = build_report(
                self._engine, served.model, MonitorSettings(), model_name=served.name
            )
            self._cached = _Cached(report, served.version, time.monotonic())
        metrics.set_monitoring(report)
        return report
