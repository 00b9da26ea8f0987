"""Helpers for tests that train on the session's small synthetic CRM (see conftest.sample_dir)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.config import TrainConfig, load_config


def small_config(sample_dir: Path, **overrides: Any) -> TrainConfig:
    """The bundled sample config pointed at ``sample_dir``; plots off unless asked for."""
    return load_config("sample").with_overrides(
        **{
            "leads": sample_dir / "leads.csv",
            "actions": sample_dir / "actions.csv",
            "history": sample_dir / "stage_history.csv",
            "truth": sample_dir / "truth.csv",
            "plots": False,
            **overrides,
        }
    )
