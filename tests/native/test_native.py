"""The compiled corrections (nanolily.native) against the PyTorch path they replace."""

import pytest
import torch

from nanolily import native
from nanolily.engine import corrections
from nanolily.engine.bloom import bloom
from nanolily.engine.pipeline import apply_corrections, enhance_tensor
from nanolily.models import v1
from nanolily.models.v1 import NanoLILY
from nanolily.models.weights import load_model

needs_library = pytest.mark.skipif(native.library() is None, reason="no C compiler: the compiled corrections are not built")


def _pair(shape, seed=0, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) * 0.45
    y = x * 2.4 + 0.04 * torch.randn(shape, generator=g)  # lifts far past white in places, and some below 0
    if channels_last:
        x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
    return x, y


@needs_library
@pytest.mark.parametrize("shape", [(1, 3, 64, 96), (2, 3, 37, 51), (1, 3, 1, 9), (1, 3, 6, 1), (1, 3, 2, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("settings", [{}, {"strength": 0.6}, {"strength": 1.7, "denoise": 1.0}, {"denoise": 0.0},
                                      {"protect_highlights": False}, {"white_balance": True}])
def test_compiled_corrections_equal_pytorch(shape, channels_last, settings):
    x, y = _pair(shape, channels_last=channels_last)
    eager = apply_corrections(x, y.clone(), compiled=False, rows=16, cols=32, **settings)
    compiled = apply_corrections(x, y.clone(), compiled=True, rows=16, cols=32, **settings)
    assert torch.allclose(compiled, eager, atol=2e-5, rtol=0)
    assert compiled.min() >= 0 and compiled.max() <= 1


@needs_library
def test_one_tile_with_a_crop_and_strided_output():
    x, y = _pair((1, 3, 30, 44), seed=2, channels_last=True)
    y = y.clamp(0, 1.3)
    want = corrections.denoise(corrections.protect_highlights(x, y).clamp(0, 1), 0.5).clamp(0, 1)[0, :, 5:25, 3:40]
    out = torch.zeros(20, 37, 3).permute(2, 0, 1)  # interleaved, as a photo's pixels
    lib = native.library()
    scratch = torch.empty(native.scratch_floats(lib, 30, 44, 0.5, 1, 2))
    native.correct_tile(lib, x[0], y[0], out, (5, 3), 1.0, True, corrections.KNEE, 0.5, corrections.LUMA_SIGMA ** 2,
                        1, 2, scratch)
    assert torch.allclose(out, want, atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="float32"):
        native.correct_tile(lib, x[0].double(), y[0], out, (0, 0), 1.0, True, 0.7, 0.5, 4e-4, 1, 2, scratch)
    with pytest.raises(ValueError, match="too small"):
        native.correct_tile(lib, x[0], y[0], out, (5, 3), 1.0, True, 0.7, 0.5, 4e-4, 1, 2, scratch[:100])


@needs_library
def test_default_pipeline_is_the_same_either_way():
    model = load_model()
    x = _pair((1, 3, 90, 130), seed=3)[0]
    with torch.inference_mode():
        y = enhance_tensor(x, model, protect_highlights=False, denoise=0)
        assert torch.allclose(apply_corrections(x, y.clone()), apply_corrections(x, y.clone(), compiled=False),
                              atol=2e-5, rtol=0)


def test_disabled_or_without_a_compiler_the_pytorch_path_runs(monkeypatch, tmp_path):
    x, y = _pair((1, 3, 20, 30))
    eager = apply_corrections(x, y.clone(), compiled=False)
    monkeypatch.setenv("NANOLILY_CACHE", str(tmp_path))
    monkeypatch.setenv("NANOLILY_NATIVE", "0")
    native.reset()
    try:
        assert native.library() is None
        assert torch.equal(apply_corrections(x, y.clone()), eager)
        with pytest.raises(RuntimeError, match="not available"):
            apply_corrections(x, y.clone(), compiled=True)
        monkeypatch.setenv("NANOLILY_NATIVE", "1")
        monkeypatch.setenv("CC", "false")  # a compiler that fails: remembered, and the PyTorch path runs
        native.reset()
        assert native.library() is None
        assert torch.equal(apply_corrections(x, y.clone()), eager)
        assert not list(tmp_path.glob("*.so"))  # nothing half-written left in the cache
    finally:
        native.reset()


@needs_library
def test_built_once_then_loaded_from_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("NANOLILY_CACHE", str(tmp_path))
    native.reset()
    try:
        assert native.library() is not None
        (built,) = tmp_path.glob("kernels-*")
        native.reset()

        def no_compiler(*args, **kwargs):
            raise AssertionError("compiled again")

        monkeypatch.setattr(native.subprocess, "run", no_compiler)
        assert native.library() is not None
        assert list(tmp_path.glob("kernels-*")) == [built]
    finally:
        native.reset()


@needs_library
def test_built_without_march_native_where_the_compiler_refuses_it(monkeypatch, tmp_path):
    x, y = _pair((1, 3, 20, 30))
    wrapper = tmp_path / "cc-without-native"  # a compiler that refuses -march=native, as some Clangs on ARM do
    wrapper.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -march=native ] && exit 1; done\n'
                       f'exec {native._compiler()} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("NANOLILY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(wrapper))
    native.reset()
    try:
        assert native.library() is not None
        assert len(list((tmp_path / "cache").glob("kernels-*"))) == 1
        compiled = apply_corrections(x, y.clone(), compiled=True)
        assert torch.allclose(compiled, apply_corrections(x, y.clone(), compiled=False), atol=2e-5, rtol=0)
    finally:
        native.reset()


@needs_library
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_corrections_run_in_a_forked_child():
    import multiprocessing

    x, y = _pair((1, 3, 40, 60))
    want = apply_corrections(x, y.clone())  # starts the kernels' thread pool in this process
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply(apply_corrections, (x, y.clone()))  # would wait forever on the parent's dead threads
    assert torch.allclose(got, want, atol=1e-6)


needs_tile_library = pytest.mark.skipif(native.tile_library() is None,
                                        reason="no OpenMP C compiler, or PyTorch's threads are not OpenMP's")


def _forward(model, x, compiled, monkeypatch, **kwargs):
    """The model's inference on ``x`` with the tile kernels on or off."""
    monkeypatch.setenv("NANOLILY_NATIVE", "1" if compiled else "0")
    native.reset()
    try:
        assert (model._tile_kernels(x) is not None) == compiled
        with torch.inference_mode():
            return model(x, **kwargs)
    finally:
        native.reset()


def _random_model(seed):
    torch.manual_seed(seed)
    model = NanoLILY().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


@needs_tile_library
@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "view"])
@pytest.mark.parametrize("onednn_stride2", [False, True])  # the stride-2 convolution where oneDNN has AVX-512
def test_compiled_tile_forward_equals_pytorch(batch, layout, onednn_stride2, monkeypatch):
    monkeypatch.setattr(v1, "_onednn_avx512", lambda: onednn_stride2)
    g = torch.Generator().manual_seed(batch)
    x = torch.rand(batch, 3, 240, 230, generator=g) ** 2 * 0.4  # dark, with some detail
    x[0, :, :100] *= 0.05  # a near-black band: small spreads for the norms
    x = {"contiguous": x[..., 8:232, :224].contiguous(),
         "channels_last": x[..., 8:232, :224].contiguous(memory_format=torch.channels_last),
         "view": x[..., 8:232, 3:227]}[layout]
    for model in (load_model("nanolily-v1"), _random_model(batch)):
        compiled, eager = (_forward(model, x, on, monkeypatch) for on in (True, False))
        assert compiled.shape == eager.shape == (batch, 3, 224, 224)
        assert torch.allclose(compiled, eager, atol=1e-4, rtol=0)


