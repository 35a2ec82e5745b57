"""Presets: how one domain runs one method, and the one way front-ends turn a user's ``sampler=``
argument into a sampler config.

Each domain front-end keeps its own plain dict of `Preset` (``cofi.panorama.PRESETS``,
``cofi.video.PRESETS``, ``cofi.planning.PRESETS``); its first entry is the default. This module
imports no domain::

    r = cofi.presets.resolve(cofi.panorama.PRESETS, "cofi", steps=20)
    r.sampler, r.stride, r.blend    # CoFi(steps=20, ...), 32, 'ramp'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Preset", "Resolved", "resolve", "factory"]


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


def factory(cls: type, **defaults) -> Callable[..., Any]:
    """``make(steps=None, **overrides)`` building ``cls`` from ``defaults``, then ``steps`` (if
    given), then the overrides: the sampler factory of a `Preset`."""
    def make(steps: int | None = None, **overrides):
        return cls(**{**defaults, **({"steps": steps} if steps is not None else {}), **overrides})

    return make


def resolve(presets: Mapping[str, Preset], sampler=None, *, steps: int | None = None, stride: int | None = None,
            blend: str | None = None, **overrides) -> Resolved:
    """A domain's preset, or a user's config, as one `Resolved` record.

    Args:
        presets: the domain's table (its first entry is the default).
        sampler: None (the default method), a method name, or a config object (any object
            with ``sample`` and ``nfe``).
        steps: sampling steps; None keeps the preset's (or the config's) own.
        stride, blend: override the preset's geometry.
        **overrides: sampler fields to replace (e.g. ``lam0=0.5``, ``refine_at=0.2``).
    Returns:
        `Resolved`. A config object keeps its own values except the overrides; it takes the
        stride and blend of the first preset of its class, or the default's for a class no
        preset builds.
    """
    if sampler is None or isinstance(sampler, str):
        method = next(iter(presets)) if sampler is None else sampler.lower()
        if method not in presets:
            raise ValueError(f"unknown method {sampler!r}; valid: {', '.join(presets)}")
        preset = presets[method]
        out = preset.make(steps=steps, **overrides)
    elif callable(getattr(sampler, "sample", None)) and callable(getattr(sampler, "nfe", None)):
        method = next((m for m, p in presets.items() if type(sampler) is p.cls), None)
        preset = presets[method] if method is not None else next(iter(presets.values()))
        out = sampler
        changes = {**({"steps": steps} if steps is not None else {}), **overrides}
        if changes:
            if not dataclasses.is_dataclass(sampler):
                raise TypeError(f"cannot apply {sorted(changes)} to a {type(sampler).__name__}: not a dataclass")
            out = dataclasses.replace(sampler, **changes)
    else:
        raise TypeError(
            f"sampler must be a sampler config (cofi.GSC(), cofi.CoFi(), cofi.CDGS(), cofi.SyncDiffusion(), or an "
            f"object with sample() and nfe()), a method name ({', '.join(presets)}) or None; "
            f"got {type(sampler).__name__}"
        )
    return Resolved(out, method, stride if stride is not None else preset.stride, blend or preset.blend)
