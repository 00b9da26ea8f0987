"""The training reference stored with a model: what its training rows looked like, binned.

Drift is "today's leads do not look like the leads the model learnt from". Answering that
later, in the service or from the command line, must not need the training files, so at
training time each feature and each stage's probability is summarised as a binned
distribution and stored in the model's JSON (``metadata["reference"]``): plain numbers,
versioned, no pickle, a few kilobytes.

* **numeric** features (and probabilities): quantile bin edges of the training values
  (``bins`` bins, fewer when values tie: a count that is 0 for most leads has few distinct
  quantiles) plus a bin for missing values;
* **categorical** features: one bin per level code the builder emits (the levels, then
  ``__missing__`` and ``__other__``), so a new acquisition source shows up as a jump of
  ``__other__``.

Bins are closed on the right: a value equal to an edge falls in the bin that ends there
(so for counts the first bin is "0" and the next "1 to 3"), and values below the first
edge or above the last fall in the outer bins (open-ended), so a live value never lands
outside the reference's bins.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

REFERENCE_FORMAT = 1
DEFAULT_BINS = 10
MISSING_BIN = "missing"
Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class BinnedDistribution:
    """One variable's training distribution over fixed bins: shares sum to 1.

    ``edges`` are the inner edges of numeric bins (bin ``i`` holds ``edges[i-2] < x <=
    edges[i-1]``, the outer bins are open); bin 0 of a numeric variable is "missing".
    Categorical variables have one bin per code and no edges.
    """

    kind: Kind
    labels: list[str]
    shares: list[float]
    edges: list[float]
    rows: int

    def counts(self, values: np.ndarray) -> np.ndarray:
        """How many of ``values`` fall in each bin (vectorised; NaN is missing)."""
        values = np.asarray(values, dtype=np.float64)
        n_bins = len(self.labels)
        if self.kind == "categorical":
            codes = np.where(np.isnan(values), -1, values).astype(np.int64)
            # Out-of-range codes cannot come from the same builder; count them as other.
            codes = np.where((codes < 0) | (codes >= n_bins), n_bins - 1, codes)
            return np.bincount(codes, minlength=n_bins)
        missing = np.isnan(values)
        idx = np.searchsorted(np.asarray(self.edges), values[~missing], side="left") + 1
        counts = np.bincount(idx, minlength=n_bins)
        counts[0] = int(missing.sum())
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "labels": self.labels,
            "shares": self.shares,
            "edges": self.edges,
            "rows": self.rows,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BinnedDistribution:
        return cls(
            kind=data["kind"],
            labels=[str(x) for x in data["labels"]],
            shares=[float(x) for x in data["shares"]],
            edges=[float(x) for x in data["edges"]],
            rows=int(data["rows"]),
        )


def numeric_distribution(values: np.ndarray, bins: int = DEFAULT_BINS) -> BinnedDistribution:
    """Quantile bins of the non-missing values, plus the missing share."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    edges: list[float] = []
    if finite.size:
        # Quantiles that are data values ("lower"), so a count's edges are counts;
        # ties collapse them (a feature that is 0 for 90 % of leads keeps "0" and "more"),
        # and an edge at the maximum would leave an always-empty bin.
        inner = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1], method="lower")
        edges = [float(e) for e in np.unique(inner) if e < finite.max()]
    labels = [MISSING_BIN, *_range_labels(edges)]
    shell = BinnedDistribution("numeric", labels, [0.0] * len(labels), edges, int(values.size))
    return _with_shares(shell, values)


def categorical_distribution(codes: np.ndarray, levels: Sequence[str]) -> BinnedDistribution:
    """One bin per level code (``levels`` in code order, ending with missing and other)."""
    shell = BinnedDistribution(
        "categorical", list(levels), [0.0] * len(levels), [], int(np.asarray(codes).size)
    )
    return _with_shares(shell, codes)


def _with_shares(shell: BinnedDistribution, values: np.ndarray) -> BinnedDistribution:
    counts = shell.counts(values)
    total = max(int(counts.sum()), 1)
    return BinnedDistribution(
        shell.kind, shell.labels, [float(c) / total for c in counts], shell.edges, shell.rows
    )


def _range_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["any value"]
    labels = [f"<= {edges[0]:.4g}"]
    labels += [f"> {lo:.4g} to {hi:.4g}" for lo, hi in itertools.pairwise(edges)]
    labels.append(f"> {edges[-1]:.4g}")
    return labels


@dataclass(frozen=True)
class TrainingReference:
    """Per feature and per stage probability, the training rows' binned distribution."""

    features: dict[str, BinnedDistribution]
    probabilities: dict[str, BinnedDistribution]
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REFERENCE_FORMAT,
            "rows": self.rows,
            "features": {k: v.to_dict() for k, v in self.features.items()},
            "probabilities": {k: v.to_dict() for k, v in self.probabilities.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingReference:
        if data.get("format") != REFERENCE_FORMAT:
            raise ValueError(
                f"training reference format {data.get('format')!r}; this code reads "
                f"{REFERENCE_FORMAT}"
            )
        return cls(
            features={k: BinnedDistribution.from_dict(v) for k, v in data["features"].items()},
            probabilities={
                k: BinnedDistribution.from_dict(v) for k, v in data["probabilities"].items()
            },
            rows=int(data["rows"]),
        )


def build_reference(
    X: np.ndarray,
    names: Sequence[str],
    categorical_levels: Mapping[str, Sequence[str]],
    P: np.ndarray,
    stages: Sequence[str],
    bins: int = DEFAULT_BINS,
) -> TrainingReference:
    """The reference of training rows ``X`` (builder output) and their probabilities ``P``.

    ``categorical_levels`` maps each categorical feature to its code order (the builder's
    ``categories_of``); every other column is binned by quantiles.
    """
    features = {}
    for j, name in enumerate(names):
        if name in categorical_levels:
            features[name] = categorical_distribution(X[:, j], categorical_levels[name])
        else:
            features[name] = numeric_distribution(X[:, j], bins)
    probabilities = {s: numeric_distribution(P[:, j], bins) for j, s in enumerate(stages)}
    return TrainingReference(features, probabilities, int(X.shape[0]))


#: Keys of ``ReadinessModel.metadata`` written by training and read by monitoring.
REFERENCE_KEY = "reference"
PROMISE_KEY = "promise"
#: The label horizon (days) the model was trained with: monitoring waits that long for outcomes.
HORIZON_KEY = "label_horizon_days"


@dataclass(frozen=True)
class Promise:
    """What a stage's threshold promised on validation data: precision and volume share."""

    stage: str
    threshold: float
    precision: float
    volume_share: float


def reference_of(metadata: Mapping[str, Any]) -> TrainingReference | None:
    """The model's stored reference, or None for a model trained before it existed."""
    data = metadata.get(REFERENCE_KEY)
    return TrainingReference.from_dict(data) if isinstance(data, Mapping) else None


def promises_of(metadata: Mapping[str, Any]) -> dict[str, Promise]:
    """Per stage, the threshold's promise (empty for a model trained before it existed)."""
    data = metadata.get(PROMISE_KEY)
    if not isinstance(data, Mapping):
        return {}
    return {
        stage: Promise(
            stage, float(v["threshold"]), float(v["precision"]), float(v["volume_share"])
        )
        for stage, v in data.items()
    }
