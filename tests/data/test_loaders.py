"""The loaders refuse bad files with one clear line, and load good ones typed and renamed.

Each refusal test pins the parts of the message a user acts on: the file name, the column
and the row numbers (file lines, header = line 1). Files are small CSVs written inline.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.loaders import (
    DataError,
    furthest_stage,
    load_actions,
    load_history,
    load_leads,
    read_table,
)
from features.spec import FeatureSpec, SpecError, load_spec

REPO = Path(__file__).resolve().parents[2]
X_EDUCATION_CSV = REPO.parent / "shared" / "data" / "x_education" / "Leads.csv"
X_EDUCATION_SPEC = REPO / "features" / "specs" / "x_education.yaml"


def _spec(**overrides: Any) -> FeatureSpec:
    """A small lifecycle spec whose sources differ from canonical names, to test renaming."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "version": 1,
        "id_column": "lead_id",
        "created_at_column": "created_at",
        "fields": [
            {
                "name": "company_size",
                "column": "Company Size",
                "kind": "numeric",
                "unit": "employees",
                "min": 1,
                "max": 100000,
                "known_at": "before_contact",
            },
            {
                "name": "seniority",
                "kind": "categorical",
                "levels": ["manager", "director"],
                "max_length": 20,
                "known_at": "before_contact",
            },
            {
                "name": "business_email",
                "column": "Business Email",
                "kind": "boolean",
                "known_at": "before_contact",
            },
            {
                "name": "first_name",
                "column": "First Name",
                "kind": "text",
                "known_at": "before_contact",
            },
        ],
        "actions": {
            "types": [
                {"name": "page_view", "phrase": "page views"},
                {"name": "demo_request", "phrase": "demo requests"},
            ]
        },
        "label": {"kind": "lifecycle"},
    }
    raw.update(overrides)
    return FeatureSpec.model_validate(raw)


def _binary_spec() -> FeatureSpec:
    return FeatureSpec.model_validate(
        {
            "name": "tiny_binary",
            "version": 1,
            "id_column": "Prospect ID",
            "fields": [
                {
                    "name": "total_time",
                    "column": "Total Time Spent on Website",
                    "kind": "numeric",
                    "unit": "seconds",
                    "min": 0,
                    "max": 100000,
                    "known_at": "before_contact",
                }
            ],
            "label": {
                "kind": "binary",
                "column": "Converted",
                "positive": ["1", "yes"],
                "negative": ["0", "no"],
            },
        }
    )


LEADS_HEADER = "lead_id,created_at,Company Size,seniority,Business Email,First Name,extra\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _leads(tmp_path: Path, *rows: str, name: str = "leads.csv") -> Path:
    return _write(tmp_path, name, LEADS_HEADER + "".join(r + "\n" for r in rows))


GOOD_ROW = "L1,2024-03-01T09:30:00Z,120,Manager,yes,Ana,x"


def _refusal(call: Any, *args: Any, **kwargs: Any) -> DataError:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    assert "\n" not in str(info.value), "messages are single-line"
    return info.value


# --------------------------------------------------------------------------------------
# read_table refusals
# --------------------------------------------------------------------------------------


def test_missing_file_is_refused(tmp_path: Path) -> None:
    err = _refusal(read_table, tmp_path / "nope.csv", required=["a"], kind="leads")
    assert str(err).startswith("nope.csv: leads file not found (")
    assert err.file == "nope.csv" and err.column is None and err.rows == []


def test_zero_byte_file_has_no_rows(tmp_path: Path) -> None:
    path = _write(tmp_path, "leads.csv", "")
    err = _refusal(read_table, path, required=["a"], kind="leads")
    assert str(err) == "leads.csv: the leads file is empty: it has no rows"


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    path = _write(tmp_path, "actions.csv", "lead_id,action_type,occurred_at\n")
    err = _refusal(read_table, path, required=["lead_id"], kind="actions")
    assert str(err) == "actions.csv: the actions file has no rows (only a header)"


