"""Planning domain: maze helpers, waypoint controller, planner and plan-execute loop (CPU, offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("ogbench")

from cofi.planning.control import WaypointController, waypoint_action  # noqa: E402
from cofi.planning.evaluate import (  # noqa: E402
    EpisodeRecord, _reset, episode_problem, evaluate, make_env, markdown_table, summarize)
from cofi.planning.maze import Maze, parse_env_name  # noqa: E402
from cofi.planning.planner import default_count, plan, planning_layout, planning_sampler  # noqa: E402

MEDIUM = "pointmaze-medium-stitch-v0"


class TinyTrajectoryPrior(nn.Module):
    """A random-weight stand-in with TrajectoryPrior's interface: ε-prediction over
    normalised (160, 2) xy segments, normalize/unnormalize an affine map of the maze box."""

    sample_shape = (160, 2)
    supports_grad = True

    def __init__(self, seed: int = 0, env_name: str | None = None) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Conv1d(3, 8, 5, padding=2), nn.SiLU(), nn.Conv1d(8, 2, 5, padding=2))
        self.alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 100), 0)
        self.lo, self.hi = torch.tensor([-6.0, -6.0]), torch.tensor([26.0, 26.0])
        if env_name is not None:
            self.env_name = env_name

    def normalize(self, xy):
        return 2 * (torch.as_tensor(xy, dtype=torch.float32) - self.lo) / (self.hi - self.lo) - 1

    def unnormalize(self, x):
        return (torch.as_tensor(x) + 1) / 2 * (self.hi - self.lo) + self.lo

    def denoise(self, x_t, t, **cond):
        if tuple(x_t.shape[1:]) != self.sample_shape:
            raise ValueError(f"x_t must be (M, 160, 2), got {tuple(x_t.shape)}")
        a = self.alphas_cumprod[t].view(-1, 1, 1)
        h = torch.cat([x_t.transpose(1, 2), (t.float() / 100).view(-1, 1, 1).expand(-1, 1, x_t.shape[1])], 1)
        eps = self.net(h).transpose(1, 2)
        return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


@pytest.fixture(scope="module")
def maze():
    return Maze.from_name(MEDIUM)


@pytest.fixture(scope="module")
def prior():
    return TinyTrajectoryPrior()


def test_tiny_prior_passes_contract(prior):
    from cofi.testing import check_prior

    check_prior(prior)


# ---------------------------------------------------------------- maze helpers
def test_env_names_and_counts():
    assert parse_env_name("pointmaze-giant-stitch-v0") == ("giant", "pointmaze-giant-v0")
    assert parse_env_name("large") == ("large", "pointmaze-large-v0")
    assert [default_count(f"pointmaze-{m}-stitch-v0") for m in ("medium", "large", "giant")] == [3, 6, 8]
    with pytest.raises(ValueError, match="unknown maze"):
        parse_env_name("pointmaze-huge-stitch-v0")
    with pytest.raises(ValueError, match="unknown maze"):
        default_count("antmaze-huge-stitch-v0")


def test_antmaze_names_counts_and_maze():
    from cofi.planning.maze import agent_of

    assert parse_env_name("antmaze-giant-stitch-v0") == ("giant", "antmaze-giant-v0")
    assert parse_env_name("antmaze-medium-v0") == ("medium", "antmaze-medium-v0")
    assert [agent_of(n) for n in ("antmaze-large-stitch-v0", "pointmaze-large-stitch-v0", "large")] == \
        ["ant", "point", "point"]
    # the ant covers ~2/3 of the point's distance per window: more windows per route
    ant = [default_count(f"antmaze-{m}-stitch-v0") for m in ("medium", "large", "giant")]
    point = [default_count(f"pointmaze-{m}-stitch-v0") for m in ("medium", "large", "giant")]
    assert all(a > p for a, p in zip(ant, point))
    am, pm = Maze.from_name("antmaze-medium-stitch-v0"), Maze.from_name(MEDIUM)
    np.testing.assert_array_equal(am.maze_map, pm.maze_map)  # the same map, another agent
    assert (am.agent, am.goal_tol, pm.agent, pm.goal_tol) == ("ant", 0.5, "point", 1.0)
    from cofi.planning.evaluate import make_env, max_steps_for

    assert [max_steps_for(f"{a}maze-{m}-stitch-v0") for a in ("point", "ant") for m in ("large", "giant")] == \
        [1000, 1000, 1000, 2000]
    env = make_env("antmaze-giant-stitch-v0", 2000)
    assert env.spec.max_episode_steps == 2000 and make_env(MEDIUM).spec.max_episode_steps == 1000
    env.close()
    p = TinyTrajectoryPrior(env_name="antmaze-medium-stitch-v0")
    out = plan(p, (0, 0), (20, 20), planning_sampler("gsc", steps=2), batch=1)
    assert out.layout.count == default_count("antmaze-medium-stitch-v0")


def test_maze_cells_and_coordinates(maze):
    assert maze.shape == (8, 8) and maze.unit == 4.0 and maze.goal_tol == 1.0
    free = maze.free_cells()
    assert len(free) == int((maze.maze_map == 0).sum()) == 26
    centres = maze.ij_to_xy(free)
    np.testing.assert_array_equal(maze.xy_to_ij(centres), free)
    np.testing.assert_array_equal(maze.xy_to_ij(centres + 1.9), free)  # anywhere inside the cell
    assert maze.is_free(centres).all()
    assert not maze.is_free(maze.ij_to_xy(maze.wall_cells())).any()
    assert not maze.is_free([[-100.0, 0.0]])[0]  # outside the map
    assert maze.is_free([[0.0, 0.0]], margin=0.7)[0] and not maze.is_free([[1.5, -1.5]], margin=0.7)[0]


def test_wall_crossing(maze):
    # medium row 1: cells (1,1) (1,2) free, (1,3) wall; column 1: (1,1) (2,1) free, (3,1) wall
    corridor = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]])
    through = np.array([[4.0, 0.0], [8.0, 0.0], [12.0, 0.0]])  # straight through wall cell (1,3)
    assert not maze.crosses_wall(corridor)
    assert maze.crosses_wall(through)
    assert maze.segment_collisions(through).tolist() == [True, True]
    # one segment with both ends free and a wall in the middle: column 2, cells (2,2) free … (5,2) wall … (6,2) free
    assert maze.is_free([[4.0, 4.0], [4.0, 20.0]]).all()
    assert maze.crosses_wall(np.array([[4.0, 4.0], [4.0, 20.0]]))
    assert not maze.crosses_wall(np.array([[4.0, 4.0], [4.0, 12.0]]))
    ok = maze.check_plan(corridor, goal_xy=[4.5, 0.0])
    assert ok.valid and ok.reaches_goal and not ok.crosses_wall
    bad = maze.check_plan(through, goal_xy=[12.0, 0.0])
    assert not bad.valid and bad.crosses_wall and bad.first_collision == 0
    far = maze.check_plan(corridor, goal_xy=[0.0, 4.0])
    assert not far.valid and not far.reaches_goal


def test_shortest_path_is_wall_free(maze):
    pl = maze.shortest_path([0.3, -0.2], [20.5, 19.6])
    np.testing.assert_array_equal(pl[0], [0.3, -0.2])
    np.testing.assert_array_equal(pl[-1], [20.5, 19.6])
    assert not maze.crosses_wall(pl)


# ---------------------------------------------------------------- controller
def test_waypoint_action_is_clipped():
    np.testing.assert_allclose(waypoint_action([0, 0], [0.1, -0.1]), [0.5, -0.5])
    np.testing.assert_allclose(waypoint_action([0, 0], [10.0, -0.1]), [1.0, -0.5])
    np.testing.assert_allclose(waypoint_action([0, 0], [0.1, 0.0], gain=1.0), [0.1, 0.0])


def test_controller_reaches_waypoint_in_free_space():
    env = make_env(MEDIUM)
    try:
        _reset(env, 1, 0)
        env.unwrapped.set_xy(np.array([0.0, 0.0]))
        target = np.array([4.0, 0.5])  # the next free cell of the corridor
        ctrl = WaypointController(np.array([[0.0, 0.0], [2.0, 0.25], target]))
        xy = env.unwrapped.get_xy()
        for _ in range(60):
            ob, *_ = env.step(ctrl.act(xy))
            xy = ob[:2]
        assert np.linalg.norm(xy - target) < 0.05
        assert ctrl.index == 2
    finally:
        env.close()


def test_episode_problem_is_the_task_with_seeded_noise():
    env = make_env(MEDIUM)
    try:
        info = env.unwrapped.task_infos[2]  # task 3
        start, goal, gen = episode_problem(env, 3, seed=0)
        assert np.abs(start - np.array(info["init_xy"])).max() <= 1.0  # OGBench's ±1 uniform noise
        assert np.abs(goal - np.array(info["goal_xy"])).max() <= 1.0
        np.testing.assert_array_equal(goal, env.unwrapped.cur_goal_xy)
        again = episode_problem(env, 3, seed=0)
        np.testing.assert_array_equal(again[0], start)
        np.testing.assert_array_equal(again[1], goal)
        assert torch.equal(torch.rand(3, generator=again[2]), torch.rand(3, generator=gen))
        other = episode_problem(env, 3, seed=1)
        assert not np.array_equal(other[0], start) and other[2].initial_seed() != gen.initial_seed()
    finally:
        env.close()


def test_controller_does_not_cycle_on_sparse_plans():
    # plan points 3 apart (> 2·lookahead): aiming at the nearest point (the old inclusive
    # search) swung the agent back and forth about 1.0 from the first point forever
    plan = np.array([[0.0, 0.0], [3.0, 0.0], [6.0, 0.0], [9.0, 0.0]])
    ctrl = WaypointController(plan)
    xy = plan[0].copy()
    for _ in range(80):  # free-space point agent: xy += 0.2·a
        xy = xy + 0.2 * ctrl.act(xy)
    assert np.linalg.norm(xy - plan[-1]) < 0.05
    assert ctrl.index == len(plan) - 1


def test_controller_follows_a_dead_end_and_back():
    # a composed plan that goes up a dead end, hovers there, comes back and turns right
    # (as a real medium plan did): the old "first point >= 1.0 away" rule aimed at the way
    # back while the agent was still on the way up, and the agent swung about forever
    up = np.stack([np.full(30, 4.0), np.linspace(10.3, 12.0, 30)], 1)
    hover = np.array([4.0, 12.0]) + 0.05 * np.random.default_rng(0).standard_normal((60, 2))
    down = np.stack([np.full(30, 4.0), np.linspace(12.0, 10.3, 30)], 1)
    right = np.stack([np.linspace(4.0, 10.0, 40), np.full(40, 10.3)], 1)
    plan = np.concatenate([up, hover, down, right])
    ctrl = WaypointController(plan)
    xy, top = plan[0].copy(), 0.0
    for _ in range(300):
        xy = xy + 0.2 * ctrl.act(xy)
        top = max(top, xy[1])
    assert np.linalg.norm(xy - plan[-1]) < 0.05 and ctrl.index == len(plan) - 1
    assert top > 11.5  # it did go up the dead end (it follows the plan, not a shortcut)


def test_controller_passes_a_plan_that_stands_still():
    # padded training windows start with exact copies of one state; argmin's first-tie
    # choice held the index at the first copy, and the waypoint 4 points later was the same
    # point, so the agent stopped for good
    plan = np.concatenate([np.linspace([0.0, 0.0], [2.0, 0.0], 10), np.repeat([[2.0, 0.0]], 30, 0),
                           np.linspace([2.0, 0.0], [2.0, 3.0], 15)])
    ctrl = WaypointController(plan)
    xy = plan[0].copy()
    for _ in range(120):
        xy = xy + 0.2 * ctrl.act(xy)
    assert np.linalg.norm(xy - plan[-1]) < 0.05


def test_controller_stops_at_wall():
    env = make_env(MEDIUM)
    try:
        _reset(env, 1, 0)
        env.unwrapped.set_xy(np.array([4.0, 0.0]))  # free cell (1,2); cell (1,3) at x in [6, 10] is a wall
        ctrl = WaypointController(np.array([[4.0, 0.0], [12.0, 0.0]]))  # waypoint behind the wall
        xy = env.unwrapped.get_xy()
        xs = []
        for _ in range(100):
            ob, *_ = env.step(ctrl.act(xy))
            xy = ob[:2]
            xs.append(xy[0])
        assert max(xs) < 6.0 - 0.6  # the ball (radius 0.7) stays in front of the wall face at x = 6
        assert max(xs) > 5.0  # … after driving up to it
    finally:
        env.close()


def test_controller_rejects_bad_plans():
    with pytest.raises(ValueError, match="shape"):
        WaypointController(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        WaypointController(np.array([[0.0, np.nan]]))


# ---------------------------------------------------------------- planner
@pytest.mark.parametrize("method,hard", [("cofi", True), ("cofi", False), ("gsc", True), ("cdgs", True)])
def test_plan_pins_start_and_goal(prior, method, hard):
    start, goal = np.array([0.3, -0.4]), np.array([20.2, 19.7])
    sampler = planning_sampler(method, steps=4, **({"inner": 2} if method == "cdgs" else {}))
    out = plan(prior, start, goal, sampler, batch=3, generator=torch.Generator().manual_seed(0), maze=MEDIUM,
               hard_pins=hard)
    L = planning_layout(3).length
    assert out.xy.shape == (L, 2) and L == 368
    assert out.windows.shape == (3, 160, 2)
    np.testing.assert_array_equal(out.xy[0], start)
    np.testing.assert_array_equal(out.xy[-1], goal)
    np.testing.assert_allclose(out.windows[0, 0], start, atol=1e-4)
    np.testing.assert_allclose(out.windows[-1, -1], goal, atol=1e-4)
    assert out.nfe == sampler.nfe(out.layout, 3) and out.time_s > 0 and np.isfinite(out.xy).all()


def test_upsample_interpolates_linearly_between_points():
    from cofi.planning.planner import upsample

    xy = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 2.0]])
    up = upsample(xy, 4)
    assert up.shape == (9, 2)
    np.testing.assert_allclose(up[::4], xy)  # every stride-th point is an original one
    np.testing.assert_allclose(up[:5, 0], [0, 1, 2, 3, 4])
    np.testing.assert_allclose(up[4:, 1], [0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(upsample(xy, 1), xy)
    with pytest.raises(ValueError, match="stride"):
        planning_layout(3, stride=3)  # 3 does not divide 160
    layout = planning_layout(8, stride=4)
    assert (layout.window, layout.overlap) == (40, 14) and (layout.length - 1) * 4 + 1 == 104 * 8 + 56 - 3


@pytest.fixture(scope="module")
def closed_form(tmp_path_factory):
    from cofi.planning.data import generate_dataset
    from cofi.priors import EmpiricalPrior

    path, _ = generate_dataset(MEDIUM, tmp_path_factory.mktemp("data"), episodes=60, val_episodes=1, seed=0,
                               progress=False)
    return EmpiricalPrior.from_stitch_data(path, top_k=16)


def test_plan_with_the_strided_closed_form_prior(closed_form):
    """The stride-4 EmpiricalPrior plans on 40-point windows; the executed plan is
    interpolated to env steps, and exact pin conditioning attaches the end windows: the plan
    leaves the start and arrives at the goal at the agent's speed, without a jump."""
    prior = closed_form
    assert prior.sample_shape == (40, 2) and prior.stride == 4 and prior.size == 60 * 27
    bank = prior.unnormalize(prior.bank.reshape(-1, 40, 2)).numpy()
    start, goal = bank[0, 0], bank[5, -1]  # where a training window starts, where another ends
    # with consensus coupling on (κ = 5): its cap (consensus_snr_max = 10) keeps the pins in
    # charge near clean data; uncapped, on this 60-episode bank the end window left the goal
    sampler = planning_sampler("cofi", prior=prior)
    out = plan(prior, start, goal, sampler, batch=4, generator=torch.Generator().manual_seed(0), maze=MEDIUM)
    assert out.windows.shape == (3, 40, 2) and out.raw_xy.shape == (out.layout.length, 2)
    assert out.xy.shape == ((out.layout.length - 1) * 4 + 1, 2)
    np.testing.assert_allclose(out.xy[::4][1:-1], out.raw_xy[1:-1], atol=1e-5)
    np.testing.assert_allclose(out.raw_xy[[0, -1]], np.stack([start, goal]), atol=1e-4)
    # the agent moves at most 0.2·√2 per step: 4 steps are 1.13 (the data's own top speed)
    assert np.linalg.norm(out.raw_xy[1] - start) < 1.2 and np.linalg.norm(out.raw_xy[-2] - goal) < 1.2


