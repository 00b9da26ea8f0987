"""The feature spec: a declarative, versioned description of a lead data set.

One YAML file says which columns exist, what each one means, whether it is known
before sales contact, which tracked actions are aggregated over which windows, and
what the label is. Training, batch scoring and the API all read the same spec, so
they cannot disagree about what a lead looks like.

The spec refuses, at load time, anything that would make the model dishonest: an
after-contact field used as a feature, a window list out of order, a label whose
scored stages are not in its stage list.
"""

from __future__ import annotations

import codecs
import math
import re
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SPEC_SCHEMA_VERSION: Literal[1] = 1
SPECS_DIR = Path(__file__).with_name("specs")
_NAME = r"^[a-z][a-z0-9_]*$"

#: The furthest stage a lead can reach, in order. Binary data sets use a 0/1 column instead.
LIFECYCLE_STAGES: tuple[str, ...] = ("lead", "mql", "sql", "opportunity", "customer")


class SpecError(ValueError):
    """A spec file is unreadable or describes a data set the system cannot use honestly."""


class KnownAt(StrEnum):
    """When a field's value exists: only before-contact fields may feed a readiness score."""

    BEFORE_CONTACT = "before_contact"
    AFTER_CONTACT = "after_contact"


class Direction(StrEnum):
    """A monotone constraint: more of this feature may only raise (or only lower) the score."""

    INCREASING = "increasing"
    DECREASING = "decreasing"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _FieldBase(_Strict):
    name: str = Field(pattern=_NAME, description="Canonical snake_case name used in features.")
    column: str | None = Field(None, description="Source column name when it differs from name.")
    description: str = ""
    known_at: KnownAt
    feature: bool = Field(True, description="False documents a column without using it.")
    phrase: str | None = Field(
        None, description="How a salesperson reads it, e.g. 'works in {value}'."
    )
    missing_tokens: list[str] = Field(
        default_factory=list,
        description="Values meaning 'no value' in this column only, on top of the spec's "
        "(e.g. a numeric sentinel such as '-1' or '9999').",
    )

    @property
    def source(self) -> str:
        """The column to read from a table or the key to read from a lead dict."""
        return self.column or self.name


class CategoricalField(_FieldBase):
    """A field with a closed set of levels.

    Raw strings are normalised (trimmed, lower-cased, inner whitespace and dashes folded
    to one underscore) before they are matched, so "  Vice-President " finds level
    ``vice_president``. ``aliases`` map further spellings to a level. A value outside the
    levels follows ``unseen``: ``other`` scores it as the explicit ``__other__`` level and
    reports it; ``error`` refuses the row. A missing value is scored as ``__missing__``.
    """

    kind: Literal["categorical"]
    levels: list[str] | None = Field(
        None, min_length=1, description="Known levels; omitted: learnt by fit from training data."
    )
    min_count: int = Field(
        10, ge=1, description="When levels are learnt, rarer values are scored as __other__."
    )
    aliases: dict[str, str] = Field(default_factory=dict)
    unseen: Literal["other", "error"] = "other"
    max_length: int = Field(200, ge=1, description="Longest raw string accepted.")

    @field_validator("levels")
    @classmethod
    def _levels_normalised(cls, levels: list[str] | None) -> list[str] | None:
        if levels is None:
            return None
        bad = [lvl for lvl in levels if normalise_token(lvl) != lvl]
        if bad:
            raise ValueError(f"levels must be written normalised (lower snake_case): {bad}")
        if len(set(levels)) != len(levels):
            raise ValueError("levels must be unique")
        return levels

    @field_validator("aliases")
    @classmethod
    def _alias_keys_normalised(cls, aliases: dict[str, str]) -> dict[str, str]:
        bad = [k for k in aliases if normalise_token(k) != k]
        if bad:
            raise ValueError(f"alias keys must be written normalised (lower snake_case): {bad}")
        return aliases

    @model_validator(mode="after")
    def _aliases_point_at_levels(self) -> CategoricalField:
        unknown = sorted(set(self.aliases.values()) - set(self.levels or ()))
        if unknown and self.levels is not None:
            raise ValueError(f"aliases point at levels that are not declared: {unknown}")
        return self


