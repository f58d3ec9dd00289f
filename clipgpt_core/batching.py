"""Batching across callers: many threads (a shared app's users) call one model; their calls are merged into
batches run by one worker thread per model (the continuous batching of serving engines, on a CPU).

    encode = Batcher(lambda texts: clip_encode(texts))     # fn: a list of items -> one result per item
    vectors = encode(["a red star"])                        # from any thread: this caller's results, in order

There is no collection window: an idle worker runs a call at once, so one user waits for nothing; calls that
arrive while a batch runs are merged into the next one, so under load each model pass serves everyone waiting.
Calls carry a `key` (e.g. sampling settings): only calls with equal keys share a batch.

A batch that fails is run again call by call, so one caller's bad input fails that caller alone. A call
made from the worker thread itself (a model calling another through its batcher) runs directly.

Long jobs (a 16-image render, indexing a folder) call `yield_to_quick()` between their steps: while any batcher
has work, they wait (at most `max_wait` seconds a step), so a quick request waits for one step of a long job,
not for all of it; on two cores the two would otherwise share the CPU for the whole job.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable, Hashable, Sequence


class Batcher:
    def __init__(self, fn: Callable[[list, Hashable], Sequence], max_items: int = 256, name: str = "batcher"):
        self.fn = fn                        # fn(items, key) -> a sequence with one result per item
        self.max_items = max_items          # a batch holds at most this many items (one call may hold more)
        self.name = name
        self._pending: deque[tuple[list, Hashable, Future]] = deque()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self.batches = 0                    # model passes run, and calls served: for benchmarks and tests
        self.calls = 0

    def __call__(self, items: Sequence, key: Hashable = None) -> list:
        items = list(items)
        if threading.current_thread() is self._worker:
            return list(self.fn(items, key))
        done: Future = Future()
        with self._lock:
            self._pending.append((items, key, done))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._worker.start()
        return done.result()

    def _take(self) -> list[tuple[list, Hashable, Future]]:
        """The oldest call and every waiting call with its key, up to max_items items."""
        first = self._pending.popleft()
        batch, size, keep = [first], len(first[0]), deque()
        while self._pending:
            call = self._pending.popleft()
            if call[1] == first[1] and size + len(call[0]) <= self.max_items:
                batch.append(call)
                size += len(call[0])
            else:
                keep.append(call)
        self._pending.extendleft(reversed(keep))
        return batch

    def _run(self) -> None:
        _LOCAL.worker = True
        while True:
            with self._lock:
                if not self._pending:
                    # idle: the thread ends at once (the next call starts another, ~0.1 ms). A live thread that
                    # has run torch keeps an OpenMP team, and with more OpenMP threads than cores libgomp stops
                    # spin-waiting: every other thread's small ops then run ~2.5x slower (measured: a render
                    # 0.46 s -> 1.2 s while an idle worker waited)
                    self._worker = None
                    return
                batch = self._take()
            self._serve(batch)

    def _serve(self, batch: list[tuple[list, Hashable, Future]]) -> None:
        items = [x for call in batch for x in call[0]]
        try:
            with _BUSY:
                results = list(self.fn(items, batch[0][1]))
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)} items")
        except BaseException as e:
            if len(batch) == 1:
                batch[0][2].set_exception(e)
                return
            for call in batch:              # each call alone: the error reaches only the caller it belongs to
                self._serve([call])
            return
        self.batches += 1
        self.calls += len(batch)
        i = 0
        for items_, _, done in batch:
            done.set_result(results[i:i + len(items_)])
            i += len(items_)


def batched(owner: Any, name: str, fn: Callable[[list, Hashable], Sequence], **kw) -> Batcher:
    """owner's Batcher called `name`, made on first use (one per model object, shared by its threads)."""
    attr = f"_batcher_{name}"
    with _MAKING:
        b = owner.__dict__.get(attr)
        if b is None:
            b = Batcher(fn, name=f"{type(owner).__name__}.{name}", **kw)
            owner.__dict__[attr] = b
    return b


_MAKING = threading.Lock()
_LOCAL = threading.local()


class _Busy:
    """How many batches run now, across batchers; long jobs wait while it is above zero."""
    def __init__(self):
        self.count = 0
        self.idle = threading.Condition()

    def __enter__(self):
        with self.idle:
            self.count += 1

    def __exit__(self, *exc):
        with self.idle:
            self.count -= 1
            if self.count == 0:
                self.idle.notify_all()


_BUSY = _Busy()


def yield_to_quick(max_wait: float = 2.0) -> float:
    """Between a long job's steps: wait while quick (batched) work runs, at most max_wait s -> seconds waited.
    A batcher's own worker never waits (it is the quick work)."""
    if getattr(_LOCAL, "worker", False) or _BUSY.count == 0:
        return 0.0
    t = time.perf_counter()
    with _BUSY.idle:
        _BUSY.idle.wait_for(lambda: _BUSY.count == 0, timeout=max_wait)
    return time.perf_counter() - t