def test_closed_form_plans_with_consensus(closed_form):
    """The closed-form prior of stitch data plans with consensus coupling (κ = 5) by default,
    for every method that conditions on neighbours (CoFi, CD, CDGS; GSC composes unconditional
    scores); the windows of a consensus plan agree on their overlaps more closely than
    without it, from the same noise."""
    assert closed_form.planning_consensus == 5.0
    assert all(planning_sampler(m, prior=closed_form).consensus == 5.0 for m in ("cofi", "cd", "cdgs"))
    assert planning_sampler("gsc", prior=closed_form).consensus == 0.0
    cd = planning_sampler("cd", prior=closed_form)
    assert type(cd) is type(planning_sampler("gsc")) and cd == planning_sampler("gsc", prior=closed_form, consensus=5.0)
    bank = closed_form.unnormalize(closed_form.bank.reshape(-1, 40, 2)).numpy()
    err = {0.0: [], 5.0: []}
    # starts and goals of different episodes (27 windows each), 6 and 15 units apart; 3 seeds
    for a, b in ((0, 27 * 5 + 26), (27 * 10, 27 * 30 + 26)):
        for seed in range(3):
            for kappa in err:
                s = planning_sampler("cofi", prior=closed_form, consensus=kappa, steps=10)
                out = plan(closed_form, bank[a, 0], bank[b, -1], s, batch=4,
                           generator=torch.Generator().manual_seed(seed), maze=MEDIUM)
                w = out.windows
                err[kappa].append(np.mean([np.abs(w[i, -14:] - w[i + 1, :14]).mean() for i in range(len(w) - 1)]))
    assert np.mean(err[5.0]) < 0.6 * np.mean(err[0.0]), err


