"""Comparison lists: pairs/<kind>/part-*.parquet with pair_id, a/b sample ids, mated, kind.

Built from the stage's manifest after all its shards are minted, so they only name samples
that exist. An identity is (subject_id, finger_position): one finger, or one face (position
null). Mated: every pair of samples of one identity, or a deterministic subset of
`max_mated` of them. Non-mated: `non_mated` distinct pairs of samples of two different
identities, drawn with the seeding rule (stage id "pairs", the stage's id, a slot).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.manifest import PAIRS_SCHEMA, read_manifest, write_table_atomic
from pipeline.seeding import STAGE_IDS

log = logging.getLogger("biomint")

MATED_SLOT, NON_MATED_SLOT = 0, 1
# Below this many candidate non-mated pairs they are enumerated instead of rejection-sampled.
ENUMERATE_LIMIT = 5_000_000


def pairs_rng(dataset_seed: int, stage_id: int, slot: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=int(dataset_seed),
                                                        spawn_key=(STAGE_IDS["pairs"], int(stage_id), slot)))


def identities(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Sample ids sorted by (subject, position, impression) and each one's identity number."""
    subject = table["subject_id"].to_numpy()
    position = table["finger_position"].fill_null(0).to_numpy().astype(np.int64)
    order = np.lexsort((table["impression"].to_numpy(), position, subject))
    subject, position = subject[order], position[order]
    sample_ids = np.asarray(table["sample_id"].to_pylist(), dtype=object)[order]
    key = subject * 16 + position
    identity = np.concatenate([[0], np.cumsum(key[1:] != key[:-1])]) if len(key) else np.zeros(0, np.int64)
    return sample_ids, identity


def mated_pairs(identity: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """[M, 2] indices of same-identity sample pairs (i < j), all of them or `cap` of them."""
    starts = np.flatnonzero(np.r_[True, identity[1:] != identity[:-1]]) if len(identity) else np.zeros(0, int)
    sizes = np.diff(np.r_[starts, len(identity)])
    per_identity = sizes * (sizes - 1) // 2
    total = int(per_identity.sum())
    ranks = np.arange(total) if total <= cap else np.sort(rng.choice(total, size=cap, replace=False))
    owner = np.searchsorted(np.cumsum(per_identity), ranks, side="right")
    local = ranks - (np.cumsum(per_identity) - per_identity)[owner]
    out = np.empty((len(ranks), 2), dtype=np.int64)
    for n in np.unique(sizes[owner]) if len(ranks) else []:
        i, j = np.triu_indices(int(n), k=1)          # row-major: (0,1), (0,2), ... like the ranks
        sel = sizes[owner] == n
        out[sel, 0] = starts[owner[sel]] + i[local[sel]]
        out[sel, 1] = starts[owner[sel]] + j[local[sel]]
    return out


def non_mated_pairs(identity: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """[M, 2] distinct pairs (i < j) of samples of different identities, M = min(count, possible)."""
    n = len(identity)
    sizes = np.bincount(identity) if n else np.zeros(0, int)
    possible = n * (n - 1) // 2 - int((sizes * (sizes - 1) // 2).sum())
    count = min(count, possible)
    if count == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if possible <= ENUMERATE_LIMIT:
        i, j = np.triu_indices(n, k=1)
        keep = identity[i] != identity[j]
        chosen = np.sort(rng.choice(possible, size=count, replace=False))
        return np.stack([i[keep][chosen], j[keep][chosen]], axis=1)
    seen: set[tuple[int, int]] = set()
    while len(seen) < count:
        a, b = rng.integers(0, n, size=(2, 2 * (count - len(seen))))
        for x, y in zip(np.minimum(a, b), np.maximum(a, b)):
            if identity[x] != identity[y] and (x, y) not in seen:
                seen.add((int(x), int(y)))
                if len(seen) == count:
                    break
    return np.array(sorted(seen), dtype=np.int64)


def write_pairs(root: Path, stage, pairs_config, dataset_seed: int) -> dict:
    """Write pairs/<stage.PAIR_KIND>/part-*.parquet; returns {kind: {"mated": m, "non_mated": n}}."""
    kind = stage.PAIR_KIND
    table = read_manifest(root, stage.NAME, columns=["sample_id", "subject_id", "finger_position", "impression"])
    ids, identity = identities(table)
    mated = mated_pairs(identity, pairs_config.max_mated, pairs_rng(dataset_seed, stage.STAGE_ID, MATED_SLOT))
    non_mated = non_mated_pairs(identity, pairs_config.non_mated,
                                pairs_rng(dataset_seed, stage.STAGE_ID, NON_MATED_SLOT))
    if len(non_mated) < pairs_config.non_mated:
        log.info("%s: only %d non-mated pairs exist (pairs.non_mated=%d)", kind, len(non_mated), pairs_config.non_mated)
    index = np.concatenate([mated, non_mated]) if len(mated) + len(non_mated) else np.zeros((0, 2), np.int64)
    flags = np.r_[np.ones(len(mated), bool), np.zeros(len(non_mated), bool)]
    pair_ids = [f"{kind}-m{i:09d}" for i in range(len(mated))] + [f"{kind}-n{i:09d}" for i in range(len(non_mated))]
    out = pa.table({"pair_id": pair_ids, "a_sample_id": ids[index[:, 0]].tolist(),
                    "b_sample_id": ids[index[:, 1]].tolist(), "mated": flags,
                    "kind": [kind] * len(pair_ids)}, schema=PAIRS_SCHEMA)
    directory = Path(root) / "pairs" / kind
    for old in directory.glob("part-*.parquet"):
        old.unlink()
    rows = max(1, pairs_config.part_rows)
    for part, offset in enumerate(range(0, max(out.num_rows, 1), rows)):
        write_table_atomic(directory / f"part-{part:05d}.parquet", out.slice(offset, rows))
    log.info("pairs: %d mated + %d non-mated %s pairs → %s", len(mated), len(non_mated), kind, directory)
    return {kind: {"mated": int(len(mated)), "non_mated": int(len(non_mated))}}
