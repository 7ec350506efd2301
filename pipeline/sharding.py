"""Shards: contiguous ranges of subject indices, the unit of work, retry and resume."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    index: int   # position in the plan; names the part file (part-<index>.parquet)
    start: int   # first subject index (inclusive)
    stop: int    # last subject index (exclusive)

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}"

    def describe(self) -> str:
        return f"shard {self.index} (subjects {self.start}..{self.stop - 1})"


def plan_shards(subject_count: int, shard_size: int) -> list[Shard]:
    """Split subjects [0, subject_count) into shards of `shard_size` subjects (last one shorter)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [Shard(i, start, min(start + shard_size, subject_count))
            for i, start in enumerate(range(0, subject_count, shard_size))]
