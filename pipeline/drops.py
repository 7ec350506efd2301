"""Samples a stage dropped on purpose (`context.record_dropped`): their tally by reason, the text
the summary line shows, and the sentence that fails a run when a stage drops too many.

A stage that drops every sample still adds up (rows + dropped = configured), so without this a
face generator that draws no face ends in a "complete" dataset without faces."""
from __future__ import annotations

import math
import re

# A number ("16 candidates", "similarity -0.05.", the parts of "fp-00000042-07"), not the end of a
# word ("sface2", "v1.2"): reasons that differ in these are one group.
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?!\.?\w)")
SLOT = "\0"          # where a number was in a reason's group key (never in a reason's text)


class DropTally:
    """Samples and drops of a stage, its dropped samples grouped by reason.

    Reasons that differ only in their numbers ("similarity 0.31 …", "similarity 0.29 …") are one
    group, shown with the range of each number, so the groups stay few however many samples
    are dropped and the client's memory does not grow with them."""

    def __init__(self) -> None:
        self.rows = self.dropped = 0
        self._groups: dict[str, list] = {}     # reason without its numbers -> [count, [(lo, hi), ...]]

    def add_shard(self, stats: dict) -> None:
        self.rows += stats["rows"]
        for entry in stats.get("dropped", []):
            self.add(entry["reason"])

    def add(self, reason: str) -> None:
        self.dropped += 1
        key = NUMBER.sub(SLOT, reason)
        numbers = [(float(m), m) for m in NUMBER.findall(reason)]
        group = self._groups.get(key)
        if group is None:
            self._groups[key] = [1, [(n, n) for n in numbers]]
            return
        group[0] += 1
        group[1] = [(min(lo, n), max(hi, n)) for (lo, hi), n in zip(group[1], numbers)]

    @property
    def samples(self) -> int:
        return self.rows + self.dropped

    @property
    def fraction(self) -> float:
        return self.dropped / self.samples if self.samples else 0.0

    def top(self, n: int = 3) -> list[tuple[int, str]]:
        """[(count, reason)] of the n most frequent reasons, most frequent first."""
        ranked = sorted(self._groups.items(), key=lambda item: (-item[1][0], item[0]))[:n]
        return [(count, _with_numbers(key, numbers)) for key, (count, numbers) in ranked]

    def describe(self, n: int = 3) -> str:
        """'2× reason; 1× other reason' (the n most frequent), or '' when nothing was dropped."""
        shown = self.top(n)
        rest = self.dropped - sum(count for count, _ in shown)
        return "; ".join(f"{count}× {reason}" for count, reason in shown) + (f"; {rest} other" if rest else "")


def _with_numbers(key: str, numbers: list[tuple]) -> str:
    parts = key.split(SLOT)
    out = [parts[0]]
    for (lo, hi), part in zip(numbers, parts[1:]):
        out.append((lo[1] if lo[0] == hi[0] else f"{lo[1]}–{hi[1]}") + part)
    return "".join(out)


def too_many_dropped(stage: str, tally: DropTally, limit: float, cause: str | None) -> str | None:
    """The sentence that fails the run when more than `limit` of the stage's samples were
    dropped, or None when the drops are within it."""
    if tally.fraction <= limit:
        return None
    count, reason = tally.top(1)[0]
    # The smallest two-decimal limit that accepts these drops (ceil, so that it is not below).
    enough = min(1.0, math.ceil(round(tally.fraction * 100, 6)) / 100)
    return (f"{stage}: {tally.dropped:,} of {tally.samples:,} samples were dropped ({100 * tally.fraction:.4g}%, "
            f"more than {stage}.max_drop_fraction={limit}), most for \"{reason}\" ({count}×)"
            + (f": {cause}" if cause else "")
            + f"; the dataset is left in_progress, and rerunning with {stage}.max_drop_fraction={enough} "
              "accepts these drops without minting anything again")
