import numpy as np
import pytest
import torch
from PIL import Image

from nanolily.interfaces.cli import main
from nanolily.engine.pipeline import enhance_tensor
from nanolily.engine.onnx import MatrixDFTFrequency, dft_matrices, weights_digest
from nanolily.models.v1 import FrequencyBranch, NanoLILY

from ..conftest import dark_image


@pytest.mark.parametrize("size", [15, 16, 224])
def test_matrix_dft_frequency_equals_the_fft_branch(size):
    torch.manual_seed(size)
    branch = FrequencyBranch(3, size, 1.0)
    with torch.no_grad():
        branch.mask.uniform_(0.0, 3.0)
        x = torch.rand(2, 3, size, size)
        assert torch.allclose(MatrixDFTFrequency(branch.mask)(x), branch(x), atol=2e-6)


def test_dft_matrices_are_the_dft():
    c, s = dft_matrices(12)
    x = torch.rand(12, 5, dtype=torch.float64)
    assert torch.allclose(torch.complex(c @ x, -(s @ x)), torch.fft.fft(x, dim=0))


def test_weights_digest_follows_the_weights(model):
    other = type(model)(model.config)
    other.load_state_dict(model.state_dict())
    assert weights_digest(other) == weights_digest(model)
    with torch.no_grad():
        other.fuse.bias.add_(1e-3)
    assert weights_digest(other) != weights_digest(model)


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from nanolily.engine.onnx import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert export_onnx(model, path) <= 1e-4
    return path


def test_onnx_bloom_equals_torch_bloom_on_a_small_image(model, onnx_file):
    from nanolily.engine.onnx import OnnxPredictor

    predictor = OnnxPredictor(onnx_file)
    # its threads do not spin after a run, taking the cores from PyTorch's work between runs
    assert predictor.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    x = torch.from_numpy(dark_image(250, 330)).permute(2, 0, 1)[None].float() / 255
    for mode in ("bloom", "core"):
        ours = enhance_tensor(x, model, mode=mode, precision="fp32")
        onnx = enhance_tensor(x, model, mode=mode, predictor=predictor)
        assert (ours - onnx).abs().max() <= 1e-4
    tiles = torch.rand(5, 3, 224, 224)  # dynamic batch
    with torch.no_grad():
        assert (predictor(tiles) - model(tiles)).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="use --mode bloom or core"):
        enhance_tensor(x, model, mode="global", predictor=predictor)


def test_cli_export_and_onnxruntime_backend(onnx_file, random_weights, tmp_path, monkeypatch, capsys):
    target = tmp_path / "m.onnx"
    args = ["--weights", str(random_weights)]
    assert main(["export", "-o", str(target)] + args) == 0
    assert target.stat().st_size > 100_000 and "max |diff| vs PyTorch" in capsys.readouterr().out
    assert main(["export", "-o", str(target)] + args) == 1  # exists
    assert "already exists" in capsys.readouterr().err

    photo = tmp_path / "night.png"
    Image.fromarray(dark_image(120, 260)).save(photo)
    assert main(["enhance", str(photo), "-o", str(tmp_path / "torch.png"), "--mode", "bloom", "-q"] + args) == 0
    assert main(["enhance", str(photo), "-o", str(tmp_path / "ort.png"), "--mode", "bloom", "-q",
                 "--backend", "onnxruntime", "--onnx", str(target)] + args) == 0
    a, b = (np.asarray(Image.open(tmp_path / n)).astype(int) for n in ("torch.png", "ort.png"))
    assert np.abs(a - b).max() <= 1  # 8-bit rounding of outputs within 1e-4

    monkeypatch.setenv("NANOLILY_CACHE", str(tmp_path / "cache"))  # without --onnx: exported once, cached
    assert main(["enhance", str(photo), "-o", str(tmp_path / "cached.png"), "--mode", "bloom", "-q",
                 "--backend", "onnxruntime"] + args) == 0
    assert len(list((tmp_path / "cache").glob("nanolily-*.onnx"))) == 1

    with pytest.raises(SystemExit):  # global mode needs the PyTorch model
        main(["enhance", str(photo), "--backend", "onnxruntime", "--mode", "global"] + args)
    assert main(["enhance", str(photo), "-o", str(tmp_path / "x.png"), "--mode", "bloom", "--backend",
                 "onnxruntime", "--onnx", str(tmp_path / "missing.onnx")] + args) == 1
    assert "missing.onnx" in capsys.readouterr().err


