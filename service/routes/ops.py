"""Operations: Prometheus `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.deps import MetricsDep
from service.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus text exposition of this app's registry (prefix `raman_`)."""
    return Response(metrics.render(), media_type=CONTENT_TYPE)
