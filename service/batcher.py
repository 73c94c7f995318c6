"""A generic asyncio dynamic batcher: items from many callers, merged into batches.

Callers `submit` a list of items and await one result per item. A single loop task collects
queued items into a batch that closes when it holds `max_batch_size` items, when its oldest
item has waited `max_wait_s`, or when `expect_more()` says no other submission is on its way
(so a lone request does not wait for companions that will not come). It then awaits
`process(batch)` (which typically hands the batch to a worker thread) and resolves each item's
future. An exception from `process` fails every future of that batch. The queue is bounded: a
submission that does not fit is refused at once with `QueueFull` (an empty queue admits any
submission, so a request larger than the queue is never starved). Items of one submission may
land in several batches. Nothing here knows what an item is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(Exception):
    """The submission does not fit in the queue."""


class BatcherClosed(Exception):
    """The batcher no longer accepts work."""


@dataclass(frozen=True)
class Done(Generic[R]):
    """One item's result and where its time went."""

    value: R
    queued_s: float
    """From submission until its batch started processing."""
    run_s: float
    """Processing time of the whole batch the item rode in."""
    batch_size: int


@dataclass
class _Entry(Generic[T, R]):
    item: T
    future: asyncio.Future[Done[R]]
    enqueued: float


class Batcher(Generic[T, R]):
    """Merges submissions into batches for an async `process(list[T]) -> Sequence[R]`."""

    def __init__(
        self,
        process: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        queue_size: int,
        observe: Callable[[int, float], None] | None = None,
        expect_more: Callable[[], bool] | None = None,
    ) -> None:
        if max_batch_size < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size and queue_size must be >= 1, max_wait_s >= 0")
        self._process = process
        self._max_batch = max_batch_size
        self._max_wait = max_wait_s
        self._queue_size = queue_size
        self._observe = observe
        self._expect_more = expect_more or (lambda: True)
        self._pending: deque[_Entry[T, R]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def depth(self) -> int:
        """Items waiting for a batch (including ones whose caller has given up)."""
        return len(self._pending)

    async def submit(self, items: Sequence[T]) -> list[Done[R]]:
        """Queue `items` and wait for their results, in order; raises `QueueFull` at once."""
        entries = self._enqueue(items)
        try:
            return [await entry.future for entry in entries]
        except BaseException:
            # Timed out, cancelled or failed: the loop drops entries whose future is done.
            for entry in entries:
                entry.future.cancel()
            raise

    def _enqueue(self, items: Sequence[T]) -> list[_Entry[T, R]]:
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        if self._pending and len(self._pending) + len(items) > self._queue_size:
            raise QueueFull(
                f"{len(self._pending)} items queued; the queue holds {self._queue_size}"
            )
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(self._run(), name="batcher")
        now = time.perf_counter()
        entries = [_Entry[T, R](item, loop.create_future(), now) for item in items]
        self._pending.extend(entries)
        self._wakeup.set()  # the loop re-decides: first item, full batch, or nobody else coming
        return entries

    async def close(self) -> None:
        """Stop accepting work, fail what is still queued and stop the loop."""
        self._closed = True
        _fail(self._pending, BatcherClosed("the batcher closed"))
        self._pending.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch:
                await self._execute(batch)

    async def _next_batch(self) -> list[_Entry[T, R]]:
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        deadline = self._pending[0].enqueued + self._max_wait
        while len(self._pending) < self._max_batch and self._expect_more():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
        return self._take()

    def _take(self) -> list[_Entry[T, R]]:
        batch: list[_Entry[T, R]] = []
        while self._pending and len(batch) < self._max_batch:
            entry = self._pending.popleft()
            if not entry.future.done():
                batch.append(entry)
        return batch

    async def _execute(self, batch: list[_Entry[T, R]]) -> None:
        started = time.perf_counter()
        try:
            values = await self._process([entry.item for entry in batch])
            if len(values) != len(batch):
                raise RuntimeError(f"process returned {len(values)} results for {len(batch)} items")
        except Exception as exc:
            log.warning("batch of %d failed: %s", len(batch), exc)
            _fail(batch, exc)
            return
        except BaseException:
            _fail(batch, BatcherClosed("the batcher closed while the batch ran"))
            raise
        run_s = time.perf_counter() - started
        if self._observe is not None:
            self._observe(len(batch), run_s)
        for entry, value in zip(batch, values, strict=True):
            if not entry.future.done():
                entry.future.set_result(Done(value, started - entry.enqueued, run_s, len(batch)))


def _fail(batch: Sequence[_Entry[T, R]], exc: BaseException) -> None:
    for entry in batch:
        if not entry.future.done():
            entry.future.set_exception(exc)
