import csv
import math
import json

import pytest
import torch

from nanolily.interfaces.cli import main
from nanolily.training.train import TrainConfig, lr_lambda, schedule_weights, train
from nanolily.models.weights import load_model, read_metadata

from .test_data import make_layout


def tiny_config(**overrides) -> TrainConfig:
    base = dict(name="tiny", model={"size": 32, "width": 4},
                train=[{"layout": "pair", "path": "pairs"}], val=[{"layout": "pair", "path": "pairs"}],
                check_leakage=False, max_steps=4, batch_size=2, size=32, crop="mixed", lr=1e-2,
                scheduler="cosine", warmup_steps=1, loss={"l1": 1.0, "ssim": 0.2, "fft": 0.05},
                val_every=2, val_stride=16, log_every=1, select="psnr", threads=1)
    return TrainConfig.from_dict({**base, **overrides})


@pytest.fixture
def data(tmp_path):
    make_layout(tmp_path / "pairs", "pair", ["a", "b", "c"])
    return tmp_path


def losses(run_dir):
    with open(run_dir / "train_log.csv") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def test_training_writes_weights_logs_and_summary(data):
    summary = train(tiny_config(), data, data / "run", progress=False)
    assert summary["steps"] == 4 and summary["best"]["psnr"] > 0
    model = load_model(data / "run" / "best.safetensors", device="cpu")
    assert model.config.size == 32
    meta = read_metadata(data / "run" / "best.safetensors")
    assert "pair:pairs" in meta["training_data"] and json.loads(meta["metrics"])["psnr"] == pytest.approx(summary["best"]["psnr"])
    assert json.loads(meta["train_config"])["max_steps"] == 4
    assert (data / "run" / "val_log.csv").exists() and len(losses(data / "run")) == 4


def test_resume_gives_the_same_next_steps(data):
    config = tiny_config()
    train(config, data, data / "straight", progress=False)
    summary = train(config, data, data / "split", progress=False, until=2)
    assert summary["steps"] == 2
    train(config, data, data / "split", resume=True, progress=False)
    straight, split = losses(data / "straight"), losses(data / "split")
    assert sorted(split) == [1, 2, 3, 4]
    for step in (3, 4):
        assert split[step] == pytest.approx(straight[step], rel=1e-6, abs=1e-7)
    ckpt = torch.load(data / "split" / "last.ckpt", weights_only=True)
    assert ckpt["config"]["max_steps"] == 4 and ckpt["state"]["step"] == 4


def test_resume_after_a_kill_drops_the_rows_logged_after_the_checkpoint(data):
    config = tiny_config()
    train(config, data, data / "run", progress=False, until=2)
    at_step_2 = (data / "run" / "last.ckpt").read_bytes()
    train(config, data, data / "run", resume=True, progress=False)
    (data / "run" / "last.ckpt").write_bytes(at_step_2)  # as if killed after step 4 before saving it
    train(config, data, data / "run", resume=True, progress=False)
    for log in ("train_log.csv", "val_log.csv"):
        with open(data / "run" / log) as f:
            steps = [int(r["step"]) for r in csv.DictReader(f)]
        assert steps == sorted(set(steps)) and steps[-1] == 4


def test_weight_average_is_validated_saved_and_resumed(data):
    config = tiny_config(ema=0.5, val_every=4)  # one validation, at the last step
    train(config, data, data / "straight", progress=False)
    ckpt = torch.load(data / "straight" / "last.ckpt", weights_only=True)
    best = load_model(data / "straight" / "best.safetensors", device="cpu").state_dict()
    assert all(torch.equal(best[k], v) for k, v in ckpt["ema"].items())  # the average is what ships
    assert read_metadata(data / "straight" / "best.safetensors")["parameters"] == "2688"  # frozen, still counted
    assert not all(torch.equal(ckpt["model"][k], v) for k, v in ckpt["ema"].items())
    train(config, data, data / "split", progress=False, until=2)
    train(config, data, data / "split", resume=True, progress=False)
    resumed = torch.load(data / "split" / "last.ckpt", weights_only=True)["ema"]
    assert all(torch.allclose(resumed[k], v, atol=1e-6) for k, v in ckpt["ema"].items())
    with pytest.raises(ValueError, match="ema must be a decay"):
        tiny_config(ema=1.5)


