"""`python -m serving.bootstrap`: what `make run` checks before it serves.

1. Writes a `.env` with fresh random API keys when there is none (git-ignored; the keys
   never leave this machine and are never printed; 32 characters, above the service's
   minimum of 24), and turns the interactive docs on for this local service.
2. Exits 0 when the configured model can be loaded (a champion in the registry, or a
   local folder), 3 when there is none yet, so `make run` trains and promotes one.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from models import registry_fetch
from serving.settings import ServingSettings

NO_MODEL = 3


def ensure_env(path: Path = Path(".env")) -> bool:
    """Create `.env` with one random key per role; False when it already existed."""
    if path.exists():
        return False
    lines = [
        "# Written by `make run` on first start. Keep it secret; rotate by adding a key.",
        *(
            f"LEADSCORE_API_KEYS_{role}={secrets.token_urlsafe(24)}"
            for role in ("CRM", "SALES", "ADMIN")
        ),
        "# The API docs at /docs (off unless enabled: fine on your own machine).",
        "LEADSCORE_DOCS=public",
    ]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return True


def model_available(settings: ServingSettings) -> bool:
    uri = settings.model_uri
    if not registry_fetch.is_registry_uri(uri):
        return Path(uri).exists()
    registry_fetch.bound_mlflow_http(settings.registry_retries, settings.registry_timeout_s)
    try:
        registry_fetch.resolve_version(
            uri, settings.resolved_tracking_uri(), registry_uri=settings.resolved_registry_uri()
        )
    except registry_fetch.ModelFetchError:
        return False
    return True


def main() -> int:
    if ensure_env():
        print("leadscore: wrote .env with new random API keys (see .env.example)")
    settings = ServingSettings()
    if model_available(settings):
        return 0
    print(f"leadscore: no model at {settings.model_uri}: training one on the sample data")
    return NO_MODEL


if __name__ == "__main__":
    sys.exit(main())