@needs_tile_library
def test_compiled_tile_forward_follows_weight_updates(monkeypatch):
    monkeypatch.setattr(v1, "_onednn_avx512", lambda: False)  # both convolutions in Winograd's form
    model = _random_model(6)
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(6)) ** 2 * 0.4
    before = _forward(model, x, True, monkeypatch)  # caches the convolutions' transformed weights
    with torch.no_grad():  # not a scaling of each filter: the norms after both convolutions would undo it
        model.spatial.down.weight.add_(torch.randn(model.spatial.down.weight.shape) * 0.1)
        model.spatial.up.weight.add_(torch.randn(model.spatial.up.weight.shape) * 0.1)
    compiled, eager = (_forward(model, x, on, monkeypatch) for on in (True, False))
    assert not torch.allclose(compiled, before, atol=1e-3)
    assert torch.allclose(compiled, eager, atol=1e-4, rtol=0)


@needs_tile_library
def test_compiled_tile_forward_with_bf16_inner_convolutions(monkeypatch):
    model = load_model("nanolily-v1")
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(4)) ** 2 * 0.4
    exact = _forward(model, x, False, monkeypatch)
    compiled, eager = (_forward(model, x, on, monkeypatch, inner_dtype=torch.bfloat16) for on in (True, False))
    assert 0 < (compiled - exact).abs().max() < 0.03  # the skip connection stays fp32 in the kernels
    assert (compiled - eager).abs().max() < 0.03


