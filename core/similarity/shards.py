"""The storage layout of an index's vectors: shards of up to SHARD_ROWS float16 vectors
(`embeddings/<index id>/vectors-NNNNN.npy`) with the image ids beside them (`ids-NNNNN.npy`, 16
bytes an id). A shard is only ever appended to (its last, partial one is rewritten with more rows),
so the first `count` rows the database row records are final whatever a crashed run wrote after."""

from __future__ import annotations

import io
import uuid
from typing import Any

import numpy as np

from core.permissions import requires
from core.users import User

SHARD_ROWS = 4096
"""Vectors per shard: 4 MiB of float16 at 512 dimensions, one storage object each."""


def shard_keys(index_id: uuid.UUID, number: int) -> dict[str, str]:
    return {"vectors": f"embeddings/{index_id}/vectors-{number:05d}.npy",
            "ids": f"embeddings/{index_id}/ids-{number:05d}.npy"}


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _load(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def id_bytes(ids: list[uuid.UUID]) -> np.ndarray:
    """Image ids as a (n,) array of 16-byte values (the ids shard's dtype)."""
    return np.frombuffer(b"".join(i.bytes for i in ids), dtype="V16") if ids else np.zeros(0, dtype="V16")


def ids_of(raw: np.ndarray) -> list[uuid.UUID]:
    return [uuid.UUID(bytes=value.tobytes()) for value in raw]


def read_shard(storage, shard: dict[str, Any], start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(ids as 16-byte values, float16 vectors) of rows start..count of one shard."""
    count = int(shard["count"])
    ids = _load(storage.get(shard["ids"]))[start:count]
    vectors = _load(storage.get(shard["vectors"]))[start:count]
    if len(ids) != count - start or len(vectors) != count - start:
        raise ValueError(f"shard {shard['vectors']} holds fewer rows than its index records")
    return ids, vectors


@requires("admin", "computing image embeddings")
def append(storage, *, actor: User, index_id: uuid.UUID, shards: list[dict[str, Any]], ids: list[uuid.UUID],
           vectors: np.ndarray) -> list[dict[str, Any]]:
    """Write `vectors` (with their image ids) after the existing rows; the new shard list (the caller
    records it). The last shard is filled up first, then new ones are written."""
    shards = [dict(shard) for shard in shards]
    raw_ids, vectors = id_bytes(ids), np.asarray(vectors, dtype=np.float16)
    done = 0
    while done < len(raw_ids):
        if shards and shards[-1]["count"] < SHARD_ROWS:
            last = shards[-1]
            old_ids, old_vectors = read_shard(storage, last)
        else:
            last = {**shard_keys(index_id, len(shards)), "count": 0}
            shards.append(last)
            old_ids, old_vectors = np.zeros(0, dtype="V16"), np.zeros((0, vectors.shape[1]), dtype=np.float16)
        take = min(SHARD_ROWS - last["count"], len(raw_ids) - done)
        new_ids = np.concatenate([old_ids, raw_ids[done:done + take]])
        new_vectors = np.concatenate([old_vectors, vectors[done:done + take]])
        # ids first: a reader that finds more vectors than ids reads only the recorded count of either
        storage.put(last["ids"], _npy(new_ids), "application/octet-stream")
        storage.put(last["vectors"], _npy(new_vectors), "application/octet-stream")
        last["count"] = len(new_ids)
        done += take
    return shards
