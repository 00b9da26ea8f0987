"""Request models derived from the feature spec: what passes, what is refused, and where.

Bodies are validated the two ways they reach a model: ``model_validate_json`` (pydantic
parses the JSON) and ``model_validate(json.loads(...))``, which is what FastAPI does.
Both must agree, or a client would see a difference between the docs and the API.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from features.batch import from_records
from features.spec import FeatureSpec, load_spec
from serving.schemas import (
    OutcomeIn,
    batch_model,
    example_lead,
    idempotency_key,
    lead_model,
    outcome_model,
    spec_stages,
    to_record,
)

AT = "2025-03-04T10:05:00Z"
AT_DT = datetime(2025, 3, 4, 10, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    return load_spec("sample_crm")


@pytest.fixture(scope="module")
def lead_cls(spec: FeatureSpec) -> type[BaseModel]:
    return lead_model(spec)


def valid_lead(**changes: Any) -> dict[str, Any]:
    lead: dict[str, Any] = {
        "lead_id": "crm:00042",
        "seniority": "Vice-President",
        "department": "marketing",
        "company_size": 250,
        "annual_revenue": 12.5e6,
        "business_email": True,
        "created_at": "2025-03-01T08:00:00+01:00",
        "as_of": "2025-03-20T12:00:00Z",
        "actions": [
            {"type": "pricing_page", "at": AT},
            {"type": "demo_request", "at": "2025-03-12T15:40:00.250000Z"},
        ],
    }
    lead.update(changes)
    return lead


def errors_of(model: type[BaseModel], body: str) -> list[tuple[str, tuple[Any, ...]]]:
    """(type, loc) of every error, checked to be the same in JSON and Python mode."""
    results = []
    for validate in (model.model_validate_json, lambda b: model.model_validate(json.loads(b))):
        with pytest.raises(ValidationError) as info:
            validate(body)
        results.append([(e["type"], tuple(e["loc"])) for e in info.value.errors()])
    assert results[0] == results[1]
    return results[0]


# --------------------------------------------------------------------------- valid leads


def test_valid_lead_passes_in_both_modes(lead_cls: type[BaseModel]) -> None:
    body = json.dumps(valid_lead())
    assert lead_cls.model_validate_json(body) == lead_cls.model_validate(json.loads(body))


def test_to_record_gives_the_builder_dict(lead_cls: type[BaseModel]) -> None:
    lead = lead_cls.model_validate_json(json.dumps(valid_lead()))
    assert to_record(lead) == {
        "lead_id": "crm:00042",
        "seniority": "Vice-President",
        "department": "marketing",
        "industry": None,
        "company_size": 250,
        "annual_revenue": 12.5e6,
        "country": None,
        "acquisition_source": None,
        "business_email": True,
        "created_at": datetime(2025, 3, 1, 7, 0, tzinfo=UTC),
        "as_of": datetime(2025, 3, 20, 12, 0, tzinfo=UTC),
        "actions": [
            {"type": "pricing_page", "at": AT_DT},
            {"type": "demo_request", "at": datetime(2025, 3, 12, 15, 40, 0, 250000, tzinfo=UTC)},
        ],
    }


def test_to_record_feeds_the_batch_builder(spec: FeatureSpec, lead_cls: type[BaseModel]) -> None:
    record = to_record(lead_cls.model_validate_json(json.dumps(valid_lead())))
    batch = from_records(spec, [record])
    assert batch.n == 1
    assert list(batch.event_type) == ["pricing_page", "demo_request"]
    assert batch.as_of_ns[0] == 1742472000 * 10**9


def test_minimal_lead_omits_unset_times(lead_cls: type[BaseModel]) -> None:
    record = to_record(lead_cls.model_validate_json('{"lead_id": "a"}'))
    assert "as_of" not in record and "created_at" not in record
    assert record["actions"] == []
    assert record["company_size"] is None


def test_unknown_categorical_level_is_accepted(lead_cls: type[BaseModel]) -> None:
    """Unseen levels are the builder's business: scored as __other__ and reported."""
    lead = lead_cls.model_validate_json(json.dumps(valid_lead(industry="space mining")))
    assert to_record(lead)["industry"] == "space mining"


def test_unknown_action_type_is_accepted_when_spec_ignores_them(lead_cls: type[BaseModel]) -> None:
    lead = lead_cls.model_validate_json(
        json.dumps(valid_lead(actions=[{"type": "tweet", "at": AT}]))
    )
    assert to_record(lead)["actions"] == [{"type": "tweet", "at": AT_DT}]


