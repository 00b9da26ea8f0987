"""Batch scoring on Apache Spark: the same scores as ``leadscore score``, for big tables.

    leadscore score --engine spark --leads s3://.../leads/ --actions s3://.../actions/
        --out s3://.../scores.parquet --model models:/lead-readiness@champion

or, inside a user's own Spark job::

    from serving.batch.spark import score_tables
    scores = score_tables(spark, leads_df, actions_df, "models:/lead-readiness@champion")

Two steps, each on the project's own definitions rather than a copy of them:

1. **Features**: :func:`features.spark.lead_features` groups leads with their actions
   and runs the loaders' checks and the builder's aggregation on each group (Arrow,
   ``applyInPandas``), giving a feature table of pre-aggregated rows.
2. **Scoring**: ``mlflow.pyfunc.spark_udf`` on the registered model, pinned to the
   version the alias named when the job started (a promotion during a long job cannot
   mix two models in one output). The pyfunc scores pre-aggregated rows with the
   builder's own code, so each lead's probabilities, score, grade and category are those
   ``leadscore score`` and the API give (tested row by row).

Before Spark reads a single row, the model version is downloaded and checked exactly as
the service checks a model (:func:`serving.batch.job.load_model`: the separate-process
verifier, spec, golden rows), so a missing or corrupt version fails with one line and no
output. The output is written to a temporary folder beside ``--out`` and renamed into
place when complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from features.batch import AS_OF_KEY, aggregated_columns
from features.spec import FeatureSpec
from models.registry_fetch import is_registry_uri
from serving.batch.job import UsageError, load_model
from serving.batch.output import scores_schema
from serving.settings import ServingSettings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType


@dataclass(frozen=True)
class CheckedModel:
    """A registered version that passed the service's checks: what the job scores with."""

    name: str
    version: str
    spec: FeatureSpec
    stages: list[str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def check_model(uri: str, settings: ServingSettings) -> CheckedModel:
    """Resolve ``uri`` to a version, download it and check it as the service would.

    Raises :class:`serving.model_store.ModelLoadError` (a missing version, a corrupt
    file, a registry that does not answer) before any Spark work starts.
    """
    if not is_registry_uri(uri):
        raise UsageError(
            f"{uri}: the Spark engine scores a registered model "
            "(models:/<name>@<alias> or models:/<name>/<version>); register the folder first"
        )
    with tempfile.TemporaryDirectory(prefix="leadscore-spark-model-") as scratch:
        served = load_model(uri, settings, Path(scratch))
        model = served.model
        checked = CheckedModel(served.name, served.version, model.builder.spec, model.stages)
    _check_signature(checked, settings)
    return checked


def _check_signature(checked: CheckedModel, settings: ServingSettings) -> None:
    """Refuse a version logged before its signature took pre-aggregated columns.

    MLflow drops input columns its signature does not list, so such a model would score
    the feature table as leads without any action: wrong scores, without an error.
    """
    import mlflow

    if checked.spec.actions is None:
        return
    tracking = settings.resolved_tracking_uri()
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    signature = mlflow.models.get_model_info(checked.uri).signature
    names = set() if signature is None else set(signature.inputs.input_names())
    if not set(aggregated_columns(checked.spec)) <= names:
        raise UsageError(
            f"{checked.name} version {checked.version} was logged before Spark scoring "
            "(its signature has no pre-aggregated action columns); train and register it "
            "again, then score on Spark"
        )


def score_tables(
    spark: SparkSession,
    leads: DataFrame,
    actions: DataFrame | None,
    model_uri: str,
    *,
    as_of: pd.Timestamp | None = None,
    reasons: int = 0,
    settings: ServingSettings | None = None,
) -> DataFrame:
    """Scores of ``leads`` (raw tables, as the files spell them) as a Spark DataFrame.

    Columns as ``leadscore score`` writes them: ``lead_id``, ``p_<stage>``, ``score``,
    ``grade``, ``category``, ``reasons`` (only with ``reasons`` > 0), ``model_version``.
    The model is checked first (see :func:`check_model`).
    """
    settings = settings or ServingSettings()
    checked = check_model(model_uri, settings)
    return score_checked(spark, leads, actions, checked, settings, as_of=as_of, reasons=reasons)


def score_checked(
    spark: SparkSession,
    leads: DataFrame,
    actions: DataFrame | None,
    checked: CheckedModel,
    settings: ServingSettings,
    *,
    as_of: pd.Timestamp | None = None,
    reasons: int = 0,
    names: tuple[str, str] = ("leads", "actions"),
) -> DataFrame:
    """:func:`score_tables` for a model already checked; ``names`` name the inputs in errors."""
    from features.spark import lead_features

    cut_off = _utc(as_of)
    features = lead_features(leads, actions, checked.spec, as_of=cut_off, names=names)
    return score_features(spark, features, checked, settings, as_of=cut_off, reasons=reasons)


def score_features(
    spark: SparkSession,
    features: DataFrame,
    checked: CheckedModel,
    settings: ServingSettings,
    *,
    as_of: pd.Timestamp,
    reasons: int = 0,
) -> DataFrame:
    """Score a feature table (:func:`features.spark.lead_features`) with ``spark_udf``."""
    import mlflow
    from pyspark.sql import functions as sf

    from features.spark import as_of_text

    spec = checked.spec
    tracking = settings.resolved_tracking_uri()
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    udf = mlflow.pyfunc.spark_udf(
        spark,
        checked.uri,
        result_type=result_type(checked.stages, reasons=bool(reasons)),
        env_manager="local",
        params={"reasons": reasons, "reasons_format": "text"},
    )
    columns = [sf.col(spec.id_column).alias(spec.id_column)]
    columns += [sf.col(f"`{f.name}`") for f in spec.feature_fields]
    if spec.created_at_column:
        created = sf.date_format(sf.col(spec.created_at_column), "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'")
        columns.append(created.alias(spec.created_at_column))
    columns.append(sf.lit(as_of_text(as_of)).alias(AS_OF_KEY))
    if spec.actions is not None:
        columns += [sf.col(f"`{c}`") for c in aggregated_columns(spec)]
    scored = features.select(udf(sf.struct(*columns)).alias("s")).select("s.*")
    names = scores_schema(checked.stages, reasons=bool(reasons)).names
    # The registry version, as the single-machine scorer writes it (the model folder
    # inside the pyfunc only knows its training run).
    return scored.withColumn("model_version", sf.lit(checked.version)).select(*names)


def result_type(stages: list[str], *, reasons: bool) -> StructType:
    """The pyfunc's output as a Spark struct: the scores file's columns."""
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

    kinds = {"double": DoubleType(), "int64": LongType(), "string": StringType()}
    fields = []
    for field in scores_schema(stages, reasons=reasons):
        kind = "double" if str(field.type) == "double" else str(field.type)
        fields.append(StructField(field.name, kinds[kind], True))
    return StructType(fields)


def write_scores(scores: DataFrame, out: str) -> None:
    """Write a Spark scores table to ``out`` (Parquet, or CSV with a header for ``.csv``).

    A folder of part files, as Spark writes, put in place by one rename of a temporary
    sibling once every part is written: a failed job leaves no half output behind.
    Local paths only get the rename; other file systems get Spark's own commit.
    """
    csv = out.rstrip("/").lower().endswith(".csv")
    if "://" in out and not out.startswith("file://"):
        writer = scores.write.mode("errorifexists")
        (writer.option("header", "true").csv(out) if csv else writer.parquet(out))
        return
    target = Path(out.removeprefix("file://"))
    if target.exists():
        raise UsageError(f"{target.name}: already exists; choose another --out or remove it")
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        writer = scores.write.mode("errorifexists")
        if csv:
            writer.option("header", "true").csv(str(staging))
        else:
            writer.parquet(str(staging))
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@dataclass
class SparkSummary:
    leads: int
    seconds: float
    model: str
    out: str

    def line(self) -> str:
        rate = self.leads / self.seconds if self.seconds > 0 else 0.0
        return (
            f"scored {self.leads:,} leads with {self.model} on Spark in {self.seconds:.1f} s "
            f"({rate:,.0f} leads/s) -> {self.out}"
        )


def run_files(
    leads: str,
    actions: str | None,
    out: str,
    model_uri: str,
    settings: ServingSettings,
    *,
    as_of: pd.Timestamp | None = None,
    reasons: int = 0,
    master: str | None = None,
    features_out: str | None = None,
) -> SparkSummary:
    """``leadscore score --engine spark``: files (or folders of parts) in, a scores folder out.

    With ``features_out`` the feature table (one pre-aggregated row per lead, Parquet,
    one part per group of leads) is written there first and scored from there, so it can
    be kept, inspected or scored again with another model without the events.
    """
    from features.spark import lead_features, local_session, read_table

    started = time.perf_counter()
    checked = check_model(model_uri, settings)  # before Spark starts: fail fast, write nothing
    spark = local_session("leadscore-score", master=master)
    lead_table = read_table(spark, leads, checked.spec)
    action_table = (
        None if actions is None else read_table(spark, actions, checked.spec, multiline=False)
    )
    if action_table is not None and checked.spec.actions is None:
        raise UsageError(f"the model's spec '{checked.spec.name}' has no actions table")
    names = (Path(leads).name, Path(actions).name if actions else "actions")
    if features_out is None:
        scores = score_checked(
            spark, lead_table, action_table, checked, settings, as_of=as_of, reasons=reasons,
            names=names,
        )  # fmt: skip
    else:
        cut_off = _utc(as_of)
        features = lead_features(lead_table, action_table, checked.spec, as_of=cut_off, names=names)
        features.write.mode("errorifexists").parquet(features_out)
        table = spark.read.parquet(features_out)
        scores = score_features(spark, table, checked, settings, as_of=cut_off, reasons=reasons)
    write_scores(scores, out)
    written = spark.read.option("header", "true")
    n = (
        written.csv(out) if out.rstrip("/").lower().endswith(".csv") else written.parquet(out)
    ).count()
    return SparkSummary(
        leads=n,
        seconds=time.perf_counter() - started,
        model=f"{checked.name} version {checked.version}",
        out=out,
    )


def _utc(as_of: pd.Timestamp | None) -> pd.Timestamp:
    if as_of is None:
        return pd.Timestamp.now(tz="UTC")
    return as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
