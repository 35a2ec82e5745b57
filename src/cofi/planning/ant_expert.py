"""A soft actor-critic ant expert, the tool that regenerates OGBench's AntMaze data offline.

OGBench generates its AntMaze datasets with a SAC agent trained on directional locomotion
(``online-ant-xy-v0``: the ant, minus its x-y position, plus a unit direction; the reward is the
torso's displacement along that direction, which is redrawn every 100 steps). In the maze the
same agent is given the direction towards the maze oracle's next subgoal. Its checkpoint is a
download; this module trains an equivalent one on the CPU and checks it where it will be used.

It is a data tool, not an RL library, and stays out of ``import cofi``'s path::

    python -m cofi.planning.ant_expert train --out runs/ant_expert --steps 400000   # resumable
    python -m cofi.planning.ant_expert eval --model runs/ant_expert --maze antmaze-medium-stitch-v0

Hyperparameters are OGBench's (its ``impls/agents/sac.py`` defaults): actor and twin critics
2 x 256 GELU, Adam 1e-4, batch 256, gamma 0.99, tau 0.005, tanh-squashed Gaussian with
state-dependent log-std in [-5, 2], automatic temperature with target entropy -0.5 |A|, the
minimum of the two critics, 10 000 random steps before the first update, one update per step.

Training state (networks, optimiser moments, temperature, counters, the last log lines) is a
``state.safetensors`` + ``state.json`` pair of about 3 MB that can be committed. The replay
buffer (``replay.npz``, ~100 MB at 400 k steps) is not: a run resumed without it first refills
``seed_steps`` transitions with its current policy, then goes on updating.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

OBS_DIM = 29  # the ant's qpos[2:] and qvel (27) + a unit direction (2)
ACT_DIM = 8
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass
class SACConfig:
    hidden: int = 256
    lr: float = 1e-4
    batch: int = 256
    discount: float = 0.99
    tau: float = 0.005
    target_entropy: float = -0.5 * ACT_DIM
    seed_steps: int = 10_000
    buffer: int = 1_000_000


# ---------------------------------------------------------------- the directional task


class DirectionTask:
    """``online-ant-v0`` with a random unit direction appended to the observation.

    The reward of a step is the torso's x-y displacement along the direction; the direction is
    redrawn every ``resample`` steps. Episodes end when the ant is unhealthy (torso height outside
    [0.2, 1]) or after 1 000 steps. The direction comes from ``seed``'s own generator."""

    def __init__(self, seed: int = 0, resample: int = 100):
        import gymnasium

        import ogbench.online_locomotion  # noqa: F401  (registers online-ant-v0)

        self.env = gymnasium.make("online-ant-v0")
        self.rng = np.random.default_rng(seed)
        self.resample = resample
        self._seed = seed
        self._episodes = 0

    def _direction(self) -> np.ndarray:
        z = self.rng.standard_normal(2)
        return z / np.linalg.norm(z)

    def reset(self) -> np.ndarray:
        ob, _ = self.env.reset(seed=self._seed * 100_003 + self._episodes)
        self._episodes += 1
        self.t = 0
        self.z = self._direction()
        return np.concatenate([ob, self.z])

    def step(self, action: np.ndarray):
        data = self.env.unwrapped.data
        before = data.qpos[:2].copy()
        ob, _, terminated, truncated, info = self.env.step(action)
        reward = float((data.qpos[:2] - before) @ self.z)
        self.t += 1
        if self.t % self.resample == 0:
            self.z = self._direction()
        return np.concatenate([ob, self.z]), reward, terminated, truncated


# ---------------------------------------------------------------- networks


