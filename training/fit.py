"""Fitting the pieces of a readiness model: boosters, their calibration, the baseline.

Each function takes already-built feature matrices, so nothing here can peek at test
data: the feature builder was fitted on the training rows before these run.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from training.config import LightGBMParams


@dataclass(frozen=True)
class Matrices:
    X_train: np.ndarray
    X_val: np.ndarray
    categorical: list[int]
    monotone: list[int]
    names: list[str]


def fit_booster(
    m: Matrices,
    y_train: np.ndarray,
    y_val: np.ndarray,
    params: LightGBMParams,
    *,
    seed: int,
    threads: int = 0,
) -> lgb.Booster:
    """Gradient-boosted trees for one stage, stopped early on validation log loss."""
    lgb_params = {
        "objective": "binary",
        "metric": "binary_logloss",
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_data_in_leaf": params.min_data_in_leaf,
        "feature_fraction": params.feature_fraction,
        "bagging_fraction": params.bagging_fraction,
        "bagging_freq": params.bagging_freq,
        "lambda_l2": params.lambda_l2,
        "cat_smooth": params.cat_smooth,
        "max_cat_to_onehot": params.max_cat_to_onehot,
        "min_data_per_group": params.min_data_per_group,
        "extra_trees": params.extra_trees,
        "path_smooth": params.path_smooth,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": threads,
        "verbosity": -1,
    }
    if params.use_monotone_constraints and any(m.monotone):
        lgb_params["monotone_constraints"] = m.monotone
    train = lgb.Dataset(
        m.X_train,
        label=y_train,
        feature_name=m.names,
        categorical_feature=m.categorical,
        free_raw_data=False,
    )
    val = lgb.Dataset(m.X_val, label=y_val, reference=train)
    return lgb.train(
        lgb_params,
        train,
        num_boost_round=params.max_rounds,
        valid_sets=[val],
        valid_names=["validation"],
        callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False)],
    )


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def fit_baseline(m: Matrices, y_train: np.ndarray, *, seed: int) -> Pipeline:
    """Logistic regression on the same features: the bar the booster has to clear.

    Categorical codes are one-hot encoded, numbers imputed with the training median
    plus a missing indicator and log-scaled (counts and revenues are heavy-tailed).
    Everything is fitted on the training rows only.
    """
    numeric = [j for j in range(m.X_train.shape[1]) if j not in set(m.categorical)]
    pre = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore", min_frequency=5), m.categorical),
            (
                "numeric",
                make_pipeline(
                    SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                    FunctionTransformer(_signed_log1p),
                    StandardScaler(),
                ),
                numeric,
            ),
        ]
    )
    model = make_pipeline(pre, LogisticRegression(C=0.5, max_iter=3000, random_state=seed))
    return model.fit(m.X_train, y_train)
