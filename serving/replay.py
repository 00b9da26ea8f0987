"""Replaying a logged score: the stored input, rescored by the model version that made it.

The audit question is "why did this lead get an A on that day": the log holds the answer
and the input; the registry holds the model version. Rescoring the input with that
version must give the very answer that was sent, byte for byte once both are written as
JSON, which is what :func:`compare` checks. A difference means something that should be
fixed did change (the number of reasons configured, a model file altered in place) and
is named, never hidden.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from models.readiness import LeadScore, ReadinessModel
from scorelog.history import ScoreDetail

#: The parts of a score response that make up "the answer".
ANSWER_KEYS = ("probabilities", "score", "grade", "category", "reasons", "warnings")


def stored_answer(detail: ScoreDetail) -> dict[str, Any]:
    """The answer as it was sent, from the log."""
    logged = detail.score
    return _normalised(
        {
            "probabilities": logged.probabilities,
            "score": logged.score,
            "grade": logged.grade,
            "category": logged.category,
            "reasons": detail.reasons,
            "warnings": detail.warnings,
        }
    )


def rescore(model: ReadinessModel, record: Mapping[str, Any], reasons: int) -> dict[str, Any]:
    """The answer ``model`` gives ``record`` now (blocking: call it from a thread)."""
    result: LeadScore = model.score_many([record], reasons=reasons, threads=1)[0]
    body = result.to_dict()
    return _normalised({key: body[key] for key in ANSWER_KEYS})


def compare(stored: Mapping[str, Any], replayed: Mapping[str, Any]) -> list[str]:
    """The answer keys whose JSON differs (empty: byte-identical)."""
    return [key for key in ANSWER_KEYS if _json(stored.get(key)) != _json(replayed.get(key))]


def input_document(record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored input as JSON: timestamps as ISO-8601 UTC, actions as the API takes them."""
    return {key: _jsonable(value) for key, value in record.items()}


def _normalised(answer: dict[str, Any]) -> dict[str, Any]:
    """Both reason lists present (as the API sends them), values as JSON reads them back."""
    reasons = dict(answer.get("reasons") or {})
    reasons.setdefault("positive", [])
    reasons.setdefault("negative", [])
    answer["reasons"] = reasons
    loaded: dict[str, Any] = json.loads(_json(answer))
    return loaded


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
