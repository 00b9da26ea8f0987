"""Reasons from the contribution cache equal reasons from LightGBM's own pred_contrib.

The reference is the implementation the cache replaced, kept here: one
``pred_contrib`` pass per head, summed per source, ranked by ``ReasonWriter.top``.
Equality is exact for what a caller sees (fields, rounded effects, texts, order) on
10,000 generated leads, including missing values, unseen levels and negative codes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.contributions import ContributionCache
from models.readiness import ReadinessModel
from models.reasons import Reason

AS_OF = ("2025-10-01T00:00:00Z", "2025-12-01T00:00:00Z", "2026-01-15T00:00:00Z")


@pytest.fixture(scope="module")
def model(trained_model_dir: Path) -> ReadinessModel:
    return ReadinessModel.load(trained_model_dir)


@pytest.fixture(scope="module")
def leads_10k(
    model: ReadinessModel, sample_tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> np.ndarray:
    """10,000 feature rows: the sample leads at several cut-offs, some of them damaged."""
    leads, actions, _ = sample_tables
    blocks = [
        model.builder.build(leads, actions=actions, as_of=pd.Timestamp(t)).values for t in AS_OF
    ]
    X = np.vstack([*blocks, blocks[-1][:1000]])[:10_000].copy()
    rng = np.random.default_rng(7)
    categorical = model.builder.categorical_indices_
    numeric = [j for j in range(X.shape[1]) if j not in categorical]
    tail = X[-1000:]  # missing numbers and the explicit missing / unseen codes
    for j in numeric:
        tail[rng.random(1000) < 0.2, j] = np.nan
    for j in categorical:
        k = len(model.builder.levels_[model.builder.features_[j].name])
        tail[rng.random(1000) < 0.2, j] = rng.choice([k, k + 1])
    return X


def reference_reasons(
    model: ReadinessModel, X: np.ndarray, k: int
) -> list[dict[str, list[Reason]]]:
    """The reasons as computed before the cache: LightGBM's pred_contrib per head."""
    which = model.explaining_head(model.probabilities(X))
    out: list[dict[str, list[Reason]]] = [{} for _ in range(len(X))]
    for h, head in enumerate(model.heads):
        rows = np.flatnonzero(which == h)
        if not rows.size:
            continue
        effects = model.reasons.by_source(head.contributions(X[rows]))
        for r, e in zip(rows, effects, strict=True):
            out[r] = model.reasons.top(X[r], e, k)
    return out


@pytest.mark.slow
def test_reasons_equal_lightgbm_pred_contrib_on_10000_leads(
    model: ReadinessModel, leads_10k: np.ndarray
) -> None:
    expected = reference_reasons(model, leads_10k, 3)
    got = model.reason_sets(leads_10k, 3)
    assert len(got) == 10_000
    assert got == expected
    assert sum(len(r["positive"]) + len(r["negative"]) for r in got) > 20_000


def test_reasons_equal_lightgbm_pred_contrib_on_incomplete_leads(
    model: ReadinessModel, leads_10k: np.ndarray
) -> None:
    X = leads_10k[-600:]  # missing numbers, missing and unseen levels
    expected = reference_reasons(model, X, 4)
    got = model.reason_sets(X, 4)
    assert got == expected
    assert sum(len(r["positive"]) + len(r["negative"]) for r in got) > 1_000


def test_source_effects_match_pred_contrib_to_float_rounding(
    model: ReadinessModel, leads_10k: np.ndarray
) -> None:
    grouping = model.reasons.grouping
    for head in model.heads:
        X = leads_10k[::25]
        reference = model.reasons.by_source(head.contributions(X))
        cache = ContributionCache(head.booster, grouping)
        assert cache.usable
        np.testing.assert_allclose(cache.by_source(X), reference, rtol=0, atol=1e-12)
        # Served again from the cache: the same numbers, bit for bit.
        assert np.array_equal(cache.by_source(X), cache.by_source(X))


def test_lightgbm_decision_rules_for_values_the_builder_never_makes(
    model: ReadinessModel, leads_10k: np.ndarray
) -> None:
    """NaN, negative, fractional and out-of-range codes go where LightGBM sends them."""
    X = leads_10k[:400].copy()
    rng = np.random.default_rng(3)
    for j in model.builder.categorical_indices_:
        X[rng.random(400) < 0.3, j] = rng.choice([-1.0, -0.5, np.nan, 99.0, 2.7, 1e12])
    X[rng.random(X.shape) < 0.05] = 0.0  # zeros, in case a node treats zero as missing
    for head in model.heads:
        reference = model.reasons.by_source(head.contributions(X))
        cache = ContributionCache(head.booster, model.reasons.grouping)
        np.testing.assert_allclose(cache.by_source(X), reference, rtol=0, atol=1e-12)


def test_a_full_cache_starts_again_and_gives_the_same_answers(
    model: ReadinessModel, leads_10k: np.ndarray
) -> None:
    head = model.heads[0]
    grouping = model.reasons.grouping
    X = leads_10k[:300]
    reference = model.reasons.by_source(head.contributions(X))
    tiny = ContributionCache(head.booster, grouping, capacity=500)
    for start in range(0, 300, 20):  # fills, clears, fills again
        part = tiny.by_source(X[start : start + 20])
        np.testing.assert_allclose(part, reference[start : start + 20], rtol=0, atol=1e-12)
        assert len(tiny) <= 500
    # A batch with more new patterns than the cache holds is computed without it.
    np.testing.assert_allclose(tiny.by_source(X), reference, rtol=0, atol=1e-12)


def test_scores_with_and_without_reasons_are_unchanged(
    model: ReadinessModel, sample_tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    from features.batch import frames_to_records

    leads, actions, _ = sample_tables
    records = frames_to_records(
        model.builder.spec, leads.head(300), actions, pd.Timestamp(AS_OF[-1])
    )
    X = model.builder.build(records).values
    expected = reference_reasons(model, X, 2)
    with_reasons = model.score_many(records, reasons=2)
    without = model.score_many(records, reasons=0)
    P = model.probabilities(X)
    for i, (a, b) in enumerate(zip(with_reasons, without, strict=True)):
        assert (
            a.probabilities
            == b.probabilities
            == dict(zip(model.stages, P[i].tolist(), strict=True))
        )
        assert (a.score, a.grade, a.category) == (b.score, b.grade, b.category)
        assert a.reasons == expected[i]
        assert b.reasons == {}


def test_reasons_per_lead_are_the_head_of_the_longest_list(
    model: ReadinessModel, sample_tables: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    from features.batch import frames_to_records

    leads, actions, _ = sample_tables
    records = frames_to_records(
        model.builder.spec, leads.head(120), actions, pd.Timestamp(AS_OF[-1])
    )
    counts = [i % 5 for i in range(len(records))]  # 0..4 reasons, mixed in one call
    mixed = model.score_many(records, reasons=counts)
    for k in range(5):
        alone = model.score_many(records, reasons=k)
        for i in range(len(records)):
            if counts[i] == k:
                assert mixed[i].reasons == alone[i].reasons
                assert all(len(v) <= k for v in alone[i].reasons.values())
    assert any(len(r.reasons.get("positive", [])) == 4 for r in mixed)