def test_plan_is_a_function_of_the_seed(prior):
    a = plan(prior, (0, 0), (20, 20), planning_sampler("cofi", steps=4), batch=2,
             generator=torch.Generator().manual_seed(3), maze=MEDIUM)
    b = plan(prior, (0, 0), (20, 20), planning_sampler("cofi", steps=4), batch=2,
             generator=torch.Generator().manual_seed(3), maze=MEDIUM)
    np.testing.assert_array_equal(a.xy, b.xy)


def test_consistency_selection_picks_the_prior_s_favourite(prior):
    """``select="consistency"`` executes the candidate with the lowest `self_consistency`,
    drawn from the generator right after the composition, and counts its prior calls."""
    from cofi.planning.planner import CONSISTENCY, CONSISTENCY_NFE
    from cofi.steps import self_consistency

    s = planning_sampler("cofi", steps=4)
    g = torch.Generator().manual_seed(5)
    ref = plan(prior, (0, 0), (20, 20), s, batch=6, generator=g, maze=MEDIUM)
    score = self_consistency(prior, ref.plans, generator=g, **CONSISTENCY)   # g: where the plan left it
    out = plan(prior, (0, 0), (20, 20), s, batch=6, generator=torch.Generator().manual_seed(5), maze=MEDIUM,
               select="consistency")
    assert out.best == int(torch.argmin(score))
    assert out.nfe == ref.nfe + CONSISTENCY_NFE * 6 * out.layout.count
    torch.testing.assert_close(out.canvas, ref.canvas)      # the same candidates, another choice
    np.testing.assert_allclose(out.raw_xy, prior.unnormalize(out.canvas[out.best]).double().numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="select"):
        plan(prior, (0, 0), (20, 20), s, batch=2, maze=MEDIUM, select="likelihood")


