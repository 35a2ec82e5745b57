"""`TrajectoryPrior`: a 1D temporal U-Net over normalised xy segments, as a LocalPrior.

Plans live in the normalised space ``[-1, 1]²`` (per-dimension min/max of the training data);
`normalize` / `unnormalize` convert to and from environment coordinates. Start and goal enter
composition as `cofi.Pins` (see `cofi.planning.plan`).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..prior import to_x0
from ..steps import SWEEPS
from .unet1d import TemporalUNet, UNet1DConfig

__all__ = ["TrajectoryPrior", "XYNormalizer", "cosine_alphas_cumprod", "CHECKPOINTS", "PLANNING_SETTINGS"]

CHECKPOINTS = ("pointmaze-medium-stitch", "pointmaze-large-stitch", "pointmaze-giant-stitch", "scene-play",
               "antmaze-medium-stitch", "antmaze-large-stitch", "antmaze-giant-stitch")
_PACKAGE_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
#: Planning settings a checkpoint stores in ``config.json`` beside its weights (chosen by
#: evaluation after training; a warm start carries them over). ``planning_consensus`` is not
#: among them: it needs a network trained to read evidence.
PLANNING_SETTINGS = ("planning_guidance", "planning_guidance_schedule", "planning_steps", "planning_select",
                     "planning_batch", "planning_lam0", "planning_consensus_sweep", "planning_refine_fusion",
                     "planning_refine_inner")


def cosine_alphas_cumprod(T: int, s: float = 0.008) -> Tensor:
    """ᾱ of the cosine schedule (Nichol & Dhariwal 2021), β clipped at 0.999, ``(T,)`` float32."""
    if not isinstance(T, Integral) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T (diffusion steps) must be an int >= 1, got {T!r}")
    if not isinstance(s, Real) or isinstance(s, bool) or not (math.isfinite(s) and s >= 0):
        raise ValueError(f"s must be a finite number >= 0, got {s!r}")
    T = int(T)
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)], dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


class XYNormalizer:
    """The trajectory surface shared by the planning priors: environment coordinates (xy for a
    maze, the 14 planning dimensions of Scene-Play) <-> ``[-scale, scale]``.

    Args:
        lo, hi: ``(D,)`` per-dimension min and max of the training positions.
        scale: the normalised data lies in ``[-scale, scale]``.
        env_name: the OGBench dataset the prior was built from (e.g. ``pointmaze-giant-stitch-v0``).
        stride: environment steps between consecutive plan points (a 160-step window of
            stride 4 has 40 points); the planner interpolates executed plans back to 1.
    """

    def __init__(self, lo, hi, *, scale: float = 1.0, env_name: str | None = None, stride: int = 1) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be an int >= 1, got {stride!r}")
        self.lo = torch.as_tensor(np.asarray(lo), dtype=torch.float32)
        self.hi = torch.as_tensor(np.asarray(hi), dtype=torch.float32)
        if self.lo.ndim != 1 or self.lo.shape != self.hi.shape or not (self.hi > self.lo).all():
            raise ValueError(f"lo and hi must be (D,) with hi > lo, got {self.lo.tolist()}, {self.hi.tolist()}")
        self.scale = float(scale)
        self.env_name = env_name
        self.stride = stride

    def normalize(self, xy) -> Tensor:
        """Environment xy ``(..., 2)`` -> ``[-scale, scale]``."""
        xy = torch.as_tensor(xy, dtype=torch.float32)
        return self.scale * (2 * (xy - self.lo.to(xy.device)) / (self.hi - self.lo).to(xy.device) - 1)

    def unnormalize(self, x) -> Tensor:
        """``[-scale, scale]`` ``(..., 2)`` -> environment xy."""
        x = torch.as_tensor(x, dtype=torch.float32) / self.scale
        return (x + 1) / 2 * (self.hi - self.lo).to(x.device) + self.lo.to(x.device)


class TrajectoryPrior(XYNormalizer):
    """LocalPrior over normalised ``(horizon, 2)`` xy segments; differentiable (guidance).

    Args:
        net: the `TemporalUNet`; it predicts ε or x̂ (``prediction``).
        alphas_cumprod: its training schedule ``(T,)``.
        lo, hi: per-dimension min and max of the training positions (the normaliser).
        env_name: the OGBench environment the prior was trained on (informational).
        clip: x̂ is clamped to ``[-clip·scale, clip·scale]`` (the data's range); at the noisy end
            of the cosine schedule ``x̂ = (x_t − √(1−ᾱ) ε̂)/√ᾱ`` divides by ``√ᾱ ≈ 1e-2`` and
            would otherwise explode (diffusers' ``clip_sample``, Janner et al.'s ``clip_denoised``).
            ``None`` disables it.
        prediction: ``"epsilon"``, ``"sample"`` (x̂, as Janner et al.'s maze2d planners) or ``"v_prediction"``.
        scale: the normalised data lies in ``[-scale, scale]`` (default 1). A larger scale
            spends more of the noise schedule at noise levels comparable to a maze cell
            (a schedule shift toward low noise, cf. Chen 2023 on noise schedules); the
            training command sets it and the checkpoint records it.
        stride: environment steps per plan point (``horizon · stride`` env steps per window).
        planning_guidance, planning_guidance_schedule: the overlap-guidance weight and schedule
            `cofi.planning.planner.planning_sampler` uses with this prior (None: its defaults).
        planning_consensus: the consensus κ `planning_sampler` uses (0: off); only a network
            trained to read evidence (``UNet1DConfig.evidence``, ``--evidence-prob``) takes it.
        planning_steps: the DDIM steps `planning_sampler` uses with this prior (None: 20).
        planning_select: which candidate `cofi.planning.plan` executes with this prior,
            ``overlap`` or ``consistency`` (None: ``overlap``).
        planning_batch: candidates per plan for CoFi, GSC and CD with this prior (None: 16;
            CDGS keeps its population).
        planning_lam0: CoFi's first shrinkage weight λ0 with this prior, in (0, 1] (None: 0.9,
            `cofi.planning.planner.LAM0`); the other methods have no λ.
        planning_consensus_sweep: how the windows take turns reading their neighbours when
            ``planning_consensus > 0``: ``jacobi``, ``red-black`` or ``forward`` (None: jacobi;
            `cofi.steps.coupled_guide`).
        planning_refine_fusion: whether CoFi fuses the windows' x̂ in its refinement stage with
            this prior (None or False: no fusion in either stage, the planning preset). Without
            it the final windows of a weakly guided prior can disagree by several units over an
            overlap, and the blended plan jumps where an overlap begins or ends.
        planning_refine_inner: CoFi's rounds per refinement step with this prior (an int ≥ 1;
            None: 1, the paper's Algorithm 2; `cofi.CoFi.refine_inner`). Each extra round
            denoises and re-noises the level again, at (K − r)·N·B more prior calls per plan.
    """

    supports_grad = True
    timestep_spacing = "leading"
    steps_offset = 0

    def __init__(self, net: TemporalUNet, alphas_cumprod: Tensor, lo, hi, env_name: str | None = None,
                 clip: float | None = 1.0, prediction: str = "epsilon", scale: float = 1.0, stride: int = 1,
                 planning_guidance: float | None = None, planning_guidance_schedule: str | None = None,
                 planning_consensus: float = 0.0, planning_steps: int | None = None,
                 planning_select: str | None = None, planning_batch: int | None = None,
                 planning_lam0: float | None = None, planning_consensus_sweep: str | None = None,
                 planning_refine_fusion: bool | None = None, planning_refine_inner: int | None = None) -> None:
        if prediction not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"prediction must be 'epsilon', 'sample' or 'v_prediction', got {prediction!r}")
        super().__init__(lo, hi, scale=scale, env_name=env_name, stride=stride)
        ac = torch.as_tensor(alphas_cumprod)
        if ac.ndim != 1 or ac.numel() < 1:
            raise ValueError(f"alphas_cumprod must be a non-empty 1-D tensor (T >= 1), got shape {tuple(ac.shape)}")
        if not (torch.isfinite(ac).all() and (ac >= 0).all() and (ac <= 1).all()):
            raise ValueError("alphas_cumprod must hold finite values in [0, 1]")
        alphas_cumprod = ac
        if clip is not None and not (isinstance(clip, Real) and not isinstance(clip, bool)
                                     and math.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be None or a finite number > 0, got {clip!r}")
        self.net = net.eval()
        self.alphas_cumprod = alphas_cumprod.float()
        self.sample_shape = (net.config.horizon, net.config.channels)
        self.clip = clip
        self.prediction_type = prediction
        self.planning_guidance = planning_guidance
        self.planning_guidance_schedule = planning_guidance_schedule
        self.planning_consensus = planning_consensus
        for name, v in (("planning_steps", planning_steps), ("planning_batch", planning_batch),
                        ("planning_refine_inner", planning_refine_inner)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name} must be None or an int >= 1, got {v!r}")
        if planning_select not in (None, "overlap", "consistency"):
            raise ValueError(f"planning_select must be None, 'overlap' or 'consistency', got {planning_select!r}")
        if planning_lam0 is not None and not (isinstance(planning_lam0, Real) and not isinstance(planning_lam0, bool)
                                              and 0.0 < planning_lam0 <= 1.0):
            raise ValueError(f"planning_lam0 must be None or a number in (0, 1], got {planning_lam0!r}")
        if planning_consensus_sweep not in (None, *SWEEPS):
            raise ValueError(f"planning_consensus_sweep must be None or one of {', '.join(map(repr, SWEEPS))}, "
                             f"got {planning_consensus_sweep!r}")
        if planning_refine_fusion is not None and not isinstance(planning_refine_fusion, bool):
            raise ValueError(f"planning_refine_fusion must be None, True or False, got {planning_refine_fusion!r}")
        self.planning_steps = planning_steps
        self.planning_select = planning_select
        self.planning_batch = planning_batch
        self.planning_lam0 = None if planning_lam0 is None else float(planning_lam0)
        self.planning_consensus_sweep = planning_consensus_sweep
        self.planning_refine_fusion = planning_refine_fusion
        self.planning_refine_inner = planning_refine_inner

    # ------------------------------------------------------------------ LocalPrior
    @property
    def accepts_observations(self) -> bool:
        """Whether the network was trained to read observed points (``UNet1DConfig.cond``)."""
        return bool(self.net.config.cond)

    @property
    def planning_consensus(self) -> float:
        """The consensus κ `cofi.planning.planning_sampler` plans with (0: off). Settable; a
        value > 0 needs a network trained to read evidence (``accepts_evidence``)."""
        return self._planning_consensus

    @planning_consensus.setter
    def planning_consensus(self, value: float) -> None:
        value = float(value or 0.0)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"planning_consensus must be a finite number >= 0, got {value!r}")
        if value > 0 and not self.accepts_evidence:
            raise ValueError(f"planning_consensus = {value:g} needs a network trained to read consensus evidence "
                             "(UNet1DConfig.evidence, `python -m cofi.planning train --evidence-prob`); this one "
                             "was not")
        self._planning_consensus = value

    @property
    def accepts_evidence(self) -> bool:
        """Whether the network was trained to read soft evidence (``UNet1DConfig.evidence``),
        so that consensus coupling (``consensus=κ`` on the samplers) can be used with it."""
        return bool(self.net.config.evidence)

    def denoise(self, x_t: Tensor, t: Tensor, *, observed: Tensor | None = None,
                observed_mask: Tensor | None = None, evidence: Tensor | None = None,
                evidence_precision: Tensor | None = None, **cond) -> Tensor:
        """x̂ for ``x_t`` ``(M, horizon, 2)`` and timesteps ``(M,)``.

        ``observed`` / ``observed_mask`` ``(M, horizon, 2)``: points known exactly (a pinned
        start or goal). A network trained with observations (``cond``) reads them in place of
        the noisy values, with a mask channel; other networks ignore them.
        ``evidence`` / ``evidence_precision`` ``(M, horizon, 2)``: Gaussian evidence about x_0
        (consensus messages), read by a network trained with ``evidence``; the network learned
        the exact posterior mean under that evidence from the bank (`cofi.planning.train`).
        """
        if evidence is not None and not self.accepts_evidence:
            raise ValueError("this network was not trained to read evidence (UNet1DConfig.evidence is False)")
        if tuple(x_t.shape[1:]) != self.sample_shape:
            raise ValueError(f"x_t must have shape (M, {self.sample_shape[0]}, {self.sample_shape[1]}), got {tuple(x_t.shape)}")
        mask = None
        if self.net.config.cond and observed_mask is not None:
            x_t = torch.where(observed_mask, observed.to(x_t), x_t)
            mask = observed_mask if self.net.config.cond_entries else observed_mask.any(-1)
        a_t = self.alphas_cumprod.to(x_t.device)[t]
        ev = dict(evidence=evidence, evidence_precision=evidence_precision) if self.net.config.evidence else {}
        out = self.net(x_t, t, mask, alpha=a_t, **ev)
        x0 = to_x0(out, x_t, a_t, self.prediction_type)
        return x0 if self.clip is None else x0.clamp(-self.clip * self.scale, self.clip * self.scale)

    def to(self, device) -> "TrajectoryPrior":
        self.net.to(device)
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        return self

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write ``model.safetensors`` and ``config.json`` to ``directory``.

        Each file is written atomically (a temporary file in ``directory``, then `os.replace`):
        a reader, or a process killed mid-save, sees the old file or the new one, never a
        partial one. ``model.safetensors`` records ``extra["step"]`` (when given) in its
        metadata, so a checkpoint whose two files come from different saves can be told."""
        from safetensors.torch import save

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = dict(extra or {})
        cfg.update(unet=self.net.config.to_dict(), T=int(self.alphas_cumprod.shape[0]), schedule="cosine",
                   prediction=self.prediction_type, scale=self.scale, clip=self.clip, stride=self.stride,
                   lo=self.lo.tolist(), hi=self.hi.tolist(), env_name=self.env_name,
                   planning_consensus=self.planning_consensus,
                   **{k: getattr(self, k) for k in PLANNING_SETTINGS})
        text = json.dumps(cfg, indent=2)  # before writing anything: a config that cannot be written changes nothing
        metadata = {"format": "pt"}
        if cfg.get("step") is not None:
            metadata["step"] = str(cfg["step"])
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.net.state_dict().items()}
        atomic_write(d / "model.safetensors", save(tensors, metadata=metadata))
        atomic_write(d / "config.json", text.encode())
        return d

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device = "cpu") -> "TrajectoryPrior":
        """Load a shipped checkpoint by name (one of `CHECKPOINTS`) or a directory path.

        Raises `FileNotFoundError` when a file is missing and `ValueError`, naming the file (and
        the key), when ``config.json`` is not valid JSON, lacks a key or holds an invalid value,
        or ``model.safetensors`` is truncated, corrupt or does not fit the configured network."""
        d = Path(name_or_path)
        if str(name_or_path) in CHECKPOINTS:
            d = _PACKAGE_DIR / str(name_or_path)
        if not (d / "model.safetensors").is_file() or not (d / "config.json").is_file():
            raise FileNotFoundError(
                f"no checkpoint at {name_or_path!r} (need model.safetensors and config.json); "
                f"shipped names: {', '.join(CHECKPOINTS)}"
            )
        cfg_path, model_path = d / "config.json", d / "model.safetensors"
        cfg = read_json(cfg_path)
        for key in ("unet", "T", "lo", "hi"):
            if key not in cfg:
                raise ValueError(f"{cfg_path}: missing key {key!r}")
        if not isinstance(cfg["unet"], dict):
            raise ValueError(f"{cfg_path}: 'unet' must be an object, got {cfg['unet']!r}")
        for key in ("horizon", "channels", "dim", "dim_mults"):
            if key not in cfg["unet"]:
                raise ValueError(f"{cfg_path}: missing key 'unet.{key}'")
        T = cfg["T"]
        if not isinstance(T, int) or isinstance(T, bool) or T < 1:
            raise ValueError(f"{cfg_path}: 'T' must be an int >= 1, got {T!r}")
        try:
            net = TemporalUNet(UNet1DConfig.from_dict(cfg["unet"]))
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{cfg_path}: invalid 'unet' config: {e}") from e
        tensors, _ = read_safetensors(model_path)
        try:
            net.load_state_dict(tensors)
        except RuntimeError as e:
            raise ValueError(f"{model_path}: the weights do not fit the network of {cfg_path}: {e}") from e
        net.requires_grad_(False)
        try:
            prior = cls(net, cosine_alphas_cumprod(T), cfg["lo"], cfg["hi"], env_name=cfg.get("env_name"),
                        prediction=cfg.get("prediction", "epsilon"), scale=cfg.get("scale", 1.0),
                        clip=cfg.get("clip", 1.0), stride=cfg.get("stride", 1),
                        planning_consensus=cfg.get("planning_consensus") or 0.0,
                        **{k: cfg.get(k) for k in PLANNING_SETTINGS})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{cfg_path}: {e}") from e
        return prior.to(device)


