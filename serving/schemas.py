"""The API's request models, built from the feature spec (responses: :mod:`.response_models`).

The spec already says which profile fields exist, their kinds, bounds and lengths, and
which action types are tracked. Writing the request model by hand would be a second
copy that drifts; :func:`lead_model` derives it, so the API, the model and the training
data cannot disagree about what a lead is.

What is enforced here and what is left to the feature builder is deliberate:

* **Refused here** (422): unknown keys, wrong JSON types (no "12" for 12, no "yes" for
  true: a client sending strings has a bug we should surface, not guess around),
  NaN/Infinity, numbers outside the spec's bounds, fractions where the spec says whole
  number, over-long strings, text the database cannot store (NUL characters, lone
  surrogates: one such value would fail the commit it shares with other requests),
  timestamps without a timezone (a naive time is ambiguous by hours, which moves every
  recency feature) or outside 1900-01-01 .. 2199-12-31 UTC (:data:`EARLIEST` and
  :data:`LATEST`: every window and horizon computed from them stays representable),
  more actions than a lead can sensibly have. Accepted timestamps are normalised to UTC.
* **Accepted and reported by the builder**: categorical values outside the known
  levels (scored as ``__other__``, returned as a warning) and missing fields (the
  model has a learnt branch for missing values). New CRM picklist values are normal;
  refusing the lead would lose the score for a cosmetic difference.

Models are strict (no coercion) in both Python and JSON mode. FastAPI validates the
dict ``json.loads`` made, i.e. Python mode, where a strict datetime refuses a string;
timestamps therefore go through :func:`parse_timestamp`, which accepts ISO-8601
strings in both modes and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal, cast

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_core import PydanticCustomError

from features.batch import ACTION_TIME_KEY, ACTION_TYPE_KEY, ACTIONS_KEY, AS_OF_KEY
from features.spec import (
    BooleanField,
    CategoricalField,
    Direction,
    FeatureField,
    FeatureSpec,
    LifecycleLabel,
    NumericField,
)
from scorelog.rows import REASONED_OUTCOMES, REJECTION_REASONS, RejectionReason
from serving.problems import FieldError, Problem

__all__ = [
    "LEAD_ID_PATTERN",
    "OUTCOMES",
    "Action",
    "FieldError",
    "LeadBase",
    "OutcomeIn",
    "Problem",
    "batch_model",
    "example_lead",
    "idempotency_key",
    "lead_model",
    "outcome_model",
    "parse_timestamp",
    "spec_stages",
    "to_record",
]

#: Ids travel into URLs, logs and SQL parameters: a conservative charset keeps them
#: printable and unambiguous everywhere (``1; DROP TABLE`` is refused, not escaped).
LEAD_ID_PATTERN = r"^[A-Za-z0-9._:@-]+$"
MAX_ID_LENGTH = 128
MAX_ACTION_TYPE_LENGTH = 64
MAX_NOTE_LENGTH = 500
#: Clocks disagree; an outcome a few hours "ahead" is skew, a day or more is a bug.
MAX_CLOCK_SKEW = timedelta(days=1)
_MAX_TIMESTAMP_LENGTH = 64
#: The documented range of every timestamp the API accepts (UTC, end exclusive).
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def storable_text(value: str) -> str:
    """Text every backend can store: no NUL (PostgreSQL refuses it), no lone surrogate."""
    if "\x00" in value:
        raise PydanticCustomError("text_nul", "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError(
            "text_surrogate", "must be valid Unicode text (no lone surrogates)"
        ) from None
    return value


class StorableText(BaseModel):
    """Every string field of a request model holds text the scoring log can store.

    A field validator for all fields ("*") rather than an annotated type, so each
    field's own constraints (lengths, patterns) keep their usual errors and run first.
    """

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return storable_text(value) if isinstance(value, str) else value


LeadId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=LEAD_ID_PATTERN,
        description="The lead's id in your CRM: letters, digits and . _ : @ - only.",
        examples=["lead-000123"],
    ),
]
IdempotencyKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=LEAD_ID_PATTERN,
        description="Same key, same event: a retried call with it is recorded once.",
    ),
]


def parse_timestamp(value: Any) -> Any:
    """ISO-8601 string → datetime, before pydantic's strict (aware) datetime check.

    Strict mode would refuse every string in Python mode, which is how FastAPI
    validates; lax mode would also take Unix numbers and numeric strings, whose unit
    and zone are guesses. This accepts exactly ISO-8601 text (and datetimes), so both
    modes agree. The timezone check stays with ``AwareDatetime``.
    """
    if not isinstance(value, str):
        return value
    if len(value) > _MAX_TIMESTAMP_LENGTH:
        raise PydanticCustomError("timestamp_invalid", "not a valid timestamp")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("timestamp_invalid", "not a valid timestamp") from None


def in_range_utc(value: datetime) -> datetime:
    """The same instant in UTC, refused outside :data:`EARLIEST` .. :data:`LATEST`.

    Converting year 1 with a positive offset (or year 9999 with a negative one) to UTC
    leaves the calendar altogether: that is out of range too, not an OverflowError.
    """
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise PydanticCustomError(
            "timestamp_out_of_range", "must be between 1900-01-01 and 2199-12-31 (UTC)"
        )
    return utc


def _not_far_ahead(value: datetime) -> datetime:
    if value > datetime.now(UTC) + MAX_CLOCK_SKEW:
        raise PydanticCustomError(
            "timestamp_too_far_ahead", "must not be more than 1 day in the future"
        )
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(parse_timestamp), AfterValidator(in_range_utc)]
PastTimestamp = Annotated[Timestamp, AfterValidator(_not_far_ahead)]


def _strict(str_max_length: int | None = None) -> ConfigDict:
    """No coercion, no unknown keys, no NaN/Infinity: what every request model shares."""
    config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    if str_max_length is not None:
        config["str_max_length"] = str_max_length
    return config


# --------------------------------------------------------------------------- leads


class Action(StorableText):
    """One tracked action; :func:`lead_model` builds a spec-specific subclass."""

    model_config = _strict(MAX_ACTION_TYPE_LENGTH)

    type: str = Field(
        min_length=1, max_length=MAX_ACTION_TYPE_LENGTH, description="The action type."
    )
    at: Timestamp = Field(description="When it happened (ISO-8601 with a timezone).")


class LeadBase(StorableText):
    """What every spec's lead model shares: its id, and how it becomes a builder record."""

    model_config = _strict()

    #: Set by :func:`lead_model` from the spec.
    spec_name: ClassVar[str] = ""
    id_column: ClassVar[str] = "lead_id"
    created_at_column: ClassVar[str | None] = None
    feature_names: ClassVar[tuple[str, ...]] = ()
    has_actions: ClassVar[bool] = False
    display_names: ClassVar[tuple[str, ...]] = ()

    lead_id: LeadId

    def display_values(self) -> dict[str, str]:
        """The spec's display fields that were sent (name, company, ...): never in the record
        the model scores, the stored input, an event or a log line."""
        values = {name: getattr(self, name) for name in self.display_names}
        return {name: value for name, value in values.items() if value}

    def to_record(self) -> dict[str, Any]:
        """The dict :func:`features.batch.from_records` reads.

        Profile fields by canonical name (None = missing), the id under both
        ``lead_id`` and the spec's id column, datetimes as aware ``datetime`` objects,
        and ``as_of`` / ``created_at`` only when given: the builder treats a present
        ``as_of: None`` as "now" and would ignore a batch-level default.
        """
        record: dict[str, Any] = {"lead_id": self.lead_id, self.id_column: self.lead_id}
        for name in self.feature_names:
            record[name] = getattr(self, name)
        created = getattr(self, "created_at", None)
        if self.created_at_column and created is not None:
            record[self.created_at_column] = created
        as_of = getattr(self, AS_OF_KEY, None)
        if as_of is not None:
            record[AS_OF_KEY] = as_of
        if self.has_actions:
            actions: list[Action] = getattr(self, ACTIONS_KEY)
            record[ACTIONS_KEY] = [
                {ACTION_TYPE_KEY: a.type, ACTION_TIME_KEY: a.at} for a in actions
            ]
        return record