def test_plan_presets():
    s = planning_sampler("cofi")
    assert s.fusion is False and s.guidance > 0 and s.schedule == "linear" and s.refine_at == 0.4 and s.refine_step == 8
    assert planning_sampler("gsc").fusion is False
    assert planning_sampler("cdgs").inner == 10
    assert planning_sampler("cofi", steps=50).refine_step == 20
    # the weight follows the prior when not given: a network stores a lower one than the default 20
    class _Prior:
        planning_guidance = 2.0
    assert planning_sampler("cofi").guidance == 20.0 and planning_sampler("gsc", prior=_Prior()).guidance == 2.0
    assert planning_sampler("cofi", prior=_Prior(), guidance=7.0).guidance == 7.0
    with pytest.raises(ValueError, match="method"):
        planning_sampler("diffuser")
    # CD is GSC with neighbour-conditioned scores: a prior that cannot read them is refused
    with pytest.raises(ValueError, match=r"'cd'.*planning_consensus > 0.*_Prior.*use 'gsc'"):
        planning_sampler("cd", prior=_Prior())
    with pytest.raises(ValueError, match="'cd'"):
        planning_sampler("cd")


def test_plan_errors(prior):
    with pytest.raises(ValueError, match="inside a wall"):
        plan(prior, (8.0, 0.0), (20, 20), "gsc", maze=MEDIUM)  # cell (1,3) is a wall
    with pytest.raises(ValueError, match="goal_xy"):
        plan(prior, (0.0, 0.0), (100.0, 0.0), "gsc", maze=MEDIUM)
    with pytest.raises(ValueError, match="unknown maze"):
        plan(prior, (0.0, 0.0), (20, 20), "gsc", maze="pointmaze-tiny-stitch-v0")
    with pytest.raises(ValueError, match="count"):
        plan(prior, (0.0, 0.0), (20, 20), "gsc")  # no maze, no count
    with pytest.raises(ValueError, match="method"):
        plan(prior, (0.0, 0.0), (20, 20), "beam", maze=MEDIUM)


