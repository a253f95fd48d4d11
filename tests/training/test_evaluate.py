import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from nanolily.interfaces.cli import main
from nanolily.training.data import DatasetError, find_pairs
from nanolily.engine.pipeline import NO_CORRECTIONS
from nanolily.training.evaluate import evaluate, evaluate_predictions, markdown_table
from nanolily.training.metrics import LPIPS, batch_pooled_psnr, gt_mean_match, psnr

from ..conftest import SHARED, dark_image
from .test_data import make_layout

WEIGHTS = SHARED / "weights"
needs_weights = pytest.mark.skipif(not (WEIGHTS / "lpips-v0.1-alex-heads.safetensors").exists(),
                                   reason="needs ../shared/weights")


class Identity(torch.nn.Module):
    """A predictor that returns its input, so metrics of the low image against the reference are known."""

    patch_size = 224

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x


def test_evaluate_full_and_resize224(tmp_path):
    make_layout(tmp_path, "pair", ["a", "b"])
    pairs = find_pairs(tmp_path, "pair")
    rows, summary = evaluate(Identity(), pairs, protocol="full")
    assert [r["id"] for r in rows] == ["a", "b"] and summary["images"] == 2
    assert summary["psnr"] == pytest.approx(sum(r["psnr"] for r in rows) / 2)
    rows224, s224 = evaluate(Identity(), pairs, protocol="resize224")
    assert s224["mode"] == "resize224 forward" and s224["pool_batch"] == 32
    assert s224["psnr_batch_pooled"] == pytest.approx(s224["psnr_pooled"])  # two images: one batch
    _, by_image = evaluate(Identity(), pairs, protocol="resize224", pool_batch=1)
    assert by_image["psnr_batch_pooled"] == pytest.approx(s224["psnr"], abs=1e-4)
    assert s224["psnr_pooled"] <= s224["psnr"] + 1e-6
    assert summary["psnr_gt_mean"] >= summary["psnr"] - 1e-3  # generated pairs differ mostly in exposure
    table = markdown_table([("identity", summary), ("identity", s224)])
    assert table.count("\n") == 4 and "psnr_pooled" in table and "psnr_batch_pooled" in table


def test_batch_pooled_psnr_pools_within_consecutive_batches():
    errors = [1e-2, 1e-4, 1e-3, 1e-3, 4e-3]
    assert batch_pooled_psnr(errors, 1) == pytest.approx(sum(-10 * math.log10(e) for e in errors) / 5)
    pooled = [sum(errors[:2]) / 2, sum(errors[2:4]) / 2, errors[4]]
    assert batch_pooled_psnr(errors, 2) == pytest.approx(sum(-10 * math.log10(e) for e in pooled) / 3)
    assert batch_pooled_psnr(errors) == batch_pooled_psnr(errors, 5) == batch_pooled_psnr(errors, 99)
    assert batch_pooled_psnr(errors) == pytest.approx(-10 * math.log10(sum(errors) / 5))
    assert batch_pooled_psnr([4e-2], data_range=2.0) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="no squared errors"):
        batch_pooled_psnr([])
    with pytest.raises(ValueError, match="batch must be >= 1"):
        batch_pooled_psnr(errors, -1)


def test_evaluate_at_another_exposure_reexposes_only_the_input(tmp_path):
    from nanolily.training.data import expose_linear, load_rgb_uint8

    make_layout(tmp_path, "pair", ["a"])
    pairs = find_pairs(tmp_path, "pair")
    (row,), summary = evaluate(Identity(), pairs, corrections=NO_CORRECTIONS, exposure=2.0)
    low, high = (load_rgb_uint8(p).float()[None] / 255 for p in (pairs[0].low, pairs[0].high))
    assert row["psnr"] == pytest.approx(float(psnr(expose_linear(low, 2.0), high)), abs=1e-4)
    assert summary["exposure"] == 2.0 and "exposure" not in evaluate(Identity(), pairs)[1]
    (row,), summary = evaluate(Identity(), pairs, corrections=NO_CORRECTIONS, exposure=0.1, exposure_bits=8)
    as_saved = (expose_linear(low, 0.1) * 255).round() / 255  # the darker capture as an 8-bit file holds it
    assert row["psnr"] == pytest.approx(float(psnr(as_saved, high)), abs=1e-4) and summary["exposure_bits"] == 8
    assert row["psnr"] != pytest.approx(float(psnr(expose_linear(low, 0.1), high)), abs=1e-3)


