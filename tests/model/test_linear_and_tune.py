"""The logistic head (alone or blended with LightGBM) and leadscore tune's bookkeeping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.linear import LinearHead
from training.config import HeadParams, LightGBMParams, load_config
from training.tune import Chosen, TuneOptions, tune, write_tuned_config


def _data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4, n).astype(float)
    visits = rng.poisson(3, n).astype(float)
    visits[rng.random(n) < 0.1] = np.nan
    logit = -1 + 0.8 * (codes == 2) + 0.3 * np.nan_to_num(visits, nan=0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return np.column_stack([codes, visits]), y


def test_linear_contributions_add_up_to_the_margin_and_survive_json() -> None:
    X, y = _data()
    head = LinearHead.fit(X, y, categorical=[0], monotone=[0, 1])
    contrib = head.contributions(X)
    np.testing.assert_allclose(contrib.sum(axis=1), head.margin(X), atol=1e-10)
    again = LinearHead.from_dict(head.to_dict())
    np.testing.assert_array_equal(again.margin(X), head.margin(X))
    assert head.weight[1] > 0  # more visits, more likely
    assert head.categorical[0][2] > head.categorical[0][0]


def test_a_monotone_constraint_clips_a_weight_of_the_wrong_sign() -> None:
    X, y = _data()
    clipped = LinearHead.fit(X, y, categorical=[0], monotone=[0, -1])  # visits "decreasing"
    assert clipped.weight[1] == 0.0
    more = X.copy()
    more[:, 1] = np.nan_to_num(more[:, 1]) + 5
    assert (clipped.margin(more) <= clipped.margin(np.nan_to_num(X)) + 1e-12).all()


def test_write_tuned_config_replaces_only_the_tuned_sections(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "# my notes\nspec: x_education\nleads: data.csv\n# old reasons\n"
        "lightgbm:\n  num_leaves: 7\nthresholds: {'*': 'top:5%'}\nhead: {kind: lightgbm}\n"
    )
    chosen = Chosen(LightGBMParams(num_leaves=12), HeadParams(kind="blend", blend_weight=0.4), 0.81)
    write_tuned_config(path, chosen)
    text = path.read_text()
    assert text.startswith("# my notes\nspec: x_education\nleads: data.csv\nthresholds:")
    assert "# old reasons" not in text and "num_leaves: 7" not in text
    config = load_config(path)
    assert (config.lightgbm.num_leaves, config.head.kind, config.head.blend_weight) == (
        12,
        "blend",
        0.4,
    )


@pytest.mark.slow
def test_tune_reports_a_nested_estimate_beside_untuned_and_logistic(tmp_path: Path) -> None:
    from tests.tables import SHAPES, write_table
    from training.draft import draft, write_draft

    data = write_table("odd_headers", tmp_path, n=700, seed=5)
    _, config_path = write_draft(draft(data, SHAPES["odd_headers"].label), tmp_path)
    config = load_config(config_path)
    options = TuneOptions(trials=2, outer_folds=2, inner_folds=2)
    report = tune(config.load_spec(), config, options)
    assert len(report.untuned) == len(report.tuned) == len(report.logistic) == 2
    assert all(0.5 < v < 1 for v in [*report.untuned, *report.tuned, *report.logistic])
    assert report.trials == 3 * 2 and report.fits == 3 * 2 * 2
    assert report.chosen is not None and 0.5 < report.chosen.inner_score < 1
    assert "nested 2-fold cross-validation" in report.text()
    write_tuned_config(config_path, report.chosen)
    assert load_config(config_path).head == report.chosen.head
