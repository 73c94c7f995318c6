"""The dynamic batcher alone: batch closing rules, splitting, bounded queue, failures, timeouts.

No timing assertions: every wait is bounded by `asyncio.wait_for`, so a broken rule fails the
test instead of hanging it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from service.batcher import Batcher, BatcherClosed, QueueFull

GUARD_S = 5.0


def run(coro: Awaitable[Any]) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coro, GUARD_S)

    return asyncio.run(guarded())


class Recorder:
    """A `process` function that records its batches; optionally blocks until released."""

    def __init__(self, fail_on: object = None) -> None:
        self.batches: list[list[Any]] = []
        self.gate: asyncio.Event | None = None
        self.fail_on = fail_on

    async def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on!r}")
        return [item * 10 for item in items]


def make(process: Callable[[list[Any]], Awaitable[list[Any]]], **kw: Any) -> Batcher[Any, Any]:
    options = {"max_batch_size": 4, "max_wait_s": 0.01, "queue_size": 100} | kw
    return Batcher(process, **options)


def values(done: list[Any]) -> list[Any]:
    return [d.value for d in done]


def test_batch_closes_when_full_before_max_wait() -> None:
    rec = Recorder()

    async def scenario() -> list[Any]:
        # max_wait of an hour: only the size rule can close this batch within the guard.
        batcher = make(rec, max_batch_size=4, max_wait_s=3600.0)
        return await asyncio.gather(*(batcher.submit([i]) for i in range(4)))

    results = run(scenario())
    assert rec.batches == [[0, 1, 2, 3]]
    assert [values(r) for r in results] == [[0], [10], [20], [30]]
    assert all(r[0].batch_size == 4 for r in results)


def test_batch_closes_at_max_wait_when_not_full() -> None:
    rec = Recorder()

    async def scenario() -> list[Any]:
        batcher = make(rec, max_batch_size=100, max_wait_s=0.05)
        return await asyncio.gather(*(batcher.submit([i]) for i in range(3)))

    results = run(scenario())
    assert rec.batches == [[0, 1, 2]]
    assert all(r[0].queued_s >= 0 and r[0].run_s >= 0 for r in results)


def test_zero_wait_takes_what_is_queued() -> None:
    rec = Recorder()

    async def scenario() -> list[Any]:
        batcher = make(rec, max_batch_size=8, max_wait_s=0.0)
        return [values(await batcher.submit([i])) for i in range(3)]

    assert run(scenario()) == [[0], [10], [20]]
    assert rec.batches == [[0], [1], [2]]


def test_batch_closes_early_when_nobody_else_is_coming() -> None:
    rec = Recorder()
    coming = {"more": True}

    async def scenario() -> list[Any]:
        batcher = make(rec, max_batch_size=8, max_wait_s=3600.0, expect_more=lambda: coming["more"])
        first = [asyncio.create_task(batcher.submit([i])) for i in range(3)]
        await asyncio.sleep(0.01)
        assert not rec.batches  # others announced: the batch stays open
        coming["more"] = False
        last = await batcher.submit([3])  # the last arrival lets the batch close
        return [values(await t) for t in first] + [values(last)]

    assert run(scenario()) == [[0], [10], [20], [30]]
    assert rec.batches == [[0, 1, 2, 3]]


def test_lone_submission_is_dispatched_at_once() -> None:
    rec = Recorder()

    async def scenario() -> list[Any]:
        batcher = make(rec, max_batch_size=8, max_wait_s=3600.0, expect_more=lambda: False)
        return [values(await batcher.submit([i])) for i in range(3)]

    assert run(scenario()) == [[0], [10], [20]]
    assert rec.batches == [[0], [1], [2]]


def test_large_submission_is_split_and_keeps_order() -> None:
    rec = Recorder()

    async def scenario() -> list[Any]:
        batcher = make(rec, max_batch_size=4, max_wait_s=0.001)
        return values(await batcher.submit(list(range(10))))

    assert run(scenario()) == [i * 10 for i in range(10)]
    assert [len(b) for b in rec.batches] == [4, 4, 2]


def test_full_queue_is_refused_at_once_and_others_complete() -> None:
    rec = Recorder()

    async def scenario() -> tuple[list[Any], Batcher[Any, Any]]:
        rec.gate = asyncio.Event()
        batcher = make(rec, max_batch_size=1, max_wait_s=0.0, queue_size=3)
        first = asyncio.create_task(batcher.submit([0]))
        while not rec.batches:  # item 0 is in the (blocked) batch, the queue is empty
            await asyncio.sleep(0)
        queued = [asyncio.create_task(batcher.submit([i])) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        assert batcher.depth == 3
        with pytest.raises(QueueFull):
            await batcher.submit([4])  # refused without waiting for the blocked batch
        rec.gate.set()
        return [values(await t) for t in (first, *queued)], batcher

    results, batcher = run(scenario())
    assert results == [[0], [10], [20], [30]]
    assert [4] not in rec.batches
    assert batcher.depth == 0


def test_empty_queue_admits_a_submission_larger_than_the_queue() -> None:
    rec = Recorder()

    async def scenario() -> list[Any]:
        batcher = make(rec, max_batch_size=2, queue_size=2)
        return values(await batcher.submit([1, 2, 3, 4, 5]))

    assert run(scenario()) == [10, 20, 30, 40, 50]


def test_exception_fails_every_future_of_its_batch_only() -> None:
    rec = Recorder(fail_on="bad")

    async def scenario() -> tuple[list[Any], list[Any]]:
        batcher = make(rec, max_batch_size=3, max_wait_s=3600.0)
        first = await asyncio.gather(
            *(batcher.submit([x]) for x in ("a", "bad", "c")), return_exceptions=True
        )
        later = await asyncio.gather(*(batcher.submit([x]) for x in ("d", "e", "f")))
        return first, later

    first, later = run(scenario())
    assert all(isinstance(r, ValueError) for r in first)
    assert [values(r) for r in later] == [["d" * 10], ["e" * 10], ["f" * 10]]


def test_wrong_result_count_fails_the_batch() -> None:
    async def short(items: list[Any]) -> list[Any]:
        return items[:-1]

    async def scenario() -> Any:
        batcher = make(short, max_batch_size=2, max_wait_s=0.0)
        return await batcher.submit([1, 2])

    with pytest.raises(RuntimeError, match="1 results for 2 items"):
        run(scenario())


def test_timed_out_items_are_dropped_not_processed() -> None:
    rec = Recorder()

    async def scenario() -> list[Any]:
        rec.gate = asyncio.Event()
        batcher = make(rec, max_batch_size=1, max_wait_s=0.0)
        first = asyncio.create_task(batcher.submit(["first"]))
        while not rec.batches:
            await asyncio.sleep(0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await batcher.submit(["late"])
        rec.gate.set()
        return values(await first) + values(await batcher.submit(["third"]))

    assert run(scenario()) == ["first" * 10, "third" * 10]
    assert rec.batches == [["first"], ["third"]]


def test_close_fails_queued_work_and_refuses_new_work() -> None:
    rec = Recorder()

    async def scenario() -> tuple[Any, Batcher[Any, Any]]:
        rec.gate = asyncio.Event()
        batcher = make(rec, max_batch_size=1, max_wait_s=0.0)
        running = asyncio.create_task(batcher.submit([1]))
        queued = asyncio.create_task(batcher.submit([2]))
        while not rec.batches:
            await asyncio.sleep(0)
        await batcher.close()
        outcomes = await asyncio.gather(running, queued, return_exceptions=True)
        return outcomes, batcher

    outcomes, batcher = run(scenario())
    assert all(isinstance(o, BatcherClosed) for o in outcomes)
    with pytest.raises(BatcherClosed):
        run(batcher.submit([3]))


def test_observe_sees_every_batch() -> None:
    seen: list[int] = []
    rec = Recorder()

    async def scenario() -> None:
        batcher = Batcher(
            rec,
            max_batch_size=3,
            max_wait_s=0.001,
            queue_size=10,
            observe=lambda size, seconds: seen.append(size),
        )
        await batcher.submit(list(range(7)))

    run(scenario())
    assert seen == [3, 3, 1]


@pytest.mark.parametrize("kw", [{"max_batch_size": 0}, {"queue_size": 0}, {"max_wait_s": -1.0}])
def test_invalid_configuration_is_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make(Recorder(), **kw)
