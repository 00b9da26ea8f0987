"""The one command line: every job is a subcommand, every user error one line and exit 2.

Each bad input a data scientist meets first is checked with its exact message, as
``leadscore check`` prints it (and ``train`` would, before any run is opened).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leadscore.cli import build_parser, is_user_error, main
from tests.tables import SHAPES, write_table
from training.draft import draft

COMMANDS = {
    "init", "check", "spec-schema", "data", "cv", "train", "tune", "promote", "rollback",
    "models", "serve", "score", "rescore",
    "monitor", "retrain", "rows",
}  # fmt: skip


def test_every_job_is_a_subcommand() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == COMMANDS  # type: ignore[arg-type]


def test_a_usage_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["train", "--no-such-option"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "leadscore: error: unrecognized arguments: --no-such-option (see --help)\n"
    )


def test_mlflow_errors_count_as_user_errors_but_bugs_do_not() -> None:
    from mlflow.exceptions import MlflowException

    assert is_user_error(MlflowException("Invalid value for parameter"))
    assert is_user_error(FileNotFoundError("x.csv"))
    assert not is_user_error(KeyError("a bug"))
    assert not is_user_error(TypeError("a bug"))


def test_spec_schema_is_a_json_schema_of_the_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spec-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "leadscore feature spec"
    assert {"csv", "id_column", "missing_tokens", "fields", "label"} <= set(schema["properties"])
    assert schema["required"] == ["name", "version", "fields", "label"]


# --- the first bad inputs a data scientist meets --------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A drafted spec and config for a generated table (comma-separated, with an id)."""
    data = tmp_path / "leads.csv"
    data.write_text(
        "Lead ID,Source,Visits,Won\n"
        + "".join(f"L{i},{'ads' if i % 3 else 'web'},{i % 7},{'yes' if i % 4 else 'no'}\n"
                  for i in range(1, 61))
    )  # fmt: skip
    assert main(["init", str(data), "--label", "Won", "--out", str(tmp_path)]) == 0
    return tmp_path


def check_error(project: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    code = main(["check", str(project / "spec.yaml"), str(project / "config.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    return err.removeprefix("error: ").rstrip("\n")


def rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_unknown_column_suggests_the_closest(project: Path, capsys: pytest.CaptureFixture) -> None:
    rewrite(project / "spec.yaml", "column: Source", "column: Sourse")
    assert check_error(project, capsys) == (
        "leads.csv: missing column 'Sourse' (did you mean 'Source'?)"
    )


def test_a_third_label_value_names_its_row(project: Path, capsys: pytest.CaptureFixture) -> None:
    rewrite(project / "leads.csv", "L5,ads,5,yes", "L5,ads,5,maybe")
    assert check_error(project, capsys) == (
        "leads.csv: column 'Won': 1 value is not a known label (expected one of yes, no) (row 6)"
    )


def test_short_and_long_rows_name_their_line(project: Path, capsys: pytest.CaptureFixture) -> None:
    rewrite(project / "leads.csv", "L5,ads,5,yes", "L5,ads,5")
    assert check_error(project, capsys) == (
        "leads.csv: line 6 has 3 fields but the header has 4 "
        "(a missing delimiter, or a line broken in two?)"
    )
    rewrite(project / "leads.csv", "L5,ads,5\n", "L5,ads,5,yes,extra\n")
    assert check_error(project, capsys) == (
        "leads.csv: line 6 has 5 fields but the header has 4 "
        "(a value with a comma that is not quoted?)"
    )


def test_unclosed_quote_and_empty_file(project: Path, capsys: pytest.CaptureFixture) -> None:
    rewrite(project / "leads.csv", "L5,ads,5,yes", 'L5,"ads,5,yes')
    assert check_error(project, capsys) == (
        "leads.csv: a quoted value starting on line 6 is never closed (a stray '\"'?)"
    )
    (project / "leads.csv").write_text("")
    assert check_error(project, capsys) == "leads.csv: the leads file is empty: it has no rows"


def test_an_after_contact_field_used_as_a_feature_is_refused(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    rewrite(
        project / "spec.yaml", "web], known_at: before_contact", "web], known_at: after_contact"
    )
    message = check_error(project, capsys)
    assert message.endswith(
        "fields known only after sales contact cannot be features (they leak the outcome): "
        "['source']; set 'feature: false' to keep them documented but unused"
    )


def test_a_config_naming_a_stage_the_model_lacks(
    project: Path, capsys: pytest.CaptureFixture
) -> None:
    rewrite(project / "config.yaml", "thresholds: {'*': 'top:10%'}", "thresholds: {sql: 'top:5%'}")
    assert check_error(project, capsys) == (
        "config.yaml: thresholds names stage 'sql', but the model's stages are converted"
    )


def test_init_refuses_a_label_with_three_values(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = tmp_path / "d.csv"
    data.write_text("id,x,y\n1,a,yes\n2,b,no\n3,c,maybe\n")
    assert main(["init", str(data), "--label", "y", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "error: d.csv: label column 'y' has 3 distinct values ('yes', 'no', 'maybe'); "
        "a binary label needs exactly two\n"
    )


# --- init on the shapes real exports come in ---------------------------------------------


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_init_reads_each_shape_and_check_accepts_the_draft(
    shape: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_table(shape, tmp_path, n=800)
    found = draft(data, SHAPES[shape].label)
    assert found.csv.delimiter == SHAPES[shape].delimiter
    assert found.csv.decimal == SHAPES[shape].decimal
    assert (found.id_column is None) == (SHAPES[shape].id_column is None)
    kinds = {f.column: (f.kind, f.known_at, f.feature) for f in found.fields}
    status = next(c for c in kinds if "tatus" in c)
    assert kinds[status][1:] == ("after_contact", False)  # the leak is kept out
    notes = next(c for c in kinds if "otes" in c)
    assert kinds[notes][0] == "text"
    days = next(f for f in found.fields if "days" in f.name)
    expected = [] if SHAPES[shape].sentinel is None else [str(int(SHAPES[shape].sentinel))]
    assert days.extra.get("missing_tokens", []) == expected
    assert main(["init", str(data), "--label", SHAPES[shape].label, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["check", str(tmp_path / "spec.yaml"), str(tmp_path / "config.yaml")]) == 0
    report = capsys.readouterr().out
    assert report.startswith(f"OK: spec '{shape}' v1 and its config fit {shape}.csv: 800 rows")


def test_serving_a_config_means_its_spec_and_champion_unless_set_explicitly(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.commands import apply_config, example_request

    # setenv first so monkeypatch restores the variable apply_config sets (else it leaks
    # into every later test of this process and changes their spec).
    monkeypatch.setenv("LEADSCORE_SPEC", "")
    monkeypatch.delenv("LEADSCORE_SPEC")
    monkeypatch.setenv("LEADSCORE_MODEL_URI", "models:/pinned@champion")
    spec = apply_config(str(project / "config.yaml"))
    import os

    assert os.environ["LEADSCORE_SPEC"] == str((project / "spec.yaml").resolve())
    assert os.environ["LEADSCORE_MODEL_URI"] == "models:/pinned@champion"
    assert spec is not None and spec.name == "leads"
    assert '"lead_id": "lead-000123"' in example_request(spec, "127.0.0.1", 8000)