@needs_tile_library
@pytest.mark.parametrize("size", [(112, 112), (10, 14), (16, 6)])
def test_compiled_border_terms_equal_pytorch(size):
    branch = _random_model(7).spatial
    d = torch.randn(2, 64, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = branch.border_terms(d)
    compiled = native.border_terms(native.tile_library(), d, branch.up.weight, branch.up.bias, branch.conv_out.weight)
    (h, w), n = size, max(size)
    assert compiled.shape == eager.shape == (2, 12, 2 * n)
    assert torch.allclose(compiled[:, :6, :2 * w], eager[:, :6, :2 * w], atol=1e-5, rtol=0)  # top and bottom rows
    assert torch.allclose(compiled[:, 6:, :2 * h], eager[:, 6:, :2 * h], atol=1e-5, rtol=0)  # left and right columns


@needs_tile_library
@pytest.mark.parametrize("shape", [(2, 64, 112, 112, 16, 1), (1, 64, 13, 10, 12, 1), (3, 8, 5, 7, 16, 1),
                                   (1, 16, 9, 17, 40, 1), (2, 32, 224, 224, 64, 2), (1, 32, 13, 10, 64, 2),
                                   (2, 8, 5, 3, 12, 2), (1, 16, 18, 30, 40, 2)])
def test_winograd_convolution_equals_the_direct_form(shape):
    b, ci, h, w, co, stride = shape  # sizes off the 4x4 blocks (odd ones too), output channels off the 16 per pass
    g = torch.Generator().manual_seed(co)
    d = torch.randn(b, ci, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(co, ci, 3, 3, generator=g) * 0.05, torch.randn(co, generator=g)
    lib = native.tile_library()
    out = native.conv3x3(lib, d, weight, bias, stride)
    exact = torch.nn.functional.conv2d(d.double(), weight.double(), bias.double(), stride, padding=1)
    assert out.shape == (b, co + -co % 16, *exact.shape[2:]) and out.is_contiguous(memory_format=torch.channels_last)
    assert (out[:, :co] - exact).abs().max() < 1e-5 * exact.abs().max()  # Winograd's rounding, relative
    assert torch.equal(out[:, co:], torch.zeros_like(out[:, co:]))
    kept = native.winograd_weights(lib, weight, stride)  # the transformed weights, kept by a caller
    assert torch.equal(native.conv3x3(lib, d, weight, bias, stride, kept), out)


@needs_tile_library
def test_bloom_is_the_same_either_way(monkeypatch):
    model = load_model("nanolily-v1")
    x = _pair((1, 3, 300, 410), seed=5)[0]
    results = []
    for on in (True, False):
        monkeypatch.setenv("NANOLILY_NATIVE", "1" if on else "0")
        native.reset()
        with torch.inference_mode():
            results.append(bloom(model, x))
    native.reset()
    assert torch.allclose(*results, atol=1e-4, rtol=0)


def test_tile_kernels_only_where_they_apply(monkeypatch):
    model = load_model("nanolily-v1")
    monkeypatch.setenv("NANOLILY_NATIVE", "0")
    native.reset()
    assert native.tile_library() is None and model._tile_kernels(torch.rand(1, 3, 224, 224)) is None
    monkeypatch.setenv("NANOLILY_NATIVE", "1")
    native.reset()
    for x in (torch.rand(1, 3, 224, 226), torch.rand(1, 3, 224, 224, dtype=torch.float64)):
        assert model._tile_kernels(x) is None  # global mode and other dtypes run in PyTorch
    native.reset()


@needs_tile_library
def test_tile_kernels_bind_to_pytorchs_openmp_beside_other_runtimes():
    pytest.importorskip("rawpy")  # its wheel bundles an OpenMP runtime of its own, loaded on import
    native.reset()
    try:
        assert native.tile_library() is not None
    finally:
        native.reset()


@needs_tile_library
def test_tile_kernels_check_their_inputs():
    lib = native.tile_library()
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="float32"):
        native.first_stage(lib, x.double(), torch.rand(32, 3, 3, 3), torch.rand(32), 0.2)
    with pytest.raises(ValueError, match="3 -> 32"):
        native.first_stage(lib, x, torch.rand(16, 3, 3, 3), torch.rand(16), 0.2)
    with pytest.raises(ValueError, match="multiple of 8"):
        native.conv3x3(lib, torch.rand(1, 12, 8, 8), torch.rand(16, 12, 3, 3), torch.rand(16))
    with pytest.raises(ValueError, match="stride 1 or 2"):
        native.conv3x3(lib, torch.rand(1, 16, 8, 8), torch.rand(16, 16, 3, 3), torch.rand(16), stride=3)
    kept = native.winograd_weights(lib, torch.rand(16, 16, 3, 3))
    with pytest.raises(ValueError, match="do not match"):
        native.conv3x3(lib, torch.rand(1, 24, 8, 8), torch.rand(16, 24, 3, 3), torch.rand(16), transformed=kept)
    s1, phases = torch.rand(1, 32, 8, 8), torch.rand(1, 16, 4, 4)
    with pytest.raises(ValueError, match="border"):
        native.tile_output(lib, x, phases, s1, torch.rand(3, 32, 3, 3), torch.rand(1, 12, 4), x, torch.eye(3))