@pytest.mark.parametrize(
    ("delimiter", "label"), [(";", "semicolon (;)"), ("\t", "tab"), ("|", "pipe (|)")]
)
def test_wrong_delimiter_is_named(tmp_path: Path, delimiter: str, label: str) -> None:
    text = delimiter.join(["lead_id", "created_at"]) + "\n" + delimiter.join(["L1", "1,5"]) + "\n"
    path = _write(tmp_path, "leads.csv", text)
    err = _refusal(read_table, path, required=["lead_id"], kind="leads")
    written = "\\t" if delimiter == "\t" else delimiter
    assert str(err) == (
        f"leads.csv: the header looks {label}-separated, but the spec says comma (,); "
        f'set csv.delimiter: "{written}" in the spec (or re-export the file)'
    )


def test_missing_column_suggests_the_closest(tmp_path: Path) -> None:
    path = _write(tmp_path, "leads.csv", "lead_id,company size,Senority\nL1,3,vp\n")
    err = _refusal(
        read_table, path, required=["lead_id", "company_size", "seniority"], kind="leads"
    )
    assert str(err) == (
        "leads.csv: missing column 'company_size' (did you mean 'company size'?); "
        "missing column 'seniority' (did you mean 'Senority'?)"
    )
    assert err.column == "company_size"


def test_missing_column_without_a_match_lists_the_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, "leads.csv", "lead_id,colour\nL1,red\n")
    err = _refusal(read_table, path, required=["lead_id", "annual_revenue"], kind="leads")
    assert str(err) == (
        "leads.csv: missing column 'annual_revenue' (the file has columns 'lead_id', 'colour')"
    )


def test_duplicate_column_names_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "leads.csv", "lead_id,country,country\nL1,us,de\n")
    err = _refusal(read_table, path, required=["lead_id"], kind="leads")
    assert str(err) == "leads.csv: column name appears more than once in the header: 'country'"
    assert err.column == "country"


def test_row_with_too_many_fields_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "leads.csv", "lead_id,country\nL1,us\nL2,us,extra\nL3,de\n")
    err = _refusal(read_table, path, required=["lead_id"], kind="leads")
    assert str(err).startswith("leads.csv: line 3 has 3 fields but the header has 2")
    assert err.rows == [3]


def test_every_row_longer_than_header_is_not_silently_truncated(tmp_path: Path) -> None:
    path = _write(tmp_path, "leads.csv", "lead_id,country\nL1,us,1\nL2,de,2\n")
    err = _refusal(read_table, path, required=["lead_id"], kind="leads")
    assert str(err).startswith("leads.csv: line 2 has 3 fields but the header has 2")


def test_one_empty_trailing_field_is_tolerated(tmp_path: Path) -> None:
    path = _write(tmp_path, "leads.csv", "lead_id,country\nL1,us,\nL2,de,\n")
    frame = read_table(path, required=["lead_id"], kind="leads")
    assert frame.to_dict("list") == {"lead_id": ["L1", "L2"], "country": ["us", "de"]}


def test_unclosed_quote_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "leads.csv", 'lead_id,country\nL1,us\nL2,"de\nL3,fr\n')
    err = _refusal(read_table, path, required=["lead_id"], kind="leads")
    assert str(err) == (
        "leads.csv: a quoted value starting on line 3 is never closed (a stray '\"'?)"
    )


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_bytes("lead_id,city\nL1,Paris\nL2,Besançon\n".encode("latin-1"))
    err = _refusal(read_table, path, required=["lead_id"], kind="leads")
    assert str(err) == (
        "leads.csv: the leads file is not UTF-8 text (line 3); re-save it as 'CSV UTF-8' "
        "or set csv.encoding in the spec (e.g. latin-1)"
    )
    assert err.rows == [3]


def test_garbled_gzip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "actions.csv.gz"
    path.write_bytes(b"this is not gzip data at all\n")
    err = _refusal(read_table, path, required=["lead_id"], kind="actions")
    assert str(err).startswith("actions.csv.gz: the actions file cannot be read (")