def to_record(lead: BaseModel) -> dict[str, Any]:
    """Function form of :meth:`LeadBase.to_record` for a model made by :func:`lead_model`."""
    if not isinstance(lead, LeadBase):
        raise TypeError(f"not a lead model instance: {type(lead).__name__}")
    return lead.to_record()


_RESERVED = frozenset({"lead_id", "created_at", AS_OF_KEY, ACTIONS_KEY})
_LEADS: dict[tuple[int, int], tuple[FeatureSpec, type[LeadBase]]] = {}


def lead_model(spec: FeatureSpec, *, max_actions: int = 1000) -> type[LeadBase]:
    """The request model of one lead for ``spec`` (memoised per spec object and limit).

    Memoised so that every route and :func:`batch_model` share one ``Lead`` class: two
    equal classes would appear twice, under mangled names, in the OpenAPI document.
    """
    key = (id(spec), max_actions)
    hit = _LEADS.get(key)
    if hit is not None and hit[0] is spec:
        return hit[1]
    model = _build_lead_model(spec, max_actions)
    _LEADS[key] = (spec, model)
    return model


def _build_lead_model(spec: FeatureSpec, max_actions: int) -> type[LeadBase]:
    clashes = sorted(_RESERVED.intersection(f.name for f in spec.feature_fields))
    if clashes:
        raise ValueError(f"spec {spec.name}: field names clash with API keys: {clashes}")
    fields: dict[str, Any] = {f.name: _feature_field(f) for f in spec.feature_fields}
    for shown in spec.display:
        fields[shown.name] = (
            str | None,
            Field(
                default=None,
                max_length=shown.max_length,
                description=f"{shown.label}: shown to sales on the board, never scored or logged.",
            ),
        )
    if spec.created_at_column:
        fields["created_at"] = (
            Timestamp | None,
            Field(
                default=None, description="When the lead was created (ISO-8601 with a timezone)."
            ),
        )
    fields[AS_OF_KEY] = (
        Timestamp | None,
        Field(
            default=None,
            description="Score the lead as it was at this time: later actions are ignored. "
            "Default: now.",
        ),
    )
    if spec.actions is not None:
        action = _action_model(spec)
        fields[ACTIONS_KEY] = (
            list[action],  # type: ignore[valid-type]
            Field(
                default_factory=list,
                max_length=max_actions,
                description=f"Tracked actions, at most {max_actions}, in any order.",
            ),
        )
    longest = max(
        [
            MAX_ID_LENGTH,
            *(f.max_length for f in spec.feature_fields if isinstance(f, CategoricalField)),
            *(d.max_length for d in spec.display),
        ]
    )
    model = create_model(
        "Lead",
        __base__=LeadBase,
        __module__=__name__,
        __doc__=f"One lead of data set '{spec.name}' (spec version {spec.version}).",
        __config__=ConfigDict(
            str_max_length=longest, json_schema_extra={"examples": [example_lead(spec)]}
        ),
        **fields,
    )
    model.spec_name = spec.name
    model.id_column = spec.id_column
    model.created_at_column = spec.created_at_column
    model.feature_names = tuple(f.name for f in spec.feature_fields)
    model.has_actions = spec.actions is not None
    model.display_names = tuple(d.name for d in spec.display)
    return model


