"""Typed service settings: environment variables with one prefix, or a `.env` file.

Read when the app is created (never at import), so tests and workers can each build
an app with their own settings. Secrets are `SecretStr`: they never print in logs,
reprs or error messages.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models import mlflow_location

Role = Literal["crm", "sales", "admin", "metrics"]
KeyList = Annotated[list[SecretStr], NoDecode]
Exposure = Literal["off", "key", "public"]

#: Shorter keys can be guessed or typed from memory; 24 characters of a random token are
#: ~144 bits. ``make run`` writes 32-character random keys.
MIN_KEY_LENGTH = 24
#: The placeholders of `.env.example`: a copied example must not become a deployment.
#: A rep's name in LEADSCORE_BOARD_REPS: shown on the board and used in its links.
REP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}$")
EXAMPLE_KEYS = frozenset(
    {"change-me-crm", "change-me-sales", "change-me-admin", "change-me-metrics"}
)


class ServingSettings(BaseSettings):
    """Everything the service can be told; see `.env.example` for the variable names."""

    model_config = SettingsConfigDict(
        env_prefix="LEADSCORE_", env_file=".env", extra="ignore", populate_by_name=True
    )

    spec: str = Field(
        "sample_crm", description="Feature spec the API accepts (bundled name or path)."
    )
    model_uri: str = Field(
        "models:/lead-readiness@champion",
        description="Registry alias URI, or a local folder (a saved model or an MLflow model).",
    )
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; default MLFLOW_TRACKING_URI, else the embedded store.",
    )
    home: Path = Field(default_factory=Path.cwd, description="Project folder (embedded store).")
    model_cache_dir: Path = Field(
        Path("artifacts/serving-model"),
        description="Last known good copy of the served model, used when the registry is down.",
    )
    database_url: str = Field("sqlite:///artifacts/leadscore.db", description="Scoring log.")
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        "FULL",
        description="FULL survives power loss too; grouped commits make it cheap (measured).",
    )
    api_keys_crm: KeyList = Field(default_factory=list)
    api_keys_sales: KeyList = Field(default_factory=list)
    api_keys_admin: KeyList = Field(default_factory=list)
    api_keys_metrics: KeyList = Field(
        default_factory=list, description="Keys a Prometheus scraper may use (admin keys may too)."
    )
    docs: Exposure = Field(
        "off",
        description="/openapi.json, /docs and /redoc: off, 'key' (the document for any valid "
        "key, no HTML pages) or 'public'.",
    )
    metrics: Exposure = Field(
        "key",
        description="/metrics: off, 'key' (a metrics or admin key, in X-API-Key or as a "
        "Bearer token) or 'public'.",
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve /metrics on this port (same host, no key) instead of the API port.",
    )
    max_batch: int = Field(1000, ge=1, le=100_000)
    max_actions: int = Field(1000, ge=1)
    max_body_bytes: int = Field(4_000_000, ge=1024)
    reasons: int = Field(3, ge=0, le=10)
    registry_timeout_s: float = Field(10.0, gt=0)
    registry_retries: int = Field(2, ge=0)
    registry_deadline_s: float = Field(
        30.0, gt=0, description="A registry call (resolve + download) gives up after this long."
    )
    model_poll_s: float = Field(2.0, gt=0, description="How often workers look for a reload.")
    model_follow_s: float = Field(
        30.0,
        ge=0,
        description="How often each worker asks the registry where the alias points "
        "(0: never; a reload is then needed).",
    )
    model_verify_timeout_s: float = Field(
        120.0, gt=0, description="A new model's check in a separate process must end by then."
    )
    model_versions_cached: int = Field(
        3, ge=1, le=50, description="Older registered versions kept loaded (replays)."
    )
    page_size_max: int = Field(500, ge=1)
    monitor_cache_s: float = Field(
        600.0,
        ge=0,
        description="A monitoring report (GET /v1/monitoring, the board's monitoring page) is "
        "reused this long; thresholds and windows are LEADSCORE_MONITOR_* settings.",
    )
    max_queue: int = Field(
        64,
        ge=1,
        description="Requests one worker works on at once; beyond it 503 + Retry-After.",
    )
    auth_failures_allowed: int = Field(
        20, ge=1, description="Failed authentications per client address per window."
    )
    auth_failure_window_s: float = Field(60.0, gt=0)
    commit_timeout_s: float = Field(
        10.0, gt=0, description="A score whose commit takes longer is answered 503."
    )
    db_check_s: float = Field(
        2.0, gt=0, description="How often readiness checks that the scoring log can commit."
    )
    shutdown_grace_s: float = Field(
        3.0,
        ge=0,
        description="After SIGTERM: not ready, yet still serving, this long (load balancers "
        "notice), then stop accepting.",
    )
    shutdown_timeout_s: float = Field(
        10.0, gt=0, description="Then requests in flight get this long to finish."
    )

    input_retention_days: int = Field(
        400,
        ge=1,
        le=36_500,
        description="Each score's stored input (for replay and training from the log) is "
        "deleted this many days after the score; scores and outcomes are kept.",
    )
    input_prune_every_s: float = Field(
        3600.0, gt=0, description="How often a worker prunes inputs past their retention."
    )
    input_prune_batch: int = Field(
        5000,
        ge=1,
        le=1_000_000,
        description="Inputs deleted per transaction: a backlog goes in short transactions.",
    )
    # -- score-change events and webhooks (serving.webhooks) ------------------------
    events_min_score_change: int = Field(
        0,
        ge=0,
        le=100,
        description="Also write a lead.score_changed event when a lead's score moves by at "
        "least this many points (0: only category and grade changes make events).",
    )
    webhooks_worker: bool = Field(
        True, description="Deliver webhooks from this process (a background thread)."
    )
    webhooks_allow_internal: bool = Field(
        False,
        description="Allow webhook URLs on loopback, private, link-local or otherwise "
        "internal addresses (off: such targets are refused, against SSRF).",
    )
    webhook_connect_timeout_s: float = Field(3.0, gt=0, le=60)
    webhook_read_timeout_s: float = Field(
        10.0, gt=0, le=300, description="A receiver must answer within this long."
    )
    webhook_attempt_timeout_s: float | None = Field(
        None,
        gt=0,
        le=360,
        description="The whole try (connect, send, read the answer) ends within this long, "
        "however slowly a receiver drips its answer (unset: connect + read timeouts).",
    )
    webhook_max_attempts: int = Field(
        10, ge=1, le=50, description="Tries before a delivery is dead-lettered."
    )
    webhook_backoff_s: float = Field(
        5.0, gt=0, description="Wait after the first failed try; doubled after each one."
    )
    webhook_backoff_max_s: float = Field(3600.0, gt=0, description="Longest wait between tries.")
    webhook_concurrency: int = Field(
        8, ge=1, le=64, description="Deliveries in flight at once per worker process."
    )
    webhook_poll_s: float = Field(
        1.0, gt=0, description="How often the outbox is read when nothing woke the worker."
    )
    webhook_max_subscriptions: int = Field(100, ge=1, le=10_000)
    webhook_keep_delivered_days: float = Field(
        7.0, gt=0, description="Delivered deliveries are forgotten after this long."
    )

    rescore_interval_s: float = Field(
        0.0,
        ge=0,
        description="Re-score every open lead as of now this often, in the service (one "
        "process at a time; 0: never, run `leadscore rescore` from a scheduler instead).",
    )
    rescore_batch_size: int = Field(
        1000,
        ge=1,
        le=50_000,
        description="Leads per commit of the in-service rescore (small: live scores share "
        "the writer and should not wait behind a long commit).",
    )

    # -- the board's day (serving.today) --------------------------------------------
    board_daily_capacity: int = Field(
        20,
        ge=1,
        le=500,
        description="Leads in the 'today' list when no reps are named in board_reps.",
    )
    board_reps: dict[str, int] = Field(
        default_factory=dict,
        description='Reps and how many leads each works a day, as JSON: {"Ana": 15, '
        '"Ben": 20}. Empty: one list for the team of board_daily_capacity.',
    )

    @field_validator("board_reps")
    @classmethod
    def _reps_sane(cls, reps: dict[str, int]) -> dict[str, int]:
        for name, capacity in reps.items():
            if not REP_NAME.match(name):
                raise ValueError("rep names are 1-40 letters, digits, spaces or . _ -")
            if not 1 <= capacity <= 500:
                raise ValueError("a rep's daily capacity is between 1 and 500")
        if len(reps) > 200:
            raise ValueError("at most 200 reps")
        return reps

    @field_validator(
        "api_keys_crm", "api_keys_sales", "api_keys_admin", "api_keys_metrics", mode="before"
    )
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """Several keys per role (for rotation), comma-separated in one variable."""
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    def keys_for(self, role: Role) -> list[SecretStr]:
        return {
            "crm": self.api_keys_crm,
            "sales": self.api_keys_sales,
            "admin": self.api_keys_admin,
            "metrics": self.api_keys_metrics,
        }[role]

    def key_problems(self) -> list[str]:
        """Why the configured keys are unsafe to serve with (empty when they are fine).

        Never quotes a key: a message names the variable and what is wrong with it.
        """
        problems = []
        for role in ("crm", "sales", "admin", "metrics"):
            variable = f"LEADSCORE_API_KEYS_{role.upper()}"
            for i, key in enumerate(self.keys_for(role), start=1):
                value = key.get_secret_value()
                if value in EXAMPLE_KEYS:
                    problems.append(
                        f"{variable}: key {i} is the example from .env.example; generate one "
                        "with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
                    )
                elif len(value) < MIN_KEY_LENGTH:
                    problems.append(
                        f"{variable}: key {i} has {len(value)} characters; at least "
                        f"{MIN_KEY_LENGTH} are needed"
                    )
        return problems

    def resolved_tracking_uri(self) -> str:
        """The one MLflow location (``models.mlflow_location``): this setting, else
        ``MLFLOW_TRACKING_URI``, else the embedded store, exactly as training resolves it."""
        return mlflow_location.tracking_uri(self.home, self.tracking_uri)

    def resolved_registry_uri(self) -> str:
        """``MLFLOW_REGISTRY_URI`` when set, else the tracking store (as training does)."""
        return mlflow_location.registry_uri(self.home, tracking=self.resolved_tracking_uri())

    def database_url_resolved(self) -> str:
        """A relative SQLite path lives in the project folder, not wherever the cwd is."""
        prefix = "sqlite:///"
        url = self.database_url
        if url.startswith(prefix) and not url[len(prefix) :].startswith("/"):
            return prefix + str((self.home / url[len(prefix) :]).resolve())
        return url

    def path(self, p: Path) -> Path:
        """Relative paths in settings are relative to the project folder."""
        return p if p.is_absolute() else self.home / p