def test_garbled_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "leads.parquet"
    path.write_bytes(b"lead_id,country\nL1,us\n")
    err = _refusal(read_table, path, required=["lead_id"], kind="leads")
    assert str(err).startswith("leads.parquet: the leads file is not a readable Parquet file (")


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "leads.xlsx", "whatever")
    err = _refusal(read_table, path, required=["lead_id"], kind="leads")
    assert str(err) == (
        "leads.xlsx: cannot read a leads file of this type; expected .csv, .csv.gz or .parquet"
    )


def test_gzip_and_bom_are_read(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\ufefflead_id,country\nL1,NA\n")
    frame = read_table(path, required=["lead_id"], kind="leads")
    assert list(frame.columns) == ["lead_id", "country"]
    assert frame["country"].tolist() == ["NA"]  # read as text; the loaders judge tokens


def test_data_error_pickles_with_its_attributes() -> None:
    err = DataError(
        "leads.csv", "3 rows have no id (rows 2, 3, 4)", column="lead_id", rows=[2, 3, 4]
    )
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.file, back.column, back.rows) == (
        str(err),
        "leads.csv",
        "lead_id",
        [2, 3, 4],
    )


# --------------------------------------------------------------------------------------
# load_leads
# --------------------------------------------------------------------------------------


def test_leads_happy_path_types_and_canonical_names(tmp_path: Path) -> None:
    path = _leads(
        tmp_path,
        GOOD_ROW,
        "L2,2024-03-01 11:30:00+02:00,Select,select,No,Bo,y",
        "L3,2024-03-02,,N/A,,Cy,z",
        "L4,,1e3, Director ,TRUE,,w",
    )
    leads = load_leads(path, _spec())
    assert list(leads.columns) == [
        "lead_id",
        "created_at",
        "company_size",
        "seniority",
        "business_email",
        "first_name",
        "extra",
    ]
    assert leads["lead_id"].tolist() == ["L1", "L2", "L3", "L4"]
    assert str(leads["created_at"].dtype) == "datetime64[ns, UTC]"
    assert leads["created_at"].tolist()[:3] == [
        pd.Timestamp("2024-03-01T09:30:00Z"),
        pd.Timestamp("2024-03-01T09:30:00Z"),
        pd.Timestamp("2024-03-02T00:00:00Z"),
    ]
    assert pd.isna(leads["created_at"].iloc[3])
    assert leads["company_size"].dtype == np.float64
    np.testing.assert_array_equal(leads["company_size"], [120.0, np.nan, np.nan, 1000.0])
    assert leads["business_email"].dtype == np.float64
    np.testing.assert_array_equal(leads["business_email"], [1.0, 0.0, np.nan, 1.0])
    assert leads["seniority"].dtype == object
    assert leads["seniority"].tolist() == ["Manager", None, None, " Director "]
    assert leads["first_name"].tolist() == ["Ana", "Bo", "Cy", ""]  # text untouched
    assert leads["extra"].tolist() == ["x", "y", "z", "w"]


def test_leads_refuse_non_numbers_without_echoing_them(tmp_path: Path) -> None:
    sizes = ["120", "lots", "12 000", "7", "many", "ten", "?", "1,5"]
    rows = [f"L{i},2024-03-01,{size},Manager,yes,Ana,x" for i, size in enumerate(sizes)]
    rows[-1] = 'L7,2024-03-01,"1,5",Manager,yes,Ana,x'  # a decimal comma, quoted
    path = _leads(tmp_path, *rows)
    err = _refusal(load_leads, path, _spec())
    assert str(err) == (
        "leads.csv: column 'Company Size': 6 values are not numbers (rows 3, 4, 6, 7, 8, ...)"
    )
    assert err.column == "Company Size" and err.rows == [3, 4, 6, 7, 8, 9]
    for value in ("lots", "many", "ten", "12 000"):
        assert value not in str(err)