def test_plan_reads_env_name_from_prior():
    p = TinyTrajectoryPrior(env_name=MEDIUM)
    out = plan(p, (0, 0), (20, 20), planning_sampler("gsc", steps=2), batch=1)
    assert out.layout.count == 3


# ---------------------------------------------------------------- plan and execute
def test_evaluate_smoke(prior):
    recs = evaluate(MEDIUM, prior, "cofi", tasks=(1, 3), steps=3, batch=2, max_steps=60, max_replans=2,
                    keep_paths=True)
    assert len(recs) == 2 and all(isinstance(r, EpisodeRecord) for r in recs)
    for r in recs:
        assert r.env_name == MEDIUM and r.method == "cofi" and r.task in (1, 3)
        assert isinstance(r.success, bool) and isinstance(r.plan_valid, bool)
        assert 1 <= r.steps <= 60 and 0 <= r.replans <= 2
        # a replan composes what is left of the plan (at most as many windows as before) or,
        # if the agent is still where the previous plan started, one more
        counts = [w.shape[0] for w in r.windows]
        assert counts[0] == 3 and min(counts) >= 1
        for k in range(1, len(counts)):
            if np.linalg.norm(r.plans[k][0] - r.plans[k - 1][0]) < 1.0:
                assert counts[k] == min(3, counts[k - 1] + 1)
            else:
                assert counts[k] <= counts[k - 1]
        assert r.nfe == r.first_plan_nfe * sum(counts) // 3 and r.plan_time_s >= r.first_plan_time_s > 0
        assert r.path.shape == (r.steps + 1, 2) and len(r.plans) == 1 + r.replans
        assert r.plan_steps[0] == 0 and len(r.plan_steps) == len(r.plans)
        assert all(a < b for a, b in zip(r.plan_steps, r.plan_steps[1:])) and r.plan_steps[-1] <= r.steps
        for k, a in enumerate(r.plan_steps):  # each plan starts where the agent was when it was made
            np.testing.assert_allclose(r.plans[k][0], r.path[a], atol=1e-9)
        assert set(r.to_dict()) >= {"success", "steps", "replans", "nfe", "plan_time_s", "plan_valid", "plan_in_wall"}
        assert r.plan_in_wall == pytest.approx(float((~Maze.from_name(MEDIUM).is_free(r.plans[0])).mean()))
    # same seeds, same episodes
    again = evaluate(MEDIUM, prior, "cofi", tasks=(1,), steps=3, batch=2, max_steps=60, max_replans=2)
    untimed = lambda r: {k: v for k, v in r.to_dict().items() if not k.endswith("time_s")}  # noqa: E731
    assert untimed(again[0]) == untimed(recs[0])
    back = EpisodeRecord.from_dict(json.loads(json.dumps({**recs[0].to_dict(), "label": "x"})))
    assert back.to_dict() == recs[0].to_dict() and back.path is None
    rows = summarize(recs)
    assert rows[0]["episodes"] == 2 and "| medium | cofi |" in markdown_table(rows)