def _mlp(inp: int, hidden: int, out: int, out_scale: float = 1.0) -> nn.Sequential:
    layers = [nn.Linear(inp, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out)]
    if out_scale != 1.0:
        with torch.no_grad():
            layers[-1].weight.mul_(out_scale)
            layers[-1].bias.zero_()
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy with a state-dependent log-std."""

    def __init__(self, hidden: int = 256):
        super().__init__()
        self.net = _mlp(OBS_DIM, hidden, 2 * ACT_DIM, out_scale=0.01)

    def forward(self, obs: torch.Tensor, deterministic: bool = False):
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        if deterministic:
            return torch.tanh(mean), None
        log_std = log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        u = mean + std * torch.randn_like(mean)
        a = torch.tanh(u)
        # log N(u; mean, std) minus the tanh Jacobian, log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))
        log_prob = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)
        return a, log_prob


class TwinCritic(nn.Module):
    def __init__(self, hidden: int = 256):
        super().__init__()
        self.q1 = _mlp(OBS_DIM + ACT_DIM, hidden, 1)
        self.q2 = _mlp(OBS_DIM + ACT_DIM, hidden, 1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], dim=-1)
        return torch.stack([self.q1(x)[..., 0], self.q2(x)[..., 0]])


class Replay:
    def __init__(self, size: int):
        self.obs = np.zeros((size, OBS_DIM), np.float32)
        self.act = np.zeros((size, ACT_DIM), np.float32)
        self.rew = np.zeros(size, np.float32)
        self.mask = np.zeros(size, np.float32)
        self.next = np.zeros((size, OBS_DIM), np.float32)
        self.n = self.i = 0

    def add(self, o, a, r, m, o2) -> None:
        i = self.i
        self.obs[i], self.act[i], self.rew[i], self.mask[i], self.next[i] = o, a, r, m, o2
        self.i = (i + 1) % len(self.rew)
        self.n = min(self.n + 1, len(self.rew))

    def sample(self, rng: np.random.Generator, batch: int) -> list[torch.Tensor]:
        idx = rng.integers(0, self.n, batch)
        return [torch.from_numpy(x[idx]) for x in (self.obs, self.act, self.rew, self.mask, self.next)]

    def save(self, path: Path) -> None:
        n = self.n
        np.savez(path, obs=self.obs[:n], act=self.act[:n], rew=self.rew[:n], mask=self.mask[:n],
                 next=self.next[:n], i=self.i)

    def load(self, path: Path) -> None:
        z = np.load(path)
        n = len(z["rew"])
        self.obs[:n], self.act[:n], self.rew[:n], self.mask[:n], self.next[:n] = (
            z["obs"], z["act"], z["rew"], z["mask"], z["next"])
        self.n, self.i = n, int(z["i"])


# ---------------------------------------------------------------- the agent


class SAC:
    def __init__(self, cfg: SACConfig | None = None):
        self.cfg = cfg = cfg or SACConfig()
        self.actor = Actor(cfg.hidden)
        self.critic = TwinCritic(cfg.hidden)
        self.target = TwinCritic(cfg.hidden)
        self.target.load_state_dict(self.critic.state_dict())
        self.target.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.zeros(()))
        self.opt = torch.optim.Adam([*self.actor.parameters(), *self.critic.parameters(), self.log_alpha], lr=cfg.lr)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        a, _ = self.actor(torch.as_tensor(obs, dtype=torch.float32), deterministic)
        return a.numpy().astype(np.float64)

    def update(self, batch: list[torch.Tensor]) -> dict[str, float]:
        """One gradient step on the critic, actor and temperature losses together (as OGBench)."""
        obs, act, rew, mask, nxt = batch
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            a2, logp2 = self.actor(nxt)
            q_next = self.target(nxt, a2).min(0).values
            target = rew + self.cfg.discount * mask * (q_next - alpha * logp2)
        q = self.critic(obs, act)
        critic_loss = ((q - target) ** 2).mean(1).sum()  # each critic's MSE, summed
        a, logp = self.actor(obs)
        q_pi = self.critic(obs, a).min(0).values
        actor_loss = (alpha * logp - q_pi).mean()
        alpha_loss = self.log_alpha.exp() * (-logp.detach().mean() - self.cfg.target_entropy)
        actor_params = list(self.actor.parameters())
        critic_params = list(self.critic.parameters())
        # the actor loss moves only the actor (the critic is its fixed judge)
        g_actor = torch.autograd.grad(actor_loss, actor_params, retain_graph=True)
        g_critic = torch.autograd.grad(critic_loss, critic_params)
        g_alpha = torch.autograd.grad(alpha_loss, [self.log_alpha])
        for p, g in zip([*actor_params, *critic_params, self.log_alpha], [*g_actor, *g_critic, *g_alpha]):
            p.grad = g
        self.opt.step()
        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.target.parameters()):
                tp.lerp_(p, self.cfg.tau)
        return dict(critic=critic_loss.item() / 2, actor=actor_loss.item(), alpha=alpha.item(),
                    entropy=-logp.mean().item(), q=q.mean().item())

    # ---- state
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"actor.{k}": v for k, v in self.actor.state_dict().items()}
        out |= {f"critic.{k}": v for k, v in self.critic.state_dict().items()}
        out |= {f"target.{k}": v for k, v in self.target.state_dict().items()}
        out["log_alpha"] = self.log_alpha.detach().clone()
        params = [*self.actor.parameters(), *self.critic.parameters(), self.log_alpha]
        for i, p in enumerate(params):
            st = self.opt.state.get(p)
            if st:
                out[f"opt.{i}.exp_avg"] = st["exp_avg"]
                out[f"opt.{i}.exp_avg_sq"] = st["exp_avg_sq"]
                out[f"opt.{i}.step"] = st["step"].reshape(1).float()
        return {k: v.contiguous() for k, v in out.items()}

    def load_tensors(self, t: dict[str, torch.Tensor]) -> None:
        for name, mod in (("actor", self.actor), ("critic", self.critic), ("target", self.target)):
            mod.load_state_dict({k[len(name) + 1:]: v for k, v in t.items() if k.startswith(name + ".")})
        with torch.no_grad():
            self.log_alpha.copy_(t["log_alpha"])
        params = [*self.actor.parameters(), *self.critic.parameters(), self.log_alpha]
        for i, p in enumerate(params):
            if f"opt.{i}.exp_avg" in t:
                self.opt.state[p] = dict(exp_avg=t[f"opt.{i}.exp_avg"].clone(),
                                         exp_avg_sq=t[f"opt.{i}.exp_avg_sq"].clone(),
                                         step=t[f"opt.{i}.step"].reshape(()).clone())


def save_agent(agent: SAC, out: Path, meta: dict) -> None:
    """``state.safetensors`` and ``state.json`` in ``out``, each written atomically."""
    from safetensors.torch import save

    from ..priors.trajectory import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "state.safetensors", save(agent.tensors()))
    atomic_write(out / "state.json", json.dumps(meta, indent=1).encode())


def load_agent(path: str | Path) -> tuple[SAC, dict]:
    """The agent saved in ``path`` (a training directory) and its JSON state."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "state.safetensors").exists():
        raise FileNotFoundError(f"no ant expert in {path}: expected state.safetensors and state.json "
                                f"(python -m cofi.planning.ant_expert train --out {path})")
    meta = json.loads((path / "state.json").read_text())
    agent = SAC(SACConfig(**meta["config"]))
    agent.load_tensors(load_file(str(path / "state.safetensors")))
    return agent, meta