def test_evaluate_with_jpeg_inputs_compresses_only_the_input(tmp_path):
    from nanolily.training.data import jpeg_roundtrip, load_rgb_uint8

    make_layout(tmp_path, "pair", ["a"])
    pairs = find_pairs(tmp_path, "pair")
    (row,), summary = evaluate(Identity(), pairs, corrections=NO_CORRECTIONS, jpeg=50)
    low, high = (load_rgb_uint8(p).float()[None] / 255 for p in (pairs[0].low, pairs[0].high))
    assert row["psnr"] == pytest.approx(float(psnr(jpeg_roundtrip(low[0], 50)[None], high)), abs=1e-4)
    assert row["psnr"] != pytest.approx(evaluate(Identity(), pairs, corrections=NO_CORRECTIONS)[0][0]["psnr"], abs=1e-3)
    assert summary["jpeg"] == 50 and "jpeg" not in evaluate(Identity(), pairs)[1]


def test_gt_mean_match_removes_exposure_and_only_exposure():
    torch.manual_seed(0)
    ref = torch.rand(2, 3, 16, 16) * 0.6
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    matched = gt_mean_match(ref * torch.tensor([0.5, 1.5]).view(2, 1, 1, 1), ref)
    assert torch.allclose(matched, ref, atol=1e-6)  # a pure exposure error vanishes
    noisy = (ref + 0.1 * torch.randn_like(ref)).clamp(0, 1)
    matched = gt_mean_match(noisy * 0.5, ref)
    assert torch.allclose((matched * luma).sum(1).mean((1, 2)), (ref * luma).sum(1).mean((1, 2)), atol=1e-3)
    assert (psnr(matched, ref) < 40).all()  # structure errors stay
    assert gt_mean_match(torch.ones(1, 3, 4, 4), torch.ones(1, 3, 4, 4) * 2).max() == 1  # clamped


def test_evaluate_rejects_unknown_protocol(tmp_path):
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate(Identity(), [], protocol="crop")


@needs_weights
def test_lpips_properties():
    lp = LPIPS.from_dir(WEIGHTS)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(lp(x, x), torch.zeros(2), atol=1e-6)
    near, far = lp(x, (x + 0.02 * torch.randn_like(x)).clamp(0, 1)), lp(x, torch.rand_like(x))
    assert (near < far).all() and (far > 0.1).all()


def test_predictions_are_measured_as_a_models_outputs(tmp_path):
    make_layout(tmp_path / "set", "lol-v2", ["00001", "00002"])
    pairs = find_pairs(tmp_path / "set", "lol-v2")
    (tmp_path / "by-name").mkdir()
    (tmp_path / "by-id").mkdir()
    for p in pairs:  # another method that returns its input, saved under the low image's name or the id
        Image.open(p.low).save(tmp_path / "by-name" / f"{p.low.stem}.png")
        Image.open(p.low).convert("L").save(tmp_path / "by-id" / f"{p.id}.tif")  # grayscale: replicated
    rows, summary = evaluate_predictions(pairs, tmp_path / "by-name")
    model_rows, model_summary = evaluate(Identity(), pairs, corrections=NO_CORRECTIONS)
    assert summary["mode"] == "predictions" and summary["images"] == 2
    for k in ("psnr", "ssim", "psnr_gt_mean", "brightness_ratio", "color"):
        assert summary[k] == pytest.approx(model_summary[k], rel=1e-5, abs=1e-6), k
    grey_rows, _ = evaluate_predictions(pairs, tmp_path / "by-id")
    assert [r["id"] for r in grey_rows] == ["00001", "00002"]
    for row, p in zip(grey_rows, pairs):
        grey = torch.from_numpy(np.array(Image.open(tmp_path / "by-id" / f"{p.id}.tif"))).float() / 255
        ref = torch.from_numpy(np.array(Image.open(p.high))).permute(2, 0, 1)[None].float() / 255
        assert row["psnr"] == pytest.approx(float(psnr(grey.expand(1, 3, -1, -1), ref)), abs=1e-4)


