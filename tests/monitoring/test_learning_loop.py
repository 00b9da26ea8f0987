"""The learning loop end to end, on the generator's truth, through the real API.

One simulated half-year of traffic (the module fixture): a model trained on last year's
files serves; leads are scored 7, 14 and 30 days after they arrive; the generator's
stage history is posted as outcomes as it unfolds. Then:

* ``train --from-log`` on that log ranks as well as a model trained on the equivalent
  files (held-out ROC-AUC within 0.01, on leads neither model saw);
* shifts injected into the next weeks' traffic make ``monitor`` say act on the right
  feature or stage, and on nothing else;
* ``retrain`` after the SQL conversion rate halves brings live calibration back.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from features import synthetic
from features.spec import FeatureSpec
from models.readiness import ReadinessModel
from monitoring.report import MonitorReport, build_report
from monitoring.settings import MonitorSettings
from scorelog.engine import make_engine
from serving.app import create_app
from serving.routes import scoring
from tests.api.test_api import make_settings
from tests.loop_sim import SimClock, run_traffic, world
from tests.sample import small_config
from training.config import FromLogParams, TrainConfig
from training.dataset import TrainingSet, load_training_set, snapshots, split
from training.evaluation import StageMetrics, stage_metrics
from training.from_log import load_log_set
from training.pipeline import train

pytestmark = pytest.mark.slow

DAYS = (7, 14, 30)
#: Years well before any CI clock: outcomes may not be dated in the future.
START = datetime(2023, 1, 1, tzinfo=UTC)
END = datetime(2023, 8, 1, tzinfo=UTC)
#: Short enough that the time split's embargo leaves training rows in seven months.
HORIZON = 60
#: Every outcome of the half-year's leads has happened by then (decision + 20 + 40 days).
MATURE = END + timedelta(days=130)
N_LEADS = 1600
DRIFT_START = {
    "podcast": datetime(2024, 12, 1, tzinfo=UTC),
    "seniority": datetime(2025, 5, 1, tzinfo=UTC),
}
SEEDS = {"podcast": 31, "seniority": 32, "halved": 33, "next": 34}


@dataclass
class Loop:
    folder: Path
    spec: FeatureSpec
    config: TrainConfig
    files: TrainingSet
    log_url: str
    client: TestClient
    champion: ReadinessModel


CHAMPION_URI = "models:/lead-readiness@champion"


def _train(spec: FeatureSpec, config: TrainConfig, data: TrainingSet) -> ReadinessModel:
    return train(spec, config, data, split(data, spec, config)).model


@contextmanager
def _mlflow_home(home: Path, template: Path) -> Iterator[None]:
    """A module-wide embedded MLflow store (as the conftest's per-test mlflow_home)."""
    import mlflow
    from mlflow.tracking import fluent

    from tests.conftest import TRACKING_ENV
    from training import tracking

    patch = pytest.MonkeyPatch()
    for name in TRACKING_ENV:
        patch.setenv(name, "")
        patch.delenv(name)
    patch.setattr(fluent, "_active_experiment_id", None)
    home.mkdir(parents=True)
    shutil.copyfile(template, home / tracking.EMBEDDED_DB)
    patch.setenv("LEADSCORE_HOME", str(home))
    tracking.configure(tracking.TrackingSettings())
    try:
        yield
    finally:
        patch.undo()
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
        mlflow.set_registry_uri(None)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def loop(
    tmp_path_factory: pytest.TempPathFactory, sample_spec: FeatureSpec, mlflow_db_template: Path
) -> Iterator[Loop]:
    from training import registry
    from training.run import run_training
    from training.tracking import TrackingSettings

    folder = tmp_path_factory.mktemp("loop")
    with (
        _mlflow_home(folder / "mlflow", mlflow_db_template),
        pytest.MonkeyPatch().context() as patch,
    ):
        # Last year's files train the first champion, registered and promoted.
        past = synthetic.SampleConfig(
            n_leads=N_LEADS, seed=21, start=datetime(2022, 1, 1, tzinfo=UTC), end=START
        )
        synthetic.write(synthetic.generate(past), folder / "past")
        config = small_config(
            folder / "past",
            baseline=False,
            snapshot_days_after_created=list(DAYS),
            horizon_days=HORIZON,
        )
        run_training(config, TrackingSettings())
        registry.promote(config.model_name)
        # This half-year, through the API serving the champion alias.
        now = world(
            sample_spec,
            synthetic.SampleConfig(n_leads=N_LEADS, seed=22, start=START, end=END),
            folder / "now",
        )
        settings = make_settings(
            folder,
            CHAMPION_URI,
            max_batch=500,
            reasons=0,
            home=folder / "mlflow",
            model_follow_s=1.0,
            sqlite_synchronous="NORMAL",  # a crash-safe log; fsyncs would only slow the test
        )
        log_url = settings.database_url_resolved()
        patch.setattr(scoring, "datetime", SimClock)
        with TestClient(create_app(settings)) as client:
            counts = run_traffic(client, SimClock, sample_spec, now, days=DAYS, until=MATURE)
            assert counts["scored"] == 3 * N_LEADS
            files_config = small_config(
                folder / "now", snapshot_days_after_created=list(DAYS), horizon_days=HORIZON
            )
            files = load_training_set(sample_spec, files_config)
            champion = client.app.state.store.current.model
            yield Loop(folder, sample_spec, config, files, log_url, client, champion)


def _held_out(spec: FeatureSpec, folder: Path) -> TrainingSet:
    """Leads neither model saw, at their decision time (30 days), labelled by the truth."""
    w = world(spec, synthetic.SampleConfig(n_leads=1500, seed=23, start=START, end=END), folder)
    config = small_config(folder, snapshot_days_after_created=[30], horizon_days=HORIZON)
    return snapshots(spec, config, w.leads, w.actions, w.history)


def _stage_metrics(model: ReadinessModel, rows: TrainingSet, stage: str) -> StageMetrics:
    X = model.builder.transform(rows.leads, actions=rows.actions)
    p = model.probabilities(X)[:, model.stages.index(stage)]
    return stage_metrics(rows.labels[stage].to_numpy(), p)


def test_from_log_ranks_as_well_as_the_equivalent_files(loop: Loop) -> None:
    config = loop.config.model_copy(update={"from_log": FromLogParams(url=loop.log_url)})
    from_log = load_log_set(loop.spec, config, loop.log_url, now=MATURE)
    # Every score is a row: the same snapshots the files give (their horizons all passed).
    assert len(from_log) == len(loop.files) == 3 * N_LEADS
    assert from_log.dropped == {
        "horizon_not_passed": 0,
        "already_qualified_at_score": 0,
        "excluded_by_rejection": 0,
        "input_not_stored": 0,
    }
    assert (from_log.labels.mean() - loop.files.labels.mean()).abs().max() < 0.005
    both = config.model_copy(update={"from_log": FromLogParams(url=loop.log_url, with_files=True)})
    combined = load_log_set(loop.spec, both, loop.log_url, now=MATURE)
    assert len(combined) == 2 * len(from_log)
    assert (
        combined.dropped["log_horizon_not_passed"] == 0
        and "files_horizon_not_observed" in combined.dropped
    )
    assert combined.leads["as_of"].is_monotonic_increasing
    log_model = _train(loop.spec, config, from_log)
    file_model = _train(loop.spec, loop.config, loop.files)
    held_out = _held_out(loop.spec, loop.folder / "held_out")
    for stage in loop.spec.scored_stages:
        ours = _stage_metrics(log_model, held_out, stage)
        theirs = _stage_metrics(file_model, held_out, stage)
        assert ours.roc_auc > 0.7
        assert abs(ours.roc_auc - theirs.roc_auc) < 0.01, (stage, ours, theirs)
        assert abs(ours.ece - theirs.ece) < 0.01, (stage, ours, theirs)


def _shifted_traffic(
    loop: Loop, name: str, start: datetime, shift: synthetic.Shift, n: int
) -> datetime:
    """``n`` leads arriving over 30 days from ``start``, scored like the rest; returns now."""
    config = synthetic.SampleConfig(
        n_leads=n, seed=SEEDS[name], start=start, end=start + timedelta(days=30), shift=shift
    )
    w = world(loop.spec, config, loop.folder / name, prefix=f"{name}-")
    now = start + timedelta(days=61)
    run_traffic(loop.client, SimClock, loop.spec, w, days=DAYS, until=now, outcomes=False)
    return now


def _report(
    loop: Loop, now: datetime, model: ReadinessModel | None = None, **settings: Any
) -> MonitorReport:
    engine = make_engine(loop.log_url)
    try:
        judged = model or loop.champion
        return build_report(engine, judged, MonitorSettings(**settings), model_name="m", now=now)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("name", "shift", "expected"),
    [
        (
            "podcast",  # a new acquisition source: the spec has never heard of it
            synthetic.Shift(weights={"acquisition_source": {"podcast": 0.45}}),
            {"feature:acquisition_source"},
        ),
        (
            "seniority",  # a marketing campaign aimed at directors
            synthetic.Shift(
                weights={
                    "seniority": {"individual_contributor": 0.05, "intern": 0.01, "director": 0.45}
                }
            ),
            {"feature:seniority"},
        ),
    ],
)
def test_monitor_acts_on_the_shifted_feature_only(
    loop: Loop, name: str, shift: synthetic.Shift, expected: set[str]
) -> None:
    # Far apart, so each window holds one scenario's scores only (they have no outcomes).
    now = _shifted_traffic(loop, name, DRIFT_START[name], shift, 400)
    report = _report(loop, now, window_days=54)
    assert set(report.acting()) == expected
    assert report.state == "act"
    assert report.drift_sampled == report.drift_rows == 3 * 400
    field = next(iter(expected)).removeprefix("feature:")
    drift = next(d for d in report.features if d.name == field)
    assert drift.psi is not None and drift.psi > 1.0
    if name == "podcast":  # the new source shows as the level the spec does not know
        assert drift.moved[0][0] == "__other__" and drift.moved[0][2] > 0.3
    # Stage calibration has nothing matured in these windows: unknown, never "ok" by default.
    assert {s.state for s in report.stages} == {"unknown"}


