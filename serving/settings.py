"""Typed service settings: environment variables with one prefix, or a `.env` file.

Read when the app is created (never at import), so tests and workers can each build
an app with their own settings. Secrets are `SecretStr`: they never print in logs,
reprs or error messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Role = Literal["crm", "sales", "admin"]
KeyList = Annotated[list[SecretStr], NoDecode]


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
        None, description="MLflow tracking/registry URI; default: the project's embedded store."
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
    docs_enabled: bool = True
    max_batch: int = Field(1000, ge=1, le=100_000)
    max_actions: int = Field(1000, ge=1)
    max_body_bytes: int = Field(4_000_000, ge=1024)
    reasons: int = Field(3, ge=0, le=10)
    registry_timeout_s: float = Field(10.0, gt=0)
    registry_retries: int = Field(2, ge=0)
    model_poll_s: float = Field(2.0, gt=0, description="How often workers look for a reload.")
    page_size_max: int = Field(500, ge=1)

    @field_validator("api_keys_crm", "api_keys_sales", "api_keys_admin", mode="before")
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
        }[role]

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

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
