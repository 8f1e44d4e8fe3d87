"""Batching across requests: the model and the index run in one engine thread, one group of
requests at a time.

A request becomes a `Job` with a key (what it asks: embeddings with a prompt, a search with its
parameters) and a cost (estimated tokens). When the engine is idle and other requests are on
their way (`company()`: being received or parsed), the first job waits up to `wait_s` for them
(or until `budget` is reached); while a group runs, new jobs queue, and the next group takes
every queued job with the first one's key, up to `budget`. Under load the model therefore sees
large batches without anyone waiting on a timer, and a request alone never waits.

One thread also means the index (hnswlib's `set_ef`, bm25s' vocabulary) and the model are never
used by two requests at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sbert_cli.serve.config import ApiError

log = logging.getLogger("sbert")
GATHER_SHARE = 0.1  # after a group, wait for company up to this share of its run time...
GATHER_MAX_S = 0.05  # ...and never longer than this


@dataclass
class Job:
    key: Hashable
    payload: Any
    cost: int
    future: asyncio.Future = field(repr=False)


# (key, payloads) -> one result per payload: a value, or the exception that payload raised.
GroupRunner = Callable[[Hashable, list[Any]], list[Any]]
# Told of every group run: its key and the jobs in it (for metrics).
GroupObserver = Callable[[Hashable, list[Job]], None]


class Batcher:
    def __init__(
        self,
        run_group: GroupRunner,
        *,
        wait_s: float,
        budget: int,
        max_queue: int,
        company: Callable[[int], bool] = lambda queued: True,
    ) -> None:
        self.run_group = run_group
        self.company = company  # given the jobs queued: are more requests on their way?
        self.wait_s = wait_s
        self.budget = budget
        self.max_queue = max_queue
        self.observers: list[GroupObserver] = []
        self._pending: list[Job] = []
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sbert-engine")
        self._task: asyncio.Task | None = None
        self._last_run_s = 0.0  # how long the last group took in the engine
        self._in_flight = 0  # requests in the server as that group finished: its own and those queued

    @property
    def queued(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="sbert-batcher")

    async def stop(self) -> None:
        """Cancel the loop (in-flight requests have finished by now: the server drains first)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(ApiError(503, "the server is shutting down", "server_error"))
        self._engine.shutdown(wait=True)

    async def run_in_engine(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` in the engine thread, between groups (for loading models)."""
        return await asyncio.get_running_loop().run_in_executor(self._engine, fn)

    async def submit(self, key: Hashable, payload: Any, cost: int, timeout_s: float) -> Any:
        """The job's result, once a group containing it ran; its exception if it raised."""
        if len(self._pending) >= self.max_queue:
            raise ApiError(429, f"the server is busy ({len(self._pending)} requests queued); retry shortly", "busy")
        job = Job(key, payload, max(1, cost), asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._arrived.set()
        if sum(j.cost for j in self._pending if j.key == key) >= self.budget or not self.company(len(self._pending)):
            self._full.set()  # a full batch, or everyone on their way has arrived: no need to wait
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout_s)
        except asyncio.CancelledError:  # the client went away: drop the job if it has not run
            job.future.cancel()
            raise
        except asyncio.TimeoutError:
            job.future.cancel()  # still queued: it is dropped; running: its result is dropped
            raise ApiError(503, f"the request took longer than {timeout_s:g} s; retry later", "timeout") from None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                if self.company(len(self._pending)):
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._full.wait(), self.wait_s)
            elif self._last_run_s > 0:
                await self._gather(self._in_flight, min(GATHER_MAX_S, GATHER_SHARE * self._last_run_s))
            group = self._take()
            if not group:
                continue
            key = group[0].key
            started = loop.time()
            try:
                results = await loop.run_in_executor(self._engine, self.run_group, key, [j.payload for j in group])
            except Exception as exc:  # the runner answers per payload; this is a bug in it
                results = [exc] * len(group)
            self._last_run_s = loop.time() - started
            self._in_flight = len(group) + len(self._pending)
            for observer in self.observers:
                observer(key, group)
            for job, result in zip(group, results, strict=True):
                if job.future.done():  # timed out meanwhile
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    async def _gather(self, want: int, timeout_s: float) -> None:
        """After a group, wait up to `timeout_s` for the clients it answered to send their next
        requests (until `want` are queued, or a batch's budget): otherwise the engine alternates
        between two half groups, those that queued while it ran and those it just answered, and a
        model runs small batches less efficiently (all-MiniLM-L6-v2 on 2 cores: 64 texts a batch
        ~40 texts/CPU s, 128 ~55, 512 ~85). Bounded by a share of the last group's run, so a fast
        group (a search) waits next to nothing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(self._pending) < want and self._first_key_cost() < self.budget:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def _first_key_cost(self) -> int:
        key = self._pending[0].key if self._pending else None
        return sum(j.cost for j in self._pending if j.key == key)

    def _take(self) -> list[Job]:
        """The next group: the oldest live job and every queued job with its key, up to the budget."""
        self._pending = [j for j in self._pending if not j.future.done()]
        if not self._pending:
            return []
        key = self._pending[0].key
        group, rest, cost = [], [], 0
        for job in self._pending:
            if job.key == key and (not group or cost + job.cost <= self.budget):
                group.append(job)
                cost += job.cost
            else:
                rest.append(job)
        self._pending = rest
        self._full.clear()
        return group
