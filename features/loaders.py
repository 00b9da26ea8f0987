"""Loaders for the leads, actions and stage-history tables.

Every file a user hands us is checked here, before any feature is built: a model trained
on a mis-parsed file is wrong in ways nobody notices, so the loaders would rather refuse a
file with one clear sentence than guess. A refusal is a :class:`DataError` whose message
names the file, the column and the rows (file line numbers: the header is line 1), and never
echoes the offending values, which may be personal data.

CSV files are read with every column as a string, so types are checked by these loaders
against the spec instead of being guessed by pandas (a ``"Select"`` in a numeric column must
be a missing value, not turn the whole column into text). All checks are vectorised: a
2,000,000-row actions file loads in a few seconds.

Row numbers count CSV records: they equal file lines unless a quoted value spans several
lines or the file has blank lines (which pandas skips). Parquet rows are numbered the same
way, as if the table had been exported to CSV with a header line.

How a CSV file is written (delimiter, encoding, quote character, decimal mark) comes from
the spec's ``csv`` section (:class:`features.spec.CsvFormat`); a row with fewer fields than
the header is refused with its line, like a row with more.
"""

from __future__ import annotations

import codecs
import csv as _csv
import difflib
import gzip
import re
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from features.batch import aggregated_columns
from features.spec import (
    ROW_NUMBER_ID,
    BinaryLabel,
    BooleanField,
    CategoricalField,
    CsvFormat,
    FeatureSpec,
    LifecycleLabel,
    NumericField,
    SpecError,
    field_missing_tokens,
    missing_numbers,
    normalise_token,
    numbers_in,
)

_T = TypeVar("_T")

__all__ = [
    "DataError",
    "action_columns",
    "as_text",
    "check_known_ids",
    "check_renames",
    "format_rows",
    "furthest_stage",
    "history_columns",
    "lead_columns",
    "load_actions",
    "load_history",
    "load_leads",
    "parse_actions",
    "parse_history",
    "parse_ids",
    "parse_leads",
    "read_table",
]

#: How many row numbers a message lists before "...": enough to find the problem, short
#: enough to stay on one line.
_SHOWN_ROWS = 5
#: Offset from a 0-based data row position to its file line (the header is line 1).
_FIRST_DATA_LINE = 2
_DELIMITERS = {";": "semicolon (;)", "\t": "tab", "|": "pipe (|)"}
_TRUE_TOKENS = frozenset({"yes", "true", "1", "y", "1.0"})
_FALSE_TOKENS = frozenset({"no", "false", "0", "n", "0.0"})
_NOT_FINITE = ("values are not finite numbers", "value is not a finite number")
_SINGULAR = {"actions": "action", "stage changes": "stage change"}
_CSV_SUFFIXES = (".csv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet",)
_C_ERROR_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_C_ERROR_EOF = re.compile(r"EOF inside string starting at row (\d+)")
_DEFAULT_CSV = CsvFormat.model_validate({})
#: Where a loaded leads frame keeps, per field, how many values a missing token replaced.
MISSING_TOKEN_COUNTS = "missing_token_counts"

# Canonical column names of the actions and history frames, whatever the files call them.
LEAD_ID = "lead_id"
ACTION_TYPE = "action_type"
OCCURRED_AT = "occurred_at"
STAGE = "stage"
REACHED_AT = "reached_at"
LABEL = "label"


