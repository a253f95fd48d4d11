import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from nanolily.io import images as nanolily_io
from nanolily.interfaces.cli import common, main

from ..conftest import dark_image, write_dng


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "shots"
    (folder / "sub").mkdir(parents=True)
    for name, (h, w) in {"a.jpg": (120, 160), "b.png": (90, 100), "sub/c.png": (60, 80)}.items():
        Image.fromarray(dark_image(h, w)).save(folder / name)
    return folder


def run(args, weights):
    return main(list(args) + ["--weights", str(weights), "--device", "cpu"])


def test_one_file_beside_the_input(photos, random_weights, capsys):
    assert run(["enhance", str(photos / "a.jpg")], random_weights) == 0
    out = Image.open(photos / "a_lily.jpg")
    assert out.size == (160, 120)
    assert "enhanced 1 of 1 images" in capsys.readouterr().err


def test_one_file_to_a_named_output(photos, random_weights, tmp_path):
    assert run(["enhance", str(photos / "a.jpg"), "-o", str(tmp_path / "bright.png"), "-q"], random_weights) == 0
    assert Image.open(tmp_path / "bright.png").format == "PNG"


def test_folder_recursive_into_an_output_folder(photos, random_weights, tmp_path):
    out = tmp_path / "out"
    assert run(["enhance", str(photos), "-r", "-o", str(out), "-q"], random_weights) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*")) == ["a.jpg", "b.png", "sub/c.png"]


def test_folder_without_recursion_skips_subfolders_and_own_outputs(photos, random_weights):
    assert run(["enhance", str(photos), "-q"], random_weights) == 0
    assert sorted(p.name for p in photos.glob("*_lily.*")) == ["a_lily.jpg", "b_lily.png"]
    # a second run does not enhance its own outputs; it refuses to overwrite the first run's
    assert run(["enhance", str(photos), "-q"], random_weights) == 1
    assert not list(photos.glob("*_lily_lily.*"))


def test_inputs_that_would_share_an_output_keep_apart(photos, random_weights, tmp_path):
    Image.fromarray(dark_image(50, 60)).save(photos / "b.jpg")  # b.jpg and b.png: one PNG name with --format png
    assert run(["enhance", str(photos), "-o", str(tmp_path / "o"), "--format", "png", "-q"], random_weights) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png", "b.png", "b_jpg.png"]
    assert Image.open(tmp_path / "o" / "b_jpg.png").size == (60, 50)  # each from its own input
    assert run(["enhance", str(photos), "--format", "webp", "-q"], random_weights) == 0
    assert sorted(p.name for p in photos.glob("*_lily.*")) == ["a_lily.webp", "b_jpg_lily.webp", "b_png_lily.webp"]


def test_plan_jobs_compares_names_ignoring_case():
    jobs = common.plan_jobs([(Path("x/N.JPG"), None), (Path("x/n.tif"), None)], "o", "jpg")
    assert [job.target.name for job in jobs] == ["N.jpg", "n_tif.jpg"]


def test_glob_and_format(photos, random_weights, tmp_path):
    assert run(["enhance", str(photos / "*.png"), "-o", str(tmp_path / "o"), "--format", "webp", "-q"],
               random_weights) == 0
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["b.webp"]


def test_many_inputs_to_one_file_is_a_usage_error(photos, random_weights, tmp_path):
    with pytest.raises(SystemExit) as e:
        run(["enhance", str(photos / "a.jpg"), str(photos / "b.png"), "-o", str(tmp_path / "x.png")], random_weights)
    assert e.value.code == 2


def test_precision_option(photos, random_weights, tmp_path, capsys):
    assert run(["enhance", str(photos / "a.jpg"), "-o", str(tmp_path / "half.png"), "--precision", "bf16", "-q"],
               random_weights) == 0
    assert Image.open(tmp_path / "half.png").size == (160, 120)
    with pytest.raises(SystemExit) as e:
        run(["enhance", str(photos / "a.jpg"), "--precision", "fp16"], random_weights)
    assert e.value.code == 2 and "--precision fp16 needs a GPU" in capsys.readouterr().err