def test_replan_count():
    from cofi.planning.evaluate import replan_count

    assert replan_count(8, 8, 0.3, moved=5.0) == 6  # ⌈8 · 0.7⌉: what is left of the plan
    assert replan_count(8, 8, 0.99, moved=5.0) == 1 and replan_count(3, 8, 0.0, moved=1.0) == 3
    assert replan_count(2, 8, 0.5, moved=0.2) == 3  # stuck where the plan started: one window more ...
    assert replan_count(8, 8, 0.5, moved=0.0) == 8  # ... at most N
    assert replan_count(2, 8, 0.5, moved=0.5, min_move=0.4) == 1


def test_evaluate_takes_a_controller_factory_that_reads_the_observation(prior):
    seen = []

    class Still(WaypointController):  # records what it is given, never moves
        def act(self, ob):
            seen.append(np.array(ob))
            self.update(ob[:2])
            return np.zeros(2)

    recs = evaluate(MEDIUM, prior, "gsc", tasks=(1,), steps=2, batch=1, max_steps=50, max_replans=1,
                    stall_steps=10, controller=lambda plan_xy: Still(plan_xy), keep_paths=True)
    r = recs[0]
    assert not r.success and r.steps == 50 and len(seen) == 50 + r.replans
    np.testing.assert_allclose(seen[0], r.path[0])  # the point's observation is its xy
    assert np.ptp(r.path, axis=0).max() < 0.5  # a still agent
    assert r.replans == 1  # it stalls, replans once (max_replans), then stands
    with pytest.raises(TypeError, match="controller"):
        evaluate(MEDIUM, prior, "gsc", tasks=(1,), steps=2, batch=1, max_steps=5, controller=3)


