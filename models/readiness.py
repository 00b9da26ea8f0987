"""The purchase-readiness model: features, one calibrated LightGBM head per stage, policy.

Everything a score needs travels together in one object and one folder: the fitted
feature builder, a booster and calibrator per scored stage (MQL, SQL, ...), the
thresholds and grade bands chosen on validation data, and metadata. Training builds
it; MLflow stores it; the API and batch scoring load it. Leads given as dicts (the
API's shape) are scored with numpy and LightGBM alone, no pandas.

Guarantees, in code below rather than in hope:

* ``P(stage k+1) <= P(stage k)`` for every lead (a running minimum over stages: a
  lead cannot become sales-qualified without being marketing-qualified first);
* the score is ``100 x`` the mean of the stage probabilities, so it rises with each;
* the category is the highest stage whose threshold the lead meets, else ``nurture``;
* reasons explain the head of the lead's *next* step: a nurture lead hears what keeps
  it from MQL, an MQL what keeps it from SQL.
"""

from __future__ import annotations

import hashlib
import json
import platform
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.builder import LeadFeatureBuilder
from models.calibration import Calibrator
from models.contributions import ContributionCache
from models.linear import LinearHead
from models.reasons import Reason, ReasonWriter

FORMAT_VERSION = 1
NURTURE = "nurture"
GRADES = ("A", "B", "C", "D")
_MODEL_FILE = "model.json"
_EXPLAINER_LOCK = threading.Lock()


@dataclass
class StageHead:
    """One scored stage: its booster, the calibration of its margin, its threshold.

    With a ``linear`` head and ``linear_weight`` w > 0 the margin is the blend
    ``(1 - w) * booster + w * linear`` of the two log-odds (w = 1: the logistic model
    alone), calibrated as one; contributions blend the same way, so reasons stay exact.
    """

    stage: str
    booster: lgb.Booster
    calibrator: Calibrator
    threshold: float
    linear: LinearHead | None = None
    linear_weight: float = 0.0

    def margin(self, X: np.ndarray, *, threads: int = 0) -> np.ndarray:
        return blended_margin(self.booster, self.linear, self.linear_weight, X, threads=threads)

    explainer: ContributionCache | None = field(default=None, repr=False, compare=False)

    def contributions(self, X: np.ndarray, *, threads: int = 0) -> np.ndarray:
        """(n, features + 1) SHAP values of the margin, bias last (LightGBM's own pass)."""
        w = self.linear_weight if self.linear is not None else 0.0
        if w >= 1.0 and self.linear is not None:
            return self.linear.contributions(X)
        trees = np.asarray(self.booster.predict(X, pred_contrib=True, num_threads=threads))
        if w <= 0.0 or self.linear is None:
            return trees
        return (1.0 - w) * trees + w * self.linear.contributions(X)

    def source_contributions(self, X: np.ndarray, grouping: np.ndarray) -> np.ndarray:
        """(n, sources): :meth:`contributions` summed by ``grouping`` (features x sources).

        The trees' part comes from :class:`ContributionCache`: the same SHAP values
        as LightGBM's ``pred_contrib`` (up to the order of float additions) at a
        fraction of the cost; the linear head's part is exact and cheap already.
        """
        n_features = grouping.shape[0]
        w = self.linear_weight if self.linear is not None else 0.0
        if w >= 1.0 and self.linear is not None:
            return self.linear.contributions(X)[:, :n_features] @ grouping
        trees = self._explainer(grouping).by_source(X)
        if w <= 0.0 or self.linear is None:
            return trees
        linear = self.linear.contributions(X)[:, :n_features] @ grouping
        return (1.0 - w) * trees + w * linear

    def _explainer(self, grouping: np.ndarray) -> ContributionCache:
        with _EXPLAINER_LOCK:  # built once per head, by whichever thread asks first
            explainer = self.explainer
            if (
                explainer is None
                or explainer.booster is not self.booster
                or explainer.grouping is not grouping
            ):
                explainer = self.explainer = ContributionCache(self.booster, grouping)
            return explainer