def _feature_field(f: FeatureField) -> tuple[Any, Any]:
    """(type, Field) of one profile field; every field is optional (missing is data)."""
    if isinstance(f, CategoricalField):
        return (
            str | None,
            Field(default=None, max_length=f.max_length, description=_describe(f)),
        )
    if isinstance(f, NumericField):
        number = WholeNumber if f.integer else float
        return (number | None, Field(default=None, ge=f.min, le=f.max, description=_describe(f)))
    return (bool | None, Field(default=None, description=_describe(f)))


def _whole(value: float) -> float:
    """250 and 250.0 are whole numbers; 1.5 is not (the spec says ``integer: true``)."""
    if not float(value).is_integer():
        raise PydanticCustomError("whole_number", "must be a whole number")
    return value


#: A number field whose spec says ``integer: true``; JSON's 250.0 is accepted as 250.
WholeNumber = Annotated[float, AfterValidator(_whole)]


def _describe(f: FeatureField) -> str:
    """The spec's description plus what a client must know to fill the field."""
    about = f.description or f.name.replace("_", " ").capitalize() + "."
    if isinstance(f, CategoricalField):
        levels = (
            f"Known levels: {', '.join(f.levels)}."
            if f.levels
            else "Levels are learnt in training."
        )
        return (
            f"{about} {levels} Other values are accepted, scored as '__other__' and reported "
            f"in warnings. At most {f.max_length} characters."
        )
    if isinstance(f, NumericField):
        whole = " A whole number." if f.integer else ""
        return f"{about} In {f.unit}, from {_plain(f.min)} to {_plain(f.max)}.{whole}"
    if isinstance(f, BooleanField) and f.phrase and not f.description:
        return f"True if the lead {f.phrase}."
    return about