def test_validation_at_several_exposures_selects_on_their_mean(data):
    from nanolily.training.data import PairedImages, find_pairs
    from nanolily.training.train import validate

    summary = train(tiny_config(val_exposures=[0.5, 1, 2], val_every=4), data, data / "run", progress=False)
    best = summary["best"]
    assert best["psnr"] == pytest.approx((best["psnr@0.5"] + best["psnr@1"] + best["psnr@2"]) / 3)
    with open(data / "run" / "val_log.csv") as f:
        assert {"val_psnr@0.5", "val_psnr@1", "val_psnr@2"} <= set(next(csv.DictReader(f)))
    images = PairedImages(find_pairs(data / "pairs", "pair"))
    model = load_model(data / "run" / "best.safetensors", device="cpu")
    plain = validate(model, images, "global")
    assert set(plain) == {"psnr", "ssim"}
    assert plain["psnr"] == pytest.approx(validate(model, images, "global", exposures=[0.5, 1, 2])["psnr@1"])
    assert validate(model, images, "global", exposures=[0.5])["psnr"] != pytest.approx(plain["psnr"])
    with pytest.raises(ValueError, match="val_exposures must be positive"):
        tiny_config(val_exposures=[0, 1])


def test_no_harm_validation_ranks_failing_checkpoints_last(data):
    from nanolily.models.v2 import NanoLILYv2
    from nanolily.training.data import PairedImages, find_pairs
    from nanolily.training.train import selection_score, validate

    images = PairedImages(find_pairs(data / "pairs", "pair"))
    model = NanoLILYv2()  # zero-initialised head: the identity map, which leaves every reference as it is
    metrics = validate(model, images, "global", no_harm=True)
    assert metrics["ref_outside"] == 0 and metrics["ref_clip_max"] == 0 and metrics["no_harm"] == 1
    assert metrics["gray_outside"] == 0  # the identity map treats grey as colour
    with torch.no_grad():
        model.head.bias[:3] = 0.5  # exp(0.5) = 1.65x brighter: fails the bar
    failing = validate(model, images, "global", no_harm=True)
    assert failing["ref_outside"] == 3 and failing["no_harm"] == 0
    config = tiny_config(select_no_harm=True)
    assert selection_score(failing, config) < selection_score({**metrics, "psnr": failing["psnr"] - 20}, config)
    assert selection_score(failing, tiny_config()) == failing["psnr"]


class ColourCast(torch.nn.Module):
    """Brightens in proportion to the red channel: lights a grey photo unlike its colour version."""

    def forward(self, x):
        return x * (1 + x[:, :1])


def test_grey_consistency_term_sees_a_colour_dependent_network():
    from nanolily.training.train import grey_consistency

    low = torch.rand(4, 3, 16, 16) * torch.tensor([0.6, 0.2, 0.1]).view(1, 3, 1, 1)  # reddish scenes
    identity = torch.nn.Identity()
    assert float(grey_consistency(identity, low, identity(low))) == pytest.approx(0, abs=1e-7)
    cast = ColourCast()
    assert float(grey_consistency(cast, low[:2], cast(low))) > 0.01
    with pytest.raises(ValueError, match="gray_consistency must be"):
        tiny_config(gray_consistency=-1)


