"""The OpenAPI document describes every error as a Problem, and a generated client can read it.

The client is generated from the document the service serves, with
openapi-python-client (a pinned dev dependency; generation is offline), imported, and
used against the real app: a 422 must come back as a parsed ``Problem``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.api.test_api import CRM, lead, make_settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, trained_model_dir: Path) -> Iterator[Any]:
    settings = make_settings(tmp_path_factory.mktemp("openapi"), trained_model_dir)
    with TestClient(create_app(settings), base_url="http://leadscore") as c:
        yield c


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    served: dict[str, Any] = client.get("/openapi.json").json()
    return served


def test_every_error_response_is_a_problem(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert set(schemas["Problem"]["properties"]) == {
        "type", "title", "status", "detail", "instance", "request_id", "errors",
    }  # fmt: skip
    assert set(schemas["FieldError"]["properties"]) == {"field", "problem"}
    seen = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert {"500", "503"} <= statuses, (method, path)
            if operation.get("security"):
                assert {"401", "403", "429"} <= statuses, (method, path)
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    seen += 1
                    assert response["content"] == {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    }, (method, path, status)
    assert seen > 40
    score = document["paths"]["/v1/score"]["post"]["responses"]
    assert set(score) == {"200", "400", "401", "403", "413", "415", "422", "429", "500", "503"}


@pytest.fixture(scope="module")
def generated(document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The client package generated from the served document; its import name."""
    out = tmp_path_factory.mktemp("client")
    (out / "openapi.json").write_text(json.dumps(document))
    (out / "config.yaml").write_text("post_hooks: []\n")  # no formatter run: nothing to fetch
    tool = Path(sys.executable).with_name("openapi-python-client")
    done = subprocess.run(
        [str(tool), "generate", "--path", str(out / "openapi.json"), "--meta", "none",
         "--output-path", str(out / "leadscore_client"), "--config", str(out / "config.yaml"),
         "--fail-on-warning"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(out))
    return "leadscore_client"


def test_a_generated_client_parses_a_422_as_a_problem(generated: str, client: TestClient) -> None:
    package = importlib.import_module(generated)
    score = importlib.import_module(f"{generated}.api.scoring.score_v1_score_post")
    models = importlib.import_module(f"{generated}.models")
    api = package.AuthenticatedClient(
        base_url="http://leadscore", token=CRM, prefix="", auth_header_name="X-API-Key"
    )
    api.set_httpx_client(client)
    client.headers["X-API-Key"] = CRM
    bad = score.sync_detailed(client=api, body=models.Lead.from_dict(lead(company_size=1.5)))
    assert bad.status_code == 422
    assert isinstance(bad.parsed, models.Problem)
    assert (bad.parsed.status, bad.parsed.title) == (422, "Invalid request")
    assert [(e.field, e.problem) for e in bad.parsed.errors] == [
        ("company_size", "must be a whole number")
    ]
    good = score.sync_detailed(client=api, body=models.Lead.from_dict(lead()))
    assert good.status_code == 200 and isinstance(good.parsed, models.ScoreOut)
