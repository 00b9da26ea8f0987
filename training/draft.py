"""``leadscore init``: draft a spec and a config from a leads file nobody described yet.

The draft is a starting point the user reads and edits, so every guess is written down
where it is made (a comment beside the field) and the guesses err on the side of honesty:

* **How the file is written**: the encoding (UTF-8, else Windows-1252/Latin-1), the
  delimiter and quote character (sniffed among ``, ; tab |``), and a decimal comma.
* **The id**: a column whose values are all present and unique and whose name says id,
  number or key; otherwise the row number is the id.
* **Each column's kind**: boolean (two yes/no-like spellings), numeric (bounds widened
  from the data, integer or not), a date (documented, not a feature), categorical (levels
  seen at least ``MIN_LEVEL_COUNT`` times), or free text (never a feature). A column with
  one value is documented as constant and unused.
* **Sentinels**: a round number such as -1, 999 or 9999 that sits far outside the other
  values of a numeric column is declared a missing token of that column.
* **Leaks**: a column whose name says what happened after contact (status, stage, tags,
  notes, outcome, ...) or that alone predicts the label almost perfectly (single-column
  ROC-AUC >= ``LEAK_AUC``) is declared ``known_at: after_contact`` and left out, with the
  reason in a comment; the user re-admits it only if it is truly known before contact.
* **The label**: exactly two values, mapped explicitly (``positive`` / ``negative``).

Nothing here trains a model; the data is read once, as text.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import roc_auc_score

from features.loaders import DataError, read_table
from features.spec import CsvFormat, FeatureSpec, normalise_token
from training.config import ConfigError

MIN_LEVEL_COUNT = 10
MAX_LEVELS = 100
LEAK_AUC = 0.95
DATE_SHARE = 0.95
#: Spellings of "no value" every draft starts with (the user adds their own).
MISSING_TOKENS = ["", "select", "n/a", "na", "nan", "null", "none", "-", "?", "unknown"]
_TRUE = {"1", "yes", "true", "y", "t", "1_0"}
_FALSE = {"0", "no", "false", "n", "f", "0_0"}
_POSITIVE_LABELS = _TRUE | {"converted", "won", "win", "positive", "success", "customer"}
_NEGATIVE_LABELS = _FALSE | {"not_converted", "lost", "loss", "negative", "failure"}
_ID_NAME = re.compile(r"(^|_)(id|uuid|guid|key|number|no|num|code)($|_)")
_LEAKY_NAME = re.compile(
    r"(^|_)(status|stage|stages|tag|tags|note|notes|outcome|result|results|disposition|"
    r"won|lost|closed|close|quality|reason|reasons|converted|conversion|deal|opportunity|"
    r"last_activity|last_notable_activity|score|scores|rating|lead_quality|lead_profile)($|_)"
)
_SENTINELS = (-1.0, -9.0, -99.0, -999.0, -9999.0, 99.0, 999.0, 9999.0, 99999.0, 999999.0)
_ENCODINGS = ("utf-8", "cp1252", "latin-1")
_DELIMITERS = ",;\t|"
_SNIFF_BYTES = 1 << 16


@dataclass
class DraftField:
    """One column's guessed description, plus why, for the comment beside it."""

    column: str
    name: str
    kind: str
    known_at: str = "before_contact"
    feature: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    missing_share: float = 0.0

    def as_yaml(self) -> str:
        entry: dict[str, Any] = {"name": self.name}
        if self.column != self.name:
            entry["column"] = self.column
        entry["kind"] = self.kind
        entry |= self.extra
        entry["known_at"] = self.known_at
        if not self.feature and self.kind != "text":
            entry["feature"] = False
        return _flow(entry)


@dataclass
class Draft:
    """What ``init`` found in the file; :func:`write_draft` turns it into two YAML files."""

    data: Path
    name: str
    csv: CsvFormat
    rows: int
    id_column: str | None
    label_column: str
    positive: list[str]
    negative: list[str]
    base_rate: float
    fields: list[DraftField]

    def summary(self) -> str:
        features = [f for f in self.fields if f.feature and f.kind != "text"]
        leaks = [f for f in self.fields if f.known_at == "after_contact"]
        lines = [
            f"{self.data.name}: {self.rows:,} rows, {len(self.fields)} columns besides the label"
            f" ('{self.label_column}', base rate {self.base_rate:.1%});"
            f" delimiter {_show(self.csv.delimiter)}, encoding {self.csv.encoding}, decimal"
            f" {_show(self.csv.decimal)}; id: "
            + (f"'{self.id_column}'" if self.id_column else "the row number"),
            f"  {len(features)} features: " + ", ".join(f"{f.name} ({f.kind})" for f in features),
        ]
        unused = [f for f in self.fields if not (f.feature and f.kind != "text")]
        if unused:
            lines.append(
                f"  {len(unused)} not features: "
                + ", ".join(f"{f.name} ({_why_unused(f)})" for f in unused)
            )
        for f in leaks:
            lines.append(f"  check: '{f.column}' looks like it leaks the outcome ({f.notes[0]})")
        for f in self.fields:
            for note in f.notes:
                if note.startswith("sentinel"):
                    lines.append(f"  check: '{f.column}': {note}")
        return "\n".join(lines)