@pytest.fixture
def small_v2():
    """A small nanolily-v2 with random weights."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from nanolily.models.v2 import NanoLILYv2, NanoLILYv2Config

    torch.manual_seed(3)
    model = NanoLILYv2(NanoLILYv2Config(widths=(8, 16, 24), refine=4, head="gain", priors=True))
    for p in model.parameters():
        torch.nn.init.normal_(p, 0, 0.05)
    return model


def test_nanolily_v2_exports_for_whole_images_of_any_size(small_v2, tmp_path, monkeypatch, capsys):
    from nanolily.engine.onnx import OnnxPredictor, export_onnx
    from nanolily.models.weights import save_weights

    model = small_v2
    path = tmp_path / "v2.onnx"
    assert export_onnx(model, path) <= 1e-4
    predictor = OnnxPredictor(path)
    x = torch.from_numpy(dark_image(97, 211)).permute(2, 0, 1)[None].float() / 255  # not the example's size
    with torch.no_grad():
        assert (predictor(x) - model(x)).abs().max() <= 1e-4
    ours = enhance_tensor(x, model, mode="global", match_scale=False)  # one graph reads at the network's scale
    assert (enhance_tensor(x, model, mode="global", predictor=predictor) - ours).abs().max() <= 1e-4

    weights = tmp_path / "v2.safetensors"  # from the CLI: the default mode, global, through ONNX Runtime
    save_weights(model, weights, version="test")
    photo = tmp_path / "night.png"
    Image.fromarray(dark_image(90, 140)).save(photo)
    assert main(["export", "-o", str(tmp_path / "cli.onnx"), "--weights", str(weights)]) == 0
    assert "input (batch, 3, height, width)" in capsys.readouterr().out
    for backend, name in (("torch", "torch.png"), ("onnxruntime", "ort.png")):
        assert main(["enhance", str(photo), "-o", str(tmp_path / name), "-q", "--weights", str(weights),
                     "--backend", backend, "--no-match-scale"]
                    + (["--onnx", str(tmp_path / "cli.onnx")] if backend != "torch" else [])) == 0
    a, b = (np.asarray(Image.open(tmp_path / n)).astype(int) for n in ("torch.png", "ort.png"))
    assert np.abs(a - b).max() <= 1


def test_a_fixed_size_graph_reads_its_size_as_the_engine_does(small_v2, tmp_path, capsys):
    from nanolily.engine.onnx import OnnxPredictor, export_onnx
    from nanolily.engine.pipeline import NO_CORRECTIONS
    from nanolily.models.v2 import analysis_factor
    from nanolily.models.weights import save_weights

    model, (height, width) = small_v2, (200, 300)  # under LoL's size: the engine reads it at 1/2, not 1/4
    assert analysis_factor(height, width) == 2 != model.config.factor
    assert export_onnx(model, tmp_path / "fixed.onnx", size=(height, width)) <= 1e-4
    predictor = OnnxPredictor(tmp_path / "fixed.onnx")
    assert predictor.fixed_size == (height, width) and OnnxPredictor(tmp_path / "fixed.onnx").input_names == ["images"]
    x = torch.from_numpy(dark_image(height, width)).permute(2, 0, 1)[None].float() / 255
    engine = enhance_tensor(x, model, precision="fp32", **NO_CORRECTIONS)  # scale matching on, as by default
    assert (predictor(x).clamp(0, 1) - engine).abs().max() <= 1e-4
    with torch.no_grad():
        assert (model(x).clamp(0, 1) - engine).abs().max() > 1e-3  # the network's own scale differs
    with pytest.raises(ValueError, match="resolution-free models"):
        export_onnx(NanoLILY(), tmp_path / "v1.onnx", size=(224, 224))

    weights = tmp_path / "v2.safetensors"  # the CLI: --size, and enhance refusing a photo of another size
    save_weights(model, weights, version="test")
    assert main(["export", "-o", str(tmp_path / "cli.onnx"), "--weights", str(weights), "--size", "300x200"]) == 0
    assert "input (batch, 3, 200, 300) read at 1/2 for its maps" in capsys.readouterr().out
    Image.fromarray(dark_image(height, width)).save(tmp_path / "fits.png")
    Image.fromarray(dark_image(100, 100)).save(tmp_path / "other.png")
    code = main(["enhance", str(tmp_path / "fits.png"), str(tmp_path / "other.png"), "-o", str(tmp_path / "out"),
                 "-q", "--weights", str(weights), "--backend", "onnxruntime", "--onnx", str(tmp_path / "cli.onnx")])
    assert code == 1 and (tmp_path / "out" / "fits.png").exists() and not (tmp_path / "out" / "other.png").exists()
    assert "other.png: 100x100, but" in capsys.readouterr().err
    for bad in ("1920", "10x100", "axb"):
        with pytest.raises(SystemExit):
            main(["export", "-o", str(tmp_path / "bad.onnx"), "--size", bad])
        assert "expected WIDTHxHEIGHT" in capsys.readouterr().err


def test_nanolily_v2_backend_runs_its_stages_in_strips(small_v2, tmp_path, monkeypatch):
    from nanolily.engine.onnx import STAGES, StagedOnnxPredictor, export_onnx_stages, onnx_predictor

    model = small_v2
    paths = [tmp_path / f"{stage}.onnx" for stage in STAGES]
    assert export_onnx_stages(model, paths) <= 1e-4
    x = torch.from_numpy(dark_image(150, 97)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        whole = model(x)
    for rows in (16, 37, 1000):  # strips that split the image unevenly, and one strip
        assert (StagedOnnxPredictor(paths, model.config.factor, rows=rows)(x) - whole).abs().max() <= 1e-4
    with torch.no_grad():  # read at a coarser scale, as the engine reads a large photo
        assert (StagedOnnxPredictor(paths, model.config.factor, rows=37)(x, factor=6) - model(x, factor=6)).abs().max() <= 1e-4
    lit = x.clone()
    lit[..., 40:90, 30:60] = 0.95  # a light: the halo guard's second reading, blended in outside the graphs
    with torch.no_grad():
        guarded = model(lit, guard_halos=True)
        assert (guarded - model(lit)).abs().max() > 1e-3
        assert (StagedOnnxPredictor(paths, model.config.factor, rows=37)(lit, guard_halos=True) - guarded).abs().max() <= 1e-4
    monkeypatch.setenv("NANOLILY_CACHE", str(tmp_path / "cache"))  # the backend exports them once, then reuses them
    notes = []
    predictor = onnx_predictor(model, note=notes.append)
    assert isinstance(predictor, StagedOnnxPredictor)
    assert notes[0].startswith("exporting the model to ONNX once") and notes[1].startswith("exported in ")
    onnx_predictor(model, note=notes.append)
    assert len(notes) == 2  # cached: no second export
    assert sorted(p.name.rsplit("-", 1)[1] for p in (tmp_path / "cache").iterdir()) == sorted(f"{s}.onnx" for s in STAGES)
    assert (enhance_tensor(x, model, mode="global", predictor=predictor) - enhance_tensor(x, model)).abs().max() <= 1e-4


def test_export_without_the_extra_names_it(model, tmp_path, monkeypatch):
    import importlib.util

    from nanolily.engine.onnx import export_onnx

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else find_spec(name, *a))
    with pytest.raises(ImportError, match=r"needs onnxscript: pip install 'nanolily\[onnx\]'"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
