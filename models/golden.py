"""Golden rows: a model's own answers on a few leads, stored beside it and re-checked on load.

When a service loads a new version, it scores these leads and compares with what the
training run computed. A mismatch means a broken artifact, a library with different
numerics, or a feature-code change that would make online scores differ from offline
ones: the reload is refused and the old model keeps serving.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.readiness import ReadinessModel

GOLDEN_FILE = "golden.json"
#: Probabilities may differ in the last bits across CPUs; anything larger is a real change.
TOLERANCE = 1e-9


def answers(model: ReadinessModel, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for record in records:
        result = model.score_one(record, reasons=3)
        out.append(
            {
                "probabilities": result.probabilities,
                "score": result.score,
                "grade": result.grade,
                "category": result.category,
                "reasons": [r.field for r in result.reasons.get("positive", [])],
            }
        )
    return out


def write_golden(model: ReadinessModel, records: Sequence[dict[str, Any]], folder: Path) -> Path:
    path = Path(folder) / GOLDEN_FILE
    doc = {"records": list(records), "expected": answers(model, records)}
    path.write_text(json.dumps(doc, indent=1, default=str))
    return path


def check_golden(model: ReadinessModel, folder: Path) -> list[str]:
    """Problems found (empty when the model reproduces its golden answers exactly)."""
    path = Path(folder) / GOLDEN_FILE
    if not path.exists():
        return [f"{GOLDEN_FILE} is missing from the model folder"]
    doc = json.loads(path.read_text())
    got = answers(model, doc["records"])
    problems = []
    for i, (want, have) in enumerate(zip(doc["expected"], got, strict=True)):
        for stage, p in want["probabilities"].items():
            q = have["probabilities"].get(stage, math.nan)
            if not abs(p - q) <= TOLERANCE:
                problems.append(f"golden row {i}: P({stage}) {q!r} instead of {p!r}")
        for key in ("score", "grade", "category", "reasons"):
            if want[key] != have[key]:
                problems.append(f"golden row {i}: {key} differs")
    return problems
