"""Micro-batching: concurrent requests are merged into one model call of up to `max_rows` rows,
waiting at most `max_wait_ms` for company, so an accelerator sees full batches."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


class Overloaded(RuntimeError):
    pass


@dataclass
class _Pending:
    columns: tuple[np.ndarray, ...]
    future: asyncio.Future

    @property
    def rows(self) -> int:
        return len(self.columns[0])


class MicroBatcher:
    def __init__(self, run: Callable[..., list], max_rows: int, max_wait_ms: float, max_pending_rows: int,
                 on_batch: Callable[[int], None] = lambda rows: None):
        """`run(*columns)` scores the concatenated columns and returns one result per row.

        A batch closes when it holds `max_rows` rows or `max_wait_ms` after its first request arrived;
        a single request larger than `max_rows` is one batch of its own. More than `max_pending_rows`
        queued rows are refused (Overloaded), so memory stays bounded under overload."""
        self._run = run
        self._max_rows = max_rows
        self._max_wait_s = max_wait_ms / 1000
        self._max_pending_rows = max_pending_rows
        self._on_batch = on_batch
        # The queue is a deque plus a wake-up event (not asyncio.Queue + wait_for, whose timeout can
        # drop a dequeued item on Python 3.11): a lost wake-up is harmless, the items stay in the deque.
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._pending_rows = 0  # queued + being scored
        self.peak_pending_rows = 0  # the most ever pending at once: never above max_pending_rows
        self._wakeup = asyncio.Event()
        # One model worker: batches run one after another on the device.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(Overloaded("the server is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def pending_rows(self) -> int:
        """Rows queued or being scored now."""
        return self._pending_rows

    @property
    def max_pending_rows(self) -> int:
        return self._max_pending_rows

    async def submit(self, *columns: np.ndarray) -> list:
        rows = len(columns[0])
        if self._pending_rows + rows > self._max_pending_rows:
            raise Overloaded(f"{self._pending_rows} rows already queued (limit {self._max_pending_rows})")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(columns, future))
        self._queued_rows += rows
        self._pending_rows += rows
        self.peak_pending_rows = max(self.peak_pending_rows, self._pending_rows)
        self._wakeup.set()
        return await future

    async def _collect(self) -> list[_Pending]:
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait_s
        while self._queued_rows < self._max_rows:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                break
        batch = [self._queue.popleft()]
        rows = batch[0].rows
        while self._queue and rows + self._queue[0].rows <= self._max_rows:
            batch.append(self._queue.popleft())
            rows += batch[-1].rows
        self._queued_rows -= rows
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            sizes = [item.rows for item in batch]
            try:
                columns = [np.concatenate(parts) for parts in zip(*(item.columns for item in batch))]
                self._on_batch(sum(sizes))
                results = await loop.run_in_executor(self._executor, self._run, *columns)
            except Exception as error:  # every waiting request learns why its batch failed
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
            else:
                start = 0
                for item, size in zip(batch, sizes):
                    if not item.future.done():
                        item.future.set_result(results[start : start + size])
                    start += size
            finally:
                self._pending_rows -= sum(sizes)
