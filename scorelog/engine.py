"""Engines for the scoring log (SQLite or PostgreSQL) and the migration that brings them up.

SQLite settings, and why:

* ``journal_mode=WAL``: readers (the sales board) never block the writer and vice versa,
  and a commit appends to one file instead of rewriting pages in place.
* ``synchronous``: with WAL, ``NORMAL`` fsyncs only at checkpoints. A commit that returned
  is in the WAL file, i.e. in the OS page cache, so it survives the *process* being killed
  (OOM, SIGKILL, a crash; ``tests/api/test_storage.py`` kills a writer to prove it); only
  an OS crash or power loss can lose the last commits. ``FULL`` also fsyncs the WAL on
  every commit and so survives power loss too, at one fsync per commit: one commit per
  request measured ~1,900/s with FULL against ~2,700/s with NORMAL on the development
  machine (slower disks: ~1,100/s or less). The group-commit writer in :mod:`.scorelog`
  puts many requests into one commit, which makes that difference disappear in the noise
  (see ``python -m benchmarks.storage``), so choose FULL wherever losing the last
  acknowledged scores to a power cut matters.
* ``busy_timeout=5000``: several API worker processes share one file; a writer waits up to
  5 s for another's commit instead of failing at once with "database is locked".
* ``foreign_keys=ON``: SQLite ignores declared foreign keys unless asked.
* Transactions are begun by us (``BEGIN``, or ``BEGIN IMMEDIATE`` for writers), not by the
  sqlite3 module, whose implicit transactions commit before DDL and cannot take the write
  lock up front. That is SQLAlchemy's documented recipe for real SQLite transactions.

PostgreSQL gets ``pool_pre_ping`` (a connection the server dropped, e.g. after a failover
or restart, is replaced instead of failing the next request) and a connect timeout, so an
unreachable server is an error within seconds, not a hang.

Both engines hide statement parameters from error messages (``hide_parameters``): the
parameters are other leads' data, and an error is logged. :func:`describe_error` goes
further and says what failed without the database's own message, which can quote a
value too (PostgreSQL's ``DETAIL: Key (...)=(...)``).

**One bounded wait.** A SQLite writer first takes its turn among this machine's processes
(:func:`write_turn`), then SQLite's own write lock (``busy_timeout``). Both waits come out
of one budget of :data:`SQLITE_BUSY_TIMEOUT_MS`: the busy timeout of the transaction is
what the turn left over, so a locked database answers within 5 s, never 5 + 5.
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().with_name("migrations")

# Execution option naming the SQLite BEGIN mode ("DEFERRED" or "IMMEDIATE") of a connection.
SQLITE_BEGIN = "leadscore_sqlite_begin"

SQLITE_BUSY_TIMEOUT_MS = 5000
# Waiting for another process's migration may take longer than waiting for a commit.
_MIGRATION_BUSY_TIMEOUT_MS = 300_000
# Any fixed 64-bit key: the PostgreSQL advisory lock that serialises concurrent migrations.
_PG_MIGRATION_LOCK = 0x6C65_6164_7363_6F72  # "leadscor"

#: Seconds a PostgreSQL connection attempt may take before it counts as an outage.
POSTGRES_CONNECT_TIMEOUT_S = 5

SqliteSynchronous = Literal["NORMAL", "FULL"]

# The deadline of the write this thread is doing (set by write_turn, read by _begin).
_write_deadline = threading.local()


def make_engine(url: str, *, sqlite_synchronous: SqliteSynchronous = "NORMAL") -> Engine:
    """An engine for ``sqlite:///path`` or ``postgresql+psycopg://...``, configured as above.

    In-memory SQLite is refused: each pooled connection would see its own empty database,
    and the writer thread and the readers use different connections. Use a temporary file.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, sqlite_synchronous)
    if backend == "postgresql":
        # A server that vanishes without closing the connection (a network partition)
        # is noticed by TCP keepalives and tcp_user_timeout within ~15 s, not minutes.
        connect_args: dict[str, int] = {
            "connect_timeout": POSTGRES_CONNECT_TIMEOUT_S,
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": 10_000,
        }
        for name in list(connect_args):
            if name in parsed.query:  # the URL's own choice wins
                del connect_args[name]
        return create_engine(
            parsed, pool_pre_ping=True, hide_parameters=True, connect_args=connect_args
        )
    raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql+psycopg://")


def _sqlite_engine(url: URL, synchronous: SqliteSynchronous) -> Engine:
    if synchronous not in ("NORMAL", "FULL"):  # it is spliced into a PRAGMA below
        raise ValueError(f"sqlite_synchronous must be NORMAL or FULL, not {synchronous!r}")
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        raise ValueError("in-memory SQLite cannot be shared by the writer and readers: use a file")
    if not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see _begin)
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock another process may hold.
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            mode = _switch_to_wal(cursor)
            if str(mode).lower() != "wal":
                log.warning(
                    "SQLite refused WAL (journal_mode=%s): readers will block writers", mode
                )
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE"):
            raise ValueError(f"{SQLITE_BEGIN} must be DEFERRED or IMMEDIATE, not {mode!r}")
        _budget_busy_timeout(connection)
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _switch_to_wal(cursor: sqlite3.Cursor) -> str:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds a lock.

    The switch (once in a database's life: the mode is stored in the file) needs an exclusive
    lock and SQLite reports "database is locked" at once instead of calling the busy
    handler, e.g. when several processes open a new database together.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return str(cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _budget_busy_timeout(connection: Connection) -> None:
    """The busy timeout this transaction may use: what is left of its write's budget.

    Outside a :func:`write_turn` (readers, migrations) the connection keeps or gets back
    the standard timeout; the PRAGMA is issued only when the value changes.
    """
    deadline = getattr(_write_deadline, "at", None)
    wanted = SQLITE_BUSY_TIMEOUT_MS
    if deadline is not None:
        wanted = max(1, min(SQLITE_BUSY_TIMEOUT_MS, int((deadline - time.monotonic()) * 1000)))
    info = connection.connection.info
    if info.get("busy_timeout_ms", SQLITE_BUSY_TIMEOUT_MS) != wanted:
        _set_busy_timeout(connection, wanted)
        info["busy_timeout_ms"] = wanted


def writer(engine: Engine) -> Engine:
    """The same engine (same pool) whose transactions take SQLite's write lock at BEGIN.

    A deferred transaction that reads first and writes later can fail with SQLITE_BUSY
    without waiting when another process committed in between; taking the lock up front
    makes it wait ``busy_timeout`` instead. PostgreSQL ignores the option.
    """
    return engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})