def test_bad_files_do_not_stop_the_batch(photos, random_weights, tmp_path, capsys):
    (photos / "empty.png").write_bytes(b"")
    (photos / "text.jpg").write_text("not an image")
    data = (photos / "a.jpg").read_bytes()
    (photos / "trunc.jpg").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code = run(["enhance", str(photos), str(tmp_path / "missing.png"), "-o", str(out)], random_weights)
    err = capsys.readouterr().err
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.png"]
    for line in [f"error: {photos / 'empty.png'}: empty file (0 bytes)",
                 f"error: {photos / 'text.jpg'}: not an image file",
                 f"error: {photos / 'trunc.jpg'}: damaged image",
                 f"error: {tmp_path / 'missing.png'}: no such file or folder"]:
        assert line in err
    assert "enhanced 2 of 6 images" in err and "4 failed" in err


def test_pixel_limit_option(photos, random_weights, capsys):
    assert run(["enhance", str(photos / "a.jpg"), "--max-pixels", "1000", "-q"], random_weights) == 1
    assert "over the 0.001 MP limit" in capsys.readouterr().err
    assert run(["enhance", str(photos / "a.jpg"), "--max-pixels", "20000", "-q"], random_weights) == 0


def test_existing_outputs_and_inputs_are_kept_unless_overwrite(photos, random_weights, capsys):
    original = (photos / "b.png").read_bytes()
    assert run(["enhance", str(photos / "b.png"), "-o", str(photos / "b.png"), "-q"], random_weights) == 1
    assert "already exists (--overwrite replaces it" in capsys.readouterr().err
    assert (photos / "b.png").read_bytes() == original
    assert run(["enhance", str(photos / "b.png"), "-o", str(photos / "b.png"), "-q", "--overwrite"], random_weights) == 0
    assert (photos / "b.png").read_bytes() != original


