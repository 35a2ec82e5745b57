"""Method presets per domain, and the one resolver every front-end uses.

A *preset* is how one domain runs one method: a sampler factory ``make(steps, **overrides)``,
the window stride it needs (None: the domain decides its geometry) and the overlap blend.
The registry holds one table per domain:

- ``generic``: the sampler classes with their own defaults (what `cofi.compose` accepts by name);
- ``panorama``, ``video``: the paper's comparisons, registered by `cofi.panorama` / `cofi.video`;
- ``planning``: registered by `cofi.planning.planner`.

`resolve` turns what a user passes as ``sampler`` (None, a method name or a config object)
plus the common overrides (``steps``, sampler fields, ``stride``, ``blend``) into one
`Resolved` record, the same way in every domain::

    r = cofi.presets.resolve("panorama", "cofi", steps=20)
    r.sampler, r.stride, r.blend    # CoFi(steps=20, ...), 32, 'ramp'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Preset", "Resolved", "register", "methods", "get", "resolve", "factory"]


@dataclass(frozen=True)
class Preset:
    """One method in one domain.

    Attributes:
        make: ``make(steps=None, **overrides) -> sampler``; ``steps=None`` keeps the preset's own.
        cls: the sampler class it builds (a config object of this class maps back to the preset).
        stride: window stride the method uses in this domain (None: decided by the domain).
        blend: overlap blend (``uniform`` / ``ramp`` / ``exp``; None: decided by the domain).
        doc: one line on where the values come from.
    """

    make: Callable[..., Any]
    cls: type
    stride: int | None = None
    blend: str | None = None
    doc: str = ""


@dataclass(frozen=True)
class Resolved:
    """What a front-end needs: the sampler config, the method name (None for a sampler that
    matches no preset), the stride and the blend (None: the domain's choice)."""

    sampler: Any
    method: str | None
    stride: int | None
    blend: str | None


_REGISTRY: dict[str, dict[str, Preset]] = {}


def register(domain: str, method: str, preset: Preset) -> None:
    """Add (or replace) ``method`` in ``domain``'s table. The first method registered in a
    domain is its default, and the first one of each sampler class is what a config object
    of that class resolves to."""
    _REGISTRY.setdefault(domain, {})[method] = preset


def _table(domain: str) -> dict[str, Preset]:
    if domain == "generic" and domain not in _REGISTRY:
        _register_generic()
    if domain in ("panorama", "video") and domain not in _REGISTRY:
        import importlib

        importlib.import_module(f"cofi.{domain}")  # registers its presets
    if domain == "planning" and domain not in _REGISTRY:
        import cofi.planning.planner  # noqa: F401  (registers its presets)
    if domain not in _REGISTRY:
        raise ValueError(f"unknown domain {domain!r}; known: generic, panorama, video, planning")
    return _REGISTRY[domain]


def methods(domain: str) -> tuple[str, ...]:
    """The method names of a domain, its default first."""
    return tuple(_table(domain))


def get(domain: str, method: str) -> Preset:
    """The preset of ``method`` in ``domain``; ValueError listing the valid names."""
    table = _table(domain)
    key = str(method).lower()
    if key not in table:
        raise ValueError(f"unknown method {method!r} for {domain}; valid: {', '.join(table)}")
    return table[key]


def _is_sampler(obj) -> bool:
    return callable(getattr(obj, "sample", None)) and callable(getattr(obj, "nfe", None))


def resolve(domain: str, sampler=None, *, steps: int | None = None, stride: int | None = None,
            blend: str | None = None, **overrides) -> Resolved:
    """One way in for every front-end.

    Args:
        domain: ``generic``, ``panorama``, ``video`` or ``planning``.
        sampler: None (the domain's default method), a method name, or a config object
            (any object with ``sample`` and ``nfe``).
        steps: sampling steps; None keeps the preset's (or the config's) own.
        stride, blend: override the preset's geometry.
        **overrides: sampler fields to replace (e.g. ``lam0=0.5``, ``refine_at=0.2``).
    Returns:
        `Resolved`. A config object keeps its own values except the overrides; it takes the
        stride and blend of the first preset of its class, or the domain default's for a
        class no preset builds.
    """
    table = _table(domain)
    if sampler is None or isinstance(sampler, str):
        method = next(iter(table)) if sampler is None else str(sampler).lower()
        preset = get(domain, method)
        out = preset.make(steps=steps, **overrides)
    elif _is_sampler(sampler):
        method = next((m for m, p in table.items() if type(sampler) is p.cls), None)
        preset = table[method] if method is not None else next(iter(table.values()))
        out = sampler
        changes = {**({"steps": steps} if steps is not None else {}), **overrides}
        if changes:
            if not dataclasses.is_dataclass(sampler):
                raise TypeError(f"cannot apply {sorted(changes)} to a {type(sampler).__name__}: not a dataclass")
            out = dataclasses.replace(sampler, **changes)
    else:
        raise TypeError(
            f"sampler must be a sampler config (cofi.GSC(), cofi.CoFi(), cofi.CDGS(), cofi.SyncDiffusion(), or an "
            f"object with sample() and nfe()), a method name ({', '.join(table)}) or None; "
            f"got {type(sampler).__name__}"
        )
    return Resolved(out, method, stride if stride is not None else preset.stride, blend or preset.blend)


def factory(cls: type, **defaults) -> Callable[..., Any]:
    """``make(steps=None, **overrides)`` building ``cls`` from ``defaults``, then ``steps`` (if
    given), then the overrides: the sampler factory of a `Preset`."""
    def make(steps: int | None = None, **overrides):
        return cls(**{**defaults, **({"steps": steps} if steps is not None else {}), **overrides})

    return make


def _register_generic() -> None:
    from .samplers import CDGS, GSC, CoFi, SyncDiffusion

    for name, cls in (("cofi", CoFi), ("gsc", GSC), ("multidiffusion", GSC), ("cdgs", CDGS),
                      ("syncdiffusion", SyncDiffusion)):
        register("generic", name, Preset(factory(cls), cls, doc=f"{cls.__name__} with its own defaults"))
