"""A registered model's Predictor: the registry row says which files (ONNX, else best.pt) and which
preprocessing; the files are downloaded once into `<cache>/models/<id>/`; a process keeps the last
few predictors so a page or a worker loads a model's session once, not per request."""

from __future__ import annotations

import threading

from core.errors import NotFound
from core.ml.data import cache_dir
from core.ml.inference import Predictor, load_checkpoint_model, local_copy
from core.training.registry import get_model

_CACHE: dict[tuple, Predictor] = {}
_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 4


def predictor_for_model(*, session, storage, model_id, prefer_onnx: bool = True,
                        threads: int | None = None) -> Predictor:
    """A fresh Predictor of a registered model: its ONNX file when it has one (and `prefer_onnx`),
    else its torch checkpoint."""
    row = get_model(session=session, model_id=model_id)
    folder = cache_dir() / "models" / str(row.id)
    common = {"preprocessing": row.preprocessing, "class_names": list(row.class_names),
              "multi_label": row.task_type == "multi_label"}
    if prefer_onnx and row.onnx_url:
        if storage.exists(row.onnx_url + ".data"):  # external weights must sit beside model.onnx
            local_copy(storage, row.onnx_url + ".data", folder / "model.onnx.data")
        return Predictor(onnx_path=local_copy(storage, row.onnx_url, folder / "model.onnx"), threads=threads,
                         **common)
    if not row.checkpoint_url:
        raise NotFound(f"model {row.name!r} has no stored weights")
    model, _ = load_checkpoint_model(local_copy(storage, row.checkpoint_url, folder / "best.pt"))
    return Predictor(torch_model=model, threads=threads, **common)


def cached_predictor(*, session, storage, model_id, prefer_onnx: bool = True, threads: int | None = None) -> Predictor:
    """One Predictor per (model, files, threads) per process, the last CACHE_SIZE kept."""
    row = get_model(session=session, model_id=model_id)
    key = (str(row.id), row.onnx_url if prefer_onnx else None, row.checkpoint_url, str(row.updated_at), threads)
    with _CACHE_LOCK:
        hit = _CACHE.pop(key, None)
        if hit is not None:
            _CACHE[key] = hit  # most recently used last
            return hit
    predictor = predictor_for_model(session=session, storage=storage, model_id=row.id, prefer_onnx=prefer_onnx,
                                    threads=threads)
    with _CACHE_LOCK:
        _CACHE[key] = predictor
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
    return predictor