def test_unwritable_output_folder(photos, random_weights, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    code = run(["enhance", str(photos / "a.jpg"), str(photos / "b.png"), "-o", str(blocker / "out"), "-q"],
               random_weights)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 2 and all(str(blocker / "out") in line for line in err)


def test_core_mode_and_options(photos, random_weights):
    assert run(["enhance", str(photos / "b.png"), "--mode", "core", "--stride", "56", "--batch-size", "2", "-q"],
               random_weights) == 0
    with pytest.raises(SystemExit) as e:
        run(["enhance", str(photos / "b.png"), "--mode", "fast"], random_weights)
    assert e.value.code == 2


def test_missing_weights_file_is_one_line(photos, tmp_path, capsys):
    code = main(["enhance", str(photos / "a.jpg"), "--weights", str(tmp_path / "none.safetensors"), "-q"])
    assert code == 1
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_compare_figure(photos, random_weights, tmp_path, capsys):
    fig = tmp_path / "fig.png"
    assert run(["compare", str(photos / "a.jpg"), "-o", str(fig)], random_weights) == 0
    im = Image.open(fig)
    assert im.width > 3 * 160 and im.height > 120
    assert str(fig) in capsys.readouterr().out


def test_info(random_weights, capsys, monkeypatch):
    assert run(["info"], random_weights) == 0
    out = capsys.readouterr().out
    assert "129,016" in out and "sha256:" in out and "version: test-untrained" in out
    assert any(line.startswith("v1 tiles:") for line in out.splitlines())
    formats = next(line for line in out.splitlines() if line.startswith("formats:"))
    assert all(f in formats.split(";")[0] for f in ("bmp", "jpg", "png", "tiff", "webp"))
    monkeypatch.setattr("nanolily.io.images.HAS_RAW", False)
    assert run(["info"], random_weights) == 0
    assert "camera RAW files need rawpy: pip install 'nanolily[raw]'" in capsys.readouterr().out


def test_demo_writes_the_figure(random_weights, tmp_path, capsys):
    assert run(["demo", "-o", str(tmp_path / "demo")], random_weights) == 0
    out = capsys.readouterr().out
    assert f"comparison figure: {tmp_path / 'demo' / 'demo_compare.png'}" in out
    assert len(list((tmp_path / "demo").glob("*_lily.png"))) >= 2


def test_console_script_version_and_help():
    r = subprocess.run([sys.executable, "-m", "nanolily.interfaces.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("nanolily ")
    r = subprocess.run([sys.executable, "-m", "nanolily.interfaces.cli", "enhance", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--overwrite" in r.stdout and "exit status" in r.stdout
    r = subprocess.run([sys.executable, "-m", "nanolily.interfaces.cli"], capture_output=True, text=True)
    assert r.returncode == 2


def test_demo_with_the_shipped_weights_brightens_the_samples(tmp_path, capsys):
    from nanolily.models.weights import SHIPPED

    if SHIPPED["nanolily-v1"].sha256 is None:
        pytest.skip("no shipped weights in this version")
    assert main(["demo", "-o", str(tmp_path / "demo")]) == 0
    for line in capsys.readouterr().out.splitlines()[:-1]:  # "<name>: WxH, mean brightness a -> b"
        before, after = map(float, line.split("mean brightness ")[1].split(" -> "))
        assert after > before + 0.2


def test_strength_option(photos, random_weights, tmp_path):
    import numpy as np

    outs = {}
    for strength in ("0", "1", "1.5"):
        target = tmp_path / f"s{strength}.png"
        assert run(["enhance", str(photos / "b.png"), "-o", str(target), "--strength", strength, "-q"],
                   random_weights) == 0
        outs[strength] = np.asarray(Image.open(target)).astype(int)
    original = np.asarray(Image.open(photos / "b.png")).astype(int)
    assert np.abs(outs["0"] - original).max() <= 1
    assert np.abs(outs["1.5"] - original).mean() > np.abs(outs["1"] - original).mean()
    with pytest.raises(SystemExit):
        run(["enhance", str(photos / "b.png"), "--strength", "-1"], random_weights)


def test_model_option_names_a_shipped_model_and_excludes_weights(photos, random_weights, capsys):
    from nanolily.models.weights import SHIPPED

    for name in SHIPPED:
        assert main(["info", "--model", name]) == 0
        out = capsys.readouterr().out
        assert f"version: {name}" in out and "(verified)" in out
    with pytest.raises(SystemExit) as e:
        main(["enhance", str(photos / "b.png"), "--model", "nanolily-v1", "--weights", str(random_weights)])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["enhance", str(photos / "b.png"), "--model", "nanolily-v9"])
    assert e.value.code == 2


def test_correction_options(photos, random_weights, tmp_path):
    import numpy as np

    outs = {}
    for name, options in {"default": [], "denoise": ["--denoise", "1"], "balance": ["--white-balance"],
                          "strong": ["--strength", "8", "--denoise", "0"],
                          "raw": ["--strength", "8", "--denoise", "0", "--no-protect-highlights"]}.items():
        target = tmp_path / f"{name}.png"
        assert run(["enhance", str(photos / "a.jpg"), "-o", str(target), "-q", *options], random_weights) == 0
        outs[name] = np.asarray(Image.open(target)).astype(int)
    for name in ("denoise", "balance"):
        assert np.abs(outs[name] - outs["default"]).max() > 0, name
    assert (outs["raw"] == 255).sum() > (outs["strong"] == 255).sum()  # protection keeps pixels off white
    with pytest.raises(SystemExit):
        run(["enhance", str(photos / "a.jpg"), "--denoise", "1.5"], random_weights)


def test_formats_nanolily_does_not_write_get_a_lossless_output(photos, random_weights):
    Image.fromarray(dark_image(30, 40)).save(photos / "anim.gif")  # read when named, written as PNG
    assert run(["enhance", str(photos / "anim.gif"), "-q"], random_weights) == 0
    assert Image.open(photos / "anim_lily.png").size == (40, 30)
    pytest.importorskip("rawpy")
    write_dng(photos / "night.dng", np.full((40, 60), 2000))
    assert run(["enhance", str(photos / "night.dng"), "-q"], random_weights) == 0
    out = Image.open(photos / "night_lily.tif")  # a camera RAW file keeps its 16 bits in a TIFF
    assert out.size == (60, 40) and tifffile.imread(photos / "night_lily.tif").dtype == np.uint16


def test_folder_notes_photos_it_cannot_read_and_goes_on(photos, random_weights, monkeypatch, capsys):
    (photos / "phone.heic").write_bytes(b"x")
    (photos / "notes.txt").write_text("not a photo")
    without_heic = tuple(s for s in common.READ_SUFFIXES if s != ".heic")  # as without pillow-heif
    monkeypatch.setattr(common, "READ_SUFFIXES", without_heic)
    monkeypatch.setattr(nanolily_io, "READ_SUFFIXES", without_heic)
    assert run(["enhance", str(photos), "-o", str(photos / "out")], random_weights) == 0
    err = capsys.readouterr().err
    assert f"note: {photos}: skipped 1 .heic file: HEIC/HEIF files need pillow-heif: pip install 'nanolily[heif]'" in err
    assert "notes.txt" not in err and "enhanced 2 of 2 images" in err
    assert run(["enhance", str(photos), "-o", str(photos / "out2"), "-q"], random_weights) == 0
    assert "note" not in capsys.readouterr().err


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_standard_input_to_standard_output(photos, random_weights, monkeypatch, capsysbinary):
    _stdin(monkeypatch, (photos / "a.jpg").read_bytes())
    assert run(["enhance", "-", "-q"], random_weights) == 0  # standard input goes to standard output
    out = Image.open(io.BytesIO(capsysbinary.readouterr().out))
    assert out.format == "PNG" and out.size == (160, 120)
    # the same pixels as the file route
    assert run(["enhance", str(photos / "a.jpg"), "-o", "-", "--format", "png", "-q"], random_weights) == 0
    assert run(["enhance", str(photos / "a.jpg"), "-o", str(photos / "a.png"), "-q"], random_weights) == 0
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(capsysbinary.readouterr().out))),
                          np.asarray(Image.open(photos / "a.png")))
    assert np.array_equal(np.asarray(out), np.asarray(Image.open(photos / "a.png")))
    _stdin(monkeypatch, (photos / "b.png").read_bytes())
    assert run(["enhance", "-", "-o", str(photos / "from_stdin.webp"), "-q"], random_weights) == 0
    assert Image.open(photos / "from_stdin.webp").size == (100, 90)
    _stdin(monkeypatch, (photos / "b.png").read_bytes())
    assert run(["enhance", "-", "--format", "jpg", "-q"], random_weights) == 0
    assert Image.open(io.BytesIO(capsysbinary.readouterr().out)).format == "JPEG"


def test_standard_input_errors(photos, random_weights, monkeypatch, capsysbinary):
    _stdin(monkeypatch, b"")
    assert run(["enhance", "-"], random_weights) == 1
    captured = capsysbinary.readouterr()
    assert captured.out == b"" and b"error: stdin: empty input (0 bytes)" in captured.err
    _stdin(monkeypatch, b"not an image")
    assert run(["enhance", "-"], random_weights) == 1
    assert b"error: stdin: not an image file" in capsysbinary.readouterr().err
    with pytest.raises(SystemExit) as e:
        run(["enhance", str(photos / "a.jpg"), str(photos / "b.png"), "-o", "-"], random_weights)
    assert e.value.code == 2 and b"standard output takes one image" in capsysbinary.readouterr().err


def test_bloom_with_the_resolution_free_model_is_a_usage_error(photos, capsys):
    with pytest.raises(SystemExit) as e:
        main(["enhance", str(photos / "a.jpg"), "--model", "nanolily-v2", "--mode", "bloom"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "nanolily-v1's engine" in err and "Traceback" not in err
    assert not (photos / "a_lily.jpg").exists()


def test_compare_leaves_bloom_out_for_the_resolution_free_model(photos, tmp_path):
    v1, v2 = tmp_path / "v1.png", tmp_path / "v2.png"
    assert main(["compare", str(photos / "a.jpg"), "-o", str(v1), "--model", "nanolily-v1"]) == 0
    assert main(["compare", str(photos / "a.jpg"), "-o", str(v2), "--model", "nanolily-v2"]) == 0
    assert Image.open(v2).width < Image.open(v1).width  # three panels against four


def test_compare_models_side_by_side(photos, random_weights, tmp_path, capsys):
    fig = tmp_path / "models.png"
    args = ["compare", str(photos / "a.jpg"), "-o", str(fig), "--height", "100"]
    assert main(args + ["--models", "nanolily-v2", str(random_weights)]) == 0
    im = Image.open(fig)
    assert im.height > 100 and 3 * 100 < im.width < 4 * 160  # Input and two models, each 160x100 or so
    assert main(args + ["--overwrite", "--models", "nanolily-v2"]) == 0
    assert Image.open(fig).width < im.width
    capsys.readouterr()
    assert main(args + ["--overwrite", "--models", "nanolily-v2", str(tmp_path / "none.safetensors")]) == 1
    assert "none.safetensors" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--models", "nanolily-v2", "nanolily-v2"]) == 1
    assert "named twice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--overwrite", "--models", "nanolily-v2", "--model", "nanolily-v1"])
    assert "leave out --model" in capsys.readouterr().err


def test_skip_existing_reruns_a_folder_without_failures(photos, random_weights, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(["enhance", str(photos), "-o", str(out), "-q"], random_weights) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert run(["enhance", str(photos), "-o", str(out)], random_weights) == 1  # each existing output fails
    assert run(["enhance", str(photos), "-o", str(out), "--skip-existing"], random_weights) == 0
    assert "2 skipped (outputs exist)" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_folder_says_once_what_it_leaves_out(photos, random_weights, capsys):
    Image.fromarray(dark_image(30, 40)).save(photos / "anim.gif")
    assert run(["enhance", str(photos), "-q"], random_weights) == 0
    assert run(["enhance", str(photos), "--overwrite"], random_weights) == 0
    err = capsys.readouterr().err
    assert err.count("skipped 1 .gif file") == 1 and err.count("1 subfolder not searched (use -r)") == 1


def test_folder_leaves_out_hidden_files_and_says_so(photos, random_weights, tmp_path, capsys):
    (photos / "._a.jpg").write_bytes(b"macOS metadata beside a photo on a memory card")
    (photos / ".thumbnails").mkdir()
    Image.fromarray(dark_image(20, 20)).save(photos / ".thumbnails" / "a.png")
    Image.fromarray(dark_image(20, 30)).save(photos / "_DSC1.jpg")  # a camera's name, not a hidden one
    assert run(["enhance", str(photos), "-r", "-o", str(tmp_path / "o")], random_weights) == 0
    assert sorted(p.relative_to(tmp_path / "o").as_posix() for p in (tmp_path / "o").rglob("*.*")) == [
        "_DSC1.jpg", "a.jpg", "b.png", "sub/c.png"]
    assert "skipped 2 hidden files (a name starting with '.'" in capsys.readouterr().err
    assert run(["enhance", str(photos / "._a.jpg"), "-o", str(tmp_path / "named.png")], random_weights) == 1  # named: tried


def test_output_under_a_file_is_one_clear_line(photos, random_weights, capsys):
    target = photos / "a.jpg" / "x.png"
    assert run(["enhance", str(photos / "b.png"), "-o", str(target)], random_weights) == 1
    assert f"{photos / 'a.jpg'} is a file, not a folder" in capsys.readouterr().err


def test_unavailable_device_is_a_usage_error(photos, capsys):
    with pytest.raises(SystemExit) as e:
        main(["enhance", str(photos / "a.jpg"), "--device", "cuda:0" if not torch.cuda.is_available() else "tpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: ")


def test_image_data_is_not_written_to_a_terminal(photos, random_weights, monkeypatch, capsysbinary):
    _stdin(monkeypatch, (photos / "b.png").read_bytes())
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    with pytest.raises(SystemExit) as e:
        run(["enhance", "-"], random_weights)
    assert e.value.code == 2 and b"terminal" in capsysbinary.readouterr().err
