"""Batch scoring (``leadscore score``): same answers as the model, in chunks.

Every run goes through ``leadscore score`` in-process, as the command line would, on the session's
3,000-lead sample CRM; the reference is ``ReadinessModel.score_frame`` on the whole file
loaded by the training loaders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from features.batch import aggregated_columns
from features.loaders import DataError, load_actions, load_leads
from features.spec import FeatureSpec, load_spec
from leadscore.cli import main as leadscore
from models.readiness import ReadinessModel
from serving.batch import job as batch_score
from serving.batch import sort as batch_sort

AS_OF = "2026-03-01T00:00:00Z"
X_EDUCATION_CSV = Path(__file__).resolve().parents[2].parent / "shared/data/x_education/Leads.csv"


# -- helpers ----------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trained_model_dir: Path) -> Path:
    """Settings as the CLI reads them: the sample model, a scoring log in tmp_path."""
    monkeypatch.chdir(tmp_path)  # no developer .env
    for name, value in {
        "LEADSCORE_SPEC": "sample_crm",
        "LEADSCORE_MODEL_URI": str(trained_model_dir),
        "LEADSCORE_HOME": str(tmp_path),
        "LEADSCORE_DATABASE_URL": f"sqlite:///{tmp_path / 'scores.db'}",
    }.items():
        monkeypatch.setenv(name, value)
    return tmp_path


def score(
    capsys: pytest.CaptureFixture[str], leads: Path, out: Path, *args: str
) -> tuple[int, str]:
    """Run the CLI; (exit status, stderr)."""
    code = leadscore(
        [
            "score",
            "--leads",
            str(leads),
            "--out",
            str(out),
            "--as-of",
            AS_OF,
            "--no-progress",
            *args,
        ]
    )
    return code, capsys.readouterr().err


def read_scores(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(
        path, float_precision="round_trip", keep_default_na=False, dtype={"lead_id": str}
    )


@pytest.fixture(scope="module")
def expected(trained_model_dir: Path, sample_tables: Any) -> pd.DataFrame:
    """score_frame on the whole sample, with reasons; model_version is compared apart."""
    leads, actions, _ = sample_tables
    model = ReadinessModel.load(trained_model_dir)
    frame = model.score_frame(leads, actions, as_of=pd.Timestamp(AS_OF), reasons=3)
    return frame.drop(columns=["model_version"])


def same_scores(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert got["model_version"].nunique() == 1
    got = got.drop(columns=["model_version"])
    if "reasons" not in got.columns:
        want = want.drop(columns=["reasons"])
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True), want.reset_index(drop=True), check_exact=True
    )


def sample_as_parquet(sample_dir: Path, target: Path, name: str) -> Path:
    """A sample file as Parquet, every value exactly as the CSV spells it."""
    frame = pd.read_csv(sample_dir / f"{name}.csv", dtype=str, keep_default_na=False)
    path = target / f"{name}.parquet"
    frame.to_parquet(path, index=False)
    return path


# -- same answers -----------------------------------------------------------------------


def test_csv_scores_equal_score_frame(
    env: Path, capsys: pytest.CaptureFixture[str], sample_dir: Path, expected: pd.DataFrame
) -> None:
    out = env / "scores.csv"
    code, err = score(
        capsys, sample_dir / "leads.csv", out, "--actions", str(sample_dir / "actions.csv"),
        "--chunk-size", "500",
    )  # fmt: skip
    assert code == 0, err
    assert "scored 3,000 leads" in err
    got = read_scores(out)
    stages = ["p_mql", "p_sql"]
    assert list(got.columns) == ["lead_id", *stages, "score", "grade", "category", "reasons",
                                 "model_version"]  # fmt: skip
    same_scores(got, expected)
    assert got["reasons"].str.contains(r"^[+-] ", regex=True).all()


def test_parquet_in_and_out_equal_score_frame(
    env: Path, capsys: pytest.CaptureFixture[str], sample_dir: Path, expected: pd.DataFrame
) -> None:
    leads = sample_as_parquet(sample_dir, env, "leads")
    actions = sample_as_parquet(sample_dir, env, "actions")
    out = env / "scores.parquet"
    code, err = score(capsys, leads, out, "--actions", str(actions), "--chunk-size", "700")
    assert code == 0, err
    same_scores(read_scores(out), expected)


def test_chunk_size_does_not_change_a_score(
    env: Path, capsys: pytest.CaptureFixture[str], sample_dir: Path
) -> None:
    outputs = []
    for size in ("500", "50000"):
        out = env / f"scores-{size}.csv"
        code, err = score(
            capsys, sample_dir / "leads.csv", out, "--actions", str(sample_dir / "actions.csv"),
            "--chunk-size", size, "--reasons", "0",
        )  # fmt: skip
        assert code == 0, err
        outputs.append(read_scores(out))
    pd.testing.assert_frame_equal(outputs[0], outputs[1], check_exact=True)
    assert "reasons" not in outputs[0].columns


def test_sort_orders_by_score_then_lead_id(
    env: Path,
    capsys: pytest.CaptureFixture[str],
    sample_dir: Path,
    expected: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tiny batches and fan-in: 6 runs merged in two rounds, 64 rows at a time.
    monkeypatch.setattr(batch_sort, "RUN_ROWS", 64)
    monkeypatch.setattr(batch_sort, "MAX_FAN_IN", 4)
    out = env / "sorted.csv"
    code, err = score(
        capsys, sample_dir / "leads.csv", out, "--actions", str(sample_dir / "actions.csv"),
        "--chunk-size", "500", "--sort", "--reasons", "0",
    )  # fmt: skip
    assert code == 0, err
    got = read_scores(out)
    keys = list(zip(-got["score"], got["lead_id"], strict=True))
    assert keys == sorted(keys)
    assert got["score"].iloc[0] > got["score"].iloc[-1]
    want = expected.sort_values(["score", "lead_id"], ascending=[False, True])
    same_scores(got, want)


def test_pre_aggregated_leads_give_the_same_scores(
    env: Path,
    capsys: pytest.CaptureFixture[str],
    sample_dir: Path,
    sample_tables: Any,
    sample_spec: FeatureSpec,
    trained_model_dir: Path,
    expected: pd.DataFrame,
) -> None:
    leads, actions, _ = sample_tables
    builder = ReadinessModel.load(trained_model_dir).builder
    matrix = builder.build(leads, actions=actions, as_of=pd.Timestamp(AS_OF))
    names = aggregated_columns(sample_spec)
    columns = [matrix.names.index(n) for n in names]
    raw = pd.read_csv(sample_dir / "leads.csv", dtype=str, keep_default_na=False)
    table = pd.concat([raw, pd.DataFrame(matrix.values[:, columns], columns=names)], axis=1)
    assert (table["recent_velocity"] < 0).any()  # slowing down is a valid aggregate
    path = env / "aggregated.parquet"
    table.to_parquet(path, index=False)
    for extra in ([], ["--sort"]):
        out = env / "scores.csv"
        code, err = score(capsys, path, out, "--chunk-size", "400", *extra)
        assert code == 0, err
        want = expected
        if extra:
            want = want.sort_values(["score", "lead_id"], ascending=[False, True])
        same_scores(read_scores(out), want)


def test_to_log_writes_every_score_to_the_scoring_log(
    env: Path, capsys: pytest.CaptureFixture[str], sample_dir: Path
) -> None:
    out = env / "scores.csv"
    code, err = score(
        capsys, sample_dir / "leads.csv", out, "--actions", str(sample_dir / "actions.csv"),
        "--chunk-size", "1000", "--to-log",
    )  # fmt: skip
    assert code == 0, err
    assert "3,000 written to the scoring log" in err
    engine = sa.create_engine(f"sqlite:///{env / 'scores.db'}")
    with engine.connect() as conn:
        logged = conn.execute(sa.text("SELECT count(*) FROM scores")).scalar_one()
        latest = conn.execute(sa.text("SELECT count(*) FROM lead_latest")).scalar_one()
        top = conn.execute(
            sa.text("SELECT lead_id, score FROM lead_latest ORDER BY score DESC, lead_id LIMIT 5")
        ).all()
        reasons = conn.execute(sa.text("SELECT reasons FROM scores LIMIT 1")).scalar_one()
    engine.dispose()
    assert logged == latest == 3000
    scores = read_scores(out).sort_values(["score", "lead_id"], ascending=[False, True])
    assert [tuple(r) for r in top] == list(
        zip(scores["lead_id"][:5], scores["score"][:5], strict=True)
    )
    assert '"positive"' in reasons


# -- refused files ----------------------------------------------------------------------


def _leads_frame(sample_dir: Path) -> pd.DataFrame:
    return pd.read_csv(sample_dir / "leads.csv", dtype=str, keep_default_na=False)


def _missing_column(sample_dir: Path, folder: Path) -> tuple[Path, Path | None]:
    path = folder / "leads.csv"
    _leads_frame(sample_dir).drop(columns=["industry"]).to_csv(path, index=False)
    return path, None


def _not_a_number(sample_dir: Path, folder: Path) -> tuple[Path, Path | None]:
    frame = _leads_frame(sample_dir)
    frame.loc[1700, "company_size"] = "lots"  # in the fourth chunk of 500
    path = folder / "leads.csv"
    frame.to_csv(path, index=False)
    return path, None


def _repeated_id(sample_dir: Path, folder: Path) -> tuple[Path, Path | None]:
    frame = _leads_frame(sample_dir)
    frame.loc[1600, "lead_id"] = frame.loc[10, "lead_id"]  # first and fourth chunk
    path = folder / "leads.csv"
    frame.to_csv(path, index=False)
    return path, None


def _unknown_lead(sample_dir: Path, folder: Path) -> tuple[Path, Path | None]:
    actions = pd.read_csv(sample_dir / "actions.csv", dtype=str, keep_default_na=False)
    actions.loc[30_000, "lead_id"] = "L9999999"
    path = folder / "actions.csv"
    actions.to_csv(path, index=False)
    return sample_dir / "leads.csv", path


def _semicolons(sample_dir: Path, folder: Path) -> tuple[Path, Path | None]:
    path = folder / "leads.csv"
    _leads_frame(sample_dir).to_csv(path, index=False, sep=";")
    return path, None


def _long_row(sample_dir: Path, folder: Path) -> tuple[Path, Path | None]:
    lines = (sample_dir / "leads.csv").read_text().splitlines()
    lines[2200] += ",extra"
    path = folder / "leads.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, None


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (_missing_column, "missing column 'industry'"),
        (_not_a_number, "column 'company_size': 1 value is not a number (row 1702)"),
        (_repeated_id, "column 'lead_id': 1 id appears more than once, on 2 rows (rows 12, 1602)"),
        (_unknown_lead, "1 action belongs to a lead that is not in the leads table (row 30002)"),
        (_semicolons, "the header looks semicolon (;)-separated"),
        (_long_row, "line 2201 has 14 fields but the header has 13"),
    ],
)
def test_a_bad_file_exits_2_with_the_loaders_message(
    env: Path,
    capsys: pytest.CaptureFixture[str],
    sample_dir: Path,
    sample_spec: FeatureSpec,
    make: Any,
    fragment: str,
) -> None:
    folder = env / "bad"
    folder.mkdir()
    leads, actions = make(sample_dir, folder)
    actions = actions or sample_dir / "actions.csv"
    out = env / "scores.csv"
    code, err = score(
        capsys, leads, out, "--actions", str(actions), "--chunk-size", "500", "--to-log"
    )
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err
    assert "Traceback" not in err
    # The whole-file loaders say exactly the same thing.
    try:
        loaded = load_leads(leads, sample_spec)
        load_actions(actions, sample_spec, pd.Index(loaded["lead_id"]))
    except DataError as exc:
        assert err == f"error: {exc}\n"
    else:
        pytest.fail("the loaders accepted the file")
    # Nothing half-done: no output, nothing logged.
    assert not out.exists()
    assert not list(env.glob(".leadscore-batch-*"))
    if (env / "scores.db").exists():
        engine = sa.create_engine(f"sqlite:///{env / 'scores.db'}")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM scores")).scalar_one() == 0
        engine.dispose()


def test_missing_aggregates_without_actions_are_named(
    env: Path, capsys: pytest.CaptureFixture[str], sample_dir: Path
) -> None:
    code, err = score(capsys, sample_dir / "leads.csv", env / "scores.csv")
    assert code == 2
    assert "no actions file was given" in err and "pass --actions" in err


def test_a_negative_aggregate_names_its_file_line(
    env: Path, capsys: pytest.CaptureFixture[str], sample_dir: Path, sample_spec: FeatureSpec
) -> None:
    frame = _leads_frame(sample_dir).head(1200)
    for name in aggregated_columns(sample_spec):
        frame[name] = 1.0
    frame.loc[900, "webinar_count_7d"] = -2.0
    path = env / "aggregated.parquet"
    frame.to_parquet(path, index=False)
    code, err = score(capsys, path, env / "scores.csv", "--chunk-size", "500")
    assert code == 2
    assert err == (
        "error: aggregated.parquet: column 'webinar_count_7d': action aggregates cannot be "
        "negative (row 902)\n"
    )


def test_usage_and_model_problems(
    env: Path, capsys: pytest.CaptureFixture[str], sample_dir: Path
) -> None:
    leads, actions = sample_dir / "leads.csv", str(sample_dir / "actions.csv")
    code, err = score(capsys, leads, env / "scores.xlsx", "--actions", actions)
    assert code == 2 and "expected .csv, .csv.gz or .parquet" in err
    code, err = score(capsys, leads, env / "s.csv", "--actions", actions, "--model", "/nowhere")
    assert code == 1 and err.startswith("error: cannot load the model:")
    with pytest.raises(SystemExit) as exit_info:
        score(capsys, leads, env / "s.csv", "--as-of", "yesterday-ish")
    assert exit_info.value.code == 2


# -- the real X Education file ----------------------------------------------------------


@pytest.fixture(scope="module")
def x_education_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from features.batch import frames_to_records
    from models.golden import write_golden
    from training.config import load_config
    from training.dataset import load_training_set, split
    from training.pipeline import train

    spec = load_spec("x_education")
    base = load_config("x_education")
    config = base.with_overrides(
        leads=X_EDUCATION_CSV,
        plots=False,
        baseline=False,
        lightgbm=base.lightgbm.model_copy(update={"max_rounds": 150}).model_dump(),
    )
    data = load_training_set(spec, config)
    parts = split(data, spec, config)
    model = train(spec, config, data, parts).model
    folder = model.save(tmp_path_factory.mktemp("x_education") / "model")
    write_golden(model, frames_to_records(spec, data.subset(parts.test[:10]).leads), folder)
    return folder


@pytest.mark.shared
@pytest.mark.skipif(not X_EDUCATION_CSV.exists(), reason="../shared/data/x_education is absent")
def test_x_education_file_scores_like_score_frame(
    env: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    x_education_model: Path,
) -> None:
    monkeypatch.setenv("LEADSCORE_SPEC", "x_education")
    monkeypatch.setenv("LEADSCORE_MODEL_URI", str(x_education_model))
    out = env / "x_education.parquet"
    code, err = score(capsys, X_EDUCATION_CSV, out, "--chunk-size", "2000")
    assert code == 0, err
    spec = load_spec("x_education")
    model = ReadinessModel.load(x_education_model)
    want = model.score_frame(
        load_leads(X_EDUCATION_CSV, spec), as_of=pd.Timestamp(AS_OF), reasons=3
    )
    got = read_scores(out)
    assert len(got) == 9240 and list(got.columns)[1] == "p_customer"
    same_scores(got, want.drop(columns=["model_version"]))
    assert np.isin(got["category"], ["nurture", "customer"]).all()


# -- the registry -----------------------------------------------------------------------


def test_the_champion_is_scored_without_touching_the_services_model_cache(
    mlflow_home: Path, trained_model_dir: Path, sample_dir: Path, expected: pd.DataFrame
) -> None:
    import mlflow

    from serving.settings import ServingSettings
    from tests.registered_models import register_champion

    assert register_champion(trained_model_dir) == "1"
    settings = ServingSettings(
        _env_file=None,
        home=mlflow_home,
        tracking_uri=mlflow.get_tracking_uri(),
        model_cache_dir=mlflow_home / "cache",
    )
    out = mlflow_home / "scores.parquet"
    options = batch_score.Options(
        leads=sample_dir / "leads.csv",
        actions=sample_dir / "actions.csv",
        out=out,
        as_of=pd.Timestamp(AS_OF),
        reasons=0,
        progress=False,
    )
    summary = batch_score.run(options, settings)
    assert summary.leads == 3000 and summary.model == "lead-readiness version 1"
    got = read_scores(out)
    assert set(got["model_version"]) == {"1"}
    same_scores(got, expected)
    # A batch job must not publish a "last known good" copy the service would swap to.
    assert not (mlflow_home / "cache").exists()