# ---------------------------------------------------------------------------- files
_SAVE_PAUSE_ENV = "COFI_TEST_SAVE_PAUSE"  # test hook: "<file name>:<n>", see `atomic_write`
_replacements: dict[str, int] = {}


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: to a temporary file in the same folder (flushed to
    disk), then `os.replace` onto ``path``. A process killed at any moment leaves the old
    ``path`` or the new one, whole (and at most a stray ``.<name>.*.tmp`` beside it).

    Test hook: with the environment variable ``COFI_TEST_SAVE_PAUSE=<name>:<n>``, the ``n``-th
    replacement of a file called ``<name>`` in this process creates ``<path>.paused`` once the
    temporary file is complete, then sleeps (10 minutes) before the replace, so that a test
    can kill the process in the middle of a save."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _maybe_pause(path)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    if os.name == "posix":  # make the rename itself durable
        try:
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
    return path


def _maybe_pause(path: Path) -> None:
    spec = os.environ.get(_SAVE_PAUSE_ENV)
    if not spec:
        return
    name, _, n = spec.rpartition(":")
    if name != path.name:
        return
    _replacements[name] = _replacements.get(name, 0) + 1
    if str(_replacements[name]) == n.strip():
        Path(str(path) + ".paused").write_text(str(os.getpid()))
        time.sleep(600)


def read_json(path: str | Path) -> dict:
    """A JSON object from ``path``; `ValueError` naming the file when it is not one."""
    path = Path(path)
    text = path.read_text()
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON (truncated or corrupt?): {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_safetensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, read in one go; `ValueError` naming the
    file when it is truncated or corrupt (`OSError` when it cannot be read)."""
    from safetensors.torch import load

    path = Path(path)
    data = path.read_bytes()
    try:
        tensors = load(data)
        n = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8:8 + n]).get("__metadata__") or {}
    except Exception as e:  # safetensors raises its own SafetensorError, which names no file
        raise ValueError(f"{path}: not a readable safetensors file (truncated or corrupt?): {e}") from e
    return tensors, metadata