def test_predictions_missing_doubled_or_of_another_size_are_named(tmp_path):
    make_layout(tmp_path / "set", "pair", ["a", "b"])
    pairs = find_pairs(tmp_path / "set", "pair")
    out = tmp_path / "out"
    out.mkdir()
    Image.fromarray(dark_image(40, 60)).save(out / "a.png")
    with pytest.raises(DatasetError, match=r"no output image for 1 of 2 ids \(b\)"):
        evaluate_predictions(pairs, out)
    Image.fromarray(dark_image(40, 60)).save(out / "b.png")
    Image.fromarray(dark_image(40, 60)).save(out / "b.jpg")
    with pytest.raises(DatasetError, match=r"more than one output image for b \(b.jpg, b.png\)"):
        evaluate_predictions(pairs, out)
    (out / "b.jpg").unlink()
    Image.fromarray(dark_image(30, 60)).save(out / "b.png")
    with pytest.raises(DatasetError, match=r"b.png: 60x30, but its reference b.jpg is 60x40"):
        evaluate_predictions(pairs, out)
    with pytest.raises(DatasetError, match="folder does not exist"):
        evaluate_predictions(pairs, tmp_path / "nope")


def test_evaluate_cli_measures_predictions(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default report folder, eval/other-predictions, is made here
    make_layout(tmp_path / "set", "pair", ["a", "b"])
    (tmp_path / "other").mkdir()
    for p in find_pairs(tmp_path / "set", "pair"):
        Image.open(p.high).save(tmp_path / "other" / f"{p.id}.png")  # a perfect method
    args = ["evaluate", "--data", str(tmp_path / "set"), "--predictions", str(tmp_path / "other"), "--no-lpips", "-q"]
    assert main(args + ["--out", str(tmp_path / "r")]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["mode"] == "predictions" and summary["ssim"] == pytest.approx(1.0)
    assert "| other | full | predictions | 2 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(args + ["--exposure", "2"])
    assert "--exposure need a model" in capsys.readouterr().err
    (tmp_path / "other" / "b.png").unlink()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "no output image for 1 of 2 ids (b)" in err and err.count("\n") == 1


def test_evaluate_cli_writes_reports_and_gallery(tmp_path, random_weights, capsys):
    make_layout(tmp_path / "set", "pair", ["a", "b"])
    out = tmp_path / "report"
    code = main(["evaluate", "--data", str(tmp_path / "set"), "--weights", str(random_weights), "--no-lpips",
                 "--out", str(out), "--gallery", str(tmp_path / "g"), "--gallery-ids", "b", "-q"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 2 and summary["protocol"] == "full"
    assert (out / "per_image.csv").read_text().count("\n") == 3
    assert "| untrained |" in capsys.readouterr().out
    assert Image.open(tmp_path / "g" / "b.png").width > 3 * 60


def test_evaluate_cli_resize224_pools_by_the_batch_asked(tmp_path, random_weights, capsys):
    make_layout(tmp_path / "set", "pair", ["a", "b", "c"])
    out = tmp_path / "report"
    args = ["evaluate", "--data", str(tmp_path / "set"), "--weights", str(random_weights), "--no-lpips", "-q",
            "--protocol", "resize224", "--out", str(out)]
    assert main(args + ["--pool-batch", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pool_batch"] == 1 and summary["psnr_batch_pooled"] == pytest.approx(summary["psnr"], abs=1e-4)
    assert "psnr_batch_pooled" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(args + ["--pool-batch", "0"])
    assert "--pool-batch must be >= 1" in capsys.readouterr().err


def test_explain_figure(tmp_path, random_weights, capsys):
    from ..conftest import dark_image

    Image.fromarray(dark_image(100, 150)).save(tmp_path / "x.png")
    assert main(["explain", str(tmp_path / "x.png"), "-o", str(tmp_path / "e.png"), "--weights", str(random_weights)]) == 0
    assert Image.open(tmp_path / "e.png").size[0] > 5 * 224


def test_explain_defaults_to_the_model_with_branches(tmp_path):
    from nanolily.interfaces.cli.explain import EXPLAINED_MODEL
    from nanolily.models.weights import SHIPPED

    if SHIPPED[EXPLAINED_MODEL].sha256 is None:
        pytest.skip("no shipped weights in this version")
    Image.fromarray(dark_image(60, 80)).save(tmp_path / "x.png")
    assert main(["explain", str(tmp_path / "x.png"), "-o", str(tmp_path / "e.png")]) == 0
    assert Image.open(tmp_path / "e.png").width > 4 * 224