def test_evaluate_errors(prior):
    with pytest.raises(ValueError, match="unknown maze"):
        evaluate("pointmaze-tiny-stitch-v0", prior)
    with pytest.raises(ValueError, match="tasks"):
        evaluate(MEDIUM, prior, tasks=(0,))


def test_plot_plan(tmp_path, maze):
    from cofi.viz import plot_plan

    pl = maze.shortest_path([0.0, 0.0], [20.0, 20.0])
    layout = planning_layout(3)
    xy = np.concatenate([pl, np.repeat(pl[-1:], max(0, layout.length - len(pl)), 0)])[: layout.length]
    out = tmp_path / "plan.png"
    fig = plot_plan(maze, xy, layout, path=pl[::3], save=str(out))
    assert out.stat().st_size > 1000 and len(fig.axes) == 1


def test_plot_episode_draws_every_executed_plan(tmp_path, maze):
    from cofi.viz import plot_episode

    pl = maze.shortest_path([0.0, 0.0], [20.0, 20.0])
    path, replan = pl[::2], pl[len(pl) // 2:]
    out = tmp_path / "episode.png"
    fig = plot_episode(maze, [pl, replan], path, [0, len(path) // 2], save=str(out))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert out.stat().st_size > 1000 and labels[:2] == ["first plan", f"replan 1 (step {len(path) // 2})"]
    alphas = [line.get_alpha() for line in fig.axes[0].lines if line.get_label() in labels[:2]]
    assert alphas[0] < alphas[1]  # the older plan is fainter
    with pytest.raises(ValueError, match="one start step per plan"):
        plot_episode(maze, [pl, replan], path, [0])