class NumericField(_FieldBase):
    """A number with bounds and a unit.

    A value outside ``[min, max]`` follows ``out_of_bounds``: ``clip`` moves it to the
    nearest bound and reports it, ``error`` refuses the row. A missing value stays NaN,
    which the model scores through its learned missing-value branch, and is reported.
    """

    kind: Literal["numeric"]
    unit: str
    min: float
    max: float
    out_of_bounds: Literal["clip", "error"] = "clip"
    direction: Direction | None = None
    integer: bool = False

    @model_validator(mode="after")
    def _bounds_ordered(self) -> NumericField:
        if not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class BooleanField(_FieldBase):
    """A yes/no field. Accepts true/false, yes/no, 1/0 in any case; missing stays NaN."""

    kind: Literal["boolean"]
    direction: Direction | None = None
    phrase_false: str | None = Field(None, description="Reason text when the answer is no.")


class TextField(_FieldBase):
    """Free text or personal data (a name, an e-mail address, a rep's notes).

    Documented so loaders know the column, never a feature: a lead's name must not move
    its score, and free text has no stable encoding.
    """

    kind: Literal["text"]
    feature: Literal[False] = False
    max_length: int = Field(500, ge=1)


class DisplayField(_Strict):
    """Shown to sales next to a lead (its name, company, title): never a feature.

    The CRM sends it with the lead under ``name``; the service keeps the latest value per
    lead apart from the scoring log (``lead_display``), shows it on the board to the sales
    role only, and never writes it to a log, an event or a stored model input.
    """

    name: str = Field(pattern=_NAME, description="Key in the request (and column in files).")
    label: str = Field(min_length=1, max_length=40, description="Column heading on the board.")
    column: str | None = Field(None, description="Source column name when it differs from name.")
    max_length: int = Field(200, ge=1, le=1000, description="Longest value accepted.")


ProfileField = Annotated[
    CategoricalField | NumericField | BooleanField | TextField, Field(discriminator="kind")
]
FeatureField = CategoricalField | NumericField | BooleanField


class ActionType(_Strict):
    """One kind of tracked action (a pricing-page visit, a demo request, ...)."""

    name: str = Field(pattern=_NAME)
    direction: Direction | None = None
    phrase: str = Field(description="Plural noun phrase for reasons, e.g. 'pricing page visits'.")


class ActionsSpec(_Strict):
    """The timestamped actions table and how it is aggregated as of a cut-off."""

    lead_id_column: str = "lead_id"
    type_column: str = "action_type"
    timestamp_column: str = "occurred_at"
    types: list[ActionType] = Field(min_length=1)
    windows_days: list[int] = Field(default=[1, 7, 30, 90], min_length=1)
    half_life_days: float = Field(14.0, gt=0)
    recency_cap_days: float = Field(
        365.0, gt=0, description="Days-since-last for a type never seen, and the cap for all."
    )
    activity_direction: Direction | None = Field(
        None,
        description="Constraint on the all-type totals (active days, counts, velocity): "
        "'increasing' says more engagement never lowers readiness.",
    )
    unknown_types: Literal["ignore", "error"] = Field(
        "ignore", description="Action types outside the list: counted and reported, or refused."
    )

    @field_validator("windows_days")
    @classmethod
    def _windows_increasing(cls, windows: list[int]) -> list[int]:
        if any(w <= 0 for w in windows) or windows != sorted(set(windows)):
            raise ValueError("windows_days must be positive and strictly increasing")
        return windows

    @model_validator(mode="after")
    def _types_unique(self) -> ActionsSpec:
        names = [t.name for t in self.types]
        if len(set(names)) != len(names):
            raise ValueError("action type names must be unique")
        return self


