"""Shards: contiguous ranges of subject indices, the unit of work, retry and resume."""
from __future__ import annotations

from collections.abc import Sequence
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


class ShardPlan(Sequence):
    """Subjects [0, subject_count) in shards of `shard_size` (the last one shorter), computed on
    demand: a plan of 10^8 subjects costs no memory, so any count starts at once."""

    def __init__(self, subject_count: int, shard_size: int) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.subject_count, self.shard_size = int(subject_count), int(shard_size)

    def __len__(self) -> int:
        return -(-self.subject_count // self.shard_size) if self.subject_count > 0 else 0

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n, index = len(self), int(index)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"shard {index} is outside the plan of {n} shards")
        start = index * self.shard_size
        return Shard(index, start, min(start + self.shard_size, self.subject_count))

    def __repr__(self) -> str:
        return f"ShardPlan(subjects={self.subject_count}, shard_size={self.shard_size}, shards={len(self)})"


def plan_shards(subject_count: int, shard_size: int) -> ShardPlan:
    """Split subjects [0, subject_count) into shards of `shard_size` subjects (last one shorter)."""
    return ShardPlan(subject_count, shard_size)
