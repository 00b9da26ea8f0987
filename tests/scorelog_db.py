"""Scoring-log databases for tests: a SQLite file, or a PostgreSQL schema of its own.

Import the fixtures into a test module (``from tests.scorelog_db import db_url, engine``)
and every test using them runs on both backends. PostgreSQL is
``LEADSCORE_TEST_POSTGRES_URL`` or the local server; its cases skip, saying why, when it
cannot be reached.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError

from scorelog import make_engine, migrate

POSTGRES_URL = os.environ.get(
    "LEADSCORE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@functools.cache
def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be used (None when it can), asked once per session."""
    probe = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with probe.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as exc:
        detail = " ".join(str(exc.orig).split())
        return f"PostgreSQL at {probe.url.render_as_string()} unreachable: {detail}"
    finally:
        probe.dispose()
    return None


@contextmanager
def postgres_schema(prefix: str = "test_storage") -> Iterator[str]:
    """The URL of a new, empty PostgreSQL schema, dropped with everything in it afterwards.

    Skips the test, saying why, when no server answers.
    """
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a new SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'scores.db'}"
        return
    with postgres_schema() as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated engine on :func:`db_url`."""
    engine = make_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()
