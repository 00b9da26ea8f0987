"""Training sets that respect time: point-in-time snapshots and honest splits.

For event data a lead is seen as of a cut-off (``created_at`` + N days): features use
only actions up to the cut-off, and the label is the furthest stage reached within a
horizon after it. Snapshots whose horizon runs past the end of the data are dropped
(their label is not known yet, and counting them as "not converted" would bias the
model low), and so are leads that had already reached a scored stage at the cut-off
(nobody needs a score for them, and they would teach the model nothing it can use).

Splits follow time where time exists: the most recent leads are the test set, the ones
before them the validation set. A lead's snapshots always stay in one split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from features.batch import frames_to_records
from features.loaders import MISSING_TOKEN_COUNTS, load_actions, load_history, load_leads
from features.spec import BinaryLabel, FeatureSpec, LifecycleLabel
from training.config import TrainConfig

AS_OF = "as_of"
DAY = pd.Timedelta(days=1)


@dataclass
class TrainingSet:
    """Rows to learn from: one per (lead, cut-off), with a 0/1 column per scored stage."""

    leads: pd.DataFrame
    actions: pd.DataFrame | None
    labels: pd.DataFrame
    truth: pd.DataFrame | None  # generator's true probabilities, sample data only
    dropped: dict[str, int]
    window: tuple[str, str] | None
    #: Lead dicts (the API's shape), one per row, when rows come from the scoring log: then
    #: features are built from exactly what was scored, and ``leads`` holds only the id,
    #: ``created_at`` and ``as_of`` columns the splits need.
    records: list[dict[str, Any]] | None = None

    def subset(self, rows: np.ndarray) -> TrainingSet:
        leads = self.leads.iloc[rows].reset_index(drop=True)
        return TrainingSet(
            leads=leads,
            actions=self.actions,
            labels=self.labels.iloc[rows].reset_index(drop=True),
            truth=None if self.truth is None else self.truth.iloc[rows].reset_index(drop=True),
            dropped=self.dropped,
            window=self.window,
            records=None if self.records is None else [self.records[int(i)] for i in rows],
        )

    def as_records(self, spec: FeatureSpec) -> list[dict[str, Any]]:
        """The rows as lead dicts (what the API and the feature builder's one-lead path read)."""
        if self.records is not None:
            return self.records
        return frames_to_records(spec, self.leads, self.actions)

    def __len__(self) -> int:
        return len(self.leads)


@dataclass
class Split:
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    kind: str  # "time" or "stratified"
    embargoed: int = 0  # training rows dropped because their label overlaps validation


def load_training_set(spec: FeatureSpec, config: TrainConfig) -> TrainingSet:
    """Read the files the config names and build labelled rows for the spec's label.

    With ``config.rows`` the rows were built on Spark (:mod:`training.spark_rows`) and are
    read as they are: the same rows, with the actions already aggregated.
    """
    if config.rows is not None:
        from training.spark_rows import read_spark_rows  # it builds on this module

        return read_spark_rows(config.rows, spec)
    leads = load_leads(config.leads, spec, require_label=isinstance(spec.label, BinaryLabel))
    if isinstance(spec.label, BinaryLabel):
        labels = pd.DataFrame({spec.label.stage: leads.pop("label").to_numpy(np.int8)})
        return TrainingSet(leads, None, labels, None, {}, _window(leads, spec))
    if config.history is None:
        raise ValueError("a lifecycle label needs a stage history file (config.history)")
    ids = pd.Index(leads[spec.id_column])
    actions = load_actions(config.actions, spec, ids) if config.actions and spec.actions else None
    history = load_history(config.history, spec, ids)
    truth = _load_truth(config.truth)
    return snapshots(spec, config, leads, actions, history, truth)


def snapshots(
    spec: FeatureSpec,
    config: TrainConfig,
    leads: pd.DataFrame,
    actions: pd.DataFrame | None,
    history: pd.DataFrame,
    truth: pd.DataFrame | None = None,
    *,
    observed_until: pd.Timestamp | None = None,
) -> TrainingSet:
    """One row per lead and cut-off, labelled with the furthest stage within the horizon.

    ``observed_until`` (default: the newest timestamp of ``history`` and ``actions``) is
    given when these are one part of the data (a group of leads on Spark): the horizon
    rule must use the whole data's end, or a group would drop rows the whole keeps.
    """
    label = spec.label
    assert isinstance(label, LifecycleLabel)
    if not spec.created_at_column:
        raise ValueError("point-in-time snapshots need the spec's created_at_column")
    created = leads[spec.created_at_column]
    if observed_until is None:
        observed_until = _observed_until(history, actions)
    horizon = config.horizon_days * DAY
    frames = []
    for days in config.snapshot_days_after_created:
        frame = leads.copy()
        frame[AS_OF] = created + days * DAY
        frame["snapshot_days"] = days
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[rows[created.name].notna()]
    complete = rows[AS_OF] + horizon <= observed_until
    dropped = {"horizon_not_observed": int((~complete).sum())}
    rows = rows[complete].reset_index(drop=True)

    stage_at_cutoff = _furthest(rows[spec.id_column], history, label, rows[AS_OF])
    first_scored = label.stages.index(label.scored[0])
    fresh = stage_at_cutoff < first_scored
    dropped["already_qualified_at_cutoff"] = int((~fresh).sum())
    rows = rows[fresh].reset_index(drop=True)

    reached = _furthest(rows[spec.id_column], history, label, rows[AS_OF] + horizon)
    labels = pd.DataFrame(
        {s: (reached >= label.stages.index(s)).astype(np.int8) for s in label.scored}
    )
    rows = rows.sort_values(AS_OF, kind="stable")
    order = rows.index.to_numpy()
    rows = rows.reset_index(drop=True)
    labels = labels.iloc[order].reset_index(drop=True)
    truth_rows = _align_truth(rows, truth, spec) if truth is not None else None
    window = (str(rows[AS_OF].min()), str(rows[AS_OF].max())) if len(rows) else None
    return TrainingSet(rows, actions, labels, truth_rows, dropped, window)


def _furthest(
    ids: pd.Series, history: pd.DataFrame, label: LifecycleLabel, until: pd.Series
) -> np.ndarray:
    """Index of the furthest stage each row's lead reached at or before ``until``."""
    order = {s: i for i, s in enumerate(label.stages)}
    left = pd.DataFrame(
        {"row": np.arange(len(ids)), "lead_id": ids.to_numpy(), "until": until.to_numpy()}
    )
    merged = left.merge(history, on="lead_id", how="inner")
    merged = merged[merged["reached_at"] <= merged["until"]]
    best = np.zeros(len(ids), dtype=np.int64)
    if len(merged):
        stage_idx = merged["stage"].map(order).to_numpy(np.int64)
        np.maximum.at(best, merged["row"].to_numpy(), stage_idx)
    return best


def _observed_until(history: pd.DataFrame, actions: pd.DataFrame | None) -> pd.Timestamp:
    """The last moment the data can speak for: its newest timestamp."""
    stamps = [history["reached_at"].max()]
    if actions is not None and len(actions):
        stamps.append(actions["occurred_at"].max())
    return max(stamps)


def _load_truth(path: Path | None) -> pd.DataFrame | None:
    if path is None or not Path(path).exists():
        return None
    truth = pd.read_csv(path)
    truth["decision_at"] = pd.to_datetime(truth["decision_at"], utc=True, format="ISO8601")
    return truth


def _align_truth(rows: pd.DataFrame, truth: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The generator's true probabilities, only where the row's cut-off is its decision time."""
    merged = rows[[spec.id_column, AS_OF]].merge(
        truth, left_on=spec.id_column, right_on="lead_id", how="left", suffixes=("", "_truth")
    )
    at_decision = merged["decision_at"] == merged[AS_OF]
    cols = [c for c in truth.columns if c.startswith("p_")]
    out = merged[cols].copy()
    out.loc[~at_decision.to_numpy(), cols] = np.nan
    return out.reset_index(drop=True)


def _window(leads: pd.DataFrame, spec: FeatureSpec) -> tuple[str, str] | None:
    if spec.created_at_column and spec.created_at_column in leads.columns:
        col = leads[spec.created_at_column]
        return (str(col.min()), str(col.max()))
    return None


def split(data: TrainingSet, spec: FeatureSpec, config: TrainConfig) -> Split:
    """Time-ordered split by lead when rows have a cut-off time, stratified otherwise."""
    if AS_OF in data.leads.columns:
        return _time_split(data.leads, spec, config)
    top = data.labels.columns[-1]
    return _stratified_split(data.labels[top].to_numpy(), config)


def _time_split(rows: pd.DataFrame, spec: FeatureSpec, config: TrainConfig) -> Split:
    """Leads ordered by their first cut-off; the newest go to test, the next to validation."""
    first = rows.groupby(spec.id_column, sort=False)[AS_OF].transform("min")
    lead_order = first.rank(method="dense").to_numpy()
    n_leads = int(lead_order.max())
    test_from = n_leads * (1 - config.test_share)
    val_from = test_from - n_leads * config.validation_share
    test = np.flatnonzero(lead_order > test_from)
    validation = np.flatnonzero((lead_order > val_from) & (lead_order <= test_from))
    train = np.flatnonzero(lead_order <= val_from)
    # Embargo: a training label looks `horizon` days past its cut-off; one that would
    # look into the validation period is dropped, so no outcome from the evaluated
    # months shapes the model.
    if len(validation):
        as_of = rows[AS_OF]
        first_validation = as_of.iloc[validation].min()
        ends = as_of.iloc[train] + pd.Timedelta(days=config.horizon_days)
        kept = (ends <= first_validation).to_numpy()
        return Split(train[kept], validation, test, "time", embargoed=int((~kept).sum()))
    return Split(train, validation, test, "time")


def _stratified_split(y: np.ndarray, config: TrainConfig) -> Split:
    idx = np.arange(len(y))
    rest, test = train_test_split(
        idx, test_size=config.test_share, stratify=y, random_state=config.seed
    )
    val_share = config.validation_share / (1 - config.test_share)
    train, validation = train_test_split(
        rest, test_size=val_share, stratify=y[rest], random_state=config.seed
    )
    return Split(np.sort(train), np.sort(validation), np.sort(test), "stratified")


def describe(data: TrainingSet, split_: Split) -> dict[str, Any]:
    """Sizes and positive rates per split, for the run log and the model card."""
    out: dict[str, Any] = {
        "split": split_.kind,
        **{f"dropped_{k}": v for k, v in data.dropped.items()},
        # Values a missing token or numeric sentinel turned into "no value", per field.
        MISSING_TOKEN_COUNTS: dict(data.leads.attrs.get(MISSING_TOKEN_COUNTS, {})),
    }
    for name, rows in (("train", split_.train), ("val", split_.validation), ("test", split_.test)):
        out[f"n_{name}"] = len(rows)
        for stage in data.labels.columns:
            out[f"rate_{name}_{stage}"] = float(data.labels[stage].to_numpy()[rows].mean())
    return out