@dataclass
class LeadScore:
    """What the model says about one lead, ready for JSON."""

    lead_id: str | None
    probabilities: dict[str, float]
    score: int
    grade: str
    category: str
    reasons: dict[str, list[Reason]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id,
            "probabilities": self.probabilities,
            "score": self.score,
            "grade": self.grade,
            "category": self.category,
            "reasons": {k: [r.to_dict() for r in v] for k, v in self.reasons.items()},
            "warnings": self.warnings,
        }


class ReadinessModel:
    """Calibrated MQL/SQL readiness with thresholds, grades and reasons."""

    def __init__(
        self,
        builder: LeadFeatureBuilder,
        heads: Sequence[StageHead],
        grade_bands: Mapping[str, float],
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not heads:
            raise ValueError("a readiness model needs at least one stage head")
        self.builder = builder
        self.heads = list(heads)
        self.grade_bands = dict(grade_bands)
        self.metadata = dict(metadata or {})
        self.reasons = ReasonWriter(builder)
        self._band_edges = np.array([self.grade_bands[g] for g in GRADES[:-1]])
        self._thresholds = np.array([h.threshold for h in self.heads])

    @property
    def version(self) -> str:
        """Registry version once known (set by whoever loads it), else the training run id."""
        return str(self.metadata.get("version") or self.metadata.get("run_id") or "unregistered")

    @property
    def stages(self) -> list[str]:
        return [h.stage for h in self.heads]

    @property
    def thresholds(self) -> dict[str, float]:
        return {h.stage: h.threshold for h in self.heads}

    @property
    def policy_version(self) -> str:
        """A short stable hash of the policy: the thresholds and the grade bands.

        Stored with every score, so a log can tell two answers of one model version
        apart if its policy was ever re-tuned, and group scores by the promise they made.
        """
        return policy_version(self.thresholds, self.grade_bands)

    # -- vector level ----------------------------------------------------------------

    def probabilities(self, X: np.ndarray, *, threads: int = 0) -> np.ndarray:
        """(n, stages) calibrated probabilities, never increasing along the funnel."""
        return stage_probabilities(self.heads, X, threads=threads)

    def scores(self, P: np.ndarray) -> np.ndarray:
        return readiness_scores(P)

    def grades(self, scores: np.ndarray) -> np.ndarray:
        # Bands hold the lowest score of A, B, C; anything below C's is D.
        idx = np.searchsorted(-self._band_edges, -scores, side="left")
        return np.asarray(GRADES, dtype=object)[idx]

    def category_index(self, P: np.ndarray) -> np.ndarray:
        """0 for nurture, else 1 + the index of the highest stage whose threshold is met.

        Thresholds come from separate policies and need not increase along the funnel,
        so "highest stage met" is looked up, not counted.
        """
        return category_index(P, self._thresholds)

    def categories(self, P: np.ndarray) -> np.ndarray:
        labels = np.asarray([NURTURE, *self.stages], dtype=object)
        return labels[self.category_index(P)]

    def explaining_head(self, P: np.ndarray) -> np.ndarray:
        """Index of the head whose contributions explain each lead (its next step)."""
        return np.minimum(self.category_index(P), len(self.heads) - 1)

    # -- lead level ------------------------------------------------------------------

    def score_one(
        self, lead: Mapping[str, Any], *, reasons: int = 3, lead_id: str | None = None
    ) -> LeadScore:
        """One dict in, one answer out: exactly :meth:`score_many` of a one-lead list."""
        result = self.score_many([lead], reasons=reasons, threads=1)[0]
        if lead_id is not None:
            result.lead_id = lead_id
        return result

    def score_many(
        self,
        leads: Sequence[Mapping[str, Any]],
        *,
        reasons: int | Sequence[int] = 3,
        threads: int = 0,
    ) -> list[LeadScore]:
        """Dict-shaped leads (the API's shape): one matrix, one LightGBM call per head.

        The one scoring path for leads given as dicts, used by the API, batch requests
        and golden-row checks alike; a booster scores each row independently of the
        others, so a lead's answer does not depend on its neighbours. The API passes
        ``threads=1``: LightGBM's thread pool costs more than it saves on a few rows.
        ``reasons`` is a count for all leads or one per lead (0: none, no SHAP work).
        """
        matrix = self.builder.build(list(leads))
        X = matrix.values
        P = self.probabilities(X, threads=threads)
        scores = self.scores(P)
        grades = self.grades(scores)
        categories = self.categories(P)
        why = self._reasons_per_lead(X, P, reasons, threads)
        return [
            LeadScore(
                lead_id=_lead_id(lead, self.builder),
                probabilities={s: float(p) for s, p in zip(self.stages, P[i], strict=True)},
                score=int(scores[i]),
                grade=str(grades[i]),
                category=str(categories[i]),
                reasons=why[i],
                warnings=matrix.report.warnings_for(i),
            )
            for i, lead in enumerate(leads)
        ]

    def score_frame(
        self,
        leads: pd.DataFrame,
        actions: pd.DataFrame | None = None,
        *,
        as_of: Any = None,
        reasons: int = 0,
    ) -> pd.DataFrame:
        """Batch scoring: one row per lead with probabilities, score, grade, category."""
        matrix = self.builder.build(leads, actions=actions, as_of=as_of)
        return self.score_matrix(
            matrix.values, ids=leads[self.builder.spec.id_column], reasons=reasons
        )

    def score_matrix(
        self, X: np.ndarray, *, ids: Sequence[Any] | pd.Series | None = None, reasons: int = 0
    ) -> pd.DataFrame:
        P = self.probabilities(X)
        scores = self.scores(P)
        out = pd.DataFrame({"lead_id": list(ids) if ids is not None else range(len(X))})
        for j, stage in enumerate(self.stages):
            out[f"p_{stage}"] = P[:, j]
        out["score"] = scores
        out["grade"] = self.grades(scores)
        out["category"] = self.categories(P)
        if reasons:
            out["reasons"] = [reason_text(r) for r in self.reason_sets(X, reasons)]
        out["model_version"] = self.version
        return out

    def _reasons_per_lead(
        self, X: np.ndarray, P: np.ndarray, reasons: int | Sequence[int], threads: int
    ) -> list[dict[str, list[Reason]]]:
        """Reasons only for the leads that asked: the strongest k of the largest k asked.

        Reasons are ranked, so a lead's top k is the head of anyone's top K >= k.
        """
        counts = np.full(len(X), reasons) if isinstance(reasons, int) else np.asarray(reasons)
        out: list[dict[str, list[Reason]]] = [{} for _ in range(len(X))]
        wanted = np.flatnonzero(counts > 0)
        if not wanted.size:
            return out
        k = int(counts[wanted].max())
        sets = self.reason_sets(X[wanted], k, P=P[wanted], threads=threads)
        for i, found in zip(wanted, sets, strict=True):
            n = int(counts[i])
            out[i] = found if n == k else {side: rs[:n] for side, rs in found.items()}
        return out

    def reason_sets(
        self, X: np.ndarray, k: int = 3, *, P: np.ndarray | None = None, threads: int = 0
    ) -> list[dict[str, list[Reason]]]:
        """Reasons for many leads: one SHAP pass per head over the leads it explains."""
        if P is None:
            P = self.probabilities(X, threads=threads)
        which = self.explaining_head(P)
        out: list[dict[str, list[Reason]]] = [{} for _ in range(len(X))]
        for h, head in enumerate(self.heads):
            rows = np.flatnonzero(which == h)
            if not rows.size:
                continue
            effects = head.source_contributions(X[rows], self.reasons.grouping)
            for r, found in zip(rows, self.reasons.top_many(X[rows], effects, k), strict=True):
                out[r] = found
        return out

    # -- persistence -----------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write JSON plus LightGBM's own text format: versioned, inspectable, no pickle."""
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        for head in self.heads:
            head.booster.save_model(str(path / f"head_{head.stage}.txt"))
        doc = {
            "format": FORMAT_VERSION,
            "library_versions": _library_versions(),
            "builder": self.builder.to_dict(),
            "heads": [
                {
                    "stage": h.stage,
                    "threshold": h.threshold,
                    "calibrator": h.calibrator.to_dict(),
                    "linear": h.linear.to_dict() if h.linear is not None else None,
                    "linear_weight": h.linear_weight,
                }
                for h in self.heads
            ],
            "grade_bands": self.grade_bands,
            "metadata": self.metadata,
        }
        (path / _MODEL_FILE).write_text(json.dumps(doc, indent=1, default=_json_default))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> ReadinessModel:
        path = Path(folder)
        doc = json.loads((path / _MODEL_FILE).read_text())
        if doc.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: model format {doc.get('format')!r}, this code reads {FORMAT_VERSION}"
            )
        builder = LeadFeatureBuilder.from_dict(doc["builder"])
        heads = [
            StageHead(
                stage=h["stage"],
                booster=lgb.Booster(model_file=str(path / f"head_{h['stage']}.txt")),
                calibrator=Calibrator.from_dict(h["calibrator"]),
                threshold=float(h["threshold"]),
                linear=LinearHead.from_dict(h["linear"]) if h.get("linear") else None,
                linear_weight=float(h.get("linear_weight", 0.0)),
            )
            for h in doc["heads"]
        ]
        return cls(builder, heads, doc["grade_bands"], doc["metadata"])


