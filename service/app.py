"""`create_app(settings)`: the FastAPI application, its lifespan and its middleware.

Nothing happens at import time. The lifespan scans the model store and builds (validates, warms
up) a session for each model's active version before the server starts answering; a missing or
empty store is logged and leaves the service live but not ready. `build_app` is the factory the
command line hands to uvicorn.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.errors import install_handlers
from service.manager import ModelManager
from service.metrics import Metrics
from service.middleware import (
    BodyLimitMiddleware,
    HeadMiddleware,
    MetricsMiddleware,
    UnexpectedErrorMiddleware,
)
from service.predictor import BatchingConfig
from service.registry import ModelStore
from service.routes import finetune, identify, models, ops, ui, v2
from service.routes.common import add_schemas
from service.runtime import RuntimeConfig, warmup_sizes
from service.schemas import IdentifyRequest, Problem, V2InferRequest
from service.settings import Settings, get_settings
from service.traffic import Traffic

log = logging.getLogger(__name__)

DESCRIPTION = """Identify minerals (and other substances) from Raman spectra.

Every error is `application/problem+json` (RFC 9457); under `/v2` the problem also carries the
Open Inference Protocol's `error` field. Mutating endpoints need an API key (`X-API-Key` or
`Authorization: Bearer`). See docs/service.md.
"""


def runtime_config(settings: Settings) -> RuntimeConfig:
    """The session's view of the settings."""
    return RuntimeConfig(
        providers=tuple(settings.providers),
        cuda_device_id=settings.cuda_device_id,
        cudnn_conv_algo_search=settings.cudnn_conv_algo_search,
        use_io_binding=settings.use_io_binding,
        cuda_graph_batch_sizes=tuple(settings.cuda_graph_batch_sizes),
        intra_op_threads=settings.intra_op_threads,
        intra_op_spinning=settings.intra_op_spinning,
        warmup_batches=settings.warmup_batches,
        warmup_sizes=warmup_sizes(settings.max_batch_size, settings.cuda_graph_batch_sizes),
    )


def batching_config(settings: Settings) -> BatchingConfig:
    """The batcher's view of the settings."""
    return BatchingConfig(
        max_batch_size=settings.max_batch_size,
        max_wait_s=settings.max_wait_ms / 1e3,
        queue_size=settings.queue_size,
        timeout_s=settings.request_timeout_s,
        wait_when_idle=settings.batch_wait_when_idle,
    )


def build_manager(
    settings: Settings, metrics: Metrics, traffic: Traffic | None = None
) -> ModelManager:
    """The model manager for these settings (nothing is loaded until `start`)."""
    return ModelManager(
        ModelStore(settings.model_store),
        runtime_config(settings),
        batching_config(settings),
        metrics,
        settings.default_model,
        settings.max_pinned_versions,
        traffic,
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load and warm up models before serving; unload them on shutdown."""
    settings: Settings = app.state.settings
    manager = build_manager(settings, app.state.metrics, app.state.traffic)
    log.info("model store: %s", manager.store.root)
    hub = await finetune.open_hub(app)  # before the models load: jobs ending meanwhile count
    await manager.start()
    app.state.manager = manager
    try:
        async with finetune.running(app, hub):  # job store watcher; the local worker, if any
            yield
    finally:
        app.state.manager = None
        await manager.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application for `settings` (from the environment when omitted)."""
    settings = settings or get_settings()
    logging.getLogger("service").setLevel(settings.log_level.upper())
    app = FastAPI(
        title="Raman identification service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.traffic = Traffic()
    app.state.manager = None
    install_handlers(app)
    app.add_middleware(UnexpectedErrorMiddleware)  # innermost: any escaped exception -> 500
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        idle_timeout_s=settings.body_idle_timeout_s,
    )
    app.add_middleware(HeadMiddleware)  # HEAD on any GET endpoint: run as GET, no body
    # Outermost: sees 413s, and counts requests in flight for the batchers.
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics, traffic=app.state.traffic)
    for router in (identify.router, models.router, v2.router, ops.router, finetune.router):
        app.include_router(router)
    app.include_router(ui.router)  # the web page: `/` and `/static/...`
    add_schemas(app, Problem, IdentifyRequest, V2InferRequest, *finetune.SCHEMAS)
    return app


def build_app() -> FastAPI:
    """Factory for uvicorn (`service.app:build_app`, factory=True): settings from the env."""
    return create_app(get_settings())