def _plain(x: float) -> str:
    return str(int(x)) if x.is_integer() and abs(x) < 1e16 else str(x)


def _action_model(spec: FeatureSpec) -> type[Action]:
    """Action with ``type`` closed to the spec's names when unknown types are errors."""
    acts = spec.actions
    assert acts is not None
    names = tuple(t.name for t in acts.types)
    listed = ", ".join(names)
    if acts.unknown_types == "error":
        field: tuple[Any, Any] = (
            cast(Any, Literal)[names],
            Field(description=f"The action type: one of {listed}."),
        )
    else:
        field = (
            str,
            Field(
                min_length=1,
                max_length=MAX_ACTION_TYPE_LENGTH,
                description=f"The action type. Tracked: {listed}; others are ignored and reported.",
            ),
        )
    return create_model(
        "Action",
        __base__=Action,
        __module__=__name__,
        __doc__="One tracked action of the lead.",
        type=field,
    )


def example_lead(spec: FeatureSpec) -> dict[str, Any]:
    """A realistic lead for the OpenAPI docs: mid-range values and three actions."""
    lead: dict[str, Any] = {"lead_id": "lead-000123"}
    for f in spec.feature_fields:
        if isinstance(f, CategoricalField):
            if f.levels:
                lead[f.name] = f.levels[len(f.levels) // 2]
        elif isinstance(f, NumericField):
            lead[f.name] = _typical(f)
        else:  # a 'yes' that raises readiness, else the common 'no'
            lead[f.name] = f.direction is Direction.INCREASING
    if spec.created_at_column:
        lead["created_at"] = "2025-03-03T09:12:00Z"
    lead[AS_OF_KEY] = "2025-03-20T12:00:00Z"
    if spec.actions is not None:
        types = [t.name for t in spec.actions.types]
        stamps = ("2025-03-04T10:05:00Z", "2025-03-12T15:40:00Z", "2025-03-19T08:30:00Z")
        lead[ACTIONS_KEY] = [
            {ACTION_TYPE_KEY: types[min(i, len(types) - 1)], ACTION_TIME_KEY: at}
            for i, at in enumerate(stamps)
        ]
    return lead


def _typical(f: NumericField) -> float | int:
    """The geometric middle of the range, two significant digits: 700 employees, not 250000."""
    low = max(f.min, 1.0)
    middle = math.sqrt(low * f.max) if f.max > low else f.min
    digits = -math.floor(math.log10(abs(middle))) + 1 if middle else 0
    value = min(max(round(middle, digits), f.min), f.max)
    return int(value) if f.integer or float(value).is_integer() else float(value)


def batch_model(
    spec: FeatureSpec, *, max_leads: int = 1000, max_actions: int = 1000
) -> type[BaseModel]:
    """``{"leads": [Lead, ...]}``: 1 to ``max_leads`` leads of :func:`lead_model`."""
    lead = lead_model(spec, max_actions=max_actions)
    return create_model(
        "BatchIn",
        __module__=__name__,
        __doc__=f"Up to {max_leads} leads to score in one call.",
        __config__=_strict(),
        leads=(
            list[lead],  # type: ignore[valid-type]
            Field(min_length=1, max_length=max_leads, description="The leads, in any order."),
        ),
    )


# --------------------------------------------------------------------------- outcomes

OUTCOMES = ("stage_reached", "contacted", "qualified", "disqualified", "won", "lost")
Outcome = Literal["stage_reached", "contacted", "qualified", "disqualified", "won", "lost"]


class OutcomeIn(StorableText):
    """What happened to a lead after scoring: the ground truth monitoring learns from."""

    model_config = _strict(MAX_NOTE_LENGTH)

    lead_id: LeadId
    outcome: Outcome = Field(description="What happened.")
    stage: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        validate_default=True,
        description="The lifecycle stage reached: required with 'stage_reached', refused "
        "otherwise.",
    )
    occurred_at: PastTimestamp = Field(
        description="When it happened (ISO-8601 with a timezone; at most 1 day ahead)."
    )
    note: str | None = Field(default=None, max_length=MAX_NOTE_LENGTH, description="Free text.")
    idempotency_key: IdempotencyKey | None = None
    reason: RejectionReason | None = Field(
        default=None,
        description="Why sales rejected the lead, with 'disqualified' or 'lost' only: one "
        f"of {', '.join(REJECTION_REASONS)}. Part of the event: a retry with another "
        "reason is a conflict (409).",
    )

    @field_validator("reason")
    @classmethod
    def _reason_with_a_rejection(cls, reason: str | None, info: ValidationInfo) -> str | None:
        outcome = info.data.get("outcome")
        if reason is not None and outcome is not None and outcome not in REASONED_OUTCOMES:
            raise PydanticCustomError(
                "reason_not_allowed", "only allowed when outcome is disqualified or lost"
            )
        return reason

    @field_validator("stage")
    @classmethod
    def _stage_iff_reached(cls, stage: str | None, info: ValidationInfo) -> str | None:
        """A stage belongs to 'stage_reached' only: anything else would be ambiguous."""
        outcome = info.data.get("outcome")
        if outcome is None:  # the outcome itself was invalid and is reported
            return stage
        if outcome == "stage_reached" and stage is None:
            raise PydanticCustomError("stage_required", "required when outcome is stage_reached")
        if outcome != "stage_reached" and stage is not None:
            raise PydanticCustomError(
                "stage_not_allowed", "only allowed when outcome is stage_reached"
            )
        return stage