def policy_version(thresholds: Mapping[str, float], grade_bands: Mapping[str, float]) -> str:
    """12 hex digits of SHA-256 over the canonical JSON of thresholds and grade bands.

    Floats print as their shortest exact repr, keys sorted: the same policy gives the
    same hash in every process and Python version.
    """
    doc = {
        "thresholds": {k: float(v) for k, v in thresholds.items()},
        "grade_bands": {k: float(v) for k, v in grade_bands.items()},
    }
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def blended_margin(
    booster: lgb.Booster,
    linear: LinearHead | None,
    weight: float,
    X: np.ndarray,
    *,
    threads: int = 0,
) -> np.ndarray:
    """A head's log-odds: the booster's, the linear head's, or their weighted blend."""
    if linear is not None and weight >= 1.0:
        return linear.margin(X)
    trees = np.asarray(booster.predict(X, raw_score=True, num_threads=threads))
    if linear is None or weight <= 0.0:
        return trees
    return (1.0 - weight) * trees + weight * linear.margin(X)


def stage_probabilities(
    heads: Sequence[StageHead], X: np.ndarray, *, threads: int = 0
) -> np.ndarray:
    """(n, stages) calibrated probabilities, capped by a running minimum along the funnel.

    A function of the heads alone, so training can choose thresholds and grade bands on
    exactly what will be served before the model object exists.
    """
    P = np.column_stack([h.calibrator(h.margin(X, threads=threads)) for h in heads])
    return np.minimum.accumulate(P, axis=1)


