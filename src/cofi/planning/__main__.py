"""Command line: ``python -m cofi.planning generate|train ...``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m cofi.planning", description="cofi planning domain tools")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="regenerate an OGBench PointMaze stitch or Scene play dataset")
    g.add_argument("--env", required=True,
                   help="pointmaze-{medium,large,giant}-stitch-v0, antmaze-{medium,large,giant}-stitch-v0 or scene-play-v0")
    g.add_argument("--out", default="data")
    g.add_argument("--episodes", type=int, default=None, help="default: 5000 (PointMaze), 1000 (scene)")
    g.add_argument("--val-episodes", type=int, default=None, help="default: 500 (PointMaze), 100 (scene)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--expert", default=None,
                   help="antmaze only: the ant expert's training directory (python -m cofi.planning.ant_expert)")
    g.add_argument("--threads", type=int, default=1,
                   help="torch threads (antmaze: the expert's one-observation forward is fastest on one)")
    g.add_argument("--workers", type=int, default=1, help="scene-play-v0 only: processes sharing the chunks")
    g.add_argument("--no-resume", action="store_true",
                   help="scene-play-v0 only: regenerate the chunks already in <out>/scene-play-v0.parts")
    t = sub.add_parser("train", help="train a TrajectoryPrior on a generated dataset (resumable)")
    from .train import add_train_args

    add_train_args(t)
    args = p.parse_args(argv)
    if args.cmd == "generate":
        import torch

        torch.set_num_threads(args.threads)
        if args.env == "scene-play-v0":
            from .scene import generate_scene

            try:  # bad counts, or chunks made with other settings: a usage error (exit 2)
                paths = generate_scene(args.out, 1000 if args.episodes is None else args.episodes,
                                       100 if args.val_episodes is None else args.val_episodes, args.seed,
                                       workers=args.workers, resume=not args.no_resume)
            except ValueError as e:
                g.error(str(e))
        else:
            from .data import generate_dataset

            try:
                paths = generate_dataset(args.env, args.out, 5000 if args.episodes is None else args.episodes,
                                         500 if args.val_episodes is None else args.val_episodes, args.seed,
                                         expert=args.expert)
            except (ValueError, FileNotFoundError) as e:
                g.error(str(e))
        print("wrote", *paths)
    else:
        from .train import TrainingSetupError, train_from_args

        try:  # a bad argument, or inputs / a run directory training cannot use: a usage error (exit 2)
            train_from_args(args, sys.argv if argv is None else ["python -m cofi.planning", *argv])
        except TrainingSetupError as e:
            t.error(str(e))


if __name__ == "__main__":
    main()
