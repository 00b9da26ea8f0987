"""Training rows built on Spark: the point-in-time snapshots ``train`` builds, aggregated.

A huge event log does not fit one machine, but the training rows made from it do: one
row per lead and cut-off (created-at + N days) with the lead's profile, its action
aggregates *as of* that cut-off, and a 0/1 label per scored stage (reached within the
horizon after the cut-off). This job builds exactly :func:`training.dataset.snapshots`'
rows on Spark: leads, actions and stage history are grouped by lead id and each group
runs the same pandas code (the loaders' checks, ``snapshots`` itself with the whole
data's end as ``observed_until``, and the builder's aggregation). The table it writes is
small (leads x snapshots x ~90 numbers), and :func:`read_spark_rows` turns it into the
:class:`~training.dataset.TrainingSet` the training pipeline takes, which then trains
LightGBM on one machine as usual (features from pre-aggregated columns are the
builder's own, so the model is the one ``train`` would fit on the raw files).

Where the line is: training holds every row in memory. Measured here, training on
300,000 rows (100,000 leads x 3 snapshots, ~90 features) peaks at 1.3 GiB, about 4.5 KB
a row with LightGBM's copy and the evaluation, so a 16 GB machine trains ~3 M rows
(1 M leads x 3 snapshots) and the event log behind them can be any size. Beyond that,
sample leads (keep every positive, weight the rest) or keep fewer snapshots per lead;
the Spark side has no such limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.batch import aggregated_columns
from features.builder import action_aggregates
from features.loaders import (
    DataError,
    action_columns,
    history_columns,
    lead_columns,
    parse_actions,
    parse_history,
    parse_leads,
)
from features.spec import FeatureSpec, LifecycleLabel
from training.config import TrainConfig
from training.dataset import AS_OF, TrainingSet, snapshots

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

SNAPSHOT_DAYS = "snapshot_days"
LABEL_PREFIX = "label_"
_KIND, _WHAT, _AT, _ID = "_kind", "_what", "_at", "_lead"
_ACTION, _STAGE = "action", "stage"
_UNKNOWN = "stage changes belong to leads that are not in the leads table"


def training_rows(
    leads: DataFrame,
    actions: DataFrame | None,
    history: DataFrame,
    spec: FeatureSpec,
    config: TrainConfig,
    *,
    leads_per_group: int = 20_000,
) -> DataFrame:
    """The snapshots of ``leads`` (raw tables, as the files spell them) as a Spark table.

    Columns: the feature table's (:func:`features.spark.feature_schema`), ``as_of``,
    ``snapshot_days`` and ``label_<stage>`` (0/1) per scored stage.
    """
    from features.spark import GROUP, with_group

    label = spec.label
    if not isinstance(label, LifecycleLabel):
        raise ValueError("training rows on Spark need a lifecycle label (a stage history)")
    until = observed_until(actions, history, spec)
    n_groups = max(1, -(-leads.count() // leads_per_group))
    keyed_leads = with_group(leads, spec.id_column, n_groups).select(GROUP, *lead_columns(spec))
    events = _events(actions, history, spec)
    keyed_events = with_group(events, _ID, n_groups)
    build = _group_rows(spec, config, until)
    return (
        keyed_leads.groupBy(GROUP)
        .cogroup(keyed_events.groupBy(GROUP))
        .applyInPandas(build, schema=rows_schema(spec))
    )


def rows_schema(spec: FeatureSpec) -> StructType:
    from pyspark.sql.types import IntegerType, LongType, StructField, TimestampType

    from features.spark import feature_schema

    schema = feature_schema(spec)
    schema = schema.add(StructField(AS_OF, TimestampType(), False))
    schema = schema.add(StructField(SNAPSHOT_DAYS, LongType(), False))
    assert isinstance(spec.label, LifecycleLabel)
    for stage in spec.label.scored:
        schema = schema.add(StructField(f"{LABEL_PREFIX}{stage}", IntegerType(), False))
    return schema


def observed_until(
    actions: DataFrame | None, history: DataFrame, spec: FeatureSpec
) -> pd.Timestamp:
    """The newest timestamp of the history and the actions: where the data ends."""
    from pyspark.sql import functions as sf

    def newest(parse: Callable[[pd.DataFrame], pd.Series]) -> Callable[..., Iterator[pd.DataFrame]]:
        def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for batch in batches:
                stamps = parse(batch.reset_index(drop=True))
                if len(stamps):
                    yield pd.DataFrame({"t": [stamps.max()]})

        return run

    tables = [(history, lambda b: parse_history("stage history", b, spec)["reached_at"])]
    if actions is not None:
        tables.append((actions, lambda b: parse_actions("actions", b, spec)["occurred_at"]))
    ends = []
    for table, parse in tables:
        found = table.mapInPandas(newest(parse), schema="t timestamp").agg(sf.max("t")).first()
        if found is not None and found[0] is not None:
            ends.append(pd.Timestamp(found[0]).tz_localize("UTC"))
    if not ends:
        raise DataError("stage history", "the stage history file has no rows")
    return max(ends)


def read_spark_rows(source: Path | str | pd.DataFrame, spec: FeatureSpec) -> TrainingSet:
    """Spark-built rows (a Parquet folder or a frame) as the set ``train`` learns from."""
    frame = pd.read_parquet(source) if not isinstance(source, pd.DataFrame) else source.copy()
    assert isinstance(spec.label, LifecycleLabel)
    label_columns = [f"{LABEL_PREFIX}{s}" for s in spec.label.scored]
    for column in (spec.created_at_column, AS_OF):
        if column and column in frame.columns:
            frame[column] = _utc(frame[column])
    frame = frame.sort_values([AS_OF, spec.id_column, SNAPSHOT_DAYS], kind="stable")
    frame = frame.reset_index(drop=True)
    labels = pd.DataFrame(
        {
            s: frame[c].to_numpy(np.int8)
            for s, c in zip(spec.label.scored, label_columns, strict=True)
        }
    )
    leads = frame.drop(columns=label_columns)
    window = (str(leads[AS_OF].min()), str(leads[AS_OF].max())) if len(leads) else None
    return TrainingSet(leads, None, labels, None, {}, window)


# --------------------------------------------------------------------------------------
# Inside the Spark tasks
# --------------------------------------------------------------------------------------


def _events(actions: DataFrame | None, history: DataFrame, spec: FeatureSpec) -> DataFrame:
    """Actions and stage changes in one table (a co-group takes two sides, not three)."""
    from pyspark.sql import functions as sf

    def shaped(table: DataFrame, columns: tuple[str, str, str], kind: str) -> DataFrame:
        lead, what, at = (sf.col(f"`{c}`").cast("string") for c in columns)
        return table.select(
            lead.alias(_ID), sf.lit(kind).alias(_KIND), what.alias(_WHAT), at.alias(_AT)
        )

    events = shaped(history, history_columns(spec), _STAGE)
    if actions is not None and spec.actions is not None:
        events = events.unionByName(shaped(actions, tuple(action_columns(spec)), _ACTION))  # type: ignore[arg-type]
    return events


def _group_rows(
    spec: FeatureSpec, config: TrainConfig, until: pd.Timestamp
) -> Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]:
    from features.spark import GROUP, to_spark_rows

    names = rows_schema(spec).fieldNames()
    aggregated = aggregated_columns(spec)

    def build(leads: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
        if not len(leads):
            if len(events):
                raise DataError("stage history", _UNKNOWN)
            return pd.DataFrame(columns=names)
        parsed = parse_leads("leads", leads.drop(columns=[GROUP]).reset_index(drop=True), spec)
        known = set(parsed[spec.id_column])
        actions = _part(events, _ACTION, action_columns(spec), spec, known)
        history = _part(events, _STAGE, list(history_columns(spec)), spec, known)
        assert history is not None
        data = snapshots(spec, config, parsed, actions, history, observed_until=until)
        rows = data.leads
        if actions is not None and len(rows):
            values = action_aggregates(spec, rows, actions)
        else:
            values = np.zeros((len(rows), len(aggregated)))
        out = to_spark_rows(rows, spec)
        out = pd.concat([out, pd.DataFrame(values, columns=aggregated, index=out.index)], axis=1)
        for stage in data.labels.columns:
            out[f"{LABEL_PREFIX}{stage}"] = data.labels[stage].to_numpy(np.int32)
        return out[names]

    return build


def _part(
    events: pd.DataFrame, kind: str, columns: list[str], spec: FeatureSpec, known: set[str]
) -> pd.DataFrame | None:
    """One kind of event of a group, under the spec's column names, checked by the loaders."""
    if kind == _ACTION and spec.actions is None:
        return None
    if len(events):
        part = events[events[_KIND] == kind]
        sources = (_ID, _WHAT, _AT)
        frame = pd.DataFrame(
            {c: part[s].to_numpy(dtype=object) for c, s in zip(columns, sources, strict=True)}
        )
    else:
        frame = pd.DataFrame({c: np.array([], dtype=object) for c in columns})
    if kind == _ACTION:
        checked = parse_actions(
            "actions", frame, spec, known=lambda ids: ids.isin(known).to_numpy()
        )
        # A shuffle does not keep file order: time order is reproducible.
        return checked.sort_values(["lead_id", "occurred_at"], kind="stable").reset_index(drop=True)
    history = parse_history("stage history", frame, spec)
    unknown = ~history["lead_id"].isin(known)
    if unknown.any():
        raise DataError("stage history", _UNKNOWN)
    return history


def _utc(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values)
    return stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
