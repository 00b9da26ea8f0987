"""Alembic environment: runs on the connection :func:`scorelog.engine.migrate` passes.

There is no ``alembic.ini`` and no URL here on purpose: the caller holds the connection,
the migration lock and the transaction, so every revision runs inside that one transaction.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from scorelog.tables import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection) or context.is_offline_mode():
    raise RuntimeError("run migrations with scorelog.engine.migrate(engine)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode copies the table (future revisions).
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():  # joins the caller's transaction
    context.run_migrations()
