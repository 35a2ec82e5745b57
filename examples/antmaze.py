"""Plan and execute one OGBench AntMaze task with a composed diffusion plan (CPU, about a minute).

    python examples/antmaze.py                        # giant maze, task 1, CoFi
    python examples/antmaze.py --env antmaze-large-stitch-v0 --task 3 --method gsc

The plan is where the ant's torso should go (x-y): the shipped 160-step prior of the maze,
trained on the ant's stitch data, composes N windows (11 for giant) into a start-to-goal plan.
The ant's eight joints follow it with the shipped inverse-dynamics model (`antmaze-invdyn`: the
observation and the plan's x-y 8 and 16 steps ahead -> the action), and the episode replans when
the torso strays more than 2.0 from the plan. Success: within 0.5 of the goal in 1000 steps (giant:
2000). The figure shows the executed plans and the path, as `examples/pointmaze.py`, whose script
this is.
"""

from __future__ import annotations

from pointmaze import main

if __name__ == "__main__":
    main(env="antmaze-giant-stitch-v0", out="antmaze_plan.png", description=__doc__)
