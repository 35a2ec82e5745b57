"""Metrics: exact coherence on the Gaussian-mixture prior; image and video metrics load lazily."""

from . import coherence

__all__ = ["coherence", "image", "video"]


def __getattr__(name: str):
    if name in ("image", "video"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'cofi.metrics' has no attribute {name!r}")