def alembic_config() -> Config:
    """Alembic's configuration without an ``alembic.ini``: migrations ship inside the package.

    ``migrations/env.py`` runs on the connection put in ``attributes["connection"]`` (see
    :func:`migrate`). A new revision, from a checkout::

        config = alembic_config()
        with engine.connect() as config.attributes["connection"]:
            alembic.command.revision(config, message="...", autogenerate=True)

    then rename the file to ``vNNNN_<slug>.py`` and review it.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; a no-op when it already is.

    Safe when several API processes start at once: the whole upgrade, including alembic's
    read of its version table, runs in ONE transaction that first takes a lock the other
    processes must wait for, then commits. Whoever comes second reads the version the first
    one committed and has nothing left to do. Both backends have transactional DDL, so a
    failed migration leaves the previous schema untouched.

    * SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock (waiting up to 5 min).
    * PostgreSQL: ``pg_advisory_xact_lock``, released by the commit or rollback.
    """
    config = alembic_config()
    sqlite = engine.dialect.name == "sqlite"
    with writer(engine).connect() as connection:
        if sqlite:
            _set_busy_timeout(connection, _MIGRATION_BUSY_TIMEOUT_MS)
        try:
            with connection.begin():
                if engine.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                    )
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        finally:
            if sqlite:
                _set_busy_timeout(connection, SQLITE_BUSY_TIMEOUT_MS)


def _set_busy_timeout(connection: Connection, milliseconds: int) -> None:
    """Outside any transaction, on the driver connection (an execute would BEGIN first)."""
    dbapi = connection.connection.driver_connection
    assert dbapi is not None
    dbapi.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")


WRITE_TURN_TIMEOUT_S = SQLITE_BUSY_TIMEOUT_MS / 1000


@contextmanager
def write_turn(engine: Engine) -> Iterator[None]:
    """Take turns with other processes before a write transaction on a SQLite file.

    Several API workers write one SQLite file. When two collide, SQLite's busy handler
    sleeps in growing steps (up to 100 ms each), which showed as 250 ms p99 latencies
    under load. An exclusive ``flock`` on a side file queues the writers instead: the
    kernel wakes the next one the moment the lock is released. PostgreSQL needs none.
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    deadline = time.monotonic() + WRITE_TURN_TIMEOUT_S
    with open(f"{database}.write-lock", "a+b") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # Bounded like SQLite's own busy timeout: a stuck writer elsewhere turns
                # into an error (the API's 503), never an endless wait.
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        "another process holds the scoring log's write lock"
                    ) from None
                time.sleep(0.0002)
        _write_deadline.at = deadline
        try:
            yield
        finally:
            _write_deadline.at = None
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- health

_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,  # the connection pool's
    sa_exc.DisconnectionError,
    TimeoutError,  # write_turn's
    ConnectionError,
)


def is_unavailable(error: BaseException) -> bool:
    """True when the database could not be used at all (down, locked, full, unreachable).

    Such an error says nothing about the rows being written: retrying them one by one
    would only wait again. Anything else (a value the database refused, a constraint)
    belongs to the rows.
    """
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, _UNAVAILABLE)


def describe_error(error: BaseException) -> str:
    """What failed, for a log line, without any value of the rows involved.

    The class, PostgreSQL's SQLSTATE and the names of the table, column and constraint;
    the database's message only for outages (connection refused, database locked), whose
    text is about the server, not the data.
    """
    parts = [type(error).__name__]
    orig = getattr(error, "orig", None)
    if orig is not None:
        parts.append(f"({type(orig).__module__}.{type(orig).__name__})")
        state = getattr(orig, "sqlstate", None)
        if state:
            parts.append(f"SQLSTATE {state}")
        diag = getattr(orig, "diag", None)
        for name in ("table_name", "column_name", "constraint_name"):
            value = getattr(diag, name, None) if diag is not None else None
            if value:
                parts.append(f"{name.removesuffix('_name')} {value}")
        if is_unavailable(error):
            first = str(orig).strip().splitlines()
            parts.append(f": {first[0][:200]}" if first else "")
    elif is_unavailable(error):
        parts.append(f": {str(error)[:200]}")
    return " ".join(p for p in parts if p)


def probe(engine: Engine) -> None:
    """Raise unless a write transaction could start now (bounded like any write).

    SQLite: take the write lock (``BEGIN IMMEDIATE``) and give it back. PostgreSQL: a
    round trip, and a refusal when the server is a read-only standby.
    """
    with write_turn(engine), writer(engine).begin() as connection:
        if engine.dialect.name == "postgresql":
            if connection.execute(text("SELECT pg_is_in_recovery()")).scalar_one():
                raise sa_exc.OperationalError(
                    "SELECT pg_is_in_recovery()", {}, RuntimeError("the server is read-only")
                )
        else:
            connection.execute(text("SELECT 1"))
