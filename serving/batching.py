"""Micro-batching: concurrent requests are merged into one model call of up to `max_rows` rows,
waiting at most `max_wait_ms` for company, so an accelerator sees full batches."""

from __future__ import annotations

import asyncio
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


class MicroBatcher:
    def __init__(self, run: Callable[..., list], max_rows: int, max_wait_ms: float, max_pending_rows: int,
                 on_batch: Callable[[int], None] = lambda rows: None):
        """`run(*columns)` scores the concatenated columns and returns one result per row."""
        self._run = run
        self._max_rows = max_rows
        self._max_wait_s = max_wait_ms / 1000
        self._max_pending_rows = max_pending_rows
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._pending_rows = 0
        # One model worker: batches run one after another on the device.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, *columns: np.ndarray) -> list:
        rows = len(columns[0])
        if self._pending_rows + rows > self._max_pending_rows:
            raise Overloaded(f"{self._pending_rows} rows already queued (limit {self._max_pending_rows})")
        self._pending_rows += rows
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(columns, future))
        return await future

    async def _collect(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        rows = len(batch[0].columns[0])
        deadline = asyncio.get_running_loop().time() + self._max_wait_s
        while rows < self._max_rows:
            timeout = deadline - asyncio.get_running_loop().time()
            if timeout <= 0:
                break
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                break
            batch.append(item)
            rows += len(item.columns[0])
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            sizes = [len(item.columns[0]) for item in batch]
            columns = [np.concatenate(parts) for parts in zip(*(item.columns for item in batch))]
            self._on_batch(sum(sizes))
            try:
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
