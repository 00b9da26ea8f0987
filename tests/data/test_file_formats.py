"""How a file is written, said in the spec: delimiter, encoding, quotes, decimal mark, id,
missing tokens on every kind (numeric sentinels included), and rows of the wrong length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from features.builder import LeadFeatureBuilder
from features.loaders import MISSING_TOKEN_COUNTS, DataError, load_leads
from features.spec import FeatureSpec, SpecError, field_missing_tokens, missing_numbers


def spec(**overrides: Any) -> FeatureSpec:
    raw: dict[str, Any] = {
        "name": "shop",
        "version": 1,
        "id_column": "Lead ID",
        "fields": [
            {"name": "source", "column": "Source", "kind": "categorical",
             "known_at": "before_contact"},
            {"name": "visits", "column": "Visits (#)", "kind": "numeric", "unit": "visits",
             "min": 0, "max": 1000, "known_at": "before_contact", "missing_tokens": ["999"]},
            {"name": "spend", "column": "Spend (%)", "kind": "numeric", "unit": "percent",
             "min": 0, "max": 100, "known_at": "before_contact"},
            {"name": "opt_in", "column": "Opt-In?", "kind": "boolean", "known_at": "before_contact",
             "missing_tokens": ["unsure"]},
        ],
        "label": {"kind": "binary", "column": "Won", "positive": ["TRUE"], "negative": ["FALSE"]},
    }  # fmt: skip
    raw.update(overrides)
    return FeatureSpec.model_validate(raw)


def write(tmp_path: Path, text: str, encoding: str = "utf-8", name: str = "leads.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


HEADER = ["Lead ID", "Source", "Visits (#)", "Spend (%)", "Opt-In?", "Won"]


def rows(sep: str, decimal: str = ".") -> str:
    data = [
        ["L1", "Référence", "3", f"12{decimal}5", "yes", "TRUE"],
        ["L2", "Ads", "999", f"0{decimal}25", "unsure", "FALSE"],
        ["L3", "Ads", "1", "7", "no", "false"],
    ]
    return "\n".join(sep.join(r) for r in [HEADER, *data]) + "\n"


def test_semicolon_latin1_decimal_comma_file_reads_as_the_spec_says(tmp_path: Path) -> None:
    path = write(tmp_path, rows(";", ","), encoding="latin-1")
    csv = {"delimiter": ";", "encoding": "latin-1", "decimal": ","}
    leads = load_leads(path, spec(csv=csv), require_label=True)
    assert leads["source"].tolist() == ["Référence", "Ads", "Ads"]
    assert leads["spend"].tolist() == [12.5, 0.25, 7.0]
    assert leads["label"].tolist() == [1, 0, 0]


def test_tab_and_single_quote_files_read(tmp_path: Path) -> None:
    text = rows("\t").replace("Référence", "'Ref\tA'")
    path = write(tmp_path, text)
    leads = load_leads(path, spec(csv={"delimiter": "\t", "quotechar": "'"}), require_label=True)
    assert leads["source"].tolist() == ["Ref\tA", "Ads", "Ads"]


def test_numeric_sentinel_and_field_tokens_become_missing_and_are_counted(tmp_path: Path) -> None:
    path = write(tmp_path, rows(","))
    leads = load_leads(path, spec(), require_label=True)
    assert leads["visits"].tolist()[0::2] == [3.0, 1.0] and np.isnan(leads["visits"][1])
    assert np.isnan(leads["opt_in"][1])
    assert leads.attrs[MISSING_TOKEN_COUNTS] == {"visits": 1, "opt_in": 1}


def test_a_spec_wide_numeric_sentinel_never_swallows_its_absolute_value(tmp_path: Path) -> None:
    s = spec(missing_tokens=["", "-1"])
    visits = s.field("visits")
    assert missing_numbers(s, visits) == (-1.0, 999.0)
    assert "1" not in field_missing_tokens(s, visits)  # "-1" folds to "1" as text
    builder = LeadFeatureBuilder(s).fit([{"Lead ID": "a", "visits": 1, "spend": 2}] * 3)
    X = builder.build([{"visits": "-1"}, {"visits": "1"}, {"visits": 999}]).values
    column = builder.get_feature_names_out().tolist().index("visits")
    assert np.isnan(X[0, column]) and X[1, column] == 1.0 and np.isnan(X[2, column])


def test_without_an_id_column_the_row_number_is_the_id(tmp_path: Path) -> None:
    text = "\n".join(",".join(r.split(",")[1:]) for r in rows(",").splitlines()) + "\n"
    path = write(tmp_path, text)
    raw = spec().model_dump()
    del raw["id_column"]
    leads = load_leads(path, FeatureSpec.model_validate(raw), require_label=True)
    assert leads["row_number"].tolist() == ["1", "2", "3"]


def test_short_row_is_refused_with_its_line(tmp_path: Path) -> None:
    text = rows(",").replace("L2,Ads,999,0.25,unsure,FALSE", "L2,Ads,999")
    err = _refused(write(tmp_path, text))
    assert str(err) == (
        "leads.csv: line 3 has 3 fields but the header has 6 "
        "(a missing delimiter, or a line broken in two?)"
    )
    assert err.rows == [3]


def test_a_quoted_empty_last_field_is_not_a_short_row(tmp_path: Path) -> None:
    text = 'Lead ID,Source,Visits (#),Spend (%),Opt-In?,Won,Notes\nL1,Ads,1,2,no,TRUE,""\n'
    assert len(load_leads(write(tmp_path, text), spec())) == 1


def test_long_row_is_refused_with_its_line(tmp_path: Path) -> None:
    text = rows(",").replace("L3,Ads,1,7,no,false", "L3,Ads,1,7,no,false,extra")
    assert str(_refused(write(tmp_path, text))) == (
        "leads.csv: line 4 has 7 fields but the header has 6 "
        "(a value with a comma that is not quoted?)"
    )


def test_wrong_delimiter_points_at_the_spec_setting(tmp_path: Path) -> None:
    path = write(tmp_path, rows(";"))
    assert str(_refused(path)) == (
        "leads.csv: the header looks semicolon (;)-separated, but the spec says comma (,); "
        'set csv.delimiter: ";" in the spec (or re-export the file)'
    )


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ({"decimal": ",", "delimiter": ","}, "decimal mark and delimiter are both ','"),
        ({"encoding": "klingon-8"}, "unknown text encoding 'klingon-8'"),
        ({"delimiter": ";;"}, "at most 1 character"),
    ],
)
def test_impossible_file_formats_are_refused(csv: dict[str, str], message: str) -> None:
    with pytest.raises((SpecError, ValueError), match=message):
        spec(csv=csv)


def _refused(path: Path) -> DataError:
    with pytest.raises(DataError) as caught:
        load_leads(path, spec(), require_label=True)
    return caught.value
