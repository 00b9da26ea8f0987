"""Helpers for tests that train on the session's small synthetic CRM (see conftest.sample_dir)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.config import TrainConfig, sample_config


def small_config(sample_dir: Path, **overrides: Any) -> TrainConfig:
    """The bundled sample config pointed at ``sample_dir``; plots off unless asked for."""
    return sample_config(sample_dir, **{"plots": False, **overrides})
