"""Prometheus metrics: requests, latency, scores by category, the served model version.

With several worker processes each keeps its own counters; when
``PROMETHEUS_MULTIPROC_DIR`` is set (``python -m serving`` sets it before the workers
start) ``/metrics`` merges all workers' files, so a scrape sees the whole service.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

from monitoring.report import MonitorReport

REQUESTS = Counter(
    "leadscore_http_requests_total", "HTTP requests by route and status.", ["route", "status"]
)
LATENCY = Histogram(
    "leadscore_http_request_seconds",
    "Time from request to response, by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
SCORES = Counter("leadscore_scores_total", "Leads scored, by category.", ["category"])
MODEL_INFO = Gauge(
    "leadscore_model_info",
    "The served model (1 for the name and version each worker serves).",
    ["name", "version"],
    multiprocess_mode="liveall",
)
SHED = Counter(
    "leadscore_shed_requests_total", "Requests answered 503 at once because the worker was full."
)
RELOADS = Counter("leadscore_model_reloads_total", "Model reload attempts by outcome.", ["outcome"])

WEBHOOK_TRIES = Counter(
    "leadscore_webhook_tries_total",
    "Webhook delivery tries by subscription and result (delivered, failed, dead).",
    ["subscription", "result"],
)
WEBHOOK_OPEN = Gauge(
    "leadscore_webhook_deliveries",
    "Deliveries waiting (pending) or given up on (dead), by subscription.",
    ["subscription", "status"],
    multiprocess_mode="mostrecent",
)
WEBHOOK_LATENCY = Histogram(
    "leadscore_webhook_delivery_seconds",
    "From the score's commit to the receiver's 2xx, retries included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0),
)


def set_model(name: str, version: str, previous: tuple[str, str] | None = None) -> None:
    # remove() does nothing across worker processes (prometheus/client_python#916):
    # the old version is set to 0 instead, so a dashboard sees which one is live.
    if previous is not None and previous != (name, version):
        MODEL_INFO.labels(*previous).set(0)
    MODEL_INFO.labels(name, version).set(1)


def render() -> tuple[bytes, str]:
    """The exposition text: this process's metrics, or every worker's in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


# --- monitoring (set each time a monitoring report is computed; see serving.monitoring) ----

_STATE_VALUE = {"unknown": -1.0, "ok": 0.0, "watch": 1.0, "act": 2.0}
MONITOR_STATE = Gauge(
    "leadscore_monitor_state",
    "Monitoring state of the served model: -1 unknown, 0 ok, 1 watch, 2 act.",
    ["model_version"],
    multiprocess_mode="mostrecent",
)
MONITOR_PSI = Gauge(
    "leadscore_monitor_psi",
    "Population stability index against the training reference (kind: feature or score).",
    ["kind", "name"],
    multiprocess_mode="mostrecent",
)
MONITOR_LIVE = Gauge(
    "leadscore_monitor_live",
    "Live figures on matured scores per stage (figure: ece, roc_auc, precision, rows).",
    ["stage", "figure"],
    multiprocess_mode="mostrecent",
)


def set_monitoring(report: MonitorReport) -> None:
    """Publish a report's headline numbers (the latest report of any worker wins)."""
    MONITOR_STATE.labels(report.model_version).set(_STATE_VALUE.get(report.state, -1.0))
    for kind, items in (("feature", report.features), ("score", report.scores)):
        for d in items:
            if d.psi is not None:
                MONITOR_PSI.labels(kind, d.name).set(d.psi)
    for s in report.stages:
        for figure, value in (
            ("ece", s.ece),
            ("roc_auc", s.roc_auc),
            ("precision", s.live_precision),
            ("rows", float(s.rows)),
        ):
            if value is not None:
                MONITOR_LIVE.labels(s.stage, figure).set(value)