def draft(data: Path, label: str, *, name: str | None = None) -> Draft:
    """Read ``data`` and guess a spec for it around the ``label`` column."""
    fmt = sniff_format(Path(data)) if Path(data).is_file() else CsvFormat.model_validate({})
    frame = read_table(data, required=[label], kind="leads", csv=fmt)
    text = frame.astype(str)
    fmt = fmt.model_copy(update={"decimal": _decimal_mark(text, fmt)})
    positive, negative, y = _label_values(Path(data).name, text[label], label)
    id_column = _id_column(text.drop(columns=[label]))
    used_names: set[str] = set()
    fields = []
    for column in text.columns:
        if column in (label, id_column):
            continue
        fields.append(_describe(column, text[column], y, fmt, used_names))
    return Draft(
        data=Path(data),
        name=name or _name(Path(data)),
        csv=fmt,
        rows=len(frame),
        id_column=id_column,
        label_column=label,
        positive=positive,
        negative=negative,
        base_rate=float(y.mean()),
        fields=fields,
    )


def write_draft(result: Draft, out: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Write ``spec.yaml`` and ``config.yaml`` into ``out``; refuse to overwrite unless forced."""
    out.mkdir(parents=True, exist_ok=True)
    spec_path, config_path = out / "spec.yaml", out / "config.yaml"
    for path in (spec_path, config_path):
        if path.exists() and not force:
            raise ConfigError(f"{path} already exists; use --force to overwrite it")
    spec_text = spec_yaml(result)
    FeatureSpec.model_validate(yaml.safe_load(spec_text))  # a draft that does not load is a bug
    spec_path.write_text(spec_text, encoding="utf-8")
    config_path.write_text(config_yaml(result, out), encoding="utf-8")
    return spec_path, config_path


# --- the file's format ---------------------------------------------------------------------


def sniff_format(path: Path) -> CsvFormat:
    """Encoding, delimiter and quote character of a CSV file (Parquet: the defaults)."""
    if path.name.lower().endswith(".parquet"):
        return CsvFormat.model_validate({})
    raw = _head_bytes(path)
    encoding = next((e for e in _ENCODINGS if _decodes(path, raw, e)), "latin-1")
    sample = raw.decode(encoding, errors="replace")
    sample = sample[: sample.rfind("\n") + 1] or sample
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS)
        delimiter, quotechar = dialect.delimiter, dialect.quotechar or '"'
    except csv.Error:
        header = sample.splitlines()[0] if sample else ""
        delimiter = max(_DELIMITERS, key=header.count)
        quotechar = '"'
    return CsvFormat(delimiter=delimiter, encoding=encoding, quotechar=quotechar)


def _head_bytes(path: Path) -> bytes:
    if path.name.lower().endswith(".gz"):
        import gzip

        with gzip.open(path, "rb") as handle:
            return handle.read(_SNIFF_BYTES)
    with path.open("rb") as handle:
        return handle.read(_SNIFF_BYTES)


def _decodes(path: Path, head: bytes, encoding: str) -> bool:
    """The whole file decodes (checked in blocks: a stray byte may sit on the last line)."""
    if encoding == "latin-1":
        return True
    try:
        head.decode(encoding)
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the block's end
            return False
    opener: Any = open
    if path.name.lower().endswith(".gz"):
        import gzip

        opener = gzip.open
    try:
        with opener(path, "rt", encoding=encoding) as handle:
            while handle.read(1 << 20):
                pass
    except UnicodeDecodeError:
        return False
    return True


def _decimal_mark(text: pd.DataFrame, fmt: CsvFormat) -> str:
    """A decimal comma is possible only when commas do not separate fields."""
    if fmt.delimiter == ",":
        return "."
    sample = text.head(2000)
    comma = sample.apply(lambda c: c.str.fullmatch(r"-?\d+,\d+").sum()).sum()
    point = sample.apply(lambda c: c.str.fullmatch(r"-?\d+\.\d+").sum()).sum()
    return "," if comma > point else "."


# --- label and id --------------------------------------------------------------------------


def _label_values(
    file: str, raw: pd.Series, column: str
) -> tuple[list[str], list[str], np.ndarray]:
    """The label's two spellings, positive first, and the 0/1 vector."""
    folded = raw.map(lambda v: normalise_token(str(v)))
    counts = folded.value_counts()
    present = [v for v in counts.index if v not in ("", "nan")]
    if len(counts) != len(present):
        blanks = int(counts.drop(present).sum())
        raise DataError(file, f"label column '{column}' is empty on {blanks} rows", column=column)
    if len(present) != 2:
        shown = ", ".join(f"'{v}'" for v in present[:5])
        raise DataError(
            file,
            f"label column '{column}' has {len(present)} distinct values ({shown}); a "
            "binary label needs exactly two",
            column=column,
        )
    a, b = present
    if a in _POSITIVE_LABELS or b in _NEGATIVE_LABELS:
        positive, negative = a, b
    elif b in _POSITIVE_LABELS or a in _NEGATIVE_LABELS:
        positive, negative = b, a
    else:  # no telling: the rarer value is what a lead scorer looks for
        positive, negative = (b, a) if counts[b] <= counts[a] else (a, b)
    spell = {normalise_token(str(v)): str(v).strip() for v in raw.unique()}
    y = (folded == positive).to_numpy(np.int8)
    return [spell.get(positive, positive)], [spell.get(negative, negative)], y


def _id_column(text: pd.DataFrame) -> str | None:
    """A complete, unique column named like an id; none means the row number is the id."""
    for column in text.columns:
        values = text[column].str.strip()
        if (values == "").any() or not values.is_unique:
            continue
        if _ID_NAME.search(_slug(column)):
            return str(column)
    return None


# --- one column ----------------------------------------------------------------------------


def _describe(
    column: str, raw: pd.Series, y: np.ndarray, fmt: CsvFormat, used: set[str]
) -> DraftField:
    name = _unique(_slug(column), used)
    values = raw.str.strip()
    missing = values.map(normalise_token).isin({normalise_token(t) for t in MISSING_TOKENS})
    present = values[~missing]
    out = DraftField(column=column, name=name, kind="text", missing_share=float(missing.mean()))
    distinct = present.map(normalise_token).nunique()
    if not missing.any() and distinct == len(values) and _ID_NAME.search(name):
        out.extra = {"description": "another unique id: never a feature"}
        out.notes.append("a second id")
        return out
    if distinct <= 1:
        out.kind, out.feature = "boolean" if _is_boolean(present) else "categorical", False
        if out.kind == "categorical":
            out.extra = {"levels": [normalise_token(present.iloc[0])]} if len(present) else {}
            if not out.extra:
                out.kind = "text"
        out.notes.append("constant: a single value, no signal")
        return out
    if _is_boolean(present):
        out.kind = "boolean"
    elif (numbers := _numbers(present, fmt.decimal)) is not None:
        _numeric(out, numbers, column)
    elif _is_date(present):
        out.kind, out.feature = "text", False
        out.extra = {"description": "a date: documented, not a feature"}
        out.notes.append("date")
        return out
    elif distinct <= max(MAX_LEVELS, 1) and distinct <= 0.5 * max(len(present), 1):
        out.kind = "categorical"
        out.extra = {"levels": _levels(present)}
        if not out.extra["levels"]:
            out.extra = {}
    else:
        out.extra = {"description": "free text or personal data: never a feature"}
        out.notes.append("free text")
        return out
    _flag_leak(out, raw, missing, y, fmt)
    return out


def _is_boolean(present: pd.Series) -> bool:
    folded = set(present.map(normalise_token).unique())
    return bool(folded) and folded <= (_TRUE | _FALSE) and len(folded) <= 2


def _numbers(present: pd.Series, decimal: str) -> pd.Series | None:
    text = present.str.replace(decimal, ".", regex=False) if decimal != "." else present
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.isna().any() or not len(numbers):
        return None
    finite = np.isfinite(numbers.to_numpy(dtype=float))
    return numbers.astype(float) if finite.all() else None


def _numeric(out: DraftField, numbers: pd.Series, column: str) -> None:
    """Kind numeric: unit from the name, bounds widened from the data, sentinels set aside."""
    out.kind = "numeric"
    sentinels = _sentinels(numbers)
    kept = numbers[~numbers.isin(sentinels)]
    low, high = float(kept.min()), float(kept.max())
    integer = bool((kept == np.round(kept)).all())
    out.extra = {
        "unit": _unit(column),
        "min": 0 if low >= 0 else _nice(low * 2),
        "max": _nice(max(high * 2, high + 1)),
    }
    if integer:
        out.extra["integer"] = True
    if sentinels:
        shown = [_number_text(v) for v in sentinels]
        out.extra["missing_tokens"] = shown
        share = float(numbers.isin(sentinels).mean())
        out.notes.append(
            f"sentinel {', '.join(shown)} ({share:.1%} of rows) declared missing: "
            "remove it from missing_tokens if it is a real value"
        )


def _sentinels(numbers: pd.Series) -> list[float]:
    """Round numbers at an extreme that the rest of the column never comes near."""
    found = []
    for value in _SENTINELS:
        hits = numbers == value
        if hits.mean() < 0.005:
            continue
        rest = numbers[~hits]
        if rest.empty:
            continue
        far_below = value < 0 and rest.min() >= 0
        far_above = value > 0 and value > 5 * max(float(rest.quantile(0.99)), 1.0)
        if far_below or far_above:
            found.append(value)
    return found


def _is_date(present: pd.Series) -> bool:
    sample = present.head(500)
    if not sample.str.contains(r"\d", regex=True).all():
        return False
    parsed = pd.to_datetime(sample, errors="coerce", format="ISO8601", utc=True)
    if parsed.notna().mean() >= DATE_SHARE:
        return True
    return bool(sample.str.fullmatch(r"\d{1,2}[/.]\d{1,2}[/.]\d{2,4}( .*)?").mean() >= DATE_SHARE)


def _levels(present: pd.Series) -> list[str]:
    counts = present.map(normalise_token).value_counts()
    kept = counts[(counts >= MIN_LEVEL_COUNT) & (counts.index != "")]
    return [str(level) for level in kept.index[:MAX_LEVELS]]


def _flag_leak(
    out: DraftField, raw: pd.Series, missing: pd.Series, y: np.ndarray, fmt: CsvFormat
) -> None:
    """after_contact (and no feature) when the name or the data says it leaks the outcome."""
    reason = None
    if _LEAKY_NAME.search(out.name):
        reason = "its name describes what happened after contact"
    else:
        auc = single_column_auc(raw, missing, y, numeric=out.kind == "numeric", decimal=fmt.decimal)
        if auc >= LEAK_AUC:
            reason = f"alone it predicts the label with ROC-AUC {auc:.3f}"
    if reason:
        out.known_at, out.feature = "after_contact", False
        out.notes.insert(0, reason)


def single_column_auc(
    raw: pd.Series, missing: pd.Series, y: np.ndarray, *, numeric: bool, decimal: str = "."
) -> float:
    """How well one column alone ranks the label (max of AUC and 1 - AUC, out of fold).

    Categories are replaced by their conversion rate learnt on the other folds, so a
    column with many rare levels does not look predictive by memorising them.
    """
    if len(np.unique(y)) < 2:
        return 0.5
    if numeric:
        text = raw.str.strip()
        text = text.str.replace(decimal, ".", regex=False) if decimal != "." else text
        x = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
        x = np.where(np.isnan(x), np.nanmin(x) - 1 if np.isfinite(np.nanmin(x)) else 0, x)
    else:
        keys = raw.str.strip().map(normalise_token).where(~missing, "__missing__").to_numpy()
        x = _out_of_fold_rates(keys, y)
    auc = float(roc_auc_score(y, x))
    return max(auc, 1 - auc)


def _out_of_fold_rates(keys: np.ndarray, y: np.ndarray, folds: int = 5) -> np.ndarray:
    fold = np.arange(len(y)) % folds
    prior = float(y.mean())
    out = np.empty(len(y))
    for k in range(folds):
        train = fold != k
        frame = pd.DataFrame({"key": keys[train], "y": y[train]})
        stats = frame.groupby("key")["y"].agg(["sum", "count"])
        rate = (stats["sum"] + prior * 10) / (stats["count"] + 10)
        out[~train] = pd.Series(keys[~train]).map(rate).fillna(prior).to_numpy()
    return out


# --- writing -------------------------------------------------------------------------------


def spec_yaml(result: Draft) -> str:
    """The spec as YAML, each guess commented where it was made."""
    today = datetime.now(UTC).date().isoformat()
    lines = [
        "# yaml-language-server: $schema=spec.schema.json",
        f"# Drafted by `leadscore init` from {result.data.name} on {today}: a starting point.",
        "# Read every field; `leadscore spec-schema --out spec.schema.json` lets editors check",
        "# this file. Fields marked after_contact are left out because they look like they",
        "# leak the outcome: re-admit one only if it is truly known before sales contact.",
        "schema_version: 1",
        f"name: {result.name}",
        "version: 1",
        f"description: {_scalar(f'Leads from {result.data.name}')}",
        "csv: " + _flow(result.csv.model_dump()),
    ]
    if result.id_column:
        lines.append(f"id_column: {_scalar(result.id_column)}")
    else:
        lines.append("# No unique id column: each lead's row number is its id.")
    lines.append("missing_tokens: " + _flow(MISSING_TOKENS))
    lines.append("fields:")
    for f in result.fields:
        for note in f.notes:
            lines.append(f"  # {f.column}: {note}")
        lines.append(f"  - {f.as_yaml()}")
    lines += [
        "label:",
        "  kind: binary",
        f"  column: {_scalar(result.label_column)}",
        "  stage: converted",
        f"  positive: {_flow(result.positive)}",
        f"  negative: {_flow(result.negative)}",
        "",
    ]
    return "\n".join(lines)


def config_yaml(result: Draft, out: Path) -> str:
    data = os.path.relpath(result.data.resolve(), out.resolve())
    slug = result.name.replace("_", "-")
    return "\n".join(
        [
            f"# Drafted by `leadscore init` from {result.data.name}. Paths are relative to this",
            "# file. `leadscore tune --config <this file>` searches better LightGBM settings.",
            "spec: spec.yaml",
            f"model_name: {slug}",
            f"experiment: {slug}",
            f"leads: {_scalar(data)}",
            "actions: null",
            "history: null",
            "truth: null",
            "seed: 42",
            "test_share: 0.2",
            "validation_share: 0.15",
            "calibration: sigmoid",
            "# Sales works the top 10 % of leads; e.g. 'precision:0.6' asks for 60 % converting.",
            "thresholds: {'*': 'top:10%'}",
            "",
        ]
    )


def _flow(value: Any) -> str:
    return yaml.safe_dump(
        value, default_flow_style=True, width=10**6, sort_keys=False, allow_unicode=True
    ).strip()


def _scalar(value: str) -> str:
    text = yaml.safe_dump(value, width=10**6, allow_unicode=True)
    return text.strip().removesuffix("\n...").strip()


def _slug(column: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", column.strip().lower().replace("%", " pct ")).strip("_")
    if not slug:
        slug = "column"
    return slug if slug[0].isalpha() else f"f_{slug}"


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 2
    while candidate in used:
        candidate, n = f"{name}_{n}", n + 1
    used.add(candidate)
    return candidate


def _name(data: Path) -> str:
    stem = data.name.split(".")[0]
    return _slug(stem)


def _unit(column: str) -> str:
    lowered = column.lower()
    for words, unit in (
        (("%", "percent", "pct", "rate"), "percent"),
        (("second", "secs", "time spent", "duration"), "seconds"),
        (("minute", "(min)", " mins"), "minutes"),
        (("day",), "days"),
        (("visit",), "visits"),
        (("page",), "pages"),
        (("revenue", "price", "amount", "income", "salary", "$", "€"), "currency"),
        (("age",), "years"),
    ):
        if any(w in lowered for w in words):
            return unit
    return "value"


def _nice(value: float) -> float | int:
    """A round bound beyond ``value``: 2 significant digits, away from zero."""
    if value == 0:
        return 0
    magnitude = 10 ** (math.floor(math.log10(abs(value))) - 1)
    rounded = math.ceil(abs(value) / magnitude) * magnitude
    result = rounded if value > 0 else -rounded
    return int(result) if float(result).is_integer() else float(result)


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _show(char: str) -> str:
    return {"\t": "tab", ",": "','", ";": "';'", "|": "'|'", ".": "'.'"}.get(char, repr(char))


def _why_unused(f: DraftField) -> str:
    if f.known_at == "after_contact":
        return "after contact"
    return f.notes[0] if f.notes else "text"


__all__ = ["Draft", "DraftField", "draft", "single_column_auc", "sniff_format", "write_draft"]