# ---------------------------------------------------------------- training


def evaluate_direction(agent: SAC, episodes: int = 5, seed: int = 10_000) -> float:
    """Mean undiscounted return of the deterministic policy over 1 000-step directional episodes."""
    env = DirectionTask(seed)
    total = 0.0
    for _ in range(episodes):
        ob, done = env.reset(), False
        while not done:
            ob, r, term, trunc = env.step(agent.act(ob, deterministic=True))
            total += r
            done = term or trunc
    return total / episodes


def train(out: str | Path, steps: int = 400_000, seed: int = 0, save_every: int = 10_000,
          eval_every: int = 50_000, cfg: SACConfig | None = None, eval_episodes: int = 5, log=print) -> SAC:
    """Train (or resume) the expert in ``out`` up to ``steps`` environment steps."""
    out = Path(out)
    if (out / "state.json").exists():
        agent, meta = load_agent(out)
        log(f"resuming {out} at step {meta['step']}")
    else:
        agent = SAC(cfg or SACConfig())
        meta = dict(step=0, seed=seed, config=asdict(agent.cfg), log=[], evals=[], wall_s=0.0)
    cfg = agent.cfg
    step0 = meta["step"]
    torch.manual_seed(seed * 7919 + step0)
    rng = np.random.default_rng([seed, step0])
    replay = Replay(cfg.buffer)
    refill = 0
    if step0 > 0:
        if (out / "replay.npz").exists() and json.loads((out / "replay.json").read_text())["step"] == step0:
            replay.load(out / "replay.npz")
        else:
            refill = cfg.seed_steps
            log(f"no replay buffer for step {step0}: refilling {refill} transitions with the current policy")
    env = DirectionTask(seed * 1000 + step0 // 1000)
    ob, ep_ret, returns = env.reset(), 0.0, []
    t0, stats = time.time(), []
    step = step0
    while step < steps or refill > 0:
        if step < cfg.seed_steps and step0 == 0:
            a = rng.uniform(-1.0, 1.0, ACT_DIM)
        else:
            a = agent.act(ob)
        ob2, r, term, trunc = env.step(a)
        replay.add(ob, a, r, float(not term), ob2)
        ob, ep_ret = ob2, ep_ret + r
        if term or trunc:
            returns.append(ep_ret)
            ob, ep_ret = env.reset(), 0.0
        if refill > 0:
            refill -= 1
            continue
        step += 1
        if replay.n >= cfg.seed_steps:
            stats.append(agent.update(replay.sample(rng, cfg.batch)))
        if step % 5_000 == 0 or step == steps:
            line = dict(step=step, wall_s=round(meta["wall_s"] + time.time() - t0, 1),
                        train_return=round(float(np.mean(returns[-5:])), 1) if returns else None)
            if stats:
                line |= {k: round(float(np.mean([s[k] for s in stats])), 4) for k in stats[0]}
            stats = []
            meta["log"] = (meta["log"] + [line])[-400:]
            log(json.dumps(line))
        if step % eval_every == 0 or step == steps:
            ret = evaluate_direction(agent, eval_episodes)
            meta["evals"].append(dict(step=step, direction_return=round(ret, 1)))
            log(f"step {step}: deterministic return {ret:.1f} per 1 000 steps")
        if step % save_every == 0 or step == steps:
            meta["wall_s"] = round(meta["wall_s"] + time.time() - t0, 1)
            t0 = time.time()
            meta["step"] = step
            save_agent(agent, out, meta)
            replay.save(out / "replay.npz.tmp.npz")
            (out / "replay.npz.tmp.npz").replace(out / "replay.npz")
            (out / "replay.json").write_text(json.dumps(dict(step=step)))
    return agent


# ---------------------------------------------------------------- in the maze


def stitch_check(agent: SAC, maze: str = "antmaze-medium-stitch-v0", episodes: int = 50, seed: int = 0) -> dict:
    """How often the expert's stitch episodes reach their goal: `cofi.planning.data`'s episodes
    (start anywhere, goal 4 cells away, 201 steps, action noise 0.2), not saved."""
    from .data import generate_episodes

    stats: dict = {}
    generate_episodes(maze, episodes, seed=seed, progress=False, expert=agent, stats=stats)
    return dict(maze=maze, **stats, rate=stats["reached"] / episodes)


def plot_training(meta: dict, out: str | Path) -> Path:
    """The training curve of a run's ``state.json``: the mean return of the last training
    episodes (stochastic policy) and the deterministic evaluation return, per 1 000 steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = [e for e in meta["log"] if e.get("train_return") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([e["step"] for e in log], [e["train_return"] for e in log], lw=1, label="training episodes (sampled)")
    ax.plot([e["step"] for e in meta["evals"]], [e["direction_return"] for e in meta["evals"]], "o-",
            label="evaluation (deterministic)")
    ax.set_xlabel("environment steps (one update each)")
    ax.set_ylabel("return per episode (≤ 1 000 steps)")
    ax.set_title("SAC ant expert on online-ant-xy-v0", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m cofi.planning.ant_expert", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train or resume the SAC expert on online-ant-xy-v0")
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=400_000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--save-every", type=int, default=10_000)
    t.add_argument("--eval-every", type=int, default=50_000)
    t.add_argument("--threads", type=int, default=1)
    e = sub.add_parser("eval", help="the expert's directional return and its stitch episodes in a maze")
    e.add_argument("--model", required=True)
    e.add_argument("--maze", nargs="+", default=["antmaze-medium-stitch-v0"])
    e.add_argument("--episodes", type=int, default=50)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--threads", type=int, default=1)
    f = sub.add_parser("plot", help="the training curve of a run as a figure")
    f.add_argument("--model", required=True)
    f.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.cmd == "plot":
        print(plot_training(json.loads((Path(args.model) / "state.json").read_text()), args.out))
        return
    torch.set_num_threads(args.threads)
    if args.cmd == "train":
        train(args.out, args.steps, args.seed, args.save_every, args.eval_every)
    else:
        agent, meta = load_agent(args.model)
        print(json.dumps(dict(step=meta["step"], direction_return=round(evaluate_direction(agent), 1))))
        for maze in args.maze:
            print(json.dumps(stitch_check(agent, maze, args.episodes, seed=args.seed)))


if __name__ == "__main__":
    main()
