"""Robustness of `python -m cofi.planning train` and of the checkpoints it writes: arguments
checked before anything is written, errors that name the flag or the file, resumes refused when
the settings changed, and saves that a kill at any moment cannot corrupt."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cofi.planning.__main__ import main
from cofi.planning.train import TrainingSetupError, add_train_args, read_state, train, validate_train_args
from cofi.priors.trajectory import TrajectoryPrior, cosine_alphas_cumprod, read_safetensors
from cofi.priors.unet1d import TemporalUNet, UNet1DConfig

TINY = ["--dim", "8", "--dim-mults", "1", "2", "--T", "20", "--batch", "4", "--grid", "8", "--every", "1"]


def _toy_data(folder: Path) -> Path:
    """12 training and 4 validation random-walk episodes in OGBench's layout."""
    eps = np.cumsum(np.random.default_rng(0).normal(size=(12, 201, 2)), axis=1).astype(np.float32)
    for name, e in (("toy.npz", eps), ("toy-val.npz", eps[:4])):
        np.savez(folder / name, observations=e.reshape(-1, 2))
    return folder / "toy.npz"


def _argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--out", str(out), *TINY, *extra]


def _args(data: Path, out: Path, *extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_train_args(p)
    return p.parse_args(_argv(data, out, *extra))


@pytest.fixture
def data(tmp_path):
    return _toy_data(tmp_path)


# ---------------------------------------------------------------------------- arguments
BAD = [
    (["--steps", "0"], "--steps must be an int >= 1, got 0"),
    (["--steps", "-5"], "--steps must be an int >= 1"),
    (["--every", "0"], "--every must be an int >= 1, got 0"),
    (["--batch", "0"], "--batch must be an int >= 1, got 0"),
    (["--T", "0"], "--T must be an int >= 1"),
    (["--cond-prob", "2"], "--cond-prob must be a finite number in [0, 1], got 2.0"),
    (["--cond-prob", "nan"], "--cond-prob must be a finite number in [0, 1]"),
    (["--evidence-prob", "-0.1"], "--evidence-prob must be a finite number in [0, 1]"),
    (["--lr", "inf"], "--lr must be a finite number >= 0"),
    (["--lr=-1e-3"], "--lr must be a finite number >= 0"),
    (["--scale", "0"], "--scale must be a finite number > 0"),
    (["--ema", "1.5"], "--ema must be a finite number in [0, 1]"),
    (["--stride", "0"], "--stride must be an int in [1, 160]"),
    (["--stride", "7"], "--stride must divide the window of 160 env steps"),
    (["--pad", "-1"], "--pad must be an int >= 0"),
    (["--bank-every", "0"], "--bank-every must be an int >= 1"),
    (["--bank-sample", "-1"], "--bank-sample must be an int >= 0"),
    (["--evidence-kappa", "0", "1"], "--evidence-kappa must be two finite numbers LO HI with 0 < LO <= HI"),
    (["--evidence-kappa", "5", "1"], "--evidence-kappa must be two finite numbers"),
    (["--fourier", "-1"], "--fourier must be an int >= 0"),
    (["--grid", "1"], "--grid must be 0 (no grid) or an int >= 2, got 1"),
    (["--grid-dim", "0"], "--grid-dim must be an int >= 1"),
    (["--grid-smooth", "4"], "--grid-smooth must be odd ints >= 1"),
    (["--grid", "0", "--grid-smooth", "3"], "--grid-smooth 3 needs a feature grid"),
    (["--dim", "0"], "--dim must be an int >= 1"),
    (["--dim", "12"], "--dim × each of --dim-mults must be a multiple of 8"),
    (["--dim-mults", "0"], "--dim-mults must be one or more ints >= 1"),
    (["--dim-mults", "1", "1", "1", "1", "1"], "--dim-mults 1 1 1 1 1 (4 halvings) needs divisible by 16"),
    (["--stride", "80", "--dim-mults", "1", "--evidence-prob", "0.5"], "--evidence-prob > 0 needs --stride <= 56"),
    (["--seed", "-1"], "--seed must be an int in [0, "),
    (["--threads", "0"], "--threads must be an int >= 1"),
    (["--stop-at", "0"], "--stop-at must be an int >= 1"),
    (["--env", " "], "--env must be a non-empty name"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_cli_rejects_a_bad_argument_by_name_and_writes_nothing(data, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["train", *_argv(data, out, *extra)])
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(TrainingSetupError) as err:  # the function checks the same way
        train(_args(data, out, *extra), "test")
    assert message in str(err.value)
    assert not out.exists()


def test_train_function_checks_types_and_fills_defaults(data, tmp_path):
    out = tmp_path / "run"
    base = vars(_args(data, out))
    for dest, value, message in [("steps", 2.5, "--steps must be an int >= 1, got 2.5"),
                                 ("steps", True, "--steps must be an int >= 1, got True"),
                                 ("cond_prob", "0.5", "--cond-prob must be a finite number in [0, 1], got '0.5'"),
                                 ("grid_wiener", "yes", "--grid-wiener must be a bool"),
                                 ("dim_mults", "12", "--dim-mults must be one or more ints"),
                                 ("evidence_kappa", (1.0,), "--evidence-kappa must be two finite numbers"),
                                 ("target", "x0", "--target must be 'stf' or 'plain', got 'x0'"),
                                 ("prediction", "v", "--prediction must be 'epsilon', 'sample' or 'v_prediction'")]:
        with pytest.raises(TrainingSetupError) as e:
            train(argparse.Namespace(**dict(base, **{dest: value})), "test")
        assert message in str(e.value), (dest, str(e.value))
    with pytest.raises(TrainingSetupError, match="--out is required"):
        validate_train_args({"data": str(data)})
    full = validate_train_args({"data": str(data), "out": str(out), "dim_mults": [1, 2]})
    assert full.steps == 12000 and full.dim_mults == (1, 2) and full.evidence_kappa == (0.5, 20.0)
    assert isinstance(TrainingSetupError("x"), ValueError)
    assert not out.exists()


def test_data_must_be_an_existing_npz_with_its_validation_split(data, tmp_path, capsys):
    """Without the .npz suffix the validation path used to be derived as the training file
    itself (``str.replace('.npz', '-val.npz')`` changed nothing): validation on training data."""
    bare = tmp_path / "toy"
    bare.write_bytes(data.read_bytes())
    out = tmp_path / "run"
    with pytest.raises(TrainingSetupError, match=r"--data must be a \.npz file .*'.*toy'"):
        train(_args(bare, out, "--steps", "1"), "test")
    with pytest.raises(TrainingSetupError, match="--data '.*nothing.npz': no such file"):
        train(_args(tmp_path / "nothing.npz", out, "--steps", "1"), "test")
    lonely = tmp_path / "lonely.npz"
    lonely.write_bytes(data.read_bytes())
    with pytest.raises(TrainingSetupError, match="its validation split '.*lonely-val.npz' is missing"):
        train(_args(lonely, out, "--steps", "1"), "test")
    # a directory name containing ".npz" does not change the derived validation path
    odd = tmp_path / "set.npz.d"
    odd.mkdir()
    (odd / "toy.npz").write_bytes(data.read_bytes())
    with pytest.raises(TrainingSetupError, match=r"validation split '.*set\.npz\.d/toy-val\.npz' is missing"):
        train(_args(odd / "toy.npz", out, "--steps", "1"), "test")
    # unreadable content names the file
    np.savez(tmp_path / "bad.npz", positions=np.zeros((201, 2)))
    np.savez(tmp_path / "bad-val.npz", observations=np.zeros((201, 2)))
    with pytest.raises(TrainingSetupError, match="--data '.*bad.npz': cannot read OGBench-layout episodes"):
        train(_args(tmp_path / "bad.npz", out, "--steps", "1"), "test")
    with pytest.raises(SystemExit) as e:
        main(["train", *_argv(tmp_path / "nothing.npz", out)])
    assert e.value.code == 2 and "nothing.npz': no such file" in capsys.readouterr().err
    with pytest.raises(TrainingSetupError, match="--init '.*missing': no such directory"):
        train(_args(data, out, "--steps", "1", "--init", str(tmp_path / "missing")), "test")
    assert not out.exists()


# ---------------------------------------------------------------------------- loading
def _tiny_checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    net = TemporalUNet(UNet1DConfig(horizon=16, dim=8, dim_mults=(1, 2), groups=4))
    TrajectoryPrior(net, cosine_alphas_cumprod(20), [0.0, 0.0], [1.0, 1.0]).save_pretrained(folder, extra={"step": 3})
    return folder


def test_corrupt_checkpoint_errors_name_the_file_and_the_key(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "ckpt")
    model, config = ckpt / "model.safetensors", ckpt / "config.json"
    assert read_safetensors(model)[1]["step"] == "3"
    good_model, good_config = model.read_bytes(), config.read_text()
    model.write_bytes(good_model[: len(good_model) // 2])  # truncated
    with pytest.raises(ValueError, match="not a readable safetensors file") as e:
        TrajectoryPrior.from_pretrained(ckpt)
    assert str(model) in str(e.value)
    model.write_bytes(b"\x00" * 7)
    with pytest.raises(ValueError) as e:
        TrajectoryPrior.from_pretrained(ckpt)
    assert str(model) in str(e.value)
    model.write_bytes(good_model)
    cfg = json.loads(good_config)
    for key in ("lo", "hi", "T", "unet"):
        config.write_text(json.dumps({k: v for k, v in cfg.items() if k != key}))
        with pytest.raises(ValueError, match=f"missing key '{key}'") as e:
            TrajectoryPrior.from_pretrained(ckpt)
        assert str(config) in str(e.value)
    config.write_text(json.dumps(dict(cfg, unet={k: v for k, v in cfg["unet"].items() if k != "dim_mults"})))
    with pytest.raises(ValueError, match="missing key 'unet.dim_mults'"):
        TrajectoryPrior.from_pretrained(ckpt)
    for T in (0, -3, 2.5, "20"):
        config.write_text(json.dumps(dict(cfg, T=T)))
        with pytest.raises(ValueError, match="'T' must be an int >= 1") as e:
            TrajectoryPrior.from_pretrained(ckpt)
        assert str(config) in str(e.value)
    for bad, message in [(dict(lo=[1.0, 1.0]), "lo and hi must be"), (dict(scale=0), "scale must be > 0"),
                         (dict(prediction="v"), "prediction must be"), (dict(clip=-1), "clip must be None or"),
                         (dict(stride=0), "stride must be an int >= 1")]:
        config.write_text(json.dumps(dict(cfg, **bad)))
        with pytest.raises(ValueError, match=message) as e:
            TrajectoryPrior.from_pretrained(ckpt)
        assert str(config) in str(e.value)
    config.write_text(json.dumps(dict(cfg, unet=dict(cfg["unet"], dim=16))))  # another network
    with pytest.raises(ValueError, match="do not fit the network") as e:
        TrajectoryPrior.from_pretrained(ckpt)
    assert str(model) in str(e.value)
    config.write_text(good_config[:-10])
    with pytest.raises(ValueError, match="not valid JSON") as e:
        TrajectoryPrior.from_pretrained(ckpt)
    assert str(config) in str(e.value)
    config.write_text(good_config)
    assert TrajectoryPrior.from_pretrained(ckpt).sample_shape == (16, 2)


def test_init_that_does_not_fit_the_network_is_named(data, tmp_path, capsys):
    ckpt = _tiny_checkpoint(tmp_path / "ckpt")  # no feature grid: the command's --grid 8 has no weights there
    out = tmp_path / "run"
    with pytest.raises(TrainingSetupError, match="--init '.*ckpt': cannot start from it"):
        train(_args(data, out, "--steps", "1", "--init", str(ckpt)), "test")
    assert not out.exists()
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SystemExit) as e:
        main(["train", *_argv(data, out, "--steps", "1", "--init", str(ckpt))])
    assert e.value.code == 2 and str(ckpt / "model.safetensors") in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingSetupError, match="--init '.*empty': neither a training run"):
        train(_args(data, out, "--steps", "1", "--init", str(tmp_path / "empty")), "test")


def test_schedule_and_constructor_reject_empty_or_invalid_schedules():
    net = TemporalUNet(UNet1DConfig(horizon=16, dim=8, dim_mults=(1, 2), groups=4))
    for T in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="T .*must be an int >= 1"):
            cosine_alphas_cumprod(T)
    assert cosine_alphas_cumprod(1).shape == (1,)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        TrajectoryPrior(net, torch.zeros(0), [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"finite values in \[0, 1\]"):
        TrajectoryPrior(net, torch.tensor([0.5, float("nan")]), [0.0, 0.0], [1.0, 1.0])


# ---------------------------------------------------------------------------- resuming
def test_resume_refuses_other_settings_and_leaves_the_run_untouched(data, tmp_path, capsys):
    out = tmp_path / "run"
    train(_args(data, out, "--steps", "1"), "first")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for extra, named in [(["--prediction", "epsilon"], "--prediction: the state has 'v_prediction', this command "
                                                       "'epsilon'"),
                         (["--T", "30"], "--T: the state has 20, this command 30"),
                         (["--dim", "16"], "--dim: the state has 8, this command 16"),
                         (["--dim-mults", "1", "2", "2"], "--dim-mults: the state has [1, 2], this command [1, 2, 2]"),
                         (["--cond-prob", "0"], "--cond-prob: the state has 0.5, this command 0.0")]:
        with pytest.raises(TrainingSetupError, match="cannot resume") as e:
            train(_args(data, out, "--steps", "2", *extra), "second")
        assert named in str(e.value)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # config.json not rewritten
    with pytest.raises(SystemExit) as e:
        main(["train", *_argv(data, out, "--steps", "2", "--T", "30")])
    assert e.value.code == 2 and "--T: the state has 20, this command 30" in capsys.readouterr().err
    # what may change: the schedule's length, the interval, the threads
    train(_args(data, out, "--steps", "2", "--every", "5", "--threads", "1"), "third")
    assert read_state(out / "state")[1]["step"] == 2
    # past the end: explicit, nothing written
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    train(_args(data, out, "--steps", "2"), "again")
    assert "nothing to train" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_corrupt_state_names_the_file_and_a_legacy_state_still_resumes(data, tmp_path):
    from safetensors.torch import load_file, save_file

    train(_args(data, tmp_path / "straight", "--steps", "2"), "s")
    out = tmp_path / "run"
    train(_args(data, out, "--steps", "1"), "r")
    state = out / "state.safetensors"
    good = state.read_bytes()
    state.write_bytes(good[:100])
    with pytest.raises(TrainingSetupError, match="not a readable safetensors file") as e:
        train(_args(data, out, "--steps", "2"), "r")
    assert str(state) in str(e.value)
    # a state written before the JSON part moved into the metadata: tensors + state.json
    state.write_bytes(good)
    save_file(load_file(state), state)
    assert "cofi_state" not in read_safetensors(state)[1]
    with pytest.raises(TrainingSetupError, match="--T: the state has 20, this command 30"):  # checked via config.json
        train(_args(data, out, "--steps", "2", "--T", "30"), "r")
    train(_args(data, out, "--steps", "2"), "r")
    a, b = load_file(tmp_path / "straight" / "state.safetensors"), load_file(state)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------- killed saves
@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 3-step run: what every killed-and-resumed run must end as."""
    folder = tmp_path_factory.mktemp("straight")
    data = _toy_data(folder)
    train(_args(data, folder / "run", "--steps", "3"), "straight")
    return folder / "run"


def _tensors(path: Path) -> dict:
    return read_safetensors(path)[0]


@pytest.mark.parametrize("name, committed", [("config.json", 1), ("state.safetensors", 1), ("state.json", 2)])
def test_killed_in_the_middle_of_a_save_resumes_from_a_complete_state(tmp_path, straight, name, committed):
    """SIGKILL a training process while it sleeps between writing the temporary file of the
    second save of ``name`` and replacing the file with it (the COFI_TEST_SAVE_PAUSE hook);
    the run holds the last complete state (``committed``), loads, and resumes to exactly the
    uninterrupted run's state and checkpoint."""
    data = _toy_data(tmp_path)
    out = tmp_path / "run"
    env = dict(os.environ, COFI_TEST_SAVE_PAUSE=f"{name}:2", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "cofi.planning", "train", *_argv(data, out, "--steps", "3")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = out / f"{name}.paused"
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the training process never reached the paused save"
            time.sleep(0.05)
        assert [p for p in out.glob(f".{name}.*.tmp")]  # mid-save: the new file is written, not yet in place
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    marker.unlink()
    # on disk: the last complete state, whose files all load
    tensors, meta = read_state(out / "state")
    assert meta["step"] == committed
    assert json.loads((out / "state.json").read_text())["step"] == (1 if name == "state.json" else committed)
    TrajectoryPrior.from_pretrained(out)
    if name == "config.json":  # a torn checkpoint: step 2's weights, step 1's config
        assert read_safetensors(out / "model.safetensors")[1]["step"] == "2"
        assert json.loads((out / "config.json").read_text())["step"] == 1
    # reopening the run (here with nothing to train) makes its files agree with the state again
    train(_args(data, out, "--steps", "3", "--stop-at", str(committed)), "reopened")
    assert not list(out.glob(".*.tmp"))  # the killed process's temporary file is cleaned up
    tensors, meta = read_state(out / "state")
    assert json.loads((out / "state.json").read_text()) == meta
    assert json.loads((out / "config.json").read_text())["step"] == committed
    model, metadata = read_safetensors(out / "model.safetensors")
    assert metadata["step"] == str(committed)
    assert all(torch.equal(v, tensors[f"ema.{k}"]) for k, v in model.items())
    # resume (the same command) and finish
    train(_args(data, out, "--steps", "3"), "resumed")
    for file in ("state.safetensors", "model.safetensors"):
        a, b = _tensors(straight / file), _tensors(out / file)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (file, k)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["step"] == 3 and read_safetensors(out / "model.safetensors")[1]["step"] == "3"
    assert json.loads((out / "state.json").read_text()) == read_state(out / "state")[1]


# ---------------------------------------------------------------------------- domains
def _toy_scene(folder: Path) -> Path:
    """3 training and 1 validation random-walk Scene episodes (1 001 steps, 40-dim observations)."""
    obs = np.cumsum(np.random.default_rng(1).normal(scale=0.02, size=(4, 1001, 40)), axis=1).astype(np.float32)
    for name, o in (("scene-play-v0.npz", obs[:3]), ("scene-play-v0-val.npz", obs[3:])):
        np.savez(folder / name, observations=o.reshape(-1, 40))
    return folder / "scene-play-v0.npz"


def test_domain_follows_the_dataset_name_and_sets_its_defaults(data, tmp_path):
    from cofi.planning.train import POINTMAZE, SCENE, domain_of

    assert domain_of("data/pointmaze-giant-stitch-v0.npz") is POINTMAZE
    assert domain_of("data/scene-play-v0.npz") is SCENE and domain_of("x.npz", env="scene-play-v0") is SCENE
    maze = validate_train_args({"data": str(data), "out": str(tmp_path / "a")})
    assert (maze.pad, maze.grid) == (64, 64)
    scene = _toy_scene(tmp_path)
    s = validate_train_args({"data": str(scene), "out": str(tmp_path / "b")})
    assert (s.pad, s.grid) == (0, 0)
    with pytest.raises(TrainingSetupError, match="--grid 8: the feature grid reads 2-D maze positions"):
        validate_train_args({"data": str(scene), "out": str(tmp_path / "b"), "grid": 8})
    with pytest.raises(TrainingSetupError, match="--stride must divide the window of 128 env steps"):
        validate_train_args({"data": str(scene), "out": str(tmp_path / "b"), "stride": 5})


def test_scene_training_writes_a_14_dim_prior_of_the_planning_windows(tmp_path):
    from cofi.planning.scene import SCENE_PLAN_DIMS
    from cofi.planning.scene_plan import load_scene_episodes, scene_layout

    scene = _toy_scene(tmp_path)
    out = tmp_path / "run"
    argv = ["--data", str(scene), "--out", str(out), "--dim", "8", "--dim-mults", "1", "2", "--T", "20",
            "--batch", "4", "--every", "2", "--steps", "2", "--bank-every", "64"]
    main(["train", *argv])
    prior = TrajectoryPrior.from_pretrained(out)
    assert prior.sample_shape == (scene_layout().window, len(SCENE_PLAN_DIMS)) == (32, 14)
    eps = load_scene_episodes(scene).reshape(-1, 14)
    np.testing.assert_allclose(prior.lo.numpy(), eps.min(0), rtol=1e-6)  # normalised per dimension
    np.testing.assert_allclose(prior.hi.numpy(), eps.max(0), rtol=1e-6)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pad"] == 0 and cfg["unet"]["grid"] == 0 and cfg["bank_windows"] == 3 * ((1001 - 128) // 64 + 1)
    x = prior.denoise(torch.randn(3, 32, 14), torch.tensor([0, 5, 19]))
    assert x.shape == (3, 32, 14) and torch.isfinite(x).all()
    # the goal observes some dimensions only: one mask channel per dimension, read per entry
    assert cfg["unet"]["cond"] and cfg["unet"]["cond_entries"] and prior.net.inp.in_channels == 28


def test_scene_batches_observe_the_start_and_the_goals_dimensions_only(tmp_path):
    from cofi.planning.scene_plan import GOAL_DIMS
    from cofi.planning.train import SCENE, Batcher

    eps = torch.randn(3, 300, 14)
    args = validate_train_args({"data": str(_toy_scene(tmp_path)), "out": str(tmp_path / "r"), "cond_prob": 1.0,
                                "target": "plain", "prediction": "sample"})  # the target is the clean window
    x_in, t, mask, target, ev = Batcher(eps, cosine_alphas_cumprod(20), args, None, True, SCENE)(
        5, torch.Generator().manual_seed(0))
    assert mask.shape == x_in.shape == (5, 32, 14) and not ev
    expect = torch.zeros(32, 14, dtype=torch.bool)
    expect[0] = True
    expect[-1, list(GOAL_DIMS)] = True
    assert (mask == expect).all()
    # observed entries hold the clean window, the others its noised version
    assert torch.equal(x_in[mask.expand(5, -1, -1)], target[mask.expand(5, -1, -1)])
    assert not torch.isclose(x_in[~mask.expand(5, -1, -1)], target[~mask.expand(5, -1, -1)]).any()
