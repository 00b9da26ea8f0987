"""Dependencies the routes share: the served model, the scoring log, the settings."""

from __future__ import annotations

from fastapi import Request

from scorelog.store import ScoreLog
from serving.batcher import ScoringBatcher
from serving.model_store import ModelStore, ServedModel
from serving.problems import ProblemError
from serving.readiness import Readiness
from serving.settings import ServingSettings


def settings(request: Request) -> ServingSettings:
    value: ServingSettings = request.app.state.settings
    return value


def store(request: Request) -> ModelStore:
    value: ModelStore = request.app.state.store
    return value


def served_model(request: Request) -> ServedModel:
    """The model for this request, read once: a reload swapping it mid-request is harmless."""
    current = store(request).current
    if current is None:
        raise ProblemError(503, "Model not available", "No model is loaded yet; see /readyz.")
    return current


def scoring_batcher(request: Request) -> ScoringBatcher:
    value: ScoringBatcher = request.app.state.batcher
    return value


def scorelog(request: Request) -> ScoreLog:
    value: ScoreLog = request.app.state.scorelog
    return value


def readiness(request: Request) -> Readiness:
    value: Readiness = request.app.state.readiness
    return value
