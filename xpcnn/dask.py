"""``xpcnn.dask.predict(model, x)`` / ``xpcnn.dask.evaluate(model, x, y)`` on dask arrays; see
:mod:`xpcnn.distributed.dask`. Dask itself is imported when a function runs, not here."""

from .distributed.dask import evaluate, from_npy, model_cache_info, predict

__all__ = ["predict", "evaluate", "from_npy", "model_cache_info"]
