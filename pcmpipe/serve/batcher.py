"""One worker thread that answers queries in batches: what arrived while it was busy goes through together.

Encoding a query (a backbone forward pass, then the head) costs about as much for one input as for a few dozen,
and scoring a gallery is one matrix product whatever the number of query rows, so a service that answered
requests one at a time would serve 32 clients at the rate of one. Each request is queued with a future; the
worker takes the first one, then everything already waiting (up to `max_batch`), without waiting for more:
one client sees no added delay, and under load the batch grows by itself. Within a batch, requests of the same
run, modality and input kind are encoded together, and those of the same gallery are scored together.

The model and the galleries are touched by this thread only (torch is not re-entrant per module anyway), so
the event loop never blocks on a forward pass and nothing needs a lock.
"""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Queued requests taken into one batch at most: a larger batch only adds latency to the first of them
MAX_BATCH = 64


@dataclass
class Job:
    """One query: encode `item` (a text, a file path, or a ready vector) of `group`'s modality, then search."""

    group: tuple  # (run name, from modality, input kind): what can be encoded together
    item: Any
    search: tuple | None  # (run name, to modality, k) or None for an embedding only
    future: Future = field(default_factory=Future)


# (group, items) -> per item its normalised vector [dim], or the exception that item alone fails with
Encoder = Callable[[tuple, list], list]
Searcher = Callable[[tuple, np.ndarray], list]  # ((run, to, k), queries [Q, dim]) -> per query a list of hits


class Batcher:
    """The worker thread and its queue (module docstring). `submit` is safe from any thread."""

    def __init__(self, encode: Encoder, search: Searcher, max_batch: int = MAX_BATCH) -> None:
        self._encode, self._search, self._max = encode, search, max_batch
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self.stats = {"queries": 0, "batches": 0, "largest_batch": 0}  # read by /api/health
        self._thread = threading.Thread(target=self._run, name="pcmpipe-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, group: tuple, item: Any, search: tuple | None) -> Future:
        job = Job(group, item, search)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _take(self) -> list[Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs = [first]
        while len(jobs) < self._max:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self._queue.put(None)  # close after this batch
                break
            jobs.append(nxt)
        return jobs

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            self.stats["queries"] += len(jobs)
            self.stats["batches"] += 1
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(jobs))
            self._answer(jobs)

    def _answer(self, jobs: list[Job]) -> None:
        self._search_all(self._encode_all(jobs))

    def _encode_all(self, jobs: list[Job]) -> list[tuple[Job, np.ndarray]]:
        """Each group's items in one call; a failing group (or item) fails its own requests only."""
        encoded: list[tuple[Job, np.ndarray]] = []
        by_group: dict[tuple, list[Job]] = defaultdict(list)
        for job in jobs:
            by_group[job.group].append(job)
        for group, members in by_group.items():
            try:
                vectors = self._encode(group, [j.item for j in members])
            except Exception as err:  # the request's own error (a UserError), answered as such
                for j in members:
                    j.future.set_exception(err)
                continue
            for j, vec in zip(members, vectors):
                if isinstance(vec, BaseException):
                    j.future.set_exception(vec)
                else:
                    encoded.append((j, vec))
        return encoded

    def _search_all(self, encoded: list[tuple[Job, np.ndarray]]) -> None:
        """Queries of one gallery scored together (one matrix product), each cut to its own k."""
        by_gallery: dict[tuple, list[tuple[Job, np.ndarray]]] = defaultdict(list)
        for job, vec in encoded:
            if job.search is None:
                job.future.set_result(vec)
            else:
                by_gallery[job.search[:2]].append((job, vec))
        for (run, to), pairs in by_gallery.items():
            ks = [int(j.search[2]) if j.search is not None else 1 for j, _ in pairs]
            try:
                found = self._search((run, to, max(ks)), np.stack([v for _, v in pairs]))
            except Exception as err:
                for j, _ in pairs:
                    j.future.set_exception(err)
                continue
            for (j, _), hits, k in zip(pairs, found, ks):
                j.future.set_result(hits[:k])
