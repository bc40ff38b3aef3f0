"""Dynamic batching: concurrent requests are gathered into batches for one model call.

Jobs wait in buckets keyed by what must match inside a batch (for the codec: the number of
levels and a length class, so that a 1 s clip is not padded to 10 s). A bucket is run when it is
full, when its oldest job has waited `max_wait`, or at once when no other job is on its way:
routes announce a request while they read and check its body (`expecting`), so a lone request
on an idle server never waits for company that is not coming; announced requests count against
the queue's bound. The model function runs in the model's
executor, off the event loop, one batch at a time. The queue is bounded (`QueueFull`), a job
that is not answered within its timeout fails with `QueueTimeout`, and a job whose caller goes
away (cancelled: client disconnect, timeout) leaves the queue at once and never reaches the model;
a batch already running stops at the library's next checkpoint once none of its callers waits.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from codec import Interrupted, interruptible

P = TypeVar("P")  # what a job carries
R = TypeVar("R")  # what a job returns

# process(key, payloads) -> one result per payload, in order; runs in the executor.
ProcessFn = Callable[[Hashable, Sequence[P]], Sequence[R]]


class QueueFull(Exception):
    """The queue holds `max_queue` jobs already."""


class QueueTimeout(Exception):
    """The job was not answered within its timeout."""


class BatcherStopped(Exception):
    """The batcher was stopped before the job ran."""


def length_bucket(frames: int) -> int:
    """Length class of an input: half-octave steps, so padding wastes at most ~41% of a batch."""
    return math.ceil(2 * math.log2(max(frames, 16)))


@dataclass(eq=False)
class _Job(Generic[P, R]):
    key: Hashable  # what the model function is told
    bucket: Hashable  # where the job waits: its key, or a bucket of its own
    payload: P
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class Expected:
    """A job announced to a batcher before it is submitted; it counts until submitted or dropped."""

    def __init__(self, batcher: DynamicBatcher):
        self._batcher: DynamicBatcher | None = batcher

    def release(self) -> None:
        if self._batcher is not None:
            self._batcher._withdraw()
            self._batcher = None


class BatchObserver:
    """Hooks for metrics; the default does nothing."""

    def queue_depth(self, name: str, depth: int) -> None: ...
    def batch(self, name: str, size: int, waits: Sequence[float], seconds: float) -> None: ...
    def interrupted(self, name: str) -> None: ...


class DynamicBatcher(Generic[P, R]):
    def __init__(
        self,
        name: str,
        process: ProcessFn,
        executor: Executor,
        max_batch_size: int = 16,
        max_wait: float = 0.005,
        max_queue: int = 256,
        observer: BatchObserver | None = None,
    ):
        self.name = name
        self.process = process
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.observer = observer or BatchObserver()
        self._buckets: dict[Hashable, deque[_Job]] = {}
        self._limits: dict[Hashable, int] = {}
        self._size = 0
        self._incoming = 0  # announced jobs not yet submitted (see `expecting`)
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        """Jobs waiting (not yet in a running batch)."""
        return self._size

    @property
    def full(self) -> bool:
        """Whether a new request would be refused (QueueFull)."""
        return self._size + self._incoming >= self.max_queue

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        for bucket in self._buckets.values():
            for job in bucket:
                if not job.future.done():
                    job.future.set_exception(BatcherStopped(f"{self.name} queue stopped"))
        self._buckets.clear()
        self._size = 0

    @contextmanager
    def expecting(self) -> Iterator[Expected]:
        """Announce a job that will be submitted soon (pass it to `submit`), so that batches
        wait for it; leaving the block without submitting withdraws it. Announced jobs count
        against `max_queue` (QueueFull here), so a request is refused before its body is read,
        and requests still waiting to be read cannot pile up beyond the bound."""
        if self._size + self._incoming >= self.max_queue:
            raise QueueFull(f"{self.name} queue is full ({self.max_queue} waiting)")
        self._incoming += 1
        expected = Expected(self)
        try:
            yield expected
        finally:
            expected.release()

    async def submit(
        self, key: Hashable, payload: P, timeout: float, alone: bool = False, expected: Expected | None = None
    ) -> R:
        """Queue one job and wait for its result; `alone` jobs run in a batch of their own."""
        if expected is not None:
            expected.release()
        if self._worker is None:
            raise BatcherStopped(f"{self.name} queue is not running")
        if self._size >= self.max_queue:
            raise QueueFull(f"{self.name} queue is full ({self.max_queue} waiting)")
        future = asyncio.get_running_loop().create_future()
        bucket = (key, id(future)) if alone else key
        job = _Job(key, bucket, payload, future)
        self._buckets.setdefault(bucket, deque()).append(job)
        self._limits[bucket] = 1 if alone else self.max_batch_size
        self._size += 1
        job.future.add_done_callback(lambda _: self._forget(job))
        self._changed()
        try:
            return await asyncio.wait_for(job.future, timeout)
        except asyncio.TimeoutError:
            raise QueueTimeout(f"no answer within {timeout:g} s") from None

    def _forget(self, job: _Job) -> None:
        """Drop a cancelled job from its bucket, so that it frees its slot at once."""
        if not job.future.cancelled():
            return
        bucket = self._buckets.get(job.bucket)
        if bucket is not None and job in bucket:
            bucket.remove(job)
            self._size -= 1
            if not bucket:
                self._drop(job.bucket)
            self._changed()

    def _withdraw(self) -> None:
        """One announced job was submitted or given up."""
        self._incoming -= 1
        self._changed()

    def _drop(self, key: Hashable) -> None:
        del self._buckets[key]
        del self._limits[key]

    def _changed(self) -> None:
        self.observer.queue_depth(self.name, self._size)
        self._wakeup.set()

    def _next_batch(self) -> tuple[Hashable | None, float]:
        """The bucket to run now, or None and how long to wait before one is due."""
        now = time.monotonic()
        full = [k for k, jobs in self._buckets.items() if len(jobs) >= self._limits[k]]
        candidates = full or list(self._buckets)
        if not candidates:
            return None, math.inf
        oldest = min(candidates, key=lambda k: self._buckets[k][0].enqueued)
        due = self._buckets[oldest][0].enqueued + self.max_wait
        if full or due <= now or self._incoming <= 0:
            return oldest, 0.0
        return None, due - now

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key, delay = self._next_batch()
            if key is None:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), None if math.isinf(delay) else delay)
                except asyncio.TimeoutError:
                    pass
                continue
            bucket = self._buckets[key]
            jobs = [bucket.popleft() for _ in range(min(len(bucket), self._limits[key]))]
            self._size -= len(jobs)
            if not bucket:
                self._drop(key)
            self._changed()
            now = time.monotonic()
            start = time.perf_counter()
            try:
                results: Any = await loop.run_in_executor(
                    self.executor, _interruptible, self.process, jobs[0].key, [j.payload for j in jobs], jobs
                )
                if len(results) != len(jobs):
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(jobs)} jobs")
            except Interrupted:  # every caller left (timeout, disconnect) while it ran
                self.observer.interrupted(self.name)
                continue
            except Exception as error:  # noqa: BLE001 - handed to every caller of the batch
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
            else:
                for job, result in zip(jobs, results):
                    if not job.future.done():
                        job.future.set_result(result)
            self.observer.batch(self.name, len(jobs), [now - j.enqueued for j in jobs], time.perf_counter() - start)


def _interruptible(process: ProcessFn, key: Hashable, payloads: Sequence[Any], jobs: Sequence[_Job]) -> Sequence[Any]:
    """Run a batch in the executor; its model work stops at the library's next checkpoint (between
    windows, segments or frames) once none of its callers waits for it any more."""
    with interruptible(lambda: any(not job.future.done() for job in jobs)):
        return process(key, payloads)