class DataError(ValueError):
    """A data file the system refuses to use, with a message a user can act on.

    The message reads ``"<file>: <what is wrong>"``. ``file`` is the file name, ``column``
    the offending column (``None`` when the problem is the whole file) and ``rows`` every
    offending row as a 1-based file line number, so a caller can drop or show them; the
    message itself lists only the first few.
    """

    def __init__(
        self, file: str, message: str, *, column: str | None = None, rows: Iterable[int] = ()
    ) -> None:
        self.file = file
        self.column = column
        self.rows: list[int] = [int(r) for r in rows]
        self.detail = message
        super().__init__(f"{file}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments are not restored by the default exception pickling, and a
        # DataError may cross a process boundary (batch scoring workers).
        return (_rebuild_data_error, (self.file, self.detail, self.column, self.rows))


def _rebuild_data_error(file: str, message: str, column: str | None, rows: list[int]) -> DataError:
    return DataError(file, message, column=column, rows=rows)


# --------------------------------------------------------------------------------------
# Reading a table
# --------------------------------------------------------------------------------------


def read_table(
    path: Path | str,
    *,
    required: Sequence[str],
    kind: str,
    csv: CsvFormat | None = None,
) -> pd.DataFrame:
    """Read a CSV (``.csv``, ``.csv.gz``) or Parquet file and check its shape.

    Only the shape is checked here (readable, non-empty, the expected delimiter, no row
    shorter or longer than the header, unique column names, every ``required`` column
    present); values are the per-table loaders' business. ``csv`` says how the file is
    written (default: comma-separated UTF-8).
    One empty trailing field on data rows (a comma at the end of each line) is tolerated,
    as it loses nothing; a non-empty one is refused rather than silently dropped.
    ``kind`` is the noun used in messages ("leads", "actions", "stage history").
    """
    p = Path(path)
    name = p.name
    if not p.is_file():
        where = "is a directory, not a file" if p.is_dir() else "not found"
        raise DataError(name, f"{kind} file {where} ({p})")
    lower = name.lower()
    if lower.endswith(_CSV_SUFFIXES):
        if p.stat().st_size == 0:
            raise DataError(name, f"the {kind} file is empty: it has no rows")
        frame = _read_csv(p, kind, csv or _DEFAULT_CSV)
    elif lower.endswith(_PARQUET_SUFFIXES):
        frame = _read_parquet(p, kind)
    else:
        raise DataError(
            name,
            f"cannot read a {kind} file of this type; expected .csv, .csv.gz or .parquet",
        )
    if len(frame) == 0:
        raise DataError(name, f"the {kind} file has no rows (only a header)")
    _check_required(name, [str(c) for c in frame.columns], required)
    return frame


def _read_csv(p: Path, kind: str, csv: CsvFormat = _DEFAULT_CSV) -> pd.DataFrame:
    """Read every column as text, turning each way a CSV can be broken into a DataError."""
    header = _csv_call(p, kind, lambda: _raw_header(p, csv), encoding=csv.encoding)
    if header is None:
        raise DataError(p.name, f"the {kind} file is empty: it has no rows")
    _check_delimiter(p.name, header, csv.delimiter)
    _check_unique(p.name, header)
    with warnings.catch_warnings():
        # pandas warns, then silently drops trailing fields, when data rows are longer
        # than the header; a shifted table is worse than no table.
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            frame = _csv_call(p, kind, lambda: _read_all(p, csv), encoding=csv.encoding)
        except pd.errors.ParserWarning:
            raise _long_row_error(p, len(header), csv) from None
    _refuse_short_rows(p, frame, csv)
    return frame


def _encoding(csv: CsvFormat) -> str:
    """The codec to read with: utf-8-sig for UTF-8, which strips the mark Excel writes."""
    return "utf-8-sig" if codecs.lookup(csv.encoding).name == "utf-8" else csv.encoding


def _raw_header(p: Path, csv: CsvFormat = _DEFAULT_CSV) -> list[str] | None:
    """The header exactly as written: pandas would rename duplicates to 'x.1'."""
    try:
        first = pd.read_csv(
            p,
            header=None,
            nrows=1,
            dtype=str,
            na_filter=False,
            sep=csv.delimiter,
            quotechar=csv.quotechar,
            encoding=_encoding(csv),
        )
    except pd.errors.EmptyDataError:
        return None
    return [str(v) for v in first.iloc[0].tolist()] if len(first) else None


def _read_all(p: Path, csv: CsvFormat = _DEFAULT_CSV) -> pd.DataFrame:
    return pd.read_csv(
        p,
        dtype=str,
        keep_default_na=False,
        na_filter=False,  # no value becomes NaN: "NA" and "" stay strings we judge ourselves
        index_col=False,  # never silently turn the first column into the index
        sep=csv.delimiter,
        quotechar=csv.quotechar,
        encoding=_encoding(csv),
    )


def _refuse_short_rows(p: Path, frame: pd.DataFrame, csv: CsvFormat) -> None:
    """A row with fewer fields than the header: pandas fills the rest with "" silently.

    Only a row whose last field is empty can be short, so the file is re-read record by
    record (the csv module, which counts fields) only when such rows exist.
    """
    if frame.shape[1] < 2 or not (frame.iloc[:, -1] == "").any():
        return
    width = frame.shape[1]
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    with opener(p, "rt", encoding=_encoding(csv), newline="") as handle:
        reader = _csv.reader(handle, delimiter=csv.delimiter, quotechar=csv.quotechar)
        line = reader.line_num
        next(reader, None)  # the header
        short: list[tuple[int, int]] = []
        for record in reader:
            start, line = line + 1, reader.line_num
            if record and len(record) < width:
                short.append((start, len(record)))
    if short:
        first, fields = short[0]
        more = f" (and {len(short) - 1} more rows)" if len(short) > 1 else ""
        raise DataError(
            p.name,
            f"line {first} has {fields} fields but the header has {width}{more} "
            "(a missing delimiter, or a line broken in two?)",
            rows=[row for row, _ in short],
        )


def _long_row_error(p: Path, width: int, csv: CsvFormat = _DEFAULT_CSV) -> DataError:
    """Locate the first data row with more fields than the header (pandas does not say)."""
    hint = "(a trailing delimiter, or a value with the delimiter that is not quoted?)"
    try:
        pd.read_csv(
            p,
            header=None,
            dtype=str,
            na_filter=False,
            sep=csv.delimiter,
            quotechar=csv.quotechar,
            encoding=_encoding(csv),
        )
    except pd.errors.ParserError as exc:
        found = _C_ERROR_FIELDS.search(str(exc))
        if found:
            line, saw = int(found.group(2)), int(found.group(3))
            return DataError(
                p.name,
                f"line {line} has {saw} fields but the header has {width} {hint}",
                rows=[line],
            )
    return DataError(p.name, f"data rows have more fields than the header's {width} {hint}")


def _csv_call(p: Path, kind: str, read: Callable[[], _T], *, encoding: str = "utf-8") -> _T:
    """Run a pandas read, translating its exceptions into one-line DataErrors."""
    name = p.name
    try:
        return read()
    except UnicodeDecodeError:
        line = _first_undecodable_line(p, encoding)
        at = f" (line {line})" if line else ""
        shown = "UTF-8" if codecs.lookup(encoding).name == "utf-8" else encoding
        raise DataError(
            name,
            f"the {kind} file is not {shown} text{at}; re-save it as 'CSV UTF-8' or set "
            "csv.encoding in the spec (e.g. latin-1)",
            rows=[line] if line else [],
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(name, f"the {kind} file is empty: it has no rows") from None
    except pd.errors.ParserError as exc:
        raise _parser_error(name, kind, str(exc)) from None
    except PermissionError:
        raise DataError(name, f"the {kind} file cannot be read (permission denied)") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(name, f"the {kind} file cannot be read ({_one_line(str(exc))})") from None


def _parser_error(name: str, kind: str, text: str) -> DataError:
    fields = _C_ERROR_FIELDS.search(text)
    if fields:
        expected, line, saw = (int(g) for g in fields.groups())
        return DataError(
            name,
            f"line {line} has {saw} fields but the header has {expected} "
            "(a value with a comma that is not quoted?)",
            rows=[line],
        )
    eof = _C_ERROR_EOF.search(text)
    if eof:
        line = int(eof.group(1)) + 1  # the C parser counts records from 0, header included
        return DataError(
            name,
            f"a quoted value starting on line {line} is never closed (a stray '\"'?)",
            rows=[line],
        )
    return DataError(name, f"the {kind} file is not valid CSV ({_one_line(text)})")


def _first_undecodable_line(p: Path, encoding: str = "utf-8") -> int | None:
    """Find the first line that cannot be decoded; only runs when reading already failed."""
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    try:
        with opener(p, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    raw.decode(encoding)
                except UnicodeDecodeError:
                    return number
    except (OSError, EOFError, zlib.error):
        return None
    return None


def _read_parquet(p: Path, kind: str) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = [str(n) for n in pq.read_schema(p).names]
        _check_unique(p.name, names)
        # ignore_metadata: a stored pandas index comes back as an ordinary column (an id
        # saved as the index must still be found by name) and rows get a RangeIndex.
        return pq.read_table(p).to_pandas(ignore_metadata=True)
    except DataError:
        raise
    except PermissionError:
        raise DataError(p.name, f"the {kind} file cannot be read (permission denied)") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(
            p.name, f"the {kind} file is not a readable Parquet file ({_one_line(str(exc))})"
        ) from None


def _check_delimiter(name: str, header: list[str], expected: str = ",") -> None:
    """A file split by another delimiter parses as one column: say so instead of 'missing'."""
    if len(header) != 1:
        return
    names = {",": "comma (,)", **_DELIMITERS}
    for delimiter, label in names.items():
        if delimiter != expected and delimiter in header[0]:
            wanted = names.get(expected, repr(expected))
            written = "\\t" if delimiter == "\t" else delimiter
            raise DataError(
                name,
                f"the header looks {label}-separated, but the spec says {wanted}; set "
                f'csv.delimiter: "{written}" in the spec (or re-export the file)',
            )


def _check_unique(name: str, header: Sequence[str]) -> None:
    seen: set[str] = set()
    repeated: list[str] = []
    for column in header:
        if column in seen and column not in repeated:
            repeated.append(column)
        seen.add(column)
    if repeated:
        listed = ", ".join(f"'{c}'" for c in repeated)
        noun = "name appears" if len(repeated) == 1 else "names appear"
        raise DataError(
            name, f"column {noun} more than once in the header: {listed}", column=repeated[0]
        )


def _check_required(name: str, present: list[str], required: Sequence[str]) -> None:
    """Name every missing column and the present column it was probably meant to be."""
    wanted = list(dict.fromkeys(required))
    missing = [c for c in wanted if c not in present]
    if not missing:
        return
    # Columns already matched by another requirement are not plausible misspellings.
    candidates = [c for c in present if c not in set(wanted)]
    by_key: dict[str, str] = {}
    for column in candidates:
        by_key.setdefault(_match_key(column), column)
    parts = []
    suggested = False
    for column in missing:
        close = difflib.get_close_matches(_match_key(column), list(by_key), n=1, cutoff=0.6)
        if close:
            suggested = True
            parts.append(f"missing column '{column}' (did you mean '{by_key[close[0]]}'?)")
        else:
            parts.append(f"missing column '{column}'")
    message = "; ".join(parts)
    if not suggested:
        shown = ", ".join(f"'{c}'" for c in present[:10])
        more = ", ..." if len(present) > 10 else ""
        message += f" (the file has columns {shown}{more})"
    raise DataError(name, message, column=missing[0])


def _match_key(column: str) -> str:
    """Compare names the way people misspell them: case, spaces and dashes do not count."""
    return normalise_token(column) or column


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------------------
# Value checks shared by the loaders
# --------------------------------------------------------------------------------------


def _rows(mask: np.ndarray | pd.Series) -> list[int]:
    """File line numbers of the True positions of a boolean mask."""
    return (np.flatnonzero(np.asarray(mask)) + _FIRST_DATA_LINE).tolist()


def _refuse(
    name: str, column: str, mask: np.ndarray | pd.Series, plural: str, singular: str
) -> None:
    """Raise a DataError for the rows in ``mask``, if any.

    ``plural`` and ``singular`` are the phrases after the count ("values are not numbers",
    "value is not a number"); both are spelt out because English plurals do not follow a
    rule worth coding.
    """
    rows = _rows(mask)
    if not rows:
        return
    count = len(rows)
    phrase = plural if count > 1 else singular
    message = f"column '{column}': {count} {phrase} ({format_rows(rows)})"
    raise DataError(name, message, column=column, rows=rows)


def format_rows(rows: list[int]) -> str:
    if len(rows) == 1:
        return f"row {rows[0]}"
    shown = ", ".join(str(r) for r in rows[:_SHOWN_ROWS])
    return f"rows {shown}{', ...' if len(rows) > _SHOWN_ROWS else ''}"


def as_text(values: pd.Series) -> pd.Series:
    """Any column as object strings, missing as "": CSV columns already are.

    Parquet columns arrive typed; integral numbers are written without ".0" so an integer
    id or a 0/1 label compares equal to its CSV spelling.
    """
    if values.dtype == object and not values.isna().any():
        return values
    present = values.notna().to_numpy()
    out = np.full(len(values), "", dtype=object)
    if pd.api.types.is_bool_dtype(values):
        flags = values.to_numpy(dtype=object)[present]
        out[present] = np.where(flags.astype(bool), "true", "false")
    elif pd.api.types.is_numeric_dtype(values):
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)[present]
        integral = np.isfinite(numbers) & (numbers == np.round(numbers))
        out[present] = [
            str(int(v)) if whole else str(v) for v, whole in zip(numbers, integral, strict=True)
        ]
    elif pd.api.types.is_datetime64_any_dtype(values):
        out[present] = [v.isoformat() for v in values[present]]
    else:
        out[present] = [str(v) for v in values.to_numpy(dtype=object)[present]]
    return pd.Series(out, index=values.index, dtype=object)


def _normalised(values: pd.Series) -> pd.Series:
    """normalise_token over a column, computed once per distinct value (fast on 2M rows)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    folded = np.array([normalise_token(str(u)) for u in uniques], dtype=object)
    return pd.Series(folded[codes], index=values.index, dtype=object)


def _missing_tokens(spec: FeatureSpec) -> set[str]:
    # Tokens are compared after normalisation, so "n/a" in the spec must become "n_a".
    return {normalise_token(t) for t in spec.missing_tokens} | {""}


def _is_missing(values: pd.Series, tokens: set[str]) -> pd.Series:
    """True where a text value is empty or one of the spec's missing tokens."""
    return _normalised(values).isin(tokens)


def _parse_numeric(
    name: str,
    column: str,
    raw: pd.Series,
    tokens: set[str] | frozenset[str],
    *,
    decimal: str = ".",
    sentinels: tuple[float, ...] = (),
) -> pd.Series:
    """Numbers as float64; missing tokens and numeric sentinels become NaN; else refused.

    ``nan`` (what ``str(float('nan'))`` writes) counts as missing; infinities are refused,
    since no bound or unit makes them meaningful. ``decimal`` is the file's decimal mark.
    """
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        numbers = raw.astype("float64")
        _refuse(name, column, np.isinf(numbers), *_NOT_FINITE)
    else:
        text = as_text(raw)
        if decimal != ".":
            text = text.str.replace(decimal, ".", regex=False)
        numbers = pd.to_numeric(text, errors="coerce").astype("float64")
        failed = numbers.isna().to_numpy()
        if failed.any():
            missing = _is_missing(text[failed], set(tokens) | {"nan"}).to_numpy()
            bad = np.zeros(len(text), dtype=bool)
            bad[np.flatnonzero(failed)[~missing]] = True
            _refuse(name, column, bad, "values are not numbers", "value is not a number")
        _refuse(name, column, np.isinf(numbers.to_numpy()), *_NOT_FINITE)
    if sentinels:
        numbers = numbers.mask(numbers.isin(sentinels))
    return numbers


def _parse_boolean(name: str, column: str, raw: pd.Series, tokens: set[str]) -> pd.Series:
    """yes/no, true/false, y/n, 1/0 in any case as 1.0/0.0; missing tokens as NaN."""
    folded = _normalised(as_text(raw))
    truth = folded.isin(_TRUE_TOKENS)
    falsity = folded.isin(_FALSE_TOKENS)
    missing = folded.isin(tokens)
    _refuse(
        name,
        column,
        ~(truth | falsity | missing),
        "values are not yes/no (expected yes, no, true, false, y, n, 1 or 0)",
        "value is not yes/no (expected yes, no, true, false, y, n, 1 or 0)",
    )
    out = np.full(len(folded), np.nan)
    out[truth.to_numpy()] = 1.0
    out[falsity.to_numpy()] = 0.0
    return pd.Series(out, index=raw.index, dtype="float64")


def _parse_categorical(
    name: str, column: str, raw: pd.Series, tokens: set[str], max_length: int
) -> pd.Series:
    """Raw strings kept for the feature builder (which maps levels); missing as None."""
    text = as_text(raw)
    missing = _is_missing(text, tokens)
    _refuse(
        name,
        column,
        (text.str.len() > max_length) & ~missing,
        f"values are longer than {max_length} characters",
        f"value is longer than {max_length} characters",
    )
    values = text.to_numpy(dtype=object, copy=True)
    values[missing.to_numpy()] = None
    return pd.Series(values, index=raw.index, dtype=object)


def _parse_timestamps(
    name: str, column: str, raw: pd.Series, tokens: set[str], *, required: bool
) -> pd.Series:
    """ISO-8601 timestamps as UTC; naive ones are taken to be UTC already.

    Empty values become NaT unless ``required``: a lead without a creation time only loses
    its age, but an action without a time cannot be put in any window.
    """
    if pd.api.types.is_datetime64_any_dtype(raw):
        stamps = pd.Series(raw)
        stamps = (
            stamps.dt.tz_convert("UTC")
            if stamps.dt.tz is not None
            else stamps.dt.tz_localize("UTC")
        )
        absent = stamps.isna().to_numpy()
    else:
        text = as_text(raw)
        stamps = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
        absent = _absent_mask(text, stamps, tokens)
        unparsed = stamps.isna().to_numpy() & ~absent
        _refuse(
            name,
            column,
            unparsed,
            "values are not ISO-8601 timestamps (e.g. 2024-03-01T09:30:00Z)",
            "value is not an ISO-8601 timestamp (e.g. 2024-03-01T09:30:00Z)",
        )
    if required:
        _refuse(name, column, absent, "rows have no timestamp", "row has no timestamp")
    return stamps.astype("datetime64[ns, UTC]")


def _absent_mask(text: pd.Series, stamps: pd.Series, tokens: set[str]) -> np.ndarray:
    """Missing timestamps among the unparsed ones only, to skip folding 2M good values."""
    failed = stamps.isna().to_numpy()
    absent = np.zeros(len(text), dtype=bool)
    if failed.any():
        absent[np.flatnonzero(failed)] = _is_missing(text[failed], tokens).to_numpy()
    return absent


def parse_ids(name: str, column: str, raw: pd.Series, *, unique: bool) -> pd.Series:
    """Ids as text; an empty id is refused, and so is a repeated one where ids are keys.

    Checks run on the distinct ids (factorised once), which is several times faster than
    string operations over every row of a large actions file.
    """
    text = as_text(raw)
    codes, uniques = pd.factorize(text, use_na_sentinel=False)
    blank = np.array([not str(u).strip() for u in uniques], dtype=bool)
    _refuse(name, column, blank[codes], "rows have no id", "row has no id")
    if unique:
        counts = np.bincount(codes, minlength=len(uniques))
        repeated = counts[codes] > 1
        if repeated.any():
            distinct = int((counts > 1).sum())
            rows = _rows(repeated)
            ids = "id appears" if distinct == 1 else "ids appear"
            raise DataError(
                name,
                f"column '{column}': {distinct} {ids} more than once, on {len(rows)} rows "
                f"({format_rows(rows)})",
                column=column,
                rows=rows,
            )
    return text


def _parse_binary_label(name: str, label: BinaryLabel, raw: pd.Series) -> pd.Series:
    """The conversion column as int8 0/1, using the spec's positive and negative tokens."""
    folded = _normalised(as_text(raw))
    positive = folded.isin({normalise_token(t) for t in label.positive})
    negative = folded.isin({normalise_token(t) for t in label.negative})
    expected = ", ".join([*label.positive, *label.negative])
    _refuse(
        name,
        label.column,
        ~(positive | negative),
        f"values are not a known label (expected one of {expected})",
        f"value is not a known label (expected one of {expected})",
    )
    return pd.Series(positive.to_numpy().astype(np.int8), index=raw.index, name=LABEL)


def check_known_ids(
    name: str,
    column: str,
    ids: pd.Series,
    known_ids: pd.Index | None,
    what: str,
) -> None:
    """Rows whose lead is not in the leads table would be silently dropped by a join."""
    if known_ids is None:
        return
    known = pd.Index(as_text(pd.Series(known_ids)))
    # Look up each distinct id once: an actions file repeats every lead many times.
    codes, uniques = pd.factorize(ids, use_na_sentinel=False)
    unknown = ~pd.Index(uniques).isin(known)
    _refuse(
        name,
        column,
        unknown[codes],
        f"{what} belong to leads that are not in the leads table",
        f"{_SINGULAR[what]} belongs to a lead that is not in the leads table",
    )


# --------------------------------------------------------------------------------------
# Chunk-level API: the loaders' checks on part of a file (batch scoring, Spark)
# --------------------------------------------------------------------------------------


def lead_columns(spec: FeatureSpec) -> list[str]:
    """The columns a leads file must have for scoring: id, created-at and feature sources."""
    required = [spec.id_column]
    if spec.created_at_column:
        required.append(spec.created_at_column)
    return required + [f.source for f in spec.feature_fields]


def action_columns(spec: FeatureSpec) -> list[str]:
    """The columns an actions file must have: lead id, type and time, as the spec names them."""
    return list(_actions_spec_columns(spec))


def parse_leads(
    name: str, frame: pd.DataFrame, spec: FeatureSpec, *, aggregated: bool = False
) -> pd.DataFrame:
    """Some rows of a leads file, checked and typed exactly as :func:`load_leads` does.

    ``frame`` holds raw columns under their file names (text from CSV, typed from
    Parquet); the result has the id, created-at and feature columns under canonical
    names (with ``aggregated``, the spec's pre-aggregated action columns too) and
    nothing else. Row numbers in a refusal count from the top of ``frame`` (row 2 is
    its first): :func:`features.chunks.file_lines` moves them to the whole file's lines.
    Ids are checked unique within ``frame`` only.
    """
    tokens = _missing_tokens(spec)
    columns: dict[str, pd.Series] = {
        spec.id_column: parse_ids(name, spec.id_column, frame[spec.id_column], unique=True)
    }
    if spec.created_at_column:
        column = spec.created_at_column
        columns[column] = _parse_timestamps(name, column, frame[column], tokens, required=False)
    for field in spec.feature_fields:
        columns[field.name] = _parse_field(name, field, frame[field.source], tokens, spec=spec)
    if aggregated:
        for column in aggregated_columns(spec):
            columns[column] = _parse_numeric(name, column, frame[column], tokens)
    return pd.DataFrame(columns, copy=False)


def parse_actions(
    name: str,
    frame: pd.DataFrame,
    spec: FeatureSpec,
    *,
    known: Callable[[pd.Series], np.ndarray] | None = None,
) -> pd.DataFrame:
    """Some rows of an actions file as ``lead_id``, ``action_type``, ``occurred_at`` (UTC).

    The checks of :func:`load_actions`; ``known(ids)`` says, per row, whether its lead is
    in the leads table (rows where it is False are refused), so a caller that cannot hold
    every lead id (batch scoring keeps 64-bit hashes) decides how to look them up.
    """
    id_col, type_col, time_col = _actions_spec_columns(spec)
    assert spec.actions is not None  # checked by _actions_spec_columns
    tokens = _missing_tokens(spec)
    ids = parse_ids(name, id_col, frame[id_col], unique=False)
    types = _normalised(as_text(frame[type_col]))
    _refuse(name, type_col, (types == "").to_numpy(), *_NO_ACTION_TYPE)
    if spec.actions.unknown_types == "error":
        allowed = ", ".join(t.name for t in spec.actions.types)
        _refuse(
            name,
            type_col,
            ~types.isin([t.name for t in spec.actions.types]).to_numpy(),
            f"actions have a type the spec does not list (expected one of {allowed})",
            f"action has a type the spec does not list (expected one of {allowed})",
        )
    stamps = _parse_timestamps(name, time_col, frame[time_col], tokens, required=True)
    if known is not None:
        _refuse(name, id_col, ~np.asarray(known(ids), dtype=bool), *_UNKNOWN_LEAD)
    # Columns share the frame's RangeIndex; passing Series (not .to_numpy()) avoids turning
    # 2M tz-aware timestamps into Python objects and back.
    return pd.DataFrame({LEAD_ID: ids, ACTION_TYPE: types, OCCURRED_AT: stamps}, copy=False)


def check_renames(name: str, columns: Sequence[str], spec: FeatureSpec) -> None:
    """Refuse a header where a source column's rename would collide with another column."""
    _rename_canonical(name, pd.DataFrame(columns=list(columns)), spec, None)


def _known_in(known_ids: pd.Index) -> Callable[[pd.Series], np.ndarray]:
    """``known`` for :func:`parse_actions` from the leads' ids (each distinct id looked up once)."""
    known = pd.Index(as_text(pd.Series(known_ids)))

    def lookup(ids: pd.Series) -> np.ndarray:
        codes, uniques = pd.factorize(ids, use_na_sentinel=False)
        return np.asarray(pd.Index(uniques).isin(known))[codes]

    return lookup


_NO_ACTION_TYPE = ("rows have no action type", "row has no action type")
_UNKNOWN_LEAD = (
    "actions belong to leads that are not in the leads table",
    "action belongs to a lead that is not in the leads table",
)


# --------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------


def load_leads(path: Path | str, spec: FeatureSpec, *, require_label: bool = False) -> pd.DataFrame:
    """Load the leads table, checked against ``spec`` and renamed to canonical names.

    The id and created-at columns keep their spec names; every documented field present
    is renamed from its source column to its canonical name, and feature fields are typed
    (numeric and boolean as float64 with NaN for missing, categorical as raw strings with
    None for missing). Text fields and columns the spec does not mention are left as they
    are. With ``require_label`` and a binary label, the label becomes an int8 column
    ``label``; otherwise a label column in the file is left untouched, because a scoring
    file may carry a stale or partial label that must not block scoring.
    """
    p = Path(path)
    name = p.name
    features = spec.feature_fields
    label = spec.label if isinstance(spec.label, BinaryLabel) and require_label else None
    required = [spec.id_column]
    if spec.created_at_column:
        required.append(spec.created_at_column)
    required += [f.source for f in features]
    if label is not None:
        required.append(label.column)
    frame = read_table(p, required=_without_row_number(required, spec), kind="leads", csv=spec.csv)
    tokens = _missing_tokens(spec)

    out = frame.copy()
    if spec.id_column not in frame.columns:  # no id column: the row number is the id
        out[spec.id_column] = pd.Series(np.arange(1, len(frame) + 1).astype(str), dtype=object)
    else:
        out[spec.id_column] = parse_ids(name, spec.id_column, frame[spec.id_column], unique=True)
    if spec.created_at_column:
        column = spec.created_at_column
        out[column] = _parse_timestamps(name, column, frame[column], tokens, required=False)
    counts: dict[str, int] = {}
    for field in features:
        out[field.source] = _parse_field(name, field, frame[field.source], tokens, spec=spec)
        counts[field.name] = count_missing_tokens(spec, field, frame[field.source])
    if label is not None:
        out[label.column] = _parse_binary_label(name, label, frame[label.column])
    renamed = _rename_canonical(name, out, spec, label)
    renamed.attrs[MISSING_TOKEN_COUNTS] = {k: v for k, v in counts.items() if v}
    return renamed


def _without_row_number(required: list[str], spec: FeatureSpec) -> list[str]:
    """The id column is optional when the spec leaves it to the row number."""
    if spec.id_column != ROW_NUMBER_ID:
        return required
    return [c for c in required if c != ROW_NUMBER_ID]


def _parse_field(
    name: str,
    field: NumericField | BooleanField | CategoricalField,
    raw: pd.Series,
    tokens: set[str] | frozenset[str],
    *,
    spec: FeatureSpec | None = None,
) -> pd.Series:
    """One feature column typed; with ``spec``, its missing tokens, sentinels and decimal mark
    are the spec's and the field's own (without, the given tokens and the field's own)."""
    if spec is not None:
        tokens = field_missing_tokens(spec, field)
        sentinels = missing_numbers(spec, field)
        decimal = spec.csv.decimal
    else:
        tokens = set(tokens) | {normalise_token(t) for t in field.missing_tokens}
        sentinels = numbers_in(field.missing_tokens)
        decimal = "."
    if isinstance(field, NumericField):
        return _parse_numeric(name, field.source, raw, tokens, decimal=decimal, sentinels=sentinels)
    if isinstance(field, BooleanField):
        return _parse_boolean(name, field.source, raw, set(tokens))
    return _parse_categorical(name, field.source, raw, set(tokens), field.max_length)


def count_missing_tokens(
    spec: FeatureSpec, field: NumericField | BooleanField | CategoricalField, raw: pd.Series
) -> int:
    """How many written values a missing token or sentinel turns into "no value".

    Empty cells are not counted: they were missing already. The check report and the
    training run show these counts, so a sentinel that swallows real data is noticed.
    """
    text = as_text(raw).str.strip()
    written = text != ""
    hit = _normalised(text).isin(field_missing_tokens(spec, field) - {""})
    sentinels = missing_numbers(spec, field)
    if sentinels and isinstance(field, NumericField):
        numbers = pd.to_numeric(
            text.str.replace(spec.csv.decimal, ".", regex=False), errors="coerce"
        )
        hit |= numbers.isin(sentinels)
    return int((hit & written).sum())


def _rename_canonical(
    name: str, frame: pd.DataFrame, spec: FeatureSpec, label: BinaryLabel | None
) -> pd.DataFrame:
    """Rename sources to canonical names, refusing a rename that would collide.

    A collision (an extra column already called like a field's canonical name) would leave
    two columns with one name, and whichever the builder picked would be a coin toss.
    """
    protected = {spec.id_column, spec.created_at_column}
    mapping = {
        f.source: f.name
        for f in spec.fields
        if f.source in frame.columns and f.source != f.name and f.source not in protected
    }
    if label is not None:
        mapping[label.column] = LABEL
    renamed = [mapping.get(str(c), str(c)) for c in frame.columns]
    for target in set(mapping.values()):
        if renamed.count(target) > 1:
            source = next(s for s, t in mapping.items() if t == target)
            raise DataError(
                name,
                f"column '{source}' is renamed to '{target}' by the spec, but the file "
                f"already has a column '{target}'; rename or remove one of them",
                column=source,
            )
    return frame.rename(columns=mapping)


def _actions_spec_columns(spec: FeatureSpec) -> tuple[str, str, str]:
    if spec.actions is None:
        raise SpecError(f"spec '{spec.name}' declares no actions table")
    a = spec.actions
    return a.lead_id_column, a.type_column, a.timestamp_column


def load_actions(
    path: Path | str, spec: FeatureSpec, known_ids: pd.Index | None = None
) -> pd.DataFrame:
    """Load the tracked actions as ``lead_id``, ``action_type``, ``occurred_at`` (UTC).

    Types are normalised; a type outside the spec is refused when the spec says
    ``unknown_types: error`` and otherwise kept, so the feature builder can count and
    report it. With ``known_ids``, actions of leads missing from the leads table are
    refused. The file's row order is kept.
    """
    p = Path(path)
    id_col, type_col, time_col = _actions_spec_columns(spec)
    frame = read_table(p, required=[id_col, type_col, time_col], kind="actions", csv=spec.csv)
    known = None if known_ids is None else _known_in(known_ids)
    return parse_actions(p.name, frame, spec, known=known)


def _lifecycle(spec: FeatureSpec) -> LifecycleLabel:
    if not isinstance(spec.label, LifecycleLabel):
        raise SpecError(
            f"spec '{spec.name}' has a binary label: there is no stage history table to load"
        )
    return spec.label


def load_history(
    path: Path | str, spec: FeatureSpec, known_ids: pd.Index | None = None
) -> pd.DataFrame:
    """Load the lifecycle stage history as ``lead_id``, ``stage``, ``reached_at`` (UTC).

    Stages are normalised and must be among the spec's stages: a misspelt stage would
    otherwise quietly lower a lead's label.
    """
    p = Path(path)
    id_col, stage_col, time_col = history_columns(spec)
    frame = read_table(
        p, required=[id_col, stage_col, time_col], kind="stage history", csv=spec.csv
    )
    ids = parse_ids(p.name, id_col, frame[id_col], unique=False)
    history = parse_history(p.name, frame, spec, ids=ids)
    check_known_ids(p.name, id_col, ids, known_ids, "stage changes")
    return history


def history_columns(spec: FeatureSpec) -> tuple[str, str, str]:
    """The stage history's lead id, stage and time columns, as the spec names them."""
    label = _lifecycle(spec)
    return (
        label.history_lead_id_column,
        label.history_stage_column,
        label.history_timestamp_column,
    )


def parse_history(
    name: str, frame: pd.DataFrame, spec: FeatureSpec, *, ids: pd.Series | None = None
) -> pd.DataFrame:
    """Some rows of a stage history as ``lead_id``, ``stage``, ``reached_at`` (UTC).

    The checks of :func:`load_history` but the one against the leads table (the caller's,
    with :func:`check_known_ids`); ``ids`` are the parsed ids when the caller has them.
    """
    label = _lifecycle(spec)
    id_col, stage_col, time_col = history_columns(spec)
    if ids is None:
        ids = parse_ids(name, id_col, frame[id_col], unique=False)
    stages = _normalised(as_text(frame[stage_col]))
    _refuse(
        name,
        stage_col,
        ~stages.isin(label.stages).to_numpy(),
        f"values are not a known stage (expected one of {', '.join(label.stages)})",
        f"value is not a known stage (expected one of {', '.join(label.stages)})",
    )
    stamps = _parse_timestamps(
        name, time_col, frame[time_col], _missing_tokens(spec), required=True
    )
    # Columns share the frame's RangeIndex; passing Series (not .to_numpy()) avoids turning
    # 2M tz-aware timestamps into Python objects and back.
    return pd.DataFrame({LEAD_ID: ids, STAGE: stages, REACHED_AT: stamps})


def furthest_stage(
    history: pd.DataFrame, spec: FeatureSpec, *, until: pd.Series | None = None
) -> pd.Series:
    """Per lead, the index of the furthest stage reached (0 = the first stage).

    With ``until`` (a cut-off time per lead id), only stages reached at or before the
    lead's cut-off count, which is how a label is taken "as of" a date without looking
    ahead. The result then covers exactly ``until``'s leads: a lead with no (counted)
    history, or a missing cut-off, is at stage 0. Without ``until`` it covers the leads in
    ``history``.
    """
    label = _lifecycle(spec)
    order = {stage: i for i, stage in enumerate(label.stages)}
    index = history[STAGE].map(order).to_numpy(dtype="int64")
    ids = history[LEAD_ID]
    if until is not None:
        cutoffs = pd.to_datetime(until)
        if cutoffs.dt.tz is None:
            cutoffs = cutoffs.dt.tz_localize("UTC")
        cutoff_per_row = ids.map(cutoffs.dt.tz_convert("UTC"))
        counted = (history[REACHED_AT] <= cutoff_per_row).to_numpy()
        ids, index = ids[counted], index[counted]
    best = pd.Series(index, index=ids.to_numpy()).groupby(level=0, sort=False).max()
    if until is not None:
        best = best.reindex(until.index, fill_value=0)
    best = best.astype("int64")
    best.name = "furthest_stage"
    if until is None:
        best.index.name = spec.id_column
    return best
