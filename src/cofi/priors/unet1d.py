"""A compact 1D temporal U-Net (in the spirit of Janner et al. 2022's `TemporalUnet`).

Input and output ``x : [batch x horizon x channels]``; the output is ε or x̂ (the prior's
``prediction``). With ``fourier > 0`` each input value is also fed through
``sin / cos(π 2^k x)``, ``k < fourier`` (NeRF-style input features): a trajectory prior must know
where walls are as a function of the *values* of its input, a high-frequency function that a
small conv net learns slowly from raw coordinates. With ``grid > 0`` (for 2-channel xy data)
the network also reads a learned ``grid_dim``-channel feature map of resolution
``grid x grid`` over ``[-grid_extent, grid_extent]²`` (the data's normalised range: a prior
trained with ``scale`` 2.5 needs ``grid_extent`` 2.5, or most of the maze reads the grid's
border), bilinearly interpolated at each step's position (a
position-keyed memory in the manner of Instant-NGP's feature grids): the maze layout is
stored where it is, instead of being composed from global features. With ``grid_smooth``
(odd box-filter widths, e.g. ``(9, 33, 161)``) the grid is also read at moving averages of
the trajectory: at high noise a single step's position is buried in noise, while the mean
of ``w`` steps has ``sqrt(w)`` times less of it, so the network can tell which part of the
maze a noisy window is in. All inputs are differentiable in ``x``, so guidance gradients
pass through them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

__all__ = ["UNet1DConfig", "TemporalUNet", "expand_input_weights"]


@dataclass(frozen=True)
class UNet1DConfig:
    """Shape of the network. ``horizon`` must be divisible by ``2**(len(dim_mults)-1)``."""

    horizon: int = 160
    channels: int = 2
    dim: int = 32
    dim_mults: tuple[int, ...] = (1, 2, 4)
    kernel_size: int = 5
    groups: int = 8
    fourier: int = 0
    grid: int = 0
    grid_dim: int = 8
    grid_smooth: tuple[int, ...] = ()
    grid_extent: float = 1.0  # the grid covers [-grid_extent, grid_extent]²
    grid_wiener: bool = False  # read the grid at the Wiener estimate of x_0, not at x_t (needs alpha)
    cond: bool = False  # one more input channel: 1 where a point is observed (inpainting-aware)
    cond_entries: bool = False  # with cond: one mask channel per data channel (entries observed, not points)
    evidence: bool = False  # 2·channels more: soft evidence w·y and its weight w = π/(1+π) (consensus)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNet1DConfig":
        d = dict(d)
        d["dim_mults"] = tuple(d["dim_mults"])
        d["grid_smooth"] = tuple(d.get("grid_smooth", ()))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """Transformer-style sinusoidal embedding of timesteps ``(B,) -> (B, dim)``."""
    half = dim // 2
    freq = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / (half - 1))
    arg = t.float()[:, None] * freq[None]
    return torch.cat([arg.sin(), arg.cos()], dim=1)


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, groups: int) -> None:
        super().__init__(nn.Conv1d(cin, cout, k, padding=k // 2), nn.GroupNorm(groups, cout), nn.Mish())


class ResBlock(nn.Module):
    """Two conv blocks with the time embedding added in between, plus a residual path."""

    def __init__(self, cin: int, cout: int, tdim: int, k: int, groups: int) -> None:
        super().__init__()
        self.b1, self.b2 = ConvBlock(cin, cout, k, groups), ConvBlock(cout, cout, k, groups)
        self.time = nn.Sequential(nn.Mish(), nn.Linear(tdim, cout))
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.b1(x) + self.time(temb)[:, :, None]
        return self.b2(h) + self.skip(x)


class TemporalUNet(nn.Module):
    """U-Net over ``[batch x horizon x channels]`` with integer timesteps ``(batch,)``."""

    def __init__(self, config: UNet1DConfig) -> None:
        super().__init__()
        self.config = c = config
        levels = len(c.dim_mults)
        if c.horizon % (2 ** (levels - 1)):
            raise ValueError(f"horizon {c.horizon} must be divisible by {2 ** (levels - 1)}")
        dims = [c.dim * m for m in c.dim_mults]
        tdim = 4 * c.dim
        self.time = nn.Sequential(nn.Linear(c.dim, tdim), nn.Mish(), nn.Linear(tdim, tdim))
        if c.fourier < 0:
            raise ValueError(f"fourier must be >= 0, got {c.fourier}")
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(c.fourier, dtype=torch.float32), persistent=False)
        if c.grid < 0 or (c.grid and (c.channels != 2 or c.grid < 2 or c.grid_dim < 1)):
            raise ValueError(f"grid needs 2 channels (xy), grid >= 2 and grid_dim >= 1; got channels={c.channels}, "
                             f"grid={c.grid}, grid_dim={c.grid_dim}")
        if not c.grid_extent > 0:
            raise ValueError(f"grid_extent must be > 0, got {c.grid_extent}")
        if c.grid_smooth and (not c.grid or any(w < 1 or w % 2 == 0 for w in c.grid_smooth)):
            raise ValueError(f"grid_smooth needs a grid and odd widths >= 1; got grid={c.grid}, "
                             f"grid_smooth={c.grid_smooth}")
        self.mask_channels = (c.channels if c.cond_entries else 1) if c.cond else 0
        self.grid = nn.Parameter(0.1 * torch.randn(1, c.grid_dim, c.grid, c.grid)) if c.grid else None
        reads = (1 + len(c.grid_smooth)) if c.grid else 0
        cin = c.channels * (1 + 2 * c.fourier) + c.grid_dim * reads + self.mask_channels + 2 * c.channels * int(c.evidence)
        self.inp = nn.Conv1d(cin, c.dim, 1)
        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        cin = c.dim
        for i, d in enumerate(dims):
            last = i == levels - 1
            self.down.append(nn.ModuleList([
                ResBlock(cin, d, tdim, c.kernel_size, c.groups), ResBlock(d, d, tdim, c.kernel_size, c.groups),
                nn.Identity() if last else nn.Conv1d(d, d, 3, stride=2, padding=1)]))
            cin = d
        self.mid = nn.ModuleList([ResBlock(cin, cin, tdim, c.kernel_size, c.groups) for _ in range(2)])
        for i, d in reversed(list(enumerate(dims[:-1]))):
            self.up.append(nn.ModuleList([
                nn.ConvTranspose1d(cin, cin, 4, stride=2, padding=1),
                ResBlock(cin + dims[i], d, tdim, c.kernel_size, c.groups), ResBlock(d, d, tdim, c.kernel_size, c.groups)]))
            cin = d
        self.out = nn.Sequential(ConvBlock(cin, cin, c.kernel_size, c.groups), nn.Conv1d(cin, c.channels, 1))

    def forward(self, x: Tensor, t: Tensor, mask: Tensor | None = None, alpha: Tensor | None = None,
                evidence: Tensor | None = None, evidence_precision: Tensor | None = None) -> Tensor:
        """``x (B, H, C)``, ``t (B,)``; with ``config.cond``, ``mask (B, H)`` marks the points
        whose values in ``x`` are clean observations (None: none are); with ``cond_entries``,
        ``mask (B, H, C)`` marks entries (a goal that fixes some dimensions only). With
        ``config.grid_wiener``, ``alpha (B,)`` is ᾱ_t of each row. With ``config.evidence``,
        ``evidence`` and ``evidence_precision`` ``(B, H, C)`` are Gaussian evidence ``y`` about
        x_0 with precision π ≥ 0 per entry (`cofi.priors.EmpiricalPrior.denoise`); the network
        reads ``w·y`` and ``w = π / (1 + π)`` (`_evidence_features`), so an absent message is all zeros
        and input weights added for these channels change nothing until evidence arrives."""
        temb = self.time(sinusoidal_embedding(t, self.config.dim))
        extra = []
        if self.config.cond and self.config.cond_entries:
            extra = [x.new_zeros(x.shape).transpose(1, 2) if mask is None else mask.to(x.dtype).transpose(1, 2)]
            mask = None if mask is None else mask.any(-1)  # a point the grid may read as clean
        elif self.config.cond:
            extra = [(x.new_zeros(x.shape[:2]) if mask is None else mask.to(x.dtype))[:, None]]
        if self.config.evidence:
            extra += list(_evidence_features(x, evidence, evidence_precision))
        x = x.transpose(1, 2)  # (B, C, H)
        if self.config.fourier:
            arg = (x[:, :, None, :] * self.freqs[None, None, :, None]).flatten(1, 2)
            x = torch.cat([x, arg.sin(), arg.cos()], 1)
        if self.grid is not None:  # width 1 is each step's own position
            xy = x[:, :2] if not self.config.grid_wiener else self._wiener(x[:, :2], alpha, mask)
            x = torch.cat([x] + [self._read_grid(box_smooth(xy, w)) for w in (1, *self.config.grid_smooth)], 1)
        h = self.inp(torch.cat([x, *extra], 1))
        skips = []
        for r1, r2, down in self.down:
            h = r2(r1(h, temb), temb)
            skips.append(h)
            h = down(h)
        skips.pop()  # the deepest level feeds the middle directly
        for block in self.mid:
            h = block(h, temb)
        for upsample, r1, r2 in self.up:
            h = upsample(h)
            h = r2(r1(torch.cat([h, skips.pop()], 1), temb), temb)
        return self.out(h).transpose(1, 2)

    def _wiener(self, xy: Tensor, alpha: Tensor | None, mask: Tensor | None) -> Tensor:
        """``E[x_0 | x_t]`` per point under a Gaussian ``x_0 ~ N(0, s²)``, ``s² = grid_extent²/3``
        (uniform data on the grid's square): ``√ᾱ s² x_t / (ᾱ s² + 1 − ᾱ)``. At low noise it
        is x_t, at high noise it shrinks to the centre, so the grid is read where the point
        probably is, at every noise level (x_t itself is x_0 shrunk by √ᾱ plus noise).
        Observed points (``mask``) are clean and read as they are."""
        if alpha is None:
            raise ValueError("grid_wiener needs alpha (ᾱ_t of each row) in forward()")
        a = alpha.to(xy).reshape(-1, 1, 1)
        s2 = self.config.grid_extent**2 / 3
        est = a.sqrt() * s2 * xy / (a * s2 + 1 - a)
        if mask is not None:
            est = torch.where(mask[:, None, :].bool(), xy, est)
        return est

    def _read_grid(self, xy: Tensor) -> Tensor:
        """Bilinear lookup of the feature grid at ``xy (B, 2, H)``: x -> grid width, y -> height."""
        pts = xy.transpose(1, 2)[:, None] / self.config.grid_extent  # (B, 1, H, 2) in grid_sample's [-1, 1]
        feats = nn.functional.grid_sample(self.grid.expand(xy.shape[0], -1, -1, -1), pts,
                                          mode="bilinear", padding_mode="border", align_corners=True)
        return feats[:, :, 0]


def _evidence_features(x: Tensor, evidence: Tensor | None, precision: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(w·y, w)`` with ``w = π/(1+π)``, as ``(B, C, H)`` channels; zeros without evidence.

    The value enters weighted, not raw: evidence drawn at a tiny precision (high noise) is
    ``y = x_0 + ε/√π``, far outside the data's range, and ``w·y`` stays bounded (its noise
    part is at most ``|ε|/2``) while carrying the same information as ``(y, w)``."""
    if evidence is None or precision is None:
        zero = x.new_zeros(x.shape).transpose(1, 2)
        return zero, zero
    if evidence.shape != x.shape or precision.shape != x.shape:
        raise ValueError(f"evidence and evidence_precision must have the shape of x {tuple(x.shape)}, "
                         f"got {tuple(evidence.shape)} and {tuple(precision.shape)}")
    p = precision.to(x)
    w = p / (1 + p)
    wy = torch.where(p > 0, w * evidence.to(x), torch.zeros_like(x))
    return wy.transpose(1, 2), w.transpose(1, 2)


def expand_input_weights(state: dict[str, Tensor], net: TemporalUNet) -> dict[str, Tensor]:
    """A state dict of a network without some input channels, with zero weights added for them
    so that `net` (same layout, more inputs at the end, e.g. ``evidence``) loads it. New
    channels appended after the old ones get weight 0: with those inputs at zero (no evidence)
    the expanded network computes exactly what the old one did."""
    state = dict(state)
    w_new = net.inp.weight
    w = state["inp.weight"]
    if w.shape[1] < w_new.shape[1]:
        pad = w.new_zeros(w.shape[0], w_new.shape[1] - w.shape[1], *w.shape[2:])
        state["inp.weight"] = torch.cat([w, pad], 1)
    return state


def box_smooth(x: Tensor, width: int) -> Tensor:
    """Centred moving average of width ``width`` (odd) along the last axis, ends replicated."""
    if width == 1:
        return x
    pad = nn.functional.pad(x, (width // 2, width // 2), mode="replicate")
    return nn.functional.avg_pool1d(pad, width, stride=1)