def _calibration_traffic(
    loop: Loop, client: TestClient, name: str, start: datetime, days: int, n: int
) -> datetime:
    """Half as many MQLs become SQLs; leads arrive for ``days`` and every outcome is posted.

    Returns the moment every one of these scores has matured.
    """
    shift = synthetic.Shift(conversion={"sql": 0.5})
    end = start + timedelta(days=days)
    config = synthetic.SampleConfig(n_leads=n, seed=SEEDS[name], start=start, end=end, shift=shift)
    w = world(loop.spec, config, loop.folder / name, prefix=f"{name}-")
    matured = end + timedelta(days=30 + HORIZON + 1)
    run_traffic(client, SimClock, loop.spec, w, days=DAYS, until=matured)
    return matured


def _windows(days: int) -> dict[str, float]:
    """Monitor windows holding exactly one :func:`_calibration_traffic` period's scores."""
    return {"window_days": days + 30 + HORIZON + 1, "matured_days": days + 31}


def _wait_for_version(client: TestClient, version: str | None, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        served = client.app.state.store.current
        if served is not None and served.version == version:
            return served
        time.sleep(0.2)
    raise AssertionError(f"the service did not follow the alias to version {version}")


def test_retrain_brings_calibration_back(loop: Loop) -> None:
    from training.registry import CHALLENGER, CHAMPION, get_alias
    from training.retrain import retrain
    from training.tracking import TrackingSettings

    now = _calibration_traffic(loop, loop.client, "halved", MATURE, 60, N_LEADS)
    before = _report(loop, now, **_windows(60))
    live = {s.stage: s for s in before.stages}
    # The SQL promise broke and nothing else: no feature moved, MQL still converts as said.
    assert before.acting() == ["live:sql"]
    assert live["sql"].precision_state == "act"
    assert live["sql"].mean_predicted > 1.5 * live["sql"].observed_rate

    # Log loss sees calibration (PR-AUC would not): the gate for a calibration retrain.
    promotion = loop.config.promotion.model_copy(
        update={"metric": "test_sql_log_loss", "higher_is_better": False}
    )
    config = loop.config.model_copy(
        update={"from_log": FromLogParams(url=loop.log_url), "promotion": promotion}
    )
    dry = retrain(config, TrackingSettings(), dry_run=True, now=now)
    assert dry.dry_run and not dry.promoted and dry.duel.passes
    assert "Decision: would promote." in dry.text()
    assert get_alias(config.model_name, CHALLENGER).version == "1"  # nothing registered
    result = retrain(config, TrackingSettings(), now=now)
    assert result.promoted, result.text()
    assert result.duel.champion_version == "1" and result.duel.rows > 1000
    assert result.duel.challenger_value < result.duel.champion_value  # type: ignore[operator]
    champion = get_alias(config.model_name, CHAMPION)
    assert champion is not None and champion.version == result.challenger_version

    # The running service follows the alias by itself (LEADSCORE_MODEL_FOLLOW_S).
    served = _wait_for_version(loop.client, result.challenger_version)
    later = _calibration_traffic(loop, loop.client, "next", now, 30, 800)
    after = _report(loop, later, model=served.model, **_windows(30))
    live = {s.stage: s for s in after.stages}
    assert after.matured_versions == {result.challenger_version: 3 * 800}
    assert live["sql"].ece is not None and live["sql"].ece < 0.03
    assert abs(live["sql"].mean_predicted - live["sql"].observed_rate) < 0.01