def test_leads_single_bad_number_is_singular(tmp_path: Path) -> None:
    path = _leads(tmp_path, GOOD_ROW, "L2,2024-03-01,inf,Manager,yes,Bo,x")
    err = _refusal(load_leads, path, _spec())
    assert str(err) == "leads.csv: column 'Company Size': 1 value is not a finite number (row 3)"


def test_leads_refuse_bad_booleans(tmp_path: Path) -> None:
    path = _leads(tmp_path, GOOD_ROW, "L2,2024-03-01,3,Manager,maybe,Bo,x")
    err = _refusal(load_leads, path, _spec())
    assert str(err) == (
        "leads.csv: column 'Business Email': 1 value is not yes/no "
        "(expected yes, no, true, false, y, n, 1 or 0) (row 3)"
    )


def test_leads_refuse_overlong_categorical(tmp_path: Path) -> None:
    path = _leads(tmp_path, GOOD_ROW, "L2,2024-03-01,3," + "x" * 21 + ",yes,Bo,x")
    err = _refusal(load_leads, path, _spec())
    assert str(err) == (
        "leads.csv: column 'seniority': 1 value is longer than 20 characters (row 3)"
    )


def test_leads_refuse_empty_ids(tmp_path: Path) -> None:
    path = _leads(tmp_path, GOOD_ROW, " ,2024-03-01,3,Manager,yes,Bo,x", ",,,,,,")
    err = _refusal(load_leads, path, _spec())
    assert str(err) == "leads.csv: column 'lead_id': 2 rows have no id (rows 3, 4)"


def test_leads_refuse_duplicate_ids(tmp_path: Path) -> None:
    row = "L{},2024-03-01,3,Manager,yes,Bo,x"
    path = _leads(tmp_path, row.format(1), row.format(2), row.format(1), row.format(2))
    err = _refusal(load_leads, path, _spec())
    assert str(err) == (
        "leads.csv: column 'lead_id': 2 ids appear more than once, on 4 rows (rows 2, 3, 4, 5)"
    )


def test_leads_refuse_bad_timestamps(tmp_path: Path) -> None:
    row = "L{},{},3,Manager,yes,Bo,x"
    path = _leads(
        tmp_path, row.format(1, "01/03/2024"), row.format(2, "2024-03-01"), row.format(3, "soon")
    )
    err = _refusal(load_leads, path, _spec())
    assert str(err) == (
        "leads.csv: column 'created_at': 2 values are not ISO-8601 timestamps "
        "(e.g. 2024-03-01T09:30:00Z) (rows 2, 4)"
    )


def test_leads_missing_feature_column(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "leads.csv", "lead_id,created_at,company_size,seniority,Business Email\nL1,,,,\n"
    )
    err = _refusal(load_leads, path, _spec())
    assert str(err) == ("leads.csv: missing column 'Company Size' (did you mean 'company_size'?)")


def test_leads_refuse_a_rename_that_collides(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "leads.csv",
        "lead_id,created_at,Company Size,company_size,seniority,Business Email\n"
        "L1,2024-03-01,3,4,manager,yes\n",
    )
    err = _refusal(load_leads, path, _spec())
    assert str(err).startswith(
        "leads.csv: column 'Company Size' is renamed to 'company_size' by the spec, "
        "but the file already has a column 'company_size'"
    )


def test_binary_label_becomes_int8_and_bad_labels_are_refused(tmp_path: Path) -> None:
    header = "Prospect ID,Total Time Spent on Website,Converted,Notes\n"
    good = _write(tmp_path, "leads.csv", header + "a,10,1,x\nb,,No,y\nc,0,YES,z\n")
    leads = load_leads(good, _binary_spec(), require_label=True)
    assert list(leads.columns) == ["Prospect ID", "total_time", "label", "Notes"]
    assert leads["label"].dtype == np.int8
    assert leads["label"].tolist() == [1, 0, 1]

    bad = _write(tmp_path, "bad.csv", header + "a,10,1,x\nb,1,2,y\nc,0,,z\nd,0,maybe,z\n")
    err = _refusal(load_leads, bad, _binary_spec(), require_label=True)
    assert str(err) == (
        "bad.csv: column 'Converted': 3 values are not a known label "
        "(expected one of 1, yes, 0, no) (rows 3, 4, 5)"
    )
    # Scoring does not need the label: a partial one is left alone.
    scored = load_leads(bad, _binary_spec())
    assert "label" not in scored.columns
    assert scored["Converted"].tolist() == ["1", "2", "", "maybe"]


