"""Comparison lists: pairs/<kind>/part-*.parquet with pair_id, a/b sample ids, mated, kind.

Built from the stage's manifest after all its shards are minted, so they only name samples
that exist. An identity is (subject_id, finger_position): one finger, or one face (position
null). Mated: every pair of samples of one identity, or a deterministic subset of
`max_mated` of them. Non-mated: `non_mated` distinct pairs of samples of two different
identities, drawn with the seeding rule (stage id "pairs", the stage's id, a slot).

A stage with several impression types lists its kinds (`pair_kinds(config)` -> (kind, type of
a, type of b)): a kind between two types pairs every a with every b of the same identity
(mated) and draws non-mated ones. A slap holds one identity per finger: each of its segments
is a unit of its own, and in a `slap-plain` pair the segment compared is the one whose
position is b's finger_position, so non-mated slap pairs are drawn with b of a finger
position that the slap holds.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.manifest import PAIRS_SCHEMA, first_line, manifest_dir, write_table_atomic
from pipeline.seeding import STAGE_IDS

log = logging.getLogger("biomint")

MATED_SLOT, NON_MATED_SLOT = 0, 1
# Fixed slot pairs per kind (2 i, 2 i + 1), so that adding a kind changes no other kind's draws.
KIND_SLOTS = {"plain-plain": 0, "rolled-plain": 1, "rolled-rolled": 2, "slap-plain": 3, "latent-rolled": 4,
              "latent-plain": 5}
# Below this many candidate non-mated pairs they are enumerated instead of rejection-sampled.
ENUMERATE_LIMIT = 5_000_000
DRAW_CHUNK = 1 << 20   # pairs drawn per numpy call by the rejection samplers


def pairs_rng(dataset_seed: int, stage_id: int, slot: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=int(dataset_seed),
                                                        spawn_key=(STAGE_IDS["pairs"], int(stage_id), slot)))


def row_units(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample ids sorted by (subject, position, impression), each one's identity key
    (subject * 16 + position, comparable across impression types) and its position."""
    subject = table["subject_id"].to_numpy()
    position = table["finger_position"].fill_null(0).to_numpy().astype(np.int64)
    order = np.lexsort((table["impression"].to_numpy(), position, subject))
    sample_ids = np.asarray(table["sample_id"].to_pylist(), dtype=object)[order]
    return sample_ids, subject[order] * 16 + position[order], position[order]


def dense_identity(key: np.ndarray) -> np.ndarray:
    """Sorted identity keys -> identity numbers 0, 0, 1, 1, 1, 2, ... (what mated_pairs and
    non_mated_pairs take)."""
    return np.concatenate([[0], np.cumsum(key[1:] != key[:-1])]) if len(key) else np.zeros(0, np.int64)


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

    def draw(k: int) -> np.ndarray:
        a, b = rng.integers(0, n, size=(2, k))
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        return np.where(identity[lo] != identity[hi], lo * n + hi, -1)

    return _split_keys(_distinct_keys(draw, count, rng), n)


