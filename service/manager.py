"""Which model versions are loaded and active, and safe swaps between them.

One active `Predictor` per model name, plus a small LRU of pinned (non-active) versions for
requests that name a version. Activation and reload build the new predictor completely (load,
validate, warm up: in a thread, so the event loop keeps serving), then swap the reference; the
old predictor is retired and finishes the requests that hold it. A version that fails validation
is refused with `ModelInvalid` and whatever was serving keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.errors import ModelInvalid, ModelNotFound, NotReady, ProblemError, VersionNotLoaded
from service.metrics import Metrics
from service.model import load_model
from service.predictor import BatchingConfig, Predictor
from service.registry import FileState, ModelStore, check_name
from service.runtime import RuntimeConfig
from service.traffic import Traffic

log = logging.getLogger(__name__)


class ModelManager:
    """Loaded predictors by name (active) and by (name, version) (pinned)."""

    def __init__(
        self,
        store: ModelStore,
        runtime: RuntimeConfig,
        batching: BatchingConfig,
        metrics: Metrics,
        default_model: str,
        max_pinned: int = 1,
        traffic: Traffic | None = None,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.batching = batching
        self.metrics = metrics
        self.default_model = default_model
        self.max_pinned = max_pinned
        self.traffic = traffic or Traffic()
        self.active: dict[str, Predictor] = {}
        self.pinned: OrderedDict[tuple[str, str], Predictor] = OrderedDict()
        self.started = False
        self._locks: dict[str, asyncio.Lock] = {}
        # Pinned versions that failed to load, with the files' state then: anyone may ask for a
        # version, so a broken one must not be re-validated (hashing, session build) per request.
        self._refused: dict[tuple[str, str], tuple[FileState, ModelInvalid]] = {}

    @property
    def ready(self) -> bool:
        """Started, and at least one model is serving."""
        return self.started and bool(self.active)

    async def start(self) -> None:
        """Load the active version of every model in the store (falling back to older ones)."""
        if not self.store.exists():
            log.error(
                "model store %s does not exist: no model to serve; not ready", self.store.root
            )
        elif not self.store.names():
            log.error(
                "model store %s holds no models: nothing to serve; not ready", self.store.root
            )
        for name in self.store.names():
            await self._start_one(name)
        self.started = True

    async def _start_one(self, name: str) -> None:
        try:
            versions = self.store.versions(name)
            chosen = self.store.active_version(name)
        except ProblemError as exc:
            log.error("model %s skipped: %s", name, exc.detail)
            return
        fallbacks = [v for v in reversed(versions) if v != chosen]
        for version in [chosen, *fallbacks]:
            try:
                self._install(await self._build(name, version))
            except ModelInvalid as exc:
                log.error("%s", exc.detail)
                continue
            if version != chosen:
                log.error("model %s: serving version %s instead of %s", name, version, chosen)
            return
        log.error("model %s: no version could be loaded; it is not served", name)

    async def close(self) -> None:
        """Unload everything (service shutdown)."""
        for predictor in [*self.active.values(), *self.pinned.values()]:
            await predictor.close()
        self.active.clear()
        self.pinned.clear()

    def resolve_name(self, name: str | None) -> str:
        """The model a request means (the default when it names none), validated."""
        return check_name(name or self.default_model)

    def get_active(self, name: str) -> Predictor:
        """The active predictor of `name`: 404 if unknown, 503 if it exists but is not loaded."""
        predictor = self.active.get(check_name(name))
        if predictor is not None:
            return predictor
        if name in self.store.names():
            # it failed to load at start-up, or was added since (a fine-tune job's new model
            # registered without activation): say how to load it, not only where to look
            raise NotReady(
                f"model {name!r} is in the store but not loaded: it failed to load at start-up "
                f"(see the service log) or was added since; load it with POST "
                f"/v1/models/{name}/reload or POST /v1/models/{name}/versions/{{version}}/activate"
            )
        if not self.active:
            raise NotReady(
                f"no model is loaded: the model store {self.store.root} is missing or empty"
            )
        raise ModelNotFound(f"model {name!r} is not in the model store")

    @asynccontextmanager
    async def lease(self, name: str | None, version: str | None = None) -> AsyncIterator[Predictor]:
        """Hold the predictor serving `name` (at `version` if given) for one request."""
        name = self.resolve_name(name)
        predictor = self.get_active(name)
        if version is not None and version != predictor.version:
            predictor = await self._pinned(name, version)
        predictor.acquire()
        try:
            yield predictor
        finally:
            await predictor.release()

    async def activate(self, name: str, version: str) -> Predictor:
        """Load `version`, persist it as active and swap it in; 409 if it is refused."""
        self.store.version_dir(check_name(name), check_name(version, "version"))
        async with self._lock(name):
            predictor = await self._build(name, version)
            try:
                self.store.set_active(name, version)
            except OSError as exc:
                await predictor.close()
                raise ModelInvalid(f"cannot persist the active version: {exc}") from None
            await self._swap(predictor)
        return predictor

    async def reload(self, name: str) -> Predictor:
        """Re-read the store's active version of `name` from disk and swap it in."""
        check_name(name)
        async with self._lock(name):
            predictor = await self._build(name, self.store.active_version(name))
            await self._swap(predictor)
        return predictor

    async def _pinned(self, name: str, version: str) -> Predictor:
        key = (name, check_name(version, "version"))
        if key in self.pinned:
            self.pinned.move_to_end(key)
            return self.pinned[key]
        self.store.version_dir(name, version)  # 404 before anything else
        if self.max_pinned == 0:
            raise VersionNotLoaded(
                f"{name!r} serves version {self.active[name].version}; version {version} is not "
                "loaded and pinning versions is disabled (RAMAN_MAX_PINNED_VERSIONS=0)"
            )
        async with self._lock(name):
            predictor = self.pinned.get(key)
            if predictor is None:
                predictor = await self._build_pinned(name, version)
                await self._evict(keep=self.max_pinned - 1)
                # No await between inserting and the caller's acquire: nothing can evict it.
                self.pinned[key] = predictor
        return predictor

    async def _build_pinned(self, name: str, version: str) -> Predictor:
        key, state = (name, version), self.store.file_state(name, version)
        refused = self._refused.get(key)
        if refused is not None and refused[0] == state:
            raise refused[1]
        try:
            return await self._build(name, version)
        except ModelInvalid as exc:
            self._refused[key] = (state, exc)
            raise

    async def _evict(self, keep: int) -> None:
        while len(self.pinned) > keep:
            _, old = self.pinned.popitem(last=False)
            await old.retire()

    async def _build(self, name: str, version: str) -> Predictor:
        directory = self.store.version_dir(name, version)
        model = await asyncio.to_thread(load_model, directory, name, version, self.runtime)
        log.info("loaded %s version %s on %s", name, version, model.session.provider)
        return Predictor(model, self.batching, self.metrics, self.traffic)

    async def _swap(self, predictor: Predictor) -> None:
        old = self.active.get(predictor.name)
        self._install(predictor)
        if old is not None:
            await old.retire()
        stale = self.pinned.pop((predictor.name, predictor.version), None)
        if stale is not None:
            await stale.retire()

    def _install(self, predictor: Predictor) -> None:
        name = predictor.name
        self.active[name] = predictor
        self.metrics.set_active(name, predictor.version, predictor.provider)
        self.metrics.track_queue(name, lambda: float(self._depth(name)))

    def _depth(self, name: str) -> int:
        loaded = [self.active.get(name), *(p for (n, _), p in self.pinned.items() if n == name)]
        return sum(p.depth for p in loaded if p is not None)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())
