"""The dynamic batcher on its own: batches form, buckets stay apart, and the queue is bounded,
times out and forgets cancelled jobs (no model, no HTTP)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from codec.interrupt import checkpoint
from server.batching import BatchObserver, DynamicBatcher, QueueFull, QueueTimeout, length_bucket


class Recorder:
    """A model function that records its batches; it can be held to keep the worker busy."""

    def __init__(self):
        self.batches: list[tuple[object, list]] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, key, payloads):
        self.release.wait(10)
        self.batches.append((key, list(payloads)))
        return [p * 10 for p in payloads]


def run(coro):
    return asyncio.run(coro)


async def started(process, **knobs) -> DynamicBatcher:
    batcher = DynamicBatcher("test", process, ThreadPoolExecutor(1), **knobs)
    batcher.start()
    return batcher


def test_concurrent_jobs_share_a_batch_per_key():
    async def main():
        recorder = Recorder()
        batcher = await started(recorder, max_batch_size=8, max_wait=0.2)
        jobs = [batcher.submit("a" if i % 2 else "b", i, timeout=5) for i in range(6)]
        results = await asyncio.gather(*jobs)
        await batcher.stop()
        return recorder, results

    recorder, results = run(main())
    assert results == [i * 10 for i in range(6)]
    assert sorted((key, sorted(items)) for key, items in recorder.batches) == [("a", [1, 3, 5]), ("b", [0, 2, 4])]


def test_full_bucket_runs_without_waiting_and_respects_max_size():
    async def main():
        recorder = Recorder()
        batcher = await started(recorder, max_batch_size=2, max_wait=30)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(*(batcher.submit("k", i, timeout=5) for i in range(4)))
        elapsed = loop.time() - start
        await batcher.stop()
        return recorder, elapsed

    recorder, elapsed = run(main())
    assert [len(items) for _, items in recorder.batches] == [2, 2]
    assert elapsed < 10  # never waited out max_wait


def test_a_lone_job_waits_only_for_announced_company():
    async def main():
        recorder = Recorder()
        batcher = await started(recorder, max_batch_size=8, max_wait=30)
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await batcher.submit("k", 1, timeout=5) == 10  # nothing announced: runs at once
        alone = loop.time() - start

        async def late_request(expected, value):
            await asyncio.sleep(0.3)  # still reading its body
            return await batcher.submit("k", value, timeout=5, expected=expected)

        with batcher.expecting() as first, batcher.expecting() as second:
            results = await asyncio.gather(batcher.submit("k", 2, timeout=5, expected=first), late_request(second, 3))
        await batcher.stop()
        return recorder, alone, results, loop.time() - start

    recorder, alone, results, total = run(main())
    assert alone < 5 and total < 10 and results == [20, 30]
    assert [items for _, items in recorder.batches] == [[1], [2, 3]]  # the announced job joined the batch


def test_announced_jobs_count_against_the_queue_bound():
    async def main():
        recorder = Recorder()
        batcher = await started(recorder, max_batch_size=4, max_wait=0.05, max_queue=2)
        with batcher.expecting() as first, batcher.expecting():
            with pytest.raises(QueueFull), batcher.expecting():  # two announced: no room for a third
                pass
            result = await batcher.submit("k", 1, timeout=5, expected=first)
        with batcher.expecting(), batcher.expecting():  # both withdrawn: room again
            pass
        await batcher.stop()
        return result

    assert run(main()) == 10


def test_alone_jobs_run_by_themselves():
    async def main():
        recorder = Recorder()
        batcher = await started(recorder, max_batch_size=8, max_wait=0.1)
        await asyncio.gather(*(batcher.submit("long", i, timeout=5, alone=True) for i in range(3)))
        await batcher.stop()
        return recorder

    recorder = run(main())
    assert [(key, len(items)) for key, items in recorder.batches] == [("long", 1)] * 3


def test_full_queue_refuses_and_cancelled_jobs_free_their_slot():
    async def main():
        recorder = Recorder()
        recorder.release.clear()  # the first batch holds the model thread
        batcher = await started(recorder, max_batch_size=1, max_wait=0, max_queue=2)
        running = asyncio.ensure_future(batcher.submit("k", 0, timeout=10))
        await asyncio.sleep(0.1)  # job 0 is in the model; the queue is empty again
        waiting = [asyncio.ensure_future(batcher.submit("k", i, timeout=10)) for i in (1, 2)]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull):
            await batcher.submit("k", 3, timeout=10)
        waiting[0].cancel()  # a client that went away
        await asyncio.sleep(0.05)
        assert batcher.depth == 1
        late = asyncio.ensure_future(batcher.submit("k", 4, timeout=10))
        await asyncio.sleep(0.05)
        recorder.release.set()
        results = await asyncio.gather(running, waiting[1], late)
        await batcher.stop()
        return recorder, results

    recorder, results = run(main())
    assert results == [0, 20, 40]
    assert [items for _, items in recorder.batches] == [[0], [2], [4]]  # job 1 never reached the model


def test_timeout_answers_and_drops_the_job():
    async def main():
        recorder = Recorder()
        batcher = await started(recorder, max_batch_size=4, max_wait=1.0)
        with batcher.expecting(), pytest.raises(QueueTimeout):  # company announced, never submitted
            await batcher.submit("k", 1, timeout=0.1)
        assert batcher.depth == 0
        await asyncio.sleep(1.2)
        await batcher.stop()
        return recorder

    assert run(main()).batches == []


def test_errors_reach_every_job_of_the_batch():
    def broken(key, payloads):
        raise RuntimeError("model failed")

    async def main():
        batcher = await started(broken, max_batch_size=4, max_wait=0.1)
        results = await asyncio.gather(*(batcher.submit("k", i, timeout=5) for i in range(3)), return_exceptions=True)
        await batcher.stop()
        return results

    assert all(isinstance(r, RuntimeError) for r in run(main()))


def test_length_buckets_are_half_octaves():
    assert length_bucket(1) == length_bucket(16)
    assert length_bucket(100) == length_bucket(110) != length_bucket(200)
    assert length_bucket(500) > length_bucket(250) > length_bucket(100)


def test_a_running_batch_whose_callers_left_stops_at_its_next_checkpoint():
    """A caller that times out frees the model thread at the library's next checkpoint, and the
    next job runs at once."""
    steps = []

    def long_work(key, payloads):
        for _ in range(500 if key == "long" else 1):  # 10 s unless interrupted
            checkpoint()
            steps.append(key)
            time.sleep(0.02)
        return payloads

    stopped: list[str] = []

    class Observer(BatchObserver):
        def interrupted(self, name: str) -> None:
            stopped.append(name)

    async def main():
        batcher = await started(long_work, max_batch_size=1, max_wait=0.0, observer=Observer())
        with pytest.raises(QueueTimeout):
            await batcher.submit("long", 1, timeout=0.2)
        started_at = time.monotonic()
        answer = await asyncio.wait_for(batcher.submit("short", 2, timeout=5), 5)
        await batcher.stop()
        return answer, time.monotonic() - started_at

    answer, seconds = run(main())
    assert steps.count("long") < 50 and seconds < 5  # the short job did not wait out the long one
    assert answer == 2 and stopped == ["test"]