def _distinct_keys(draw, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` distinct valid keys (sorted) drawn without replacement by rejection: batches of
    `draw(k)` (invalid draws are -1) until there are enough distinct ones, then a uniform
    subset of exactly `count`. By symmetry of the i.i.d. draws the result is a uniform sample
    of the valid keys, as a set filled draw by draw would give, but in numpy: 10^7 pairs in
    seconds, ~40 bytes of memory per pair, no Python object per pair."""
    kept = np.zeros(0, dtype=np.int64)
    while len(kept) < count:
        wanted = max(1024, int(1.25 * (count - len(kept))))
        # drawn in chunks: a draw's temporaries (indices, identities, masks) are ~6 arrays of
        # its size, so a chunk of 2^20 keeps them at ~50 MB whatever the count
        fresh = np.concatenate([draw(min(DRAW_CHUNK, wanted - start)) for start in range(0, wanted, DRAW_CHUNK)])
        kept = np.concatenate([kept, fresh[fresh >= 0]])
        del fresh
        kept.sort()
        first = np.empty(len(kept), dtype=bool)
        first[:1] = True
        np.not_equal(kept[1:], kept[:-1], out=first[1:])
        kept = kept[first]
    if len(kept) > count:
        extra = np.ones(len(kept), dtype=bool)
        extra[rng.choice(len(kept), size=len(kept) - count, replace=False)] = False
        kept = kept[extra]
    return kept


def _split_keys(keys: np.ndarray, width: int) -> np.ndarray:
    """[N] keys a * width + b -> [N, 2] (a, b), without temporaries the size of the result."""
    out = np.empty((len(keys), 2), dtype=np.int64)
    np.floor_divide(keys, width, out=out[:, 0])
    np.remainder(keys, width, out=out[:, 1])
    return out


def cross_mated_pairs(a_identity: np.ndarray, b_identity: np.ndarray, cap: int,
                      rng: np.random.Generator) -> np.ndarray:
    """[M, 2] (a index, b index) of every a and b of one identity, all or `cap` of them; both
    identity arrays sorted."""
    shared = np.intersect1d(a_identity, b_identity)
    a_start = np.searchsorted(a_identity, shared, "left")
    a_n = np.searchsorted(a_identity, shared, "right") - a_start
    b_start = np.searchsorted(b_identity, shared, "left")
    b_n = np.searchsorted(b_identity, shared, "right") - b_start
    per = a_n * b_n
    total = int(per.sum())
    ranks = np.arange(total) if total <= cap else np.sort(rng.choice(total, size=cap, replace=False))
    cum = np.cumsum(per)
    owner = np.searchsorted(cum, ranks, side="right")
    local = ranks - (cum - per)[owner]
    return np.stack([a_start[owner] + local // b_n[owner], b_start[owner] + local % b_n[owner]], 1).astype(np.int64)


def cross_non_mated_pairs(a_identity: np.ndarray, b_identity: np.ndarray, count: int, rng: np.random.Generator,
                          a_position: np.ndarray | None = None, b_position: np.ndarray | None = None) -> np.ndarray:
    """[M, 2] distinct (a index, b index) of different identities, M = min(count, possible);
    with positions given, only pairs whose positions are equal (a slap segment and a plain
    print of the same finger position)."""
    na, nb = len(a_identity), len(b_identity)
    if na == 0 or nb == 0 or count == 0:
        return np.zeros((0, 2), dtype=np.int64)
    constrained = a_position is not None
    if na * nb <= ENUMERATE_LIMIT:
        ai, bi = np.divmod(np.arange(na * nb, dtype=np.int64), nb)
        keep = a_identity[ai] != b_identity[bi]
        if constrained:
            keep &= a_position[ai] == b_position[bi]
        candidates = np.flatnonzero(keep)
        chosen = np.sort(rng.choice(len(candidates), size=min(count, len(candidates)), replace=False))
        return np.stack([ai[candidates[chosen]], bi[candidates[chosen]]], 1)
    # too many candidates to list: rejection sampling, after counting what is possible
    ids, inverse = np.unique(np.r_[a_identity, b_identity], return_inverse=True)
    same = int((np.bincount(inverse[:na], minlength=len(ids)) * np.bincount(inverse[na:], minlength=len(ids))).sum())
    if constrained:
        positions = np.unique(np.r_[a_position, b_position])
        by_position = [np.flatnonzero(b_position == p) for p in positions]
        slot = np.searchsorted(positions, a_position)
        possible = int(sum(int((a_position == p).sum()) * len(g) for p, g in zip(positions, by_position))) - same
    else:
        possible = na * nb - same
    count = min(count, possible)
    if constrained:
        # b is drawn among the b units of a's position: their indices grouped by position
        group_of_b = np.concatenate(by_position) if by_position else np.zeros(0, np.int64)
        group_len = np.array([len(g) for g in by_position], dtype=np.int64)
        group_start = np.cumsum(group_len) - group_len

    def draw(k: int) -> np.ndarray:
        a = rng.integers(0, na, size=k)
        if constrained:
            g = slot[a]
            length = group_len[g]
            pick = np.minimum((rng.random(k) * length).astype(np.int64), np.maximum(length - 1, 0))
            b = np.where(length > 0, group_of_b[np.minimum(group_start[g] + pick, max(len(group_of_b) - 1, 0))], -1)
        else:
            b = rng.integers(0, nb, size=k)
        valid = (b >= 0) & (a_identity[a] != b_identity[np.maximum(b, 0)])
        return np.where(valid, a * nb + b, -1)

    return _split_keys(_distinct_keys(draw, count, rng), nb)


def _units(table: pa.Table, impression_type: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample ids, identity, position) of the comparison units of one impression type, sorted
    by identity: one unit per row, or per segment for slaps."""
    if impression_type is not None:
        table = table.filter(pc.equal(table["impression_type"], impression_type))
    if impression_type != "slap":
        return row_units(table)
    sample = np.asarray(table["sample_id"].to_pylist(), dtype=object)
    subject = table["subject_id"].to_numpy()
    segments = table["segments"].to_pylist()
    lengths = np.array([len(s or []) for s in segments], dtype=np.int64)
    owner = np.repeat(np.arange(len(sample)), lengths)
    pos = np.array([seg["position"] for s in segments for seg in (s or [])], dtype=np.int64)
    identity = subject[owner] * 16 + pos
    order = np.lexsort((sample[owner].astype(str), identity))
    return sample[owner][order], identity[order], pos[order]


EMPTY_UNITS = pa.table({"sample_id": pa.array([], pa.string()), "subject_id": pa.array([], pa.int64()),
                        "finger_position": pa.array([], pa.int8()), "impression": pa.array([], pa.int16()),
                        "impression_type": pa.array([], pa.string())})


def _read_units_table(root: Path, stage) -> pa.Table:
    """The unit columns of the stage's rows and of the stages in its PAIR_SOURCES."""
    tables = [_read_stage_units(root, name) for name in (stage.NAME, *getattr(stage, "PAIR_SOURCES", ()))]
    tables = [t for t in tables if t.num_rows]
    if len(tables) <= 1:
        # a stage may drop every sample (and be told to accept it): no rows, no pairs
        return tables[0] if tables else EMPTY_UNITS
    return pa.concat_tables(tables, promote_options="default")


def _read_stage_units(root: Path, stage_name: str) -> pa.Table:
    import pyarrow.dataset as ds

    directory = manifest_dir(root, stage_name)
    if not directory.is_dir() or not any(directory.glob("part-*.parquet")):
        return pa.table({"sample_id": pa.array([], pa.string())})
    dataset = ds.dataset(directory, format="parquet")
    columns = {name: ds.field(name) for name in ("sample_id", "subject_id", "finger_position", "impression")}
    names = dataset.schema.names
    if "impression_type" in names:
        columns["impression_type"] = ds.field("impression_type")
        params = dataset.schema.field("params").type if "params" in names else None
        if params is not None and params.get_field_index("segments") >= 0:
            columns["segments"] = ds.field("params", "segments")
    return dataset.to_table(columns=columns)


def write_pairs(root: Path, stage, pairs_config, dataset_seed: int, stage_config=None) -> dict:
    """Write pairs/<kind>/part-*.parquet for each kind of the stage; returns
    {kind: {"mated": m, "non_mated": n}}."""
    kinds = (stage.pair_kinds(stage_config) if stage_config is not None and hasattr(stage, "pair_kinds")
             else [(stage.PAIR_KIND, None, None)])
    if not kinds:
        return {}
    table = _read_units_table(root, stage)
    counts = {}
    for kind, a_type, b_type in kinds:
        slot = KIND_SLOTS.get(kind, 0)
        mated_rng = pairs_rng(dataset_seed, stage.STAGE_ID, 2 * slot + MATED_SLOT)
        non_mated_rng = pairs_rng(dataset_seed, stage.STAGE_ID, 2 * slot + NON_MATED_SLOT)
        a_ids, a_identity, a_position = _units(table, a_type)
        if a_type == b_type:
            b_ids = a_ids
            dense = dense_identity(a_identity)
            mated = mated_pairs(dense, pairs_config.max_mated, mated_rng)
            non_mated = non_mated_pairs(dense, pairs_config.non_mated, non_mated_rng)
        else:
            b_ids, b_identity, b_position = _units(table, b_type)
            mated = cross_mated_pairs(a_identity, b_identity, pairs_config.max_mated, mated_rng)
            slap = a_type == "slap"
            non_mated = cross_non_mated_pairs(a_identity, b_identity, pairs_config.non_mated, non_mated_rng,
                                              a_position if slap else None, b_position if slap else None)
        if len(non_mated) < pairs_config.non_mated:
            log.info("%s: only %d non-mated pairs exist (pairs.non_mated=%d)", kind, len(non_mated),
                     pairs_config.non_mated)
        counts[kind] = _write_kind(root, kind, a_ids, b_ids, mated, non_mated, pairs_config.part_rows)
    return counts


def _write_kind(root: Path, kind: str, a_ids: np.ndarray, b_ids: np.ndarray, mated: np.ndarray,
                non_mated: np.ndarray, part_rows: int) -> dict:
    """Write the kind's pairs as parts of `part_rows` rows, built one part at a time with
    pyarrow (ids taken, pair_ids formatted in C++), so that memory holds one part of strings,
    not every pair's."""
    a_ids, b_ids = pa.array(a_ids, pa.string()), pa.array(b_ids, pa.string())
    directory = Path(root) / "pairs" / kind
    for old in directory.glob("part-*.parquet"):
        old.unlink()
    rows, n_mated, total = max(1, part_rows), len(mated), len(mated) + len(non_mated)
    for part, offset in enumerate(range(0, max(total, 1), rows)):
        stop = min(offset + rows, total)
        # the part's mated rows [offset, m_stop) and non-mated rows [n_start, n_stop) of their own lists
        m_stop = min(stop, n_mated)
        n_start, n_stop = max(offset - n_mated, 0), max(stop - n_mated, 0)
        index = np.concatenate([mated[offset:m_stop].reshape(-1, 2), non_mated[n_start:n_stop].reshape(-1, 2)])
        pair_id = pa.concat_arrays([_pair_ids(f"{kind}-m", offset, max(m_stop, offset)),
                                    _pair_ids(f"{kind}-n", n_start, n_stop)])
        flags = np.arange(offset, stop) < n_mated
        out = pa.table({"pair_id": pair_id,
                        "a_sample_id": pc.take(a_ids, pa.array(index[:, 0])),
                        "b_sample_id": pc.take(b_ids, pa.array(index[:, 1])),
                        "mated": pa.array(flags), "kind": pa.nulls(stop - offset, pa.string()).fill_null(kind)},
                       schema=PAIRS_SCHEMA)
        write_table_atomic(directory / f"part-{part:05d}.parquet", out)
    log.info("pairs: %d mated + %d non-mated %s pairs → %s", len(mated), len(non_mated), kind, directory)
    return {"mated": int(len(mated)), "non_mated": int(len(non_mated))}


def _pair_ids(prefix: str, start: int, stop: int) -> pa.Array:
    """prefix + 9-digit numbers start..stop-1 (e.g. plain-plain-n000000042), formatted by pyarrow."""
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(start, stop, dtype=np.int64)), pa.string()), 9, "0")
    return pc.binary_join_element_wise(pa.scalar(prefix), digits, "").cast(pa.string())


def pairs_state(root: Path, recorded: dict) -> str | None:
    """Why the pairs on disk are not the ones dataset.json records ({kind: {mated, non_mated}}),
    or None: every part readable, the mated and non-mated counts equal."""
    import pyarrow.parquet as pq

    for kind, counts in recorded.items():
        directory = Path(root) / "pairs" / kind
        parts = sorted(directory.glob("part-*.parquet"))
        if not parts:
            return f"pairs/{kind} has no parts"
        mated = total = 0
        for part in parts:
            try:
                flags = pq.read_table(part, columns=["mated"]).column("mated")
            except (OSError, ValueError, pa.ArrowException) as e:
                return f"{part.relative_to(root)} cannot be read ({first_line(e)})"
            total += len(flags)
            mated += int(pc.sum(flags).as_py() or 0)
        if (mated, total - mated) != (counts.get("mated"), counts.get("non_mated")):
            return (f"pairs/{kind} holds {mated} mated + {total - mated} non-mated pairs, dataset.json records "
                    f"{counts.get('mated')} + {counts.get('non_mated')}")
    return None