def test_openapi_example_is_a_valid_lead(spec: FeatureSpec, lead_cls: type[BaseModel]) -> None:
    schema = lead_cls.model_json_schema()
    (example,) = schema["examples"]
    assert example == example_lead(spec)
    assert len(example["actions"]) == 3
    lead_cls.model_validate_json(json.dumps(example))
    lead_cls.model_validate(example)


def test_field_descriptions_come_from_the_spec(lead_cls: type[BaseModel]) -> None:
    props = lead_cls.model_json_schema()["properties"]
    assert "intern, individual_contributor, manager" in props["seniority"]["description"]
    assert "employees" in props["company_size"]["description"]
    assert "uses a business e-mail address" in props["business_email"]["description"]
    assert props["lead_id"]["pattern"] == "^[A-Za-z0-9._:@-]+$"


def test_lead_model_is_memoised(spec: FeatureSpec, lead_cls: type[BaseModel]) -> None:
    assert lead_model(spec) is lead_cls
    assert lead_model(spec, max_actions=5) is not lead_cls


# --------------------------------------------------------------------------- refused leads


def _body(**changes: Any) -> str:
    return json.dumps(valid_lead(**changes))


REFUSED_LEADS: dict[str, tuple[str, str, tuple[Any, ...]]] = {
    "unknown-field": (_body(favourite_colour="red"), "extra_forbidden", ("favourite_colour",)),
    "string-number": (_body(company_size="12"), "float_type", ("company_size",)),
    "nan": ('{"lead_id": "a", "company_size": NaN}', "finite_number", ("company_size",)),
    "infinity": (
        '{"lead_id": "a", "annual_revenue": Infinity}',
        "finite_number",
        ("annual_revenue",),
    ),
    "minus-infinity": (
        '{"lead_id": "a", "annual_revenue": -Infinity}',
        "finite_number",
        ("annual_revenue",),
    ),
    "negative-size": (_body(company_size=-3), "greater_than_equal", ("company_size",)),
    "size-above-max": (_body(company_size=600000), "less_than_equal", ("company_size",)),
    "bool-as-number": (_body(company_size=True), "float_type", ("company_size",)),
    "long-categorical": (_body(industry="x" * 201), "string_too_long", ("industry",)),
    "number-as-string": (_body(industry=7), "string_type", ("industry",)),
    "naive-datetime": (_body(as_of="2025-03-20T12:00:00"), "timezone_aware", ("as_of",)),
    "date-only": (_body(created_at="2025-03-01"), "timezone_aware", ("created_at",)),
    "bad-timestamp": (_body(as_of="last tuesday"), "timestamp_invalid", ("as_of",)),
    "impossible-date": (_body(as_of="2025-02-30T00:00:00Z"), "timestamp_invalid", ("as_of",)),
    "unix-number": (_body(as_of=1742472000), "datetime_type", ("as_of",)),
    "sql-id": (_body(lead_id="1; DROP TABLE leads"), "string_pattern_mismatch", ("lead_id",)),
    "empty-id": (_body(lead_id=""), "string_too_short", ("lead_id",)),
    "long-id": (_body(lead_id="a" * 129), "string_too_long", ("lead_id",)),
    "numeric-id": (_body(lead_id=42), "string_type", ("lead_id",)),
    "missing-id": ('{"company_size": 3}', "missing", ("lead_id",)),
    "yes-as-bool": (_body(business_email="yes"), "bool_type", ("business_email",)),
    "one-as-bool": (_body(business_email=1), "bool_type", ("business_email",)),
    "action-unknown-key": (
        _body(actions=[{"type": "webinar", "at": AT, "url": "x"}]),
        "extra_forbidden",
        ("actions", 0, "url"),
    ),
    "action-without-time": (_body(actions=[{"type": "webinar"}]), "missing", ("actions", 0, "at")),
    "action-empty-type": (
        _body(actions=[{"type": "", "at": AT}]),
        "string_too_short",
        ("actions", 0, "type"),
    ),
    "action-naive-time": (
        _body(actions=[{"type": "webinar", "at": "2025-03-04T10:05:00"}]),
        "timezone_aware",
        ("actions", 0, "at"),
    ),
    "actions-not-list": (_body(actions={"type": "webinar"}), "list_type", ("actions",)),
    "action-not-object": (_body(actions=["webinar"]), "model_type", ("actions", 0)),
    "body-not-object": ("[1, 2]", "model_type", ()),
}