def test_binary_label_column_required_only_when_asked(tmp_path: Path) -> None:
    path = _write(tmp_path, "leads.csv", "Prospect ID,Total Time Spent on Website\na,1\n")
    assert len(load_leads(path, _binary_spec())) == 1
    err = _refusal(load_leads, path, _binary_spec(), require_label=True)
    assert str(err).startswith("leads.csv: missing column 'Converted'")


def test_leads_from_parquet_are_typed_the_same_way(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "lead_id": [1, 2],
            "created_at": pd.to_datetime(["2024-03-01 09:30", "2024-03-02 00:00"]),
            "Company Size": [120, None],
            "seniority": ["Manager", "Select"],
            "Business Email": [True, False],
        }
    )
    path = tmp_path / "leads.parquet"
    frame.to_parquet(path)
    leads = load_leads(path, _spec())
    assert leads["lead_id"].tolist() == ["1", "2"]
    assert str(leads["created_at"].dtype) == "datetime64[ns, UTC]"
    assert leads["created_at"].iloc[0] == pd.Timestamp("2024-03-01T09:30:00Z")
    np.testing.assert_array_equal(leads["company_size"], [120.0, np.nan])
    np.testing.assert_array_equal(leads["business_email"], [1.0, 0.0])
    assert leads["seniority"].tolist() == ["Manager", None]


# --------------------------------------------------------------------------------------
# load_actions / load_history / furthest_stage
# --------------------------------------------------------------------------------------

ACTIONS_HEADER = "lead_id,action_type,occurred_at\n"


def test_actions_happy_path(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "actions.csv",
        ACTIONS_HEADER
        + "L2,Page View,2024-03-02T10:00:00Z\n"
        + "L1,demo-request,2024-03-01 08:00:00\n"
        + "L1,webinar,2024-03-01T10:00:00+01:00\n",
    )
    actions = load_actions(path, _spec(), known_ids=pd.Index(["L1", "L2"]))
    assert list(actions.columns) == ["lead_id", "action_type", "occurred_at"]
    assert actions["lead_id"].tolist() == ["L2", "L1", "L1"]  # file order kept
    assert actions["action_type"].tolist() == ["page_view", "demo_request", "webinar"]
    assert str(actions["occurred_at"].dtype) == "datetime64[ns, UTC]"
    assert actions["occurred_at"].tolist() == [
        pd.Timestamp("2024-03-02T10:00:00Z"),
        pd.Timestamp("2024-03-01T08:00:00Z"),
        pd.Timestamp("2024-03-01T09:00:00Z"),
    ]


