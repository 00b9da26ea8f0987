"""Fuzzing the API from its own OpenAPI document (schemathesis): no input may answer 500.

Schemathesis generates requests for every operation from the served document, valid
and invalid (wrong types, edge values, odd strings), sends them with a valid key of
the right role through the real app (model, SQLite log, lifespan), and this test
refuses any 5xx other than the deliberate 503/502 and any response that is not a
problem document when it is an error. Slow: a few hundred requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from serving.app import create_app
from tests.api.test_api import ADMIN, CRM, SALES, make_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path) -> Iterator[Any]:
    app_settings = make_settings(tmp_path_factory.mktemp("fuzz"), trained_model_dir)
    with TestClient(create_app(app_settings), base_url="http://leadscore") as c:
        yield c


@pytest.fixture(scope="module")
def api_schema(client: TestClient) -> Any:
    document = client.get("/openapi.json").json()
    return schemathesis.openapi.from_dict(document)


_KEYS = {"/admin": ADMIN, "/v1/leads": SALES}


def _key_for(path: str) -> str:
    return next((key for prefix, key in _KEYS.items() if path.startswith(prefix)), CRM)


def _send(client: TestClient, case: Any) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://leadscore")
    headers = dict(kwargs.pop("headers") or {})
    headers["X-API-Key"] = _key_for(case.path)
    response = client.request(
        kwargs.pop("method"),
        kwargs.pop("url"),
        headers=headers,
        params=kwargs.get("params") or None,
        json=kwargs.get("json"),
        content=kwargs.get("data"),
    )
    assert response.status_code < 500 or response.status_code == 503, (
        case.method,
        case.path,
        response.status_code,
        response.text[:300],
    )
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == response.status_code


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_answers_500(
    api_schema: Any, client: TestClient, mode: GenerationMode
) -> None:
    """Hypothesis drives each operation's strategy (schemathesis' pytest plugin is not used:
    it does not support this pytest)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    operations = [op for op in operations if op.path != "/admin/reload"]  # swaps the model
    assert len(operations) >= 7
    sent: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            _send(client, case)
            sent.append(case.path)

        try:
            fuzz()
        except Unsatisfiable:  # no input to make invalid (e.g. /livez in negative mode)
            continue
    assert len(sent) > 100 and {"/v1/score", "/v1/score/batch", "/v1/outcomes"} <= set(sent)
