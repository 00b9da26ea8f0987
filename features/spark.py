"""Features on Apache Spark: the builder's own definition, applied per group of leads.

For tables too big for one machine (billions of action events, tens of millions of
leads) the feature *definition* must not fork: here Spark only moves data. Leads and
actions are hashed by lead id into groups (``pmod(xxhash64(id), groups)``), co-grouped
(one shuffle), and each group, a few thousand leads with all their actions, goes
through the very pandas code single-machine scoring runs: the loaders' checks
(:func:`features.loaders.parse_leads`, :func:`features.loaders.parse_actions`) and the
builder's action aggregation (:func:`features.builder.action_aggregates`), by Arrow
(``applyInPandas``). Expressing windows, decay and active days in Spark SQL instead
would be a second definition to keep identical forever; this way there is one.

The result is a *feature table*: one row per lead (per lead and cut-off for training
rows) with the id, the created-at time, the profile fields as the loaders type them and
the pre-aggregated action columns. Any readiness model scores it as pre-aggregated
input, and training reads it like any pre-aggregated table.

PySpark is an optional extra (``pip install leadscore[spark]``); this module is only
imported when a Spark engine is asked for.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.batch import AS_OF_KEY, aggregated_columns
from features.builder import action_aggregates
from features.loaders import (
    ACTION_TYPE,
    LEAD_ID,
    OCCURRED_AT,
    DataError,
    lead_columns,
    parse_actions,
    parse_leads,
)
from features.spec import BooleanField, CategoricalField, FeatureSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

#: Leads per co-group by default: big enough that per-group overhead (an Arrow batch, a
#: pandas frame) is small, small enough that a group's actions fit a worker's memory.
LEADS_PER_GROUP = 20_000
GROUP = "_group"
_ROWS_IN_MESSAGE = re.compile(r" \((?:rows?|line) [^)]*\)")


def local_session(
    app: str = "leadscore", *, master: str | None = None, shuffle_partitions: int | None = None
) -> SparkSession:
    """A SparkSession for a job or a test on this machine, or the one already running.

    Workers must run this interpreter (``PYSPARK_PYTHON``): with Python from ``PATH`` they
    fail with ``No module named 'pandas'``. The web UI is off (it takes a port and start-up
    time); ``shuffle_partitions`` defaults to twice the cores of a local master.
    """
    from pyspark.sql import SparkSession

    if master is None or master.startswith("local"):
        # Only where the workers are this machine: a cluster's executors have their own
        # Python (set PYSPARK_PYTHON for them as the cluster documents).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app)
    if master is not None:
        builder = builder.master(master)
    partitions = shuffle_partitions or 2 * (os.cpu_count() or 1)
    return (
        builder.config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )


def read_table(
    spark: SparkSession, path: str, spec: FeatureSpec, *, multiline: bool = True
) -> DataFrame:
    """A leads or actions table (CSV, gzipped CSV or Parquet, a file or a folder of parts).

    CSV by suffix (``.csv``, ``.csv.gz``) or a local folder of CSV parts; else Parquet.
    ``multiline``: quoted values may span lines (a leads file's notes); Spark then reads
    each CSV file in one task, so pass False for an actions table (ids, types and times
    never hold a line break) and Spark splits the file across cores.
    CSV is read with every column as text, in the spec's format, as the loaders read it:
    types are the loaders' business, not Spark's inference.
    """
    if _is_csv(path):
        return (
            spark.read.option("header", "true")
            .option("sep", spec.csv.delimiter)
            .option("quote", spec.csv.quotechar)
            .option("escape", spec.csv.quotechar)
            .option("encoding", spec.csv.encoding)
            .option("multiLine", "true" if multiline else "false")
            .option("inferSchema", "false")
            .csv(path)
        )
    return spark.read.parquet(path)


def _is_csv(path: str) -> bool:
    """CSV by suffix, or a local folder of CSV parts (Spark's own CSV output)."""
    lower = path.rstrip("/").lower()
    if lower.endswith((".csv", ".csv.gz")):
        return True
    folder = Path(path)
    return "://" not in path and folder.is_dir() and any(folder.glob("*.csv*"))


def feature_schema(spec: FeatureSpec, *, aggregated: bool = True) -> StructType:
    """The feature table's columns: id, created-at, profile fields, action aggregates."""
    from pyspark.sql.types import (
        BooleanType,
        DoubleType,
        StringType,
        StructField,
        StructType,
        TimestampType,
    )

    fields = [StructField(spec.id_column, StringType(), False)]
    if spec.created_at_column:
        fields.append(StructField(spec.created_at_column, TimestampType(), True))
    for f in spec.feature_fields:
        kind: Any = DoubleType()
        if isinstance(f, CategoricalField):
            kind = StringType()
        elif isinstance(f, BooleanField):
            kind = BooleanType()
        fields.append(StructField(f.name, kind, True))
    if aggregated:
        fields += [StructField(c, DoubleType(), True) for c in aggregated_columns(spec)]
    return StructType(fields)


def lead_features(
    leads: DataFrame,
    actions: DataFrame | None,
    spec: FeatureSpec,
    *,
    as_of: pd.Timestamp,
    leads_per_group: int = LEADS_PER_GROUP,
    names: tuple[str, str] = ("leads", "actions"),
) -> DataFrame:
    """The feature table of ``leads`` as of ``as_of``, built on Spark.

    ``leads`` and ``actions`` are raw tables (columns as the spec's sources name them,
    e.g. from :func:`read_table`). Without ``actions`` the leads must carry the
    pre-aggregated action columns already; they are checked and passed through. A file
    the loaders would refuse is refused here too, with their message (naming the column;
    row numbers are not file lines on Spark, so they are left out).
    """
    if actions is None or spec.actions is None:
        return _parsed_leads(leads, spec, names[0])
    n_groups = max(1, -(-leads.count() // leads_per_group))
    keyed_leads = with_group(leads, spec.id_column, n_groups).select(GROUP, *lead_columns(spec))
    action_id = spec.actions.lead_id_column
    keyed_actions = with_group(actions, action_id, n_groups).select(
        GROUP, action_id, spec.actions.type_column, spec.actions.timestamp_column
    )
    build = _group_builder(spec, as_of, names)
    return (
        keyed_leads.groupBy(GROUP)
        .cogroup(keyed_actions.groupBy(GROUP))
        .applyInPandas(build, schema=feature_schema(spec))
    )


def to_spark_rows(features: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """A typed feature frame in the feature table's Spark types (booleans as True/False/None)."""
    out = features.copy()
    for f in spec.feature_fields:
        if isinstance(f, BooleanField) and f.name in out.columns:
            values = out[f.name].to_numpy(dtype=np.float64)
            flags = np.where(np.isnan(values), None, values == 1.0)
            out[f.name] = pd.Series(flags, index=out.index, dtype=object)
    return out


def spark_refusal(error: BaseException) -> DataError | None:
    """The loaders' refusal inside a Spark task, recovered from Spark's exception, or None.

    Spark re-raises a worker's exception as its own type with the worker's traceback in
    the text; the last ``DataError: <file>: <message>`` line of it is the refusal.
    """
    text = str(error)
    found = re.findall(r"DataError: ([^\n]+)", text)
    if not found:
        return None
    file, _, message = found[-1].partition(": ")
    return DataError(file, message)


# --------------------------------------------------------------------------------------
# Inside the Spark tasks (plain pandas; shipped to the workers with their closures)
# --------------------------------------------------------------------------------------


def with_group(frame: DataFrame, id_column: str, n_groups: int) -> DataFrame:
    """``frame`` with its lead's group: ``pmod(xxhash64(id as text), n_groups)``."""
    from pyspark.sql import functions as sf

    key = sf.col(f"`{id_column}`").cast("string")
    return frame.withColumn(GROUP, sf.pmod(sf.xxhash64(key), sf.lit(n_groups)))


def _parsed_leads(leads: DataFrame, spec: FeatureSpec, name: str) -> DataFrame:
    aggregated = spec.actions is not None
    wanted = lead_columns(spec) + (aggregated_columns(spec) if aggregated else [])

    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            parsed = _refusing(parse_leads, name, batch, spec, aggregated=aggregated)
            yield to_spark_rows(parsed, spec)

    present = [c for c in wanted if c in leads.columns]
    if len(present) < len(wanted):
        missing = next(c for c in wanted if c not in leads.columns)
        raise DataError(name, f"missing column '{missing}'", column=missing)
    schema = feature_schema(spec, aggregated=aggregated)
    return leads.select(*[f"`{c}`" for c in wanted]).mapInPandas(parse, schema=schema)


def _group_builder(
    spec: FeatureSpec, as_of: pd.Timestamp, names: tuple[str, str]
) -> Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]:
    """The function each co-group runs: check, aggregate, return one row per lead."""
    agg_names = aggregated_columns(spec)

    def build(leads: pd.DataFrame, actions: pd.DataFrame) -> pd.DataFrame:
        if not len(leads):
            if len(actions):  # every action's lead is missing from the leads table
                raise _unknown_leads(names[1], spec, len(actions))
            return pd.DataFrame(columns=feature_schema(spec).fieldNames())
        leads = leads.drop(columns=[GROUP]).reset_index(drop=True)
        parsed = _refusing(parse_leads, names[0], leads, spec)
        events = _group_events(actions, spec, set(parsed[spec.id_column]), names[1])
        values = action_aggregates(spec, parsed, events, as_of)
        out = to_spark_rows(parsed, spec)
        aggregates = pd.DataFrame(values, columns=agg_names, index=out.index)
        return pd.concat([out, aggregates], axis=1)

    return build


def _unknown_leads(name: str, spec: FeatureSpec, count: int) -> DataError:
    """The loaders' refusal of actions whose leads are not in the leads table."""
    column = spec.actions.lead_id_column if spec.actions else LEAD_ID
    phrase = "actions belong to leads that are" if count > 1 else "action belongs to a lead that is"
    return DataError(
        name, f"column '{column}': {count} {phrase} not in the leads table", column=column
    )


def _group_events(
    actions: pd.DataFrame, spec: FeatureSpec, known: set[str], name: str
) -> pd.DataFrame:
    """A group's actions, checked; in time order, since a shuffle does not keep file order."""
    if not len(actions):
        return pd.DataFrame(
            {
                LEAD_ID: pd.Series([], dtype=object),
                ACTION_TYPE: pd.Series([], dtype=object),
                OCCURRED_AT: pd.Series([], dtype="datetime64[ns, UTC]"),
            }
        )
    actions = actions.drop(columns=[GROUP]).reset_index(drop=True)
    events = _refusing(
        parse_actions, name, actions, spec, known=lambda ids: ids.isin(known).to_numpy()
    )
    return events.sort_values([LEAD_ID, OCCURRED_AT], kind="stable").reset_index(drop=True)


def _refusing(parse: Callable[..., pd.DataFrame], *args: Any, **kwargs: Any) -> pd.DataFrame:
    """Run a loader on a Spark batch; its refusal loses row numbers (not file lines here)."""
    try:
        return parse(*args, **kwargs)
    except DataError as exc:
        detail = _ROWS_IN_MESSAGE.sub("", exc.detail)
        raise DataError(exc.file, detail, column=exc.column) from None


def as_of_text(as_of: pd.Timestamp) -> str:
    """The cut-off as the pyfunc reads it (``as_of`` key): ISO-8601 UTC, microseconds."""
    return as_of.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


__all__ = [
    "AS_OF_KEY",
    "GROUP",
    "LEADS_PER_GROUP",
    "as_of_text",
    "feature_schema",
    "lead_features",
    "local_session",
    "read_table",
    "spark_refusal",
    "to_spark_rows",
    "with_group",
]
