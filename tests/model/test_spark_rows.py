"""Training rows built on Spark are ``train``'s rows (snapshots, labels, features).

The sample CRM (3,000 leads, snapshots at the config's days after creation): the Spark
job's table against :func:`training.dataset.load_training_set` on the same files, row
for row, and the feature matrix the builder fits on each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.builder import LeadFeatureBuilder
from features.spec import FeatureSpec
from tests.sample import small_config
from training.dataset import AS_OF, load_training_set

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("spark")]

KEY = ["lead_id", "snapshot_days"]


@pytest.mark.slow
def test_spark_training_rows_equal_the_training_sets_rows(
    spark: Any,
    sample_dir: Path,
    sample_spec: FeatureSpec,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import yaml

    from leadscore.cli import main as leadscore

    config = small_config(sample_dir)
    want = load_training_set(sample_spec, config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    out = tmp_path / "rows.parquet"
    # Several groups of leads, as on a cluster.
    command = ["rows", "--config", str(path), "--out", str(out), "--leads-per-group", "700"]
    assert leadscore(command) == 0
    assert f"Built {len(want):,} training rows on Spark" in capsys.readouterr().out
    # `leadscore train --rows` reads them through the config, like this.
    got = load_training_set(sample_spec, config.with_overrides(rows=out))

    # The same rows: same leads and cut-offs, dropped by the same horizon and
    # already-qualified rules, with the same labels.
    assert len(got) == len(want) > 3000
    want_rows = pd.concat([want.leads, want.labels.add_prefix("label_")], axis=1)
    got_rows = pd.concat([got.leads, got.labels.add_prefix("label_")], axis=1)
    want_rows = want_rows.sort_values(KEY).reset_index(drop=True)
    got_rows = got_rows.sort_values(KEY).reset_index(drop=True)
    assert got_rows[KEY].equals(want_rows[KEY])
    assert (got_rows[AS_OF] == want_rows[AS_OF]).all()
    for stage in want.labels.columns:
        assert got_rows[f"label_{stage}"].tolist() == want_rows[f"label_{stage}"].tolist()
    assert want.labels.to_numpy().sum() > 100  # positives exist: the label check has teeth

    # The features a fitted builder gives: from raw actions (train) and from Spark's
    # pre-aggregated columns, identical (decayed sums to the last bits).
    want_matrix = LeadFeatureBuilder(sample_spec).fit_build(want_rows, actions=want.actions)
    got_matrix = LeadFeatureBuilder(sample_spec).fit_build(got_rows)
    assert got_matrix.names == want_matrix.names
    np.testing.assert_allclose(got_matrix.values, want_matrix.values, rtol=0, atol=1e-9)
