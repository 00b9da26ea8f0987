"""Training rows from the scoring log: what was served, labelled by what happened after.

Each logged score whose label horizon has passed is a row (``monitoring.labels`` says how
outcomes become labels); its features are built from the stored input itself, so the
model learns from exactly what the service saw and training and serving cannot disagree.
With ``from_log.with_files`` the config's historical files add their snapshots.

A window without one matured row is refused with :class:`EmptyLogWindowError` (a user
error: one line, exit 2), before any MLflow run is opened, so nothing is registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from features.batch import ACTIONS_KEY, AS_OF_KEY
from features.spec import FeatureSpec
from monitoring.collect import open_log, read_outcomes, read_window, records_for
from monitoring.labels import LabelRules, OutcomeTable, label_scores
from training.config import ConfigError, TrainConfig, scoring_log_url
from training.dataset import AS_OF, TrainingSet, load_training_set


class EmptyLogWindowError(ConfigError):
    """The log holds no score whose horizon passed in the window: nothing to learn from."""


@dataclass(frozen=True)
class LogWindow:
    """Which scores are read: ``since <= scored_at < until``, judged as of ``now``."""

    since: datetime | None
    until: datetime
    now: datetime

    def describe(self) -> str:
        start = self.since.isoformat(timespec="seconds") if self.since else "the log's start"
        return f"{start} to {self.until.isoformat(timespec='seconds')}"


def log_window(config: TrainConfig, now: datetime | None = None) -> LogWindow:
    """The window the config asks for: the last ``window_days`` whose horizon has passed."""
    assert config.from_log is not None
    now = now or datetime.now(UTC)
    until = now - timedelta(days=config.label_horizon_days())
    days = config.from_log.window_days
    return LogWindow(None if days is None else until - timedelta(days=days), until, now)


def load_rows(spec: FeatureSpec, config: TrainConfig, now: datetime | None = None) -> TrainingSet:
    """The training rows a config asks for: from the log when it has ``from_log``, else files.

    ``now`` (default: the clock) decides which scores have matured.
    """
    if config.from_log is None:
        return load_training_set(spec, config)
    return load_log_set(spec, config, scoring_log_url(config), now)


def load_log_set(
    spec: FeatureSpec, config: TrainConfig, url: str, now: datetime | None = None
) -> TrainingSet:
    """Labelled rows from the log (plus the files when the config says so)."""
    assert config.from_log is not None
    window = log_window(config, now)
    engine = open_log(url)
    try:
        rows = _log_rows(engine, spec, config, window)
    finally:
        engine.dispose()
    if config.from_log.with_files:
        rows = combine(spec, load_training_set(spec, config), rows)
    return rows


def _log_rows(
    engine: Any, spec: FeatureSpec, config: TrainConfig, window: LogWindow
) -> TrainingSet:
    assert config.from_log is not None
    rules = LabelRules.for_spec(spec, config.label_horizon_days(), config.from_log.rejections)
    scores = read_window(engine, spec.scored_stages, window.since, window.until)
    table = OutcomeTable.build(read_outcomes(engine, window.now), rules)
    now_ns = int(pd.Timestamp(window.now).value)
    labelled = label_scores(scores.lead_id, scores.scored_ns, table, rules, now_ns)
    kept = scores.take(labelled.keep)
    found = records_for(engine, kept.score_id)
    has_input = np.array([int(i) in found for i in kept.score_id], dtype=bool)
    dropped = dict(labelled.dropped)
    dropped["input_not_stored"] = int((~has_input).sum())
    if not has_input.any():
        waiting = _scores_since(engine, window.until)
        raise EmptyLogWindowError(
            f"from_log: no matured score with its input from {window.describe()} "
            f"({len(scores):,} scores in the window: {_dropped_text(dropped)}; {waiting:,} "
            f"newer scores wait for their {config.label_horizon_days():g}-day horizon); "
            "no model was trained"
        )
    records = [api_shaped(found[int(i)]) for i in kept.score_id[has_input]]
    labels = pd.DataFrame(labelled.labels[has_input], columns=spec.scored_stages)
    return _ordered(spec, records, labels, dropped)


def _ordered(
    spec: FeatureSpec, records: list[dict[str, Any]], labels: pd.DataFrame, dropped: dict[str, int]
) -> TrainingSet:
    """Rows in time order, with the id / created / as-of columns the time split reads."""
    meta = pd.DataFrame(
        {
            spec.id_column: [str(r.get(spec.id_column, r.get("lead_id"))) for r in records],
            AS_OF: _stamps([r.get(AS_OF_KEY) for r in records]),
        }
    )
    if spec.created_at_column:
        meta[spec.created_at_column] = _stamps([r.get(spec.created_at_column) for r in records])
    order = np.argsort(meta[AS_OF].to_numpy(), kind="stable")
    meta = meta.iloc[order].reset_index(drop=True)
    window = (str(meta[AS_OF].min()), str(meta[AS_OF].max()))
    return TrainingSet(
        leads=meta,
        actions=None,
        labels=labels.iloc[order].reset_index(drop=True),
        truth=None,
        dropped=dropped,
        window=window,
        records=[records[int(i)] for i in order],
    )


def _scores_since(engine: Engine, since: datetime) -> int:
    """How many scores are newer than ``since`` (for the message of an empty window)."""
    from sqlalchemy import func, select

    from scorelog.tables import Score

    with engine.connect() as connection:
        query = select(func.count()).select_from(Score).where(Score.scored_at >= since)
        return int(connection.execute(query).scalar_one())


def combine(spec: FeatureSpec, files: TrainingSet, log: TrainingSet) -> TrainingSet:
    """The files' rows and the log's rows as one record-based set, in time order."""
    if AS_OF not in files.leads.columns:
        raise ConfigError(
            "from_log.with_files: the files have no cut-off times (a binary label on a "
            "pre-aggregated table), so they cannot be ordered with the log's rows"
        )
    file_records = files.as_records(spec)
    records = file_records + (log.records or [])
    labels = pd.concat([files.labels, log.labels], ignore_index=True)
    dropped = {f"files_{k}": v for k, v in files.dropped.items()}
    dropped.update({f"log_{k}": v for k, v in log.dropped.items()})
    return _ordered(spec, records, labels, dropped)


def _dropped_text(dropped: dict[str, int]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in dropped.items())


def _stamps(values: list[Any]) -> pd.Series:
    """Record timestamps (datetimes or ISO text; None is NaT) as a UTC datetime column."""
    return pd.Series(pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601"))


def api_shaped(record: dict[str, Any]) -> dict[str, Any]:
    """A stored input as the API receives it: timestamps as ISO-8601 text with a Z.

    The feature builder reads both shapes alike; MLflow's signature (input examples, golden
    rows) and JSON want text.
    """
    out = {k: _iso(v) for k, v in record.items()}
    if isinstance(out.get(ACTIONS_KEY), list):
        out[ACTIONS_KEY] = [{k: _iso(v) for k, v in a.items()} for a in out[ACTIONS_KEY]]
    return out


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value
