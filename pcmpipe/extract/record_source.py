"""Where extraction gets its records: a dataset's full listing, or its shards streamed one at a time.

A dataset lists its records (`Dataset.records(modality, split)`, sorted by id) or, for inputs too large to list
(webdataset tars, a table of paths in many files), offers them by shard: `record_shards(modality, split)` returns
`RecordShard`s, each naming itself and yielding its records when asked. With shards, no process ever holds the
full listing: rank r of W takes shards r, r + W, ... (`distributed.rank_shards`, fixed by the shard order, so a
restarted rank takes the same ones) and reads them one after the other; memory is one shard's records.

Chunks are blocks fixed by global position, never by the number of processes: a listing is cut into blocks of
`block` records and rank r takes blocks r, r + W, ... (`distributed.rank_blocks`); a streamed shard's records are
cut into blocks of `block` where they stand. Extraction batches each block on its own and writes it as one cache
shard, so one process and any number of ranks batch every record alike and write byte-identical shards (batch
boundaries otherwise move with the rank split, and a different batch takes a different BLAS path: features
agreed only to about 1e-6).

Resume stays per shard: a shard's records whose ids are in the rank's finished cache shards are skipped, so a
killed rank re-encodes only what it had not written (docs/scaling.md). The cache written is the one a listing
would give: the same rows, ids, links and features, whatever the number of processes or nodes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from pcmpipe import distributed as D
from pcmpipe.datasets import Record
from pcmpipe.errors import UserError


class RecordShard(Protocol):
    """One shard of a streamed dataset: `name` (stable across runs), `rows` when known, its records on demand."""

    name: str
    rows: int | None

    def records(self) -> Iterator[Record]: ...


@dataclass
class RecordSource:
    """This process's records of one (modality, split), in chunks of bounded size."""

    first: Record | None  # the first record of the whole split (every rank: the same links, shape, fingerprint)
    rows: int | None  # this process's records, when known (the writer's "N of M rows" message)
    chunks: Callable[[set[str]], Iterator[list[Record]]]  # done ids -> each block's records still to encode
    streamed: bool
    listed: list[Record]  # the whole split's records when listed; a streamed split's first record only
    listing: str | None  # a streamed split's digest of its shards (names, rows); None when listed


def record_source(ds, modality: str, split: str, limit: int | None = None, block: int = 4096) -> RecordSource:
    """The records of `ds` for (modality, split): its shards when it streams them, else its listing, in blocks
    of at most `block` records (the cache's rows per shard)."""
    shards = getattr(ds, "record_shards", None)
    if shards is not None:
        found = shards(modality, split)
        if found is not None:
            if limit is not None:
                raise UserError(f"--limit needs a listing; {ds.name} streams its records by shard: drop --limit")
            return _sharded(list(found), block)
    records = ds.records(modality, split)
    if limit is not None:
        records = records[:limit]
    mine = D.rank_blocks(records, block)

    def pending(done: set[str]) -> Iterator[list[Record]]:
        for part in mine:
            todo = [r for r in part if r.id not in done]
            if todo:
                yield todo

    rows = sum(len(part) for part in mine)
    return RecordSource(records[0] if records else None, rows, pending, False, records, None)


def _blocks(records: Iterator[Record], block: int) -> Iterator[list[Record]]:
    """Consecutive lists of `block` records (the last one shorter), read lazily."""
    while part := list(itertools.islice(records, block)):
        yield part


def _sharded(shards: Sequence[RecordShard], block: int) -> RecordSource:
    mine = D.rank_shards(shards)
    first = next(iter(shards[0].records()), None) if shards else None
    counts = [s.rows for s in mine]
    rows = sum(c for c in counts if c is not None) if all(c is not None for c in counts) else None

    def pending(done: set[str]) -> Iterator[list[Record]]:
        for shard in mine:
            for part in _blocks(iter(shard.records()), block):
                todo = [r for r in part if r.id not in done]
                if todo:
                    yield todo

    # a streamed dataset is never listed: its shards' names and sizes stand for the listing, so adding or
    # replacing a shard makes the cache stale as added items do for a listed one
    digest = hashlib.sha256(json.dumps([[s.name, s.rows] for s in shards]).encode()).hexdigest()
    return RecordSource(first, rows, pending, True, [first] if first is not None else [], digest)
