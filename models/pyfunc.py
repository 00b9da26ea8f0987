"""The readiness model as an MLflow pyfunc, so any MLflow tool can load and serve it.

``mlflow.pyfunc.load_model``, ``mlflow models serve`` and ``spark_udf`` all speak
pandas: a frame in, a frame out. Each input row is one lead: its profile fields by
canonical name, optionally ``as_of`` (default: now) and ``actions``, a list of
``{"type", "at"}`` objects (or the same list as a JSON string, which is what some
clients can send through a flat table). The saved model folder itself (JSON plus
LightGBM text files) travels as an artifact; this class only adapts the interface.

The class is logged by MLflow's models-from-code route (:data:`MODEL_CODE`, a file that
calls ``mlflow.models.set_model``): no Python object is pickled, so a registered model
loads with the code it names and nothing else.
"""

from __future__ import annotations

import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import (
    Array,
    ColSpec,
    Object,
    ParamSchema,
    ParamSpec,
    Property,
    Schema,
    TensorSpec,
)

from features.batch import (
    ACTION_TIME_KEY,
    ACTION_TYPE_KEY,
    ACTIONS_KEY,
    AS_OF_KEY,
    aggregated_columns,
)
from features.spec import BooleanField, CategoricalField, FeatureSpec
from models.readiness import ReadinessModel

ARTIFACT_KEY = "readiness_model"
#: The file MLflow logs as the model's code and runs at load time (models from code).
MODEL_CODE = Path(__file__).with_name("mlflow_entry.py")
#: Packages the model needs at load time, pinned to the versions it was trained with.
RUNTIME_PACKAGES = ("lightgbm", "numpy", "pandas", "scikit-learn", "pydantic", "PyYAML", "mlflow")


class ReadinessPyfunc(PythonModel):
    """Adapter: pandas rows of leads → probabilities, score, grade, category, reasons."""

    def load_context(self, context: Any) -> None:
        self.model = ReadinessModel.load(context.artifacts[ARTIFACT_KEY])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        params = params or {}
        reasons = int(params.get("reasons", 3))
        text = params.get("reasons_format", "json") == "text"
        if is_aggregated_table(model_input, self.model.builder.spec):
            return score_table(self.model, model_input, reasons=reasons, text_reasons=text)
        rows = model_input.to_dict(orient="records")
        records = [_clean_record({str(k): v for k, v in r.items()}) for r in rows]
        return score_records(self.model, records, reasons=reasons, text_reasons=text)


def is_aggregated_table(frame: pd.DataFrame, spec: FeatureSpec) -> bool:
    """Leads with their action aggregates as columns (a feature table) and no action lists."""
    if spec.actions is None or ACTIONS_KEY in frame.columns:
        return False
    return set(aggregated_columns(spec)) <= {str(c) for c in frame.columns}


def score_table(
    model: ReadinessModel, frame: pd.DataFrame, *, reasons: int = 3, text_reasons: bool = False
) -> pd.DataFrame:
    """Score a pre-aggregated table column-wise (the builder's table path, no dict per lead).

    The same features as :func:`score_records` gives the same rows as dicts (the builder
    has one definition for both shapes); about 10x faster, which is what ``spark_udf``
    over a feature table needs.
    """
    frame = frame.reset_index(drop=True)
    matrix = model.builder.build(frame)
    id_column = model.builder.spec.id_column
    ids: list[str | None] = [None] * len(frame)
    if id_column in frame.columns:
        ids = [None if pd.isna(v) else str(v) for v in frame[id_column]]
    return _scored(model, matrix.values, ids, reasons=reasons, text_reasons=text_reasons)


def score_records(
    model: ReadinessModel,
    records: list[dict[str, Any]],
    *,
    reasons: int = 3,
    text_reasons: bool = False,
) -> pd.DataFrame:
    """Score dict-shaped leads in one pass; reasons as a JSON string column.

    ``text_reasons``: reasons in words, one line per lead, as batch scoring writes them
    (what a scores table wants) instead of JSON (what a program wants).
    """
    matrix = model.builder.build(records)
    id_column = model.builder.spec.id_column
    ids = [None if r.get(id_column) is None else str(r.get(id_column)) for r in records]
    return _scored(model, matrix.values, ids, reasons=reasons, text_reasons=text_reasons)


def _scored(
    model: ReadinessModel,
    X: np.ndarray,
    ids: list[str | None],
    *,
    reasons: int,
    text_reasons: bool,
) -> pd.DataFrame:
    if text_reasons:
        return model.score_matrix(X, ids=ids, reasons=reasons)
    out = model.score_matrix(X, ids=ids)
    if reasons:
        out["reasons"] = [
            json.dumps({k: [x.to_dict() for x in v] for k, v in r.items()})
            for r in model.reason_sets(X, reasons)
        ]
    return out


def signature(spec: FeatureSpec, stages: list[str]) -> ModelSignature:
    """The pyfunc's schema, written from the spec rather than inferred from two examples.

    Inference would mark every column of the example "required" and guess integer types;
    a lead may omit any profile field (it is then a reported missing value).
    """
    inputs: list[ColSpec | TensorSpec] = [ColSpec("string", spec.id_column, required=False)]
    for f in spec.feature_fields:
        kind = "string" if isinstance(f, CategoricalField) else "double"
        if isinstance(f, BooleanField):
            kind = "boolean"
        inputs.append(ColSpec(kind, f.name, required=False))
    if spec.created_at_column:
        inputs.append(ColSpec("string", spec.created_at_column, required=False))
    inputs.append(ColSpec("string", AS_OF_KEY, required=False))
    if spec.actions is not None:
        action = Object([Property(ACTION_TYPE_KEY, "string"), Property(ACTION_TIME_KEY, "string")])
        inputs.append(ColSpec(Array(action), ACTIONS_KEY, required=False))
        # Or, instead of the actions, their aggregates (a feature table built on Spark).
        inputs += [ColSpec("double", c, required=False) for c in aggregated_columns(spec)]
    outputs: list[ColSpec | TensorSpec] = [ColSpec("string", "lead_id", required=False)]
    outputs += [ColSpec("double", f"p_{s}") for s in stages]
    outputs += [ColSpec("long", "score"), ColSpec("string", "grade"), ColSpec("string", "category")]
    outputs += [ColSpec("string", "model_version"), ColSpec("string", "reasons", required=False)]
    params = ParamSchema(
        [ParamSpec("reasons", "long", 3), ParamSpec("reasons_format", "string", "json")]
    )
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs), params=params)


def _clean_record(row: dict[str, Any]) -> dict[str, Any]:
    """Undo what a pandas round trip does to a lead: NaN for None, JSON text for lists."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, float) and math.isnan(value):
            value = None
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        if key == ACTIONS_KEY and isinstance(value, str):
            value = json.loads(value)
        out[key] = value
    return out


def pinned_requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in RUNTIME_PACKAGES]


def code_paths() -> list[str]:
    """The project packages the model's code lives in, shipped with the model."""
    root = Path(__file__).resolve().parents[1]
    return [str(root / "features"), str(root / "models")]
