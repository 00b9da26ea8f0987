"""The feature spec refuses, at load time, every spec that would make the model dishonest.

Each refusal test writes a small variation of the bundled ``sample_crm`` spec to a temporary
YAML file and pins the part of the ``SpecError`` message a user acts on. Pure and fast: no
data set is generated.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from features.spec import (
    SPECS_DIR,
    BinaryLabel,
    CategoricalField,
    FeatureSpec,
    KnownAt,
    LifecycleLabel,
    SpecError,
    TextField,
    load_spec,
    normalise_token,
)

SAMPLE_YAML = SPECS_DIR / "sample_crm.yaml"

#: Columns the X Education README calls leaky (filled in by sales after contact).
X_EDUCATION_LEAKY = (
    "Tags",
    "Lead Quality",
    "Lead Profile",
    "Last Activity",
    "Last Notable Activity",
    "Asymmetrique Activity Index",
    "Asymmetrique Profile Index",
    "Asymmetrique Activity Score",
    "Asymmetrique Profile Score",
)
X_EDUCATION_IDS = ("Prospect ID", "Lead Number")


def _sample_raw() -> dict[str, Any]:
    raw = yaml.safe_load(SAMPLE_YAML.read_text(encoding="utf-8"))
    assert isinstance(raw, dict)
    return raw


def _field(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in raw["fields"] if f["name"] == name)


def _write(tmp_path: Path, raw: dict[str, Any], name: str = "variant") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _load_variant(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> FeatureSpec:
    raw = copy.deepcopy(_sample_raw())
    change(raw)
    return load_spec(_write(tmp_path, raw))


def _refused(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> str:
    """Load a variant that must be refused; return the SpecError message."""
    with pytest.raises(SpecError) as info:
        _load_variant(tmp_path, change)
    message = str(info.value)
    # Every refusal names the file it came from.
    assert "variant.yaml" in message
    return message


# -- the bundled specs ------------------------------------------------------------------


def test_sample_crm_loads_by_name_and_by_path() -> None:
    by_name = load_spec("sample_crm")
    by_path = load_spec(SAMPLE_YAML)
    assert by_name == by_path
    assert by_name.name == "sample_crm"
    assert by_name.id_column == "lead_id"
    assert by_name.created_at_column == "created_at"
    assert isinstance(by_name.label, LifecycleLabel)
    assert by_name.scored_stages == ["mql", "sql"]
    assert by_name.actions is not None
    assert by_name.actions.windows_days == [1, 7, 30, 90]
    assert by_name.actions.half_life_days == 14
    assert by_name.actions.recency_cap_days == 365
    assert [f.name for f in by_name.feature_fields] == [
        "seniority",
        "department",
        "industry",
        "company_size",
        "annual_revenue",
        "country",
        "acquisition_source",
        "business_email",
    ]


def test_sample_crm_keeps_personal_and_after_contact_fields_out_of_features() -> None:
    spec = load_spec("sample_crm")
    features = {f.name for f in spec.feature_fields}
    for name in ("first_name", "email", "owner_notes"):
        assert isinstance(spec.field(name), TextField)
        assert name not in features
    assert spec.field("owner_notes").known_at is KnownAt.AFTER_CONTACT
    assert all(f.known_at is KnownAt.BEFORE_CONTACT for f in spec.feature_fields)


def test_x_education_loads_with_a_binary_label() -> None:
    spec = load_spec("x_education")
    assert spec.name == "x_education"
    assert spec.id_column == "Prospect ID"
    assert spec.actions is None
    assert isinstance(spec.label, BinaryLabel)
    assert spec.label.column == "Converted"
    assert spec.scored_stages == ["customer"]
    assert len(spec.feature_fields) == 20
    # Levels are learnt from training rows.
    assert all(f.levels is None for f in spec.feature_fields if isinstance(f, CategoricalField))
    assert "select" in spec.missing_tokens


def test_x_education_uses_no_leaky_column_as_a_feature() -> None:
    spec = load_spec("x_education")
    feature_sources = {f.source for f in spec.feature_fields}
    documented = {f.source: f for f in spec.fields}
    for column in X_EDUCATION_LEAKY:
        assert column in documented, column
        assert documented[column].known_at is KnownAt.AFTER_CONTACT, column
        assert not documented[column].feature, column
        assert column not in feature_sources, column


def test_x_education_ids_are_not_features() -> None:
    spec = load_spec("x_education")
    feature_sources = {f.source for f in spec.feature_fields}
    feature_names = {f.name for f in spec.feature_fields}
    for column in X_EDUCATION_IDS:
        assert column not in feature_sources
    assert spec.id_column not in feature_sources
    assert "lead_number" not in feature_names
    assert isinstance(spec.field("lead_number"), TextField)


# -- leakage ----------------------------------------------------------------------------


def test_after_contact_field_as_feature_is_refused_as_a_leak(tmp_path: Path) -> None:
    def leak(raw: dict[str, Any]) -> None:
        notes = _field(raw, "owner_notes")
        notes.update({"kind": "categorical", "feature": True})

    message = _refused(tmp_path, leak)
    assert "owner_notes" in message
    assert "leak" in message
    assert "feature: false" in message


def test_after_contact_field_is_a_feature_by_default_so_is_refused(tmp_path: Path) -> None:
    def leak(raw: dict[str, Any]) -> None:
        raw["fields"].append(
            {"name": "call_outcome", "kind": "boolean", "known_at": "after_contact"}
        )

    message = _refused(tmp_path, leak)
    assert "call_outcome" in message
    assert "leak" in message


def test_after_contact_field_with_feature_false_is_accepted(tmp_path: Path) -> None:
    def documented(raw: dict[str, Any]) -> None:
        notes = _field(raw, "owner_notes")
        notes.update({"kind": "categorical", "feature": False})

    spec = _load_variant(tmp_path, documented)
    notes = spec.field("owner_notes")
    assert isinstance(notes, CategoricalField)
    assert notes.feature is False
    assert "owner_notes" not in [f.name for f in spec.feature_fields]


def test_text_field_cannot_be_a_feature(tmp_path: Path) -> None:
    def text_feature(raw: dict[str, Any]) -> None:
        _field(raw, "first_name")["feature"] = True

    message = _refused(tmp_path, text_feature)
    assert "text.feature" in message
    assert "False" in message


# -- structural refusals ----------------------------------------------------------------


def test_duplicate_field_names_are_refused(tmp_path: Path) -> None:
    def duplicate(raw: dict[str, Any]) -> None:
        raw["fields"].append(copy.deepcopy(_field(raw, "seniority")))

    message = _refused(tmp_path, duplicate)
    assert "field names must be unique" in message
    assert "seniority" in message


def test_duplicate_action_types_are_refused(tmp_path: Path) -> None:
    def duplicate(raw: dict[str, Any]) -> None:
        raw["actions"]["types"].append({"name": "pricing_page", "phrase": "again"})

    message = _refused(tmp_path, duplicate)
    assert "action type names must be unique" in message


@pytest.mark.parametrize("windows", [[1, 30, 7], [1, 7, 7], [0, 7], [-1, 7], [7, 1]])
def test_windows_must_be_positive_and_strictly_increasing(
    tmp_path: Path, windows: list[int]
) -> None:
    def bad_windows(raw: dict[str, Any]) -> None:
        raw["actions"]["windows_days"] = windows

    message = _refused(tmp_path, bad_windows)
    assert "windows_days" in message
    assert "strictly increasing" in message


def test_scored_stage_not_in_stages_is_refused(tmp_path: Path) -> None:
    def unknown_stage(raw: dict[str, Any]) -> None:
        raw["label"]["scored"] = ["mql", "won"]

    message = _refused(tmp_path, unknown_stage)
    assert "won" in message
    assert "not in stages" in message


@pytest.mark.parametrize("scored", [["sql", "mql"], ["lead", "mql"]])
def test_scored_stages_out_of_order_or_first_stage_are_refused(
    tmp_path: Path, scored: list[str]
) -> None:
    def out_of_order(raw: dict[str, Any]) -> None:
        raw["label"]["scored"] = scored

    message = _refused(tmp_path, out_of_order)
    assert "lifecycle order" in message


def test_alias_pointing_at_an_undeclared_level_is_refused(tmp_path: Path) -> None:
    def bad_alias(raw: dict[str, Any]) -> None:
        _field(raw, "seniority")["aliases"]["boss"] = "chief"

    message = _refused(tmp_path, bad_alias)
    assert "aliases point at levels that are not declared" in message
    assert "chief" in message


@pytest.mark.parametrize("level", ["Engineering", "data science", "data-science", " it"])
def test_levels_must_be_written_normalised(tmp_path: Path, level: str) -> None:
    def messy_level(raw: dict[str, Any]) -> None:
        _field(raw, "department")["levels"].append(level)

    message = _refused(tmp_path, messy_level)
    assert "levels must be written normalised" in message
    assert repr(level) in message


def test_duplicate_levels_are_refused(tmp_path: Path) -> None:
    def duplicate(raw: dict[str, Any]) -> None:
        _field(raw, "department")["levels"].append("sales")

    message = _refused(tmp_path, duplicate)
    assert "levels must be unique" in message


@pytest.mark.parametrize(("low", "high"), [(10, 10), (10, 1)])
def test_numeric_min_must_be_below_max(tmp_path: Path, low: float, high: float) -> None:
    def bad_bounds(raw: dict[str, Any]) -> None:
        _field(raw, "company_size").update({"min": low, "max": high})

    message = _refused(tmp_path, bad_bounds)
    assert f"min ({float(low)}) must be below max ({float(high)})" in message


def test_unknown_key_at_the_top_level_is_refused(tmp_path: Path) -> None:
    def extra(raw: dict[str, Any]) -> None:
        raw["colour"] = "red"

    message = _refused(tmp_path, extra)
    assert "colour" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_key_in_a_field_is_refused(tmp_path: Path) -> None:
    def extra(raw: dict[str, Any]) -> None:
        _field(raw, "company_size")["maximum"] = 10

    message = _refused(tmp_path, extra)
    assert "maximum" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_key_in_actions_is_refused(tmp_path: Path) -> None:
    def extra(raw: dict[str, Any]) -> None:
        raw["actions"]["half_life"] = 7

    message = _refused(tmp_path, extra)
    assert "actions.half_life" in message
    assert "Extra inputs are not permitted" in message


def test_field_name_must_be_snake_case(tmp_path: Path) -> None:
    def bad_name(raw: dict[str, Any]) -> None:
        _field(raw, "seniority")["name"] = "Seniority Level"

    message = _refused(tmp_path, bad_name)
    assert "name" in message
    assert "should match pattern" in message


def test_a_spec_without_any_feature_is_refused(tmp_path: Path) -> None:
    def no_features(raw: dict[str, Any]) -> None:
        for f in raw["fields"]:
            if f["kind"] != "text":
                f["feature"] = False
        del raw["actions"]

    message = _refused(tmp_path, no_features)
    assert "no feature" in message


# -- unreadable files -------------------------------------------------------------------


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "absent.yaml")


def test_unknown_bundled_name_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"no_such_spec\.yaml: spec file not found"):
        load_spec("no_such_spec")


def test_invalid_yaml_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\nversion: 1\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"broken\.yaml: not valid YAML"):
        load_spec(path)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_a_spec_that_is_not_a_mapping_is_a_spec_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError, match="a spec is a YAML mapping at the top level"):
        load_spec(path)


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError)


# -- normalisation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "token"),
    [
        ("  Vice-President ", "vice_president"),
        ("United  Kingdom", "united_kingdom"),
        ("C-Level", "c_level"),
        ("IT/Telecom", "it_telecom"),
        ("Individual\tContributor", "individual_contributor"),
        ("-", ""),
        ("  ", ""),
        ("already_normal", "already_normal"),
    ],
)
def test_normalise_token(raw: str, token: str) -> None:
    assert normalise_token(raw) == token


def test_normalise_token_is_idempotent() -> None:
    for raw in ("  Vice-President ", "United  Kingdom", "A - B / C"):
        once = normalise_token(raw)
        assert normalise_token(once) == once


def test_a_field_named_like_an_action_feature_is_refused(tmp_path: Path) -> None:
    def clash(raw: dict[str, Any]) -> None:
        raw["fields"].append(
            {"name": "pricing_page_count_7d", "kind": "boolean", "known_at": "before_contact"}
        )

    message = _refused(tmp_path, clash)
    assert "feature names would clash" in message and "pricing_page_count_7d" in message


def test_alias_keys_must_be_written_normalised(tmp_path: Path) -> None:
    def spaced(raw: dict[str, Any]) -> None:
        _field(raw, "seniority")["aliases"] = {"Vice President": "vp"}

    message = _refused(tmp_path, spaced)
    assert "alias keys must be written normalised" in message and "Vice President" in message


def test_a_directory_or_binary_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot be read as UTF-8 text"):
        load_spec(tmp_path)
    binary = tmp_path / "spec.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(SpecError, match="cannot be read as UTF-8 text"):
        load_spec(binary)
