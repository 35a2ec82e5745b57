"""Command line: ``python -m cofi.planning generate|train ...``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m cofi.planning", description="cofi planning domain tools")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="regenerate an OGBench PointMaze stitch dataset")
    g.add_argument("--env", required=True, help="pointmaze-{medium,large,giant}-stitch-v0")
    g.add_argument("--out", default="data")
    g.add_argument("--episodes", type=int, default=5000)
    g.add_argument("--val-episodes", type=int, default=500)
    g.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("train", help="train a TrajectoryPrior on a generated dataset (resumable)")
    from .train import add_train_args

    add_train_args(t)
    args = p.parse_args(argv)
    if args.cmd == "generate":
        from .data import generate_dataset

        paths = generate_dataset(args.env, args.out, args.episodes, args.val_episodes, args.seed)
        print("wrote", *paths)
    else:
        from .train import TrainingSetupError, train_from_args

        try:  # a bad argument, or inputs / a run directory training cannot use: a usage error (exit 2)
            train_from_args(args, sys.argv if argv is None else ["python -m cofi.planning", *argv])
        except TrainingSetupError as e:
            t.error(str(e))


if __name__ == "__main__":
    main()