def spec_stages(spec: FeatureSpec) -> list[str]:
    """The stages an outcome may name: the lifecycle, or the binary label's one stage."""
    if isinstance(spec.label, LifecycleLabel):
        return list(spec.label.stages)
    return [spec.label.stage]


def outcome_model(stages: Sequence[str]) -> type[OutcomeIn]:
    """:class:`OutcomeIn` with ``stage`` closed to the spec's lifecycle stages."""
    if not stages:
        raise ValueError("an outcome model needs at least one stage")
    return create_model(
        "OutcomeIn",
        __base__=OutcomeIn,
        __module__=__name__,
        stage=(
            cast(Any, Literal)[tuple(stages)] | None,
            Field(
                default=None,
                validate_default=True,
                description=f"The lifecycle stage reached, one of {', '.join(stages)}: "
                "required with 'stage_reached', refused otherwise.",
            ),
        ),
    )


def idempotency_key(outcome: OutcomeIn) -> str:
    """The client's key, else one derived from the event so an identical retry dedups.

    The time is normalised to UTC first: the same instant written with another offset
    is the same event. The note is left out: a retry that fixes a typo in it is still
    the same event.
    """
    if outcome.idempotency_key:
        return outcome.idempotency_key
    parts = [
        outcome.lead_id,
        outcome.outcome,
        outcome.stage,
        outcome.occurred_at.astimezone(UTC).isoformat(),
    ]
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=True).encode("ascii")).hexdigest()
    return f"sha256:{digest}"
