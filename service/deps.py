"""Dependencies that handlers declare with `Annotated` aliases: settings, models, auth, clock.

All are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread pool, a
thread hop per dependency per request that costs more than the work they do.
"""

from __future__ import annotations

import hmac
import time
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.errors import Forbidden, NotReady, Unauthorized
from service.manager import ModelManager
from service.metrics import Metrics
from service.settings import Settings

START_KEY = "raman_started"
"""Key under `scope["state"]` where the outermost middleware stores the request's start time."""

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key from RAMAN_API_KEYS."
)
_bearer = HTTPBearer(auto_error=False, description="An API key from RAMAN_API_KEYS.")


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _manager(request: Request) -> ModelManager:
    manager: ModelManager | None = getattr(request.app.state, "manager", None)
    if manager is None:
        raise NotReady("the service is starting or stopping")
    return manager


async def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def _started(request: Request) -> float:
    state = request.scope.get("state") or {}
    started = state.get(START_KEY)
    return float(started) if started is not None else time.perf_counter()


SettingsDep = Annotated[Settings, Depends(_settings)]
ManagerDep = Annotated[ModelManager, Depends(_manager)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
StartedDep = Annotated[float, Depends(_started)]
"""`time.perf_counter()` when the request arrived (for `timings.total_ms`)."""


async def require_api_key(
    settings: SettingsDep,
    api_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    """401 unless `X-API-Key` or `Authorization: Bearer` holds a configured key."""
    if not settings.api_keys:
        raise Forbidden(
            "mutating endpoints are disabled: no API keys are configured (set RAMAN_API_KEYS)"
        )
    offered = api_key or (bearer.credentials if bearer else None)
    if not offered:
        raise Unauthorized("send an API key in X-API-Key or Authorization: Bearer")
    # Compare against every key in constant time, so timing does not reveal a prefix match.
    matches = [hmac.compare_digest(offered.encode(), key.encode()) for key in settings.api_keys]
    if not any(matches):
        raise Unauthorized("the API key is not valid")


ApiKeyDep = Depends(require_api_key)
"""Use as `dependencies=[ApiKeyDep]` on mutating routes."""
