"""Registry lifecycle (register, promote, rollback) against real MLflow stores.

Hermetic tests use the embedded SQLite store of the ``mlflow_home`` fixture; the ``slow`` ones
start a real ``mlflow server`` and point at a dead port, because HTTP error codes and retry
behaviour differ from the embedded store and are what production sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.pyfunc import PythonModel

from leadscore.cli import main as leadscore
from tests.servers import free_port
from training import registry, tracking
from training.registry import CHALLENGER, CHAMPION, PREVIOUS, RegistryError, VersionInfo

MODEL = "lead-readiness"
METRIC = "test_sql_pr_auc"


class ConstantModel(PythonModel):
    """Scores every lead 0.5: the cheapest real model that can be logged and registered."""

    # Type hints on model_input let MLflow 3 infer a signature (it warns without them).
    def predict(
        self, context: object, model_input: list[str], params: dict[str, Any] | None = None
    ) -> list[float]:
        return [0.5] * len(model_input)


def _log_candidate(sql_pr_auc: float, *, tagged: bool = True) -> tuple[str, str]:
    """Log a model on a run carrying the held-out metric (and, like a training run, the
    tag naming it as the promotion metric); return (model URI, run id)."""
    with mlflow.start_run() as run:
        mlflow.log_metric(METRIC, sql_pr_auc)
        if tagged:
            mlflow.set_tag(registry.PROMOTION_METRIC_TAG, METRIC)
        # Explicit requirements skip MLflow's slow requirement inference (a subprocess).
        info = mlflow.pyfunc.log_model(
            name="model", python_model=ConstantModel(), pip_requirements=["mlflow"]
        )
    return info.model_uri, run.info.run_id


def _register(sql_pr_auc: float) -> VersionInfo:
    uri, run_id = _log_candidate(sql_pr_auc)
    return registry.register(uri, name=MODEL, run_id=run_id)


def _promote(
    *, tolerance: float = 0.005, higher_is_better: bool = True, force: bool = False
) -> registry.PromotionDecision:
    return registry.promote(
        MODEL, metric=METRIC, tolerance=tolerance, higher_is_better=higher_is_better, force=force
    )


def _aliases(client: MlflowClient | None = None) -> dict[str, str]:
    """alias -> version, read straight from MLflow (not through the code under test)."""
    model = (client or MlflowClient()).get_registered_model(MODEL)
    return {alias: str(version) for alias, version in model.aliases.items()}


def _tags(version: str) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(MODEL, version).tags)


# --- register / read --------------------------------------------------------------------


def test_register_sets_challenger_and_reads_run_metrics(mlflow_home: Path) -> None:
    uri, run_id = _log_candidate(0.41)
    assert uri.startswith("models:/")  # MLflow 3 logged-model URI, not runs:/

    info = registry.register(uri, name=MODEL, run_id=run_id, tags={"trained_by": "test"})

    assert (info.version, info.run_id, info.aliases) == ("1", run_id, [CHALLENGER])
    assert info.metrics[METRIC] == pytest.approx(0.41)
    assert _aliases() == {CHALLENGER: "1"}
    assert _tags("1")["trained_by"] == "test"
    assert registry.get_alias(MODEL, CHAMPION) is None


def test_register_rejects_a_run_that_is_not_the_models_source(mlflow_home: Path) -> None:
    uri, _ = _log_candidate(0.41)
    _, other_run = _log_candidate(0.50)

    with pytest.raises(RegistryError, match="not made challenger"):
        registry.register(uri, name=MODEL, run_id=other_run)
    assert _aliases() == {}


def test_get_alias_returns_none_for_missing_model_or_alias(mlflow_home: Path) -> None:
    assert registry.get_alias("no-such-model", CHAMPION) is None
    _register(0.41)
    assert registry.get_alias(MODEL, CHAMPION) is None


def test_held_out_metric_names_what_is_available(mlflow_home: Path) -> None:
    info = _register(0.41)
    assert registry.held_out_metric(info, METRIC) == pytest.approx(0.41)
    with pytest.raises(RegistryError, match=rf"no metric 'test_mql_pr_auc'.*{METRIC}"):
        registry.held_out_metric(info, "test_mql_pr_auc")


def test_describe_lists_newest_first_with_aliases(mlflow_home: Path) -> None:
    _register(0.41)
    _promote()
    _register(0.42)

    versions = registry.describe(MODEL)

    assert [(v.version, v.aliases) for v in versions] == [("2", [CHALLENGER]), ("1", [CHAMPION])]
    assert registry.describe("no-such-model") == []


# --- promote ---------------------------------------------------------------------------


def test_first_promotion_without_champion_promotes(mlflow_home: Path) -> None:
    _register(0.41)

    decision = _promote()

    assert (decision.promoted, decision.forced, decision.champion_before) == (True, False, None)
    assert (
        decision.reason
        == "Promoted version 1 to champion: no champion yet (test_sql_pr_auc 0.410)."
    )
    assert _aliases() == {CHALLENGER: "1", CHAMPION: "1"}
    tags = _tags("1")
    assert (tags["promoted_from"], tags["forced"]) == ("none", "false")
    assert datetime.fromisoformat(tags["promoted_at"]).utcoffset() is not None


def test_worse_challenger_is_refused_and_nothing_changes(mlflow_home: Path) -> None:
    _register(0.412)
    _promote()
    _register(0.380)
    tags_before = _tags("2")

    decision = _promote()

    assert not decision.promoted
    assert (decision.challenger, decision.champion_before) == ("2", "1")
    assert decision.reason == (
        "Refused: challenger version 2 test_sql_pr_auc 0.380 is worse than champion version 1 "
        "0.412 by more than 0.005."
    )
    assert _aliases() == {CHAMPION: "1", CHALLENGER: "2"}
    assert _tags("2") == tags_before


@pytest.mark.parametrize(
    ("challenger_value", "promoted"),
    [(0.408, True), (0.407, True), (0.4069, False)],
    ids=["within", "exactly-at-tolerance", "just-beyond"],
)
def test_tolerance_gate(mlflow_home: Path, challenger_value: float, promoted: bool) -> None:
    _register(0.412)
    _promote()
    _register(challenger_value)

    decision = _promote(tolerance=0.005)

    assert decision.promoted is promoted
    expected = {CHAMPION: "2", PREVIOUS: "1"} if promoted else {CHAMPION: "1"}
    assert _aliases() == {CHALLENGER: "2", **expected}


def test_promotion_records_provenance_on_the_new_champion(mlflow_home: Path) -> None:
    _register(0.40)
    _promote()
    _register(0.45)

    decision = _promote()

    assert decision.reason == (
        "Promoted version 2 to champion: test_sql_pr_auc 0.450 vs 0.400 (tolerance 0.005)."
    )
    assert (_tags("2")["promoted_from"], _tags("2")["forced"]) == ("1", "false")


def test_lower_is_better_metrics_flip_the_gate(mlflow_home: Path) -> None:
    _register(0.20)  # think log-loss
    _promote()
    _register(0.30)

    assert not _promote(higher_is_better=False).promoted
    assert _aliases()[CHAMPION] == "1"


def test_force_promotes_a_worse_challenger_and_says_so(mlflow_home: Path) -> None:
    _register(0.412)
    _promote()
    _register(0.380)

    decision = _promote(force=True)

    assert (decision.promoted, decision.forced) == (True, True)
    assert "Forced" in decision.reason and "would have refused" in decision.reason
    assert _aliases() == {CHAMPION: "2", PREVIOUS: "1", CHALLENGER: "2"}
    assert (_tags("2")["forced"], _tags("2")["promoted_from"]) == ("true", "1")


def test_promoting_the_champion_again_is_a_no_op(mlflow_home: Path) -> None:
    _register(0.41)
    _promote()

    decision = _promote()

    assert (decision.promoted, decision.unchanged) == (False, True)
    assert _aliases() == {CHAMPION: "1", CHALLENGER: "1"}


def test_promote_without_challenger_is_a_clear_error(mlflow_home: Path) -> None:
    with pytest.raises(RegistryError, match="no 'challenger' version"):
        _promote()


# --- rollback --------------------------------------------------------------------------


def test_rollback_returns_champion_to_previous_version(mlflow_home: Path) -> None:
    _register(0.41)
    _promote()
    _register(0.42)
    _promote()

    result = registry.rollback(MODEL)

    assert (result.restored, result.rolled_back, result.challenger_cleared) == ("1", "2", True)
    # PREVIOUS is consumed and the bad version cannot be re-promoted by accident.
    assert _aliases() == {CHAMPION: "1"}
    assert datetime.fromisoformat(_tags("2")["rolled_back_at"]).utcoffset() is not None
    with pytest.raises(RegistryError, match="no 'previous-champion'"):
        registry.rollback(MODEL)


# --- CLI --------------------------------------------------------------------------------


def test_cli_promote_prints_one_sentence_and_exits_0(
    mlflow_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _register(0.405)
    _promote()
    _register(0.412)
    capsys.readouterr()

    assert leadscore(["promote"]) == 0

    out = capsys.readouterr().out
    assert out == (
        "Promoted version 2 to champion: test_sql_pr_auc 0.412 vs 0.405 (tolerance 0.005).\n"
    )


def test_cli_refusal_exits_1_and_suggests_force(
    mlflow_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _register(0.412)
    _promote()
    _register(0.380)
    capsys.readouterr()

    assert leadscore(["promote", "--metric", METRIC, "--tolerance", "0.005"]) == 1

    assert capsys.readouterr().out == (
        "Refused: challenger version 2 test_sql_pr_auc 0.380 is worse than champion version 1 "
        "0.412 by more than 0.005. Use --force to override.\n"
    )
    assert leadscore(["promote", "--force"]) == 0
    assert capsys.readouterr().out.startswith("Forced promotion of version 2 to champion")


def test_cli_errors_exit_2_with_message_and_no_traceback(
    mlflow_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert leadscore(["promote"]) == 2
    assert leadscore(["rollback"]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "error: Model 'lead-readiness' has no 'challenger' version; register a trained model "
        "first.",
        "error: Model 'lead-readiness' has no 'previous-champion' version to roll back to "
        "(nothing was promoted over a champion, or it was already rolled back).",
    ]


def test_the_gate_uses_the_metric_the_challenger_was_trained_for(mlflow_home: Path) -> None:
    uri, run_id = _log_candidate(0.3, tagged=False)
    registry.register(uri, name=MODEL, run_id=run_id)
    with pytest.raises(RegistryError, match="does not say which metric to promote it on"):
        registry.promote(MODEL)
    _register(0.4)
    decision = registry.promote(MODEL)
    assert (decision.promoted, decision.metric, decision.challenger_value) == (True, METRIC, 0.4)


def test_cli_rollback_and_list(mlflow_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _register(0.41)
    _promote()
    _register(0.42)
    _promote()
    capsys.readouterr()

    assert leadscore(["rollback"]) == 0
    assert leadscore(["models"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Rolled back champion from version 2 to version 1.")
    assert lines[1].startswith("Version 2: test_sql_pr_auc 0.420, run ")
    assert lines[2].startswith("Version 1 [champion]: test_sql_pr_auc 0.410, run ")


@pytest.mark.slow  # a fresh interpreter pays MLflow's import (~3-4 s)
def test_cli_runs_as_a_module(mlflow_home: Path) -> None:
    """``python -m leadscore`` works from a fresh process configured only by env."""
    env = {**os.environ, "LEADSCORE_HOME": str(mlflow_home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-m", "leadscore", "models"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stdout) == (
        0,
        "No versions of model 'lead-readiness' are registered.\n",
    )


# --- tracking configuration -------------------------------------------------------------


def test_settings_read_environment_when_instantiated(
    mlflow_isolated: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", "/not/the/project")  # must not be mistaken for LEADSCORE_HOME
    monkeypatch.setenv("LEADSCORE_EXPERIMENT", "exp-x")

    settings = tracking.TrackingSettings()

    assert (settings.tracking_uri, settings.experiment, settings.home) == (None, "exp-x", tmp_path)
    assert tracking.resolve_tracking_uri(settings) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.resolve_tracking_uri(tracking.TrackingSettings()) == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # exported but empty means unset
    assert tracking.TrackingSettings().tracking_uri is None
    assert tracking.TrackingSettings(home=Path("/srv/ls")).home == Path("/srv/ls")
    with pytest.raises(ValueError, match="hom"):
        tracking.TrackingSettings(hom=Path("/typo"))  # type: ignore[call-arg]


def test_configure_puts_store_and_artifacts_under_home(
    mlflow_isolated: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # artifacts must not follow the current directory
    monkeypatch.setenv("LEADSCORE_HOME", str(home))

    experiment_id = tracking.configure(tracking.TrackingSettings())
    _log_candidate(0.41)

    assert mlflow.get_tracking_uri() == f"sqlite:///{home.resolve()}/mlflow.db"
    assert (home / "mlflow.db").is_file()
    experiment = MlflowClient().get_experiment(experiment_id)
    assert experiment.name == "lead-readiness"
    assert experiment.artifact_location == (home / "mlruns" / "lead-readiness").resolve().as_uri()
    assert list((home / "mlruns" / "lead-readiness").rglob("MLmodel"))
    assert list(elsewhere.iterdir()) == []


def test_http_limits_do_not_override_the_users_values(
    mlflow_isolated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")

    tracking.bound_http_retries()

    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
    assert (
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]
        == tracking.HTTP_LIMITS["MLFLOW_HTTP_REQUEST_TIMEOUT"]
    )


# --- remote servers (slow) --------------------------------------------------------------


@pytest.mark.slow
def test_unreachable_server_fails_fast_with_a_clear_error(
    mlflow_isolated: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    monkeypatch.setenv("LEADSCORE_HOME", str(tmp_path))

    started = time.monotonic()
    with pytest.raises(tracking.TrackingError, match=r"127\.0\.0\.1"):
        tracking.configure(tracking.TrackingSettings())
    with pytest.raises(RegistryError, match=r"Reading alias 'champion'.*127\.0\.0\.1"):
        registry.get_alias(MODEL, CHAMPION)
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_register_promote_rollback_against_a_real_server(
    mlflow_isolated: None, mlflow_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client_home = tmp_path / "client"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("LEADSCORE_HOME", str(client_home))
    tracking.configure(tracking.TrackingSettings())

    assert registry.get_alias(MODEL, CHAMPION) is None  # missing model over REST
    _register(0.41)
    assert registry.get_alias(MODEL, CHAMPION) is None  # missing alias over REST
    assert _promote().promoted
    _register(0.38)
    assert not _promote().promoted
    _register(0.42)
    assert _promote().promoted

    server = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    assert _aliases(server) == {CHAMPION: "3", PREVIOUS: "1", CHALLENGER: "3"}
    assert server.get_model_version(MODEL, "3").tags["promoted_from"] == "1"

    assert registry.rollback(MODEL).restored == "1"
    assert _aliases(server) == {CHAMPION: "1"}
    # The server chose where artifacts go; nothing landed in the client's project folder.
    assert not (client_home / "mlruns").exists()