@pytest.mark.parametrize(("body", "error", "loc"), REFUSED_LEADS.values(), ids=REFUSED_LEADS.keys())
def test_refused(lead_cls: type[BaseModel], body: str, error: str, loc: tuple[Any, ...]) -> None:
    assert errors_of(lead_cls, body) == [(error, loc)]


def test_lone_surrogate_is_refused(lead_cls: type[BaseModel]) -> None:
    """Python's json decodes '\\ud800' to a lone surrogate, pydantic's JSON parser refuses it."""
    body = '{"lead_id": "a", "industry": "\\ud800"}'
    with pytest.raises(ValidationError) as info:
        lead_cls.model_validate(json.loads(body))
    assert [e["type"] for e in info.value.errors()] == ["string_unicode"]
    with pytest.raises(ValidationError) as info:
        lead_cls.model_validate_json(body)
    assert [e["type"] for e in info.value.errors()] == ["json_invalid"]


def test_too_many_actions(spec: FeatureSpec) -> None:
    Small = lead_model(spec, max_actions=3)
    body = _body(actions=[{"type": "webinar", "at": AT}] * 4)
    assert errors_of(Small, body) == [("too_long", ("actions",))]
    Small.model_validate_json(_body(actions=[{"type": "webinar", "at": AT}] * 3))


def test_default_action_limit_is_1000(lead_cls: type[BaseModel]) -> None:
    body = _body(actions=[{"type": "webinar", "at": AT}] * 1001)
    assert errors_of(lead_cls, body) == [("too_long", ("actions",))]


def test_every_error_is_reported_not_just_the_first(lead_cls: type[BaseModel]) -> None:
    body = _body(company_size="12", business_email="yes", colour="red")
    assert sorted(errors_of(lead_cls, body)) == [
        ("bool_type", ("business_email",)),
        ("extra_forbidden", ("colour",)),
        ("float_type", ("company_size",)),
    ]


def test_closed_action_types_when_spec_says_error(spec: FeatureSpec) -> None:
    assert spec.actions is not None
    closed = spec.model_copy(
        update={"actions": spec.actions.model_copy(update={"unknown_types": "error"})}
    )
    Closed = lead_model(closed)
    Closed.model_validate_json(_body(actions=[{"type": "webinar", "at": AT}]))
    assert errors_of(Closed, _body(actions=[{"type": "tweet", "at": AT}])) == [
        ("literal_error", ("actions", 0, "type"))
    ]


# --------------------------------------------------------------------------- other specs


def test_x_education_builds_a_model_without_actions() -> None:
    spec = load_spec("x_education")
    XLead = lead_model(spec)
    props = XLead.model_json_schema()["properties"]
    assert "actions" not in props and "created_at" not in props
    assert {"lead_id", "lead_origin", "total_visits", "do_not_email", "as_of"} <= set(props)
    assert "tags" not in props  # after contact: never a feature, never an input
    assert "magazine" not in props  # documented but unused
    lead = XLead.model_validate_json(
        '{"lead_id": "7927b2df-8bba-4d29-b9a2-b6e0beafe620", "total_visits": 5, '
        '"lead_origin": "Landing Page Submission", "do_not_email": false}'
    )
    record = to_record(lead)
    assert record["Prospect ID"] == record["lead_id"] == "7927b2df-8bba-4d29-b9a2-b6e0beafe620"
    assert "actions" not in record
    assert errors_of(XLead, '{"lead_id": "a", "actions": []}') == [
        ("extra_forbidden", ("actions",))
    ]


# --------------------------------------------------------------------------- batches


def test_batch_model(spec: FeatureSpec, lead_cls: type[BaseModel]) -> None:
    Batch = batch_model(spec, max_leads=2)
    batch = Batch.model_validate_json(json.dumps({"leads": [valid_lead(), {"lead_id": "b"}]}))
    assert [type(x) for x in batch.leads] == [lead_cls, lead_cls]  # type: ignore[attr-defined]
    assert errors_of(Batch, '{"leads": []}') == [("too_short", ("leads",))]
    assert errors_of(Batch, json.dumps({"leads": [{"lead_id": "a"}] * 3})) == [
        ("too_long", ("leads",))
    ]
    second_bad = '{"leads": [{"lead_id": "a"}, {"lead_id": "b", "company_size": "9"}]}'
    assert errors_of(Batch, second_bad) == [("float_type", ("leads", 1, "company_size"))]
    assert errors_of(Batch, '{"leads": [], "extra": 1}') == [
        ("too_short", ("leads",)),
        ("extra_forbidden", ("extra",)),
    ]