def readiness_scores(P: np.ndarray) -> np.ndarray:
    """0-100: a hundred times the mean stage probability, rounded."""
    return np.rint(100.0 * P.mean(axis=1)).astype(np.int64)


def category_index(P: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """0 for nurture, else 1 + the index of the highest stage whose threshold is met.

    Thresholds come from separate policies and need not increase along the funnel, so
    "highest stage met" is looked up, not counted (the cascade of training.thresholds).
    """
    met = P >= thresholds
    k = met.shape[1]
    highest = k - 1 - np.argmax(met[:, ::-1], axis=1)
    return np.where(met.any(axis=1), highest + 1, 0)


def reason_text(reasons: dict[str, list[Reason]]) -> str:
    """One line for a CSV cell: '+' raises the score, '-' lowers it."""
    parts = [f"+ {r.text}" for r in reasons.get("positive", [])]
    parts += [f"- {r.text}" for r in reasons.get("negative", [])]
    return "; ".join(parts)


def _lead_id(lead: Mapping[str, Any], builder: LeadFeatureBuilder) -> str | None:
    value = lead.get(builder.spec.id_column)
    return None if value is None else str(value)


def _library_versions() -> dict[str, str]:
    import sklearn

    return {
        "python": platform.python_version(),
        "lightgbm": lgb.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in model.json")
