"""Scale-out with Ray Data, on a local Ray instance with 2 CPUs (the [ray] extra)."""

import numpy as np
import pytest
from PIL import Image

from nanolily.engine.pipeline import enhance_photo
from nanolily.interfaces.cli import main
from nanolily.io.images import read_image
from nanolily.models.weights import load_model

from ..conftest import dark_image

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_a_folder_tree_on_two_workers_with_a_bad_file(local_ray, random_weights, tmp_path, capsys):
    source, out = tmp_path / "night", tmp_path / "bright"
    (source / "2024").mkdir(parents=True)
    sizes = {"a.jpg": (120, 160), "b.png": (90, 100), "_DSC1.jpg": (30, 40),  # a camera's _DSC name: a photo
             "2024/c.png": (60, 80), "2024/d.png": (70, 50)}
    for name, (h, w) in sizes.items():
        Image.fromarray(dark_image(h, w, seed=len(name))).save(source / name)
    (source / "2024" / "broken.jpg").write_bytes(b"not a photo")
    (source / "notes.txt").write_text("not an image: not listed")
    (source / "._a.jpg").write_bytes(b"macOS metadata")  # hidden files and folders are not listed
    (source / ".thumbnails").mkdir()
    Image.fromarray(dark_image(20, 20)).save(source / ".thumbnails" / "a.png")

    args = ["enhance", str(source), "-o", str(out), "--ray", "--workers", "2", "--weights", str(random_weights)]
    assert main(args) == 1  # one file failed; the others are written
    err = capsys.readouterr().err
    assert f"error: {source / '2024' / 'broken.jpg'}: not an image file" in err
    assert "enhanced 5 of 6 images" in err and "1 failed" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(sizes)

    # each output is what the library makes of its input, on one machine
    model = load_model(random_weights, device="cpu")
    for name in sizes:
        expected = enhance_photo(read_image(source / name), model).pixels
        written = read_image(out / name).pixels
        tolerance = 3 / 255 if name.endswith(".jpg") else 0.5 / 255  # JPEG re-encoding; PNG rounding
        assert np.abs(written.astype(float) - np.round(expected * 255) / 255).mean() < tolerance

    # a second run leaves the outputs as they are
    before = {name: (out / name).stat().st_mtime_ns for name in sizes}
    assert main(args + ["--skip-existing", "-q"]) == 1  # the broken file fails again
    assert "5 skipped" not in capsys.readouterr().err  # -q: errors only
    assert all((out / name).stat().st_mtime_ns == before[name] for name in sizes)
    assert main(args) == 1 and "already exists" in capsys.readouterr().err  # neither skipped nor overwritten


def test_listed_as_enhance_lists_a_folder(local_ray, random_weights, tmp_path, capsys):
    source, out = tmp_path / "night", tmp_path / "bright"
    source.mkdir()
    for name in ("IMG_1.jpg", "IMG_1.png", "IMG_2.jpg"):
        Image.fromarray(dark_image(40, 30, seed=len(name))).save(source / name)
    (source / "loop").symlink_to(source)  # a symlinked folder is not followed: no photo comes twice
    args = ["enhance", str(source), "-o", str(out), "--ray", "--workers", "1", "--format", "png", "-q",
            "--weights", str(random_weights)]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["IMG_1.png", "IMG_1_jpg.png", "IMG_2.png"]  # as without --ray
    assert main(["enhance", str(source), "-o", str(tmp_path / "local"), "--format", "png", "-q",
                 "--weights", str(random_weights)]) == 0
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == sorted(p.name for p in out.iterdir())


def test_refusals_name_the_path(local_ray, random_weights, tmp_path, capsys):
    (tmp_path / "night").mkdir()
    weights = ["--weights", str(random_weights)]
    assert main(["enhance", str(tmp_path / "night"), "-o", str(tmp_path / "night" / "out"), "--ray"] + weights) == 1
    assert "the output is inside the source" in capsys.readouterr().err
    assert main(["enhance", str(tmp_path / "missing"), "-o", str(tmp_path / "out"), "--ray"] + weights) == 1
    assert f"error: {tmp_path / 'missing'}: no such file or folder" in capsys.readouterr().err
    assert main(["enhance", str(tmp_path / "night"), "-o", str(tmp_path / "out"), "--ray"] + weights) == 1
    assert f"error: {tmp_path / 'night'}: no images in this folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # a usage error: one source and an output
        main(["enhance", str(tmp_path / "night"), "--ray"] + weights)
    assert exit_info.value.code == 2