# --------------------------------------------------------------------------- outcomes


def outcome(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "lead_id": "crm:00042",
        "outcome": "stage_reached",
        "stage": "sql",
        "occurred_at": "2025-03-21T09:00:00Z",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.fixture(scope="module")
def outcome_cls(spec: FeatureSpec) -> type[OutcomeIn]:
    return outcome_model(spec_stages(spec))


def test_outcome_valid(outcome_cls: type[OutcomeIn]) -> None:
    got = outcome_cls.model_validate(outcome(note="Booked a demo", idempotency_key="evt-1"))
    assert got.stage == "sql"
    assert got.occurred_at == datetime(2025, 3, 21, 9, tzinfo=UTC)
    outcome_cls.model_validate_json(json.dumps(outcome(outcome="won", stage=None)))


REFUSED_OUTCOMES: dict[str, tuple[dict[str, Any], str, tuple[Any, ...]]] = {
    "stage-missing": (outcome(stage=None), "stage_required", ("stage",)),
    "stage-not-allowed": (outcome(outcome="won"), "stage_not_allowed", ("stage",)),
    "unknown-stage": (outcome(stage="champion"), "literal_error", ("stage",)),
    "unknown-outcome": (outcome(outcome="bought"), "literal_error", ("outcome",)),
    "naive": (outcome(occurred_at="2025-03-21T09:00:00"), "timezone_aware", ("occurred_at",)),
    "long-note": (outcome(note="x" * 501), "string_too_long", ("note",)),
    "bad-key": (outcome(idempotency_key="a b"), "string_pattern_mismatch", ("idempotency_key",)),
    "empty-key": (outcome(idempotency_key=""), "string_too_short", ("idempotency_key",)),
    "sql-id": (outcome(lead_id="1; DROP TABLE"), "string_pattern_mismatch", ("lead_id",)),
    "unknown-field": (outcome(extra=1), "extra_forbidden", ("extra",)),
}


@pytest.mark.parametrize(
    ("body", "error", "loc"), REFUSED_OUTCOMES.values(), ids=REFUSED_OUTCOMES.keys()
)
def test_outcome_refused(
    outcome_cls: type[OutcomeIn], body: dict[str, Any], error: str, loc: tuple[Any, ...]
) -> None:
    assert errors_of(outcome_cls, json.dumps(body)) == [(error, loc)]


def test_outcome_in_the_future(outcome_cls: type[OutcomeIn]) -> None:
    now = datetime.now(UTC)
    soon = (now + timedelta(hours=20)).isoformat()
    outcome_cls.model_validate(outcome(occurred_at=soon))
    later = (now + timedelta(days=1, minutes=5)).isoformat()
    assert errors_of(outcome_cls, json.dumps(outcome(occurred_at=later))) == [
        ("timestamp_too_far_ahead", ("occurred_at",))
    ]


def test_base_outcome_model_checks_stage_presence_only() -> None:
    OutcomeIn.model_validate(outcome(stage="anything"))
    assert errors_of(OutcomeIn, json.dumps(outcome(stage=None))) == [("stage_required", ("stage",))]


def test_binary_spec_stages() -> None:
    assert spec_stages(load_spec("x_education")) == ["customer"]
    assert spec_stages(load_spec("sample_crm")) == ["lead", "mql", "sql", "opportunity", "customer"]


def test_idempotency_key(outcome_cls: type[OutcomeIn]) -> None:
    def key(**changes: Any) -> str:
        return idempotency_key(outcome_cls.model_validate(outcome(**changes)))

    base = key()
    assert base.startswith("sha256:") and len(base) == 7 + 64
    assert key() == base  # deterministic
    assert key(occurred_at="2025-03-21T10:00:00+01:00") == base  # same instant
    assert key(note="retried with a note") == base
    assert key(lead_id="crm:00043") != base
    assert key(stage="mql") != base
    assert key(outcome="won", stage=None) != key(outcome="lost", stage=None)
    assert key(occurred_at="2025-03-21T09:00:01Z") != base
    assert key(idempotency_key="client-key-1") == "client-key-1"
    # The key is itself a valid client key, so it round-trips through the API.
    outcome_cls.model_validate(outcome(idempotency_key=base))