def test_a_run_with_the_grey_consistency_term_logs_it(data):
    train(tiny_config(gray_consistency=0.5), data, data / "run", progress=False)
    with open(data / "run" / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(float(r["gray_consistency"]) >= 0 for r in rows)


def test_a_run_with_light_views_trains(data):
    train(tiny_config(lights=0.5), data, data / "run", progress=False)
    with open(data / "run" / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(math.isfinite(float(r["loss"])) for r in rows)


def test_config_rejects_unknown_keys_and_choices():
    with pytest.raises(ValueError, match=r"unknown config keys \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ValueError, match="crop must be one of"):
        TrainConfig.from_dict({"crop": "centre"})


def test_shipped_configs_parse():
    from pathlib import Path

    for path in sorted(Path(__file__).resolve().parents[2].glob("configs/*.yaml")):
        TrainConfig.from_yaml(path)


def test_loss_schedule_and_lr():
    config = TrainConfig.from_dict({"loss": {"l1": 1.0, "ssim": 0.01}, "loss_schedule": {"ssim": [[0, 0.01], [50, 0.2]]}})
    assert schedule_weights(config, 49)["ssim"] == 0.01 and schedule_weights(config, 50)["ssim"] == 0.2
    cosine = lr_lambda(TrainConfig.from_dict({"scheduler": "cosine", "warmup_steps": 10, "lr": 1.0, "min_lr": 0.1}), 110)
    assert cosine(0) == pytest.approx(0.1) and cosine(10) == pytest.approx(1.0) and cosine(110) == pytest.approx(0.1)


def test_leakage_guard_refuses_to_train(data):
    # train and val list the same three pairs: each is checked once, its low and its reference
    config = tiny_config(check_leakage=True, leakage_test=[{"layout": "pair", "path": "pairs"}])
    with pytest.raises(SystemExit, match="6 training images have the content of test images"):
        train(config, data, data / "run", progress=False)


def test_cli_train_with_overrides(data, tmp_path, capsys):
    import yaml

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config().__dict__))
    assert main(["train", "--config", str(cfg), "--data", str(data), "--out", str(data / "cli"), "-q",
                 "--set", "max_steps=2"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 2


def test_seed_stage2_recipe_runs_on_generated_lol_v2_data(tmp_path):
    from pathlib import Path

    root = tmp_path / "data"
    v2 = root / "LOL-v2" / "Real_captured"
    make_layout(v2, "lol-v2", ["00001", "00002", "00003"])  # Train/{Low,Normal}/{low,normal}<id>
    make_layout(root / "lol-v1", "lol-v1", ["1", "2"], seed=10)
    (root / "splits").mkdir()
    (root / "splits" / "lol-v1-val.txt").write_text("1\n2\n")
    config = TrainConfig.from_yaml(Path(__file__).resolve().parents[2] / "configs" / "seed-stage2.yaml")
    assert config.train[0]["path"] == "LOL-v2/Real_captured" and config.early_stop_patience == 10
    cheap = {**config.__dict__, "init_from": None, "max_steps": 2, "batch_size": 2, "val_every": 1,
             "check_leakage": False, "loss": {"l1": 1.0, "ssim": 0.2}, "model": {"size": 32, "width": 4},
             "size": 32, "val_mode": "core", "threads": 1}
    summary = train(TrainConfig.from_dict(cheap), root, tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and summary["best"]["ssim"] > 0


def test_torchrun_data_parallel_on_cpu(data, tmp_path):
    """Two processes under torchrun (Gloo on CPU): the same code runs DDP and agrees on when to stop."""
    import subprocess
    import sys

    import yaml

    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump({**tiny_config().__dict__, "early_stop_patience": 1, "max_steps": 8}))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                        "-m", "nanolily.interfaces.cli", "train", "--config", str(cfg), "--data", str(data),
                        "--out", str(data / "ddp"), "-q"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-12000:]  # enough to hold each rank's own traceback
    summary = json.loads((data / "ddp" / "summary.json").read_text())
    assert 2 <= summary["steps"] <= 8 and load_model(data / "ddp" / "best.safetensors", device="cpu")