class LifecycleLabel(_Strict):
    """The label is the furthest lifecycle stage a lead reached."""

    kind: Literal["lifecycle"]
    column: str = "stage"
    stages: list[str] = Field(default=list(LIFECYCLE_STAGES))
    scored: list[str] = Field(default=["mql", "sql"], min_length=1)
    history_lead_id_column: str = "lead_id"
    history_stage_column: str = "stage"
    history_timestamp_column: str = "reached_at"

    @model_validator(mode="after")
    def _scored_in_stages(self) -> LifecycleLabel:
        missing = [s for s in self.scored if s not in self.stages]
        if missing:
            raise ValueError(f"scored stages {missing} are not in stages {self.stages}")
        order = [self.stages.index(s) for s in self.scored]
        if order != sorted(order) or 0 in order:
            raise ValueError("scored stages must be in lifecycle order and above the first stage")
        return self


class BinaryLabel(_Strict):
    """The label is a 0/1 conversion column; the model then has a single head."""

    kind: Literal["binary"]
    column: str
    stage: str = Field("converted", pattern=_NAME, description="Name of the one scored stage.")
    positive: list[str] = Field(default=["1", "yes", "true"])
    negative: list[str] = Field(default=["0", "no", "false"])

    @property
    def scored(self) -> list[str]:
        return [self.stage]


Label = Annotated[LifecycleLabel | BinaryLabel, Field(discriminator="kind")]


class CsvFormat(_Strict):
    """How a CSV file of this data set is written (Parquet files need none of it)."""

    delimiter: str = Field(
        ",", min_length=1, max_length=1, description="Field separator: ',', ';', tab ('\\t'), '|'."
    )
    encoding: str = Field("utf-8", description="Text encoding, e.g. utf-8, latin-1, cp1252.")
    quotechar: str = Field(
        '"', min_length=1, max_length=1, description="Character quoting a field with separators."
    )
    decimal: Literal[".", ","] = Field(".", description="Decimal mark of numbers.")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"unknown text encoding {encoding!r}") from None
        return encoding

    @model_validator(mode="after")
    def _distinct_marks(self) -> CsvFormat:
        if self.decimal == self.delimiter:
            raise ValueError(f"decimal mark and delimiter are both {self.delimiter!r}")
        if self.quotechar in (self.delimiter, self.decimal):
            raise ValueError(f"quotechar {self.quotechar!r} is also the delimiter or decimal mark")
        return self


#: The id a lead gets when the file has no id column: its line number in the file.
ROW_NUMBER_ID = "row_number"