def test_actions_from_parquet_with_integer_ids_match_integer_known_ids(tmp_path: Path) -> None:
    path = tmp_path / "actions.parquet"
    pd.DataFrame(
        {
            "lead_id": [1, 3, 3],
            "action_type": ["Page View", "page_view", "webinar"],
            "occurred_at": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
        }
    ).to_parquet(path, index=False)
    actions = load_actions(path, _spec(), known_ids=pd.Index([1, 2, 3]))
    assert actions["lead_id"].tolist() == ["1", "3", "3"]
    assert actions["occurred_at"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")
    err = _refusal(load_actions, path, _spec(), known_ids=pd.Index([1, 2]))
    assert err.rows == [3, 4]


def test_actions_use_the_spec_column_names(tmp_path: Path) -> None:
    spec = _spec(
        actions={
            "lead_id_column": "Lead",
            "type_column": "Event",
            "timestamp_column": "When",
            "types": [{"name": "page_view", "phrase": "page views"}],
        }
    )
    path = _write(tmp_path, "events.csv", "When,Lead,Event\n2024-01-01,L1,page_view\n")
    actions = load_actions(path, spec)
    assert actions.to_dict("list") == {
        "lead_id": ["L1"],
        "action_type": ["page_view"],
        "occurred_at": [pd.Timestamp("2024-01-01", tz="UTC")],
    }


def test_actions_unknown_types_refused_when_the_spec_says_so(tmp_path: Path) -> None:
    spec = _spec(
        actions={
            "unknown_types": "error",
            "types": [{"name": "page_view", "phrase": "page views"}],
        }
    )
    path = _write(
        tmp_path,
        "actions.csv",
        ACTIONS_HEADER + "L1,page_view,2024-01-01\nL1,webinar,2024-01-01\nL1,chat,2024-01-01\n",
    )
    err = _refusal(load_actions, path, spec)
    assert str(err) == (
        "actions.csv: column 'action_type': 2 actions have a type the spec does not list "
        "(expected one of page_view) (rows 3, 4)"
    )


def test_actions_of_unknown_leads_are_refused(tmp_path: Path) -> None:
    body = "".join(f"{lead},page_view,2024-01-01\n" for lead in ["L1", "X", "L1", "Y", "Z", "W"])
    path = _write(tmp_path, "actions.csv", ACTIONS_HEADER + body)
    err = _refusal(load_actions, path, _spec(), known_ids=pd.Index(["L1"]))
    assert str(err) == (
        "actions.csv: column 'lead_id': 4 actions belong to leads that are not in the "
        "leads table (rows 3, 5, 6, 7)"
    )


def test_actions_without_a_time_are_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "actions.csv", ACTIONS_HEADER + "L1,page_view,\nL1,page_view,2024-01-01\n"
    )
    err = _refusal(load_actions, path, _spec())
    assert str(err) == "actions.csv: column 'occurred_at': 1 row has no timestamp (row 2)"


def test_actions_need_an_actions_spec(tmp_path: Path) -> None:
    path = _write(tmp_path, "actions.csv", ACTIONS_HEADER + "L1,page_view,2024-01-01\n")
    with pytest.raises(SpecError, match="declares no actions table"):
        load_actions(path, _binary_spec())


HISTORY_HEADER = "lead_id,stage,reached_at\n"


def test_history_happy_path_and_furthest_stage(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "history.csv",
        HISTORY_HEADER
        + "L1,Lead,2024-01-01\n"
        + "L1,MQL,2024-01-05\n"
        + "L1,SQL,2024-02-01\n"
        + "L2,lead,2024-01-02\n"
        + "L3, Opportunity ,2024-01-03\n",
    )
    spec = load_spec("sample_crm")
    history = load_history(path, spec, known_ids=pd.Index(["L1", "L2", "L3", "L4"]))
    assert history["stage"].tolist() == ["lead", "mql", "sql", "lead", "opportunity"]
    assert str(history["reached_at"].dtype) == "datetime64[ns, UTC]"

    assert furthest_stage(history, spec).to_dict() == {"L1": 2, "L2": 0, "L3": 3}
    until = pd.Series(
        pd.to_datetime(["2024-01-10", "2024-01-10", "2024-01-01", "2024-01-10"], utc=True),
        index=pd.Index(["L1", "L2", "L3", "L4"], name="lead_id"),
    )
    as_of = furthest_stage(history, spec, until=until)
    assert as_of.to_dict() == {"L1": 1, "L2": 0, "L3": 0, "L4": 0}
    assert as_of.dtype == np.int64


def test_history_refuses_unknown_stages(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "history.csv", HISTORY_HEADER + "L1,lead,2024-01-01\nL1,won,2024-01-05\n"
    )
    err = _refusal(load_history, path, load_spec("sample_crm"))
    assert str(err) == (
        "history.csv: column 'stage': 1 value is not a known stage "
        "(expected one of lead, mql, sql, opportunity, customer) (row 3)"
    )