class FeatureSpec(_Strict):
    """A whole data set: identity, profile fields, tracked actions and the label."""

    schema_version: Literal[1] = SPEC_SCHEMA_VERSION
    name: str = Field(pattern=_NAME)
    version: int = Field(ge=1, description="Bump when the meaning of any feature changes.")
    description: str = ""
    csv: CsvFormat = Field(
        default_factory=lambda: CsvFormat.model_validate({}),
        description="How CSV files of this data set are written (delimiter, encoding, ...).",
    )
    id_column: str = Field(
        ROW_NUMBER_ID,
        description="Column with a unique lead id. Omitted (or 'row_number') and absent from "
        "the file: each lead's line number in the file is its id.",
    )
    created_at_column: str | None = Field(
        None, description="When the lead was created; gives lead age and time-ordered splits."
    )
    missing_tokens: list[str] = Field(
        default=["", "select", "n/a", "na", "null", "none", "-"],
        description="Values meaning 'no value' in every column (text compared after "
        "normalisation, numbers by value): a numeric sentinel here becomes missing too.",
    )
    fields: list[ProfileField] = Field(min_length=1)
    actions: ActionsSpec | None = None
    label: Label
    display: list[DisplayField] = Field(
        default_factory=list,
        description="Personal fields shown to sales (name, company, title); never features.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"field names must be unique, repeated: {dupes}")
        leaking = [f.name for f in self.fields if f.feature and f.known_at is KnownAt.AFTER_CONTACT]
        if leaking:
            raise ValueError(
                f"fields known only after sales contact cannot be features (they leak the "
                f"outcome): {leaking}; set 'feature: false' to keep them documented but unused"
            )
        if not self.feature_fields and self.actions is None:
            raise ValueError("the spec has no feature: no before-contact field and no actions")
        outputs = [f.name for f in self.feature_fields] + action_output_names(self)
        shown = [d.name for d in self.display]
        if len(set(shown)) != len(shown) or set(shown) & set(outputs):
            raise ValueError(
                "display names must be unique and never a feature's name (a display field "
                f"may name a text field): {sorted(set(shown) & set(outputs)) or shown}"
            )
        reserved = {"lead_id", "created_at", "as_of", "actions", self.id_column}
        if self.created_at_column:
            reserved.add(self.created_at_column)
        if set(shown) & reserved:
            raise ValueError(
                f"display names clash with request keys: {sorted(set(shown) & reserved)}"
            )
        clashes = sorted({n for n in outputs if outputs.count(n) > 1})
        if clashes:
            raise ValueError(f"feature names would clash (rename a field or action): {clashes}")
        return self

    @cached_property
    def feature_fields(self) -> list[FeatureField]:
        """The profile fields that feed the model (before-contact, feature: true)."""
        return [f for f in self.fields if not isinstance(f, TextField) and f.feature]

    @property
    def scored_stages(self) -> list[str]:
        return list(self.label.scored)

    def field(self, name: str) -> CategoricalField | NumericField | BooleanField | TextField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


def action_output_names(spec: FeatureSpec) -> list[str]:
    """Every column name the actions produce (kept in step with the builder's layout)."""
    acts = spec.actions
    names: list[str] = []
    if acts is not None:
        for t in acts.types:
            names += [f"{t.name}_count_{w}d" for w in acts.windows_days]
            names += [f"{t.name}_days_since_last", f"{t.name}_decayed"]
        names += [f"active_days_{w}d" for w in acts.windows_days]
        names += [f"actions_count_{w}d" for w in acts.windows_days]
        if len(acts.windows_days) > 1:
            names.append("recent_velocity")
    if spec.created_at_column:
        names.append("lead_age_days")
    return names


def field_missing_tokens(spec: FeatureSpec, field: _FieldBase) -> frozenset[str]:
    """The normalised spellings of "no value" for one field: the spec's and its own.

    For a numeric field, tokens that are numbers are left to :func:`missing_numbers`, which
    compares by value: normalised as text, "-1" would also swallow a real 1.
    """
    tokens = [*spec.missing_tokens, *field.missing_tokens]
    if isinstance(field, NumericField):
        tokens = [t for t in tokens if not numbers_in([t])]
    return frozenset(normalise_token(t) for t in tokens) | {""}


def missing_numbers(spec: FeatureSpec, field: _FieldBase) -> tuple[float, ...]:
    """The numeric sentinels among a field's missing tokens ('-1', '9999', '-999.0')."""
    return numbers_in([*spec.missing_tokens, *field.missing_tokens])


def numbers_in(tokens: list[str]) -> tuple[float, ...]:
    """The tokens that are finite numbers, as numbers, each once."""
    found: list[float] = []
    for token in tokens:
        try:
            value = float(token)
        except ValueError:
            continue
        if math.isfinite(value) and value not in found:
            found.append(value)
    return tuple(found)


_FOLD = re.compile(r"[\s\-/]+")


def normalise_token(raw: str) -> str:
    """Fold a messy CRM string to the canonical spelling levels are written in."""
    return _FOLD.sub("_", raw.strip().lower()).strip("_")


def spec_json_schema() -> dict[str, Any]:
    """The spec's JSON Schema, so editors complete and check spec YAML files.

    ``leadscore spec-schema --out spec.schema.json`` writes it; a spec file then starts with
    ``# yaml-language-server: $schema=spec.schema.json`` (``leadscore init`` adds the line).
    """
    schema = FeatureSpec.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "leadscore feature spec"
    return schema


def load_spec(path: str | Path) -> FeatureSpec:
    """Read and validate a spec; a bundled spec can be named without its path ("sample_crm")."""
    p = Path(path)
    if not p.suffix and not p.exists():
        p = SPECS_DIR / f"{p.name}.yaml"
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SpecError(f"{p}: spec file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{p}: spec file cannot be read as UTF-8 text ({exc})") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{p}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{p}: a spec is a YAML mapping at the top level")
    try:
        return FeatureSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise SpecError(f"{p}: invalid spec: {problems}") from exc