def test_history_refuses_unknown_leads(tmp_path: Path) -> None:
    path = _write(tmp_path, "history.csv", HISTORY_HEADER + "L9,lead,2024-01-01\n")
    err = _refusal(load_history, path, load_spec("sample_crm"), known_ids=pd.Index(["L1"]))
    assert str(err) == (
        "history.csv: column 'lead_id': 1 stage change belongs to a lead that is not in the "
        "leads table (row 2)"
    )


def test_history_needs_a_lifecycle_label(tmp_path: Path) -> None:
    path = _write(tmp_path, "history.csv", HISTORY_HEADER + "L1,lead,2024-01-01\n")
    with pytest.raises(SpecError, match="binary label"):
        load_history(path, _binary_spec())


# --------------------------------------------------------------------------------------
# The real X Education file (../shared/data), when present
# --------------------------------------------------------------------------------------


def _x_education_inline_spec() -> FeatureSpec:
    """A few real columns, names with spaces included, independent of the bundled spec."""
    before = "before_contact"
    return FeatureSpec.model_validate(
        {
            "name": "x_education_subset",
            "version": 1,
            "id_column": "Prospect ID",
            "fields": [
                {
                    "name": "lead_origin",
                    "column": "Lead Origin",
                    "kind": "categorical",
                    "levels": ["api", "landing_page_submission"],
                    "known_at": before,
                },
                {
                    "name": "total_visits",
                    "column": "TotalVisits",
                    "kind": "numeric",
                    "unit": "visits",
                    "min": 0,
                    "max": 1000,
                    "known_at": before,
                },
                {
                    "name": "time_on_site",
                    "column": "Total Time Spent on Website",
                    "kind": "numeric",
                    "unit": "seconds",
                    "min": 0,
                    "max": 100000,
                    "known_at": before,
                },
                {
                    "name": "do_not_email",
                    "column": "Do Not Email",
                    "kind": "boolean",
                    "known_at": before,
                },
                {
                    "name": "specialization",
                    "column": "Specialization",
                    "kind": "categorical",
                    "levels": ["finance_management"],
                    "known_at": before,
                },
            ],
            "label": {"kind": "binary", "column": "Converted"},
        }
    )


def _require_x_education() -> None:
    if not X_EDUCATION_CSV.is_file():
        pytest.skip(f"{X_EDUCATION_CSV} is not present")


@pytest.mark.shared
def test_real_x_education_file_loads() -> None:
    _require_x_education()
    leads = load_leads(X_EDUCATION_CSV, _x_education_inline_spec(), require_label=True)
    assert leads.shape == (9240, 37)
    assert leads["Prospect ID"].is_unique
    assert leads["label"].dtype == np.int8 and int(leads["label"].sum()) == 3561
    assert leads["total_visits"].dtype == np.float64
    assert int(leads["total_visits"].isna().sum()) == 137
    assert int(leads["time_on_site"].isna().sum()) == 0
    assert leads["do_not_email"].value_counts().to_dict() == {0.0: 8506, 1.0: 734}
    # "Select" (the unchosen form option) and empty are both missing.
    assert int(leads["specialization"].isna().sum()) == 1942 + 1438
    assert leads["lead_origin"].iloc[0] == "API"
    assert "Tags" in leads.columns  # columns the spec does not name are kept untouched


@pytest.mark.shared
def test_real_x_education_file_loads_with_the_bundled_spec() -> None:
    _require_x_education()
    if not X_EDUCATION_SPEC.is_file():
        pytest.skip("features/specs/x_education.yaml is not written yet")
    spec = load_spec(X_EDUCATION_SPEC)
    leads = load_leads(X_EDUCATION_CSV, spec, require_label=True)
    assert len(leads) == 9240
    assert int(leads["label"].sum()) == 3561
    for field in spec.feature_fields:
        assert field.name in leads.columns
        if field.kind in ("numeric", "boolean"):
            assert leads[field.name].dtype == np.float64, field.name
