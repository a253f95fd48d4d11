import numpy as np
import pytest
import torch
from PIL import Image

from nanolily.training.data import (DatasetError, PairedImages, detect_layout, find_overlaps, find_pairs,
                                    read_split)

from ..conftest import SHARED, dark_image


def make_layout(root, layout, ids, ext=".png", seed=0):
    """Tiny generated pairs in a published layout."""
    folders = {"lol-v1": ("our485/low", "our485/high", "", ""),
               "lol-v2": ("Train/Low", "Train/Normal", "low", "normal"),
               "pair": ("low", "high", "", "")}[layout]
    for f in folders[:2]:
        (root / f).mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(ids):
        img = dark_image(40, 60, seed=seed + k)
        Image.fromarray(img).save(root / folders[0] / f"{folders[2]}{i}{ext}")
        Image.fromarray(np.clip(img.astype(int) * 3, 0, 255).astype(np.uint8)).save(
            root / folders[1] / f"{folders[3]}{i}.jpg", quality=100, subsampling=0)
    return root


@pytest.mark.parametrize("layout,ids", [("lol-v1", ["1", "2", "10"]), ("lol-v2", ["00001", "00002"]), ("pair", ["a", "b"])])
def test_layouts_pair_by_id(tmp_path, layout, ids):
    make_layout(tmp_path, layout, ids)
    pairs = find_pairs(tmp_path, layout)
    assert [p.id for p in pairs] == ids
    assert all(p.low.stem.endswith(p.id) and p.high.stem.endswith(p.id) for p in pairs)


def test_missing_partner_lists_the_ids(tmp_path):
    make_layout(tmp_path, "pair", ["a", "b", "c"])
    (tmp_path / "high" / "b.jpg").unlink()
    (tmp_path / "low" / "c.png").unlink()
    with pytest.raises(DatasetError, match=r"low without high \[b\], high without low \[c\]"):
        find_pairs(tmp_path, "pair")


def test_lol_v2_synthetic_names_and_other_sets_folder_names(tmp_path):
    synthetic = tmp_path / "LOL-v2" / "Synthetic"  # LoL-v2-synthetic: one name in Low/ and Normal/
    for folder in ("Test/Low", "Test/Normal"):
        (synthetic / folder).mkdir(parents=True)
        for i in ("r0a1", "r0b2"):
            Image.fromarray(dark_image(20, 30)).save(synthetic / folder / f"{i}.png")
    assert detect_layout(synthetic) == "lol-v2"
    assert [p.id for p in find_pairs(synthetic, "lol-v2", "Test")] == ["r0a1", "r0b2"]
    with pytest.raises(DatasetError, match="give .*Real_captured or .*Synthetic"):
        detect_layout(tmp_path / "LOL-v2")
    other = tmp_path / "other"  # input/ + GT/, as several paired sets name them
    for folder in ("Input", "GT"):
        (other / folder).mkdir(parents=True)
        Image.fromarray(dark_image(20, 30)).save(other / folder / "x.png")
    (other / "Input" / "._x.png").write_bytes(b"macOS metadata")  # hidden: not a pair without a partner
    assert detect_layout(other) == "pair"
    assert [(p.low.parent.name, p.high.parent.name) for p in find_pairs(other, "pair")] == [("Input", "GT")]


def test_split_files(tmp_path):
    make_layout(tmp_path, "lol-v1", ["1", "2", "3"])
    (tmp_path / "split.txt").write_text("# val\n3\n1\n\n")
    assert read_split(tmp_path / "split.txt") == ["3", "1"]
    assert [p.id for p in find_pairs(tmp_path, "lol-v1", split=tmp_path / "split.txt")] == ["3", "1"]
    (tmp_path / "bad.txt").write_text("1\n7\n")
    with pytest.raises(DatasetError, match=r"1 ids not found .*\[7\]"):
        find_pairs(tmp_path, "lol-v1", split=tmp_path / "bad.txt")


def test_unknown_layout_and_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="layout must be one of"):
        find_pairs(tmp_path, "lol-v3")
    with pytest.raises(DatasetError, match="folder does not exist"):
        find_pairs(tmp_path, "pair")


@pytest.mark.parametrize("crop", ["random", "resize", "mixed"])
def test_training_views(tmp_path, crop):
    make_layout(tmp_path, "pair", ["a"])
    data = PairedImages(find_pairs(tmp_path, "pair"))
    low, high = data.sample(0, torch.Generator().manual_seed(0), size=32, crop=crop)
    assert low.shape == high.shape == (3, 32, 32) and low.dtype == torch.float32
    again = data.sample(0, torch.Generator().manual_seed(0), size=32, crop=crop)
    assert torch.equal(low, again[0])  # same generator state, same view


def test_full_views_are_the_whole_image_in_one_shape(tmp_path):
    make_layout(tmp_path, "pair", ["a"])
    data = PairedImages(find_pairs(tmp_path, "pair"))
    whole = data.full(0)[0]
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(40):
        low, high = data.sample(0, gen, crop="full")
        assert low.shape == high.shape == whole.shape  # never a quarter turn of a non-square image
        flips = [low.flip(d) for d in ((), (-1,), (-2,), (-2, -1))]
        seen.add(next(i for i, f in enumerate(flips) if torch.equal(f, whole)))
    assert seen == {0, 1, 2, 3}  # flips and half turns, all of them in 40 draws


def test_crop_keeps_pairs_aligned(tmp_path):
    make_layout(tmp_path, "pair", ["a"])
    data = PairedImages(find_pairs(tmp_path, "pair"))
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        low, high = data.sample(0, gen, size=24, crop="random")
        # the generated reference is 3x the low image (clipped), so the ratio holds where unclipped
        ok = (high < 0.99) & (low > 0.02)
        assert torch.allclose(high[ok], (low[ok] * 3), atol=0.05)


def test_leakage_guard_finds_reencoded_copies(tmp_path):
    train = make_layout(tmp_path / "v1", "lol-v1", [str(i) for i in range(1, 7)])
    test = tmp_path / "v2" / "Test"
    (test / "Low").mkdir(parents=True)
    (test / "Normal").mkdir(parents=True)
    # test ids 00003 and 00005 are train images 3 and 5, re-encoded as WebP; 00099 is new
    for test_id, train_id in [("00003", "3"), ("00005", "5")]:
        Image.open(train / "our485" / "low" / f"{train_id}.png").save(test / "Low" / f"low{test_id}.webp", lossless=True)
        Image.open(train / "our485" / "high" / f"{train_id}.jpg").save(test / "Normal" / f"normal{test_id}.webp", lossless=True)
    Image.fromarray(dark_image(40, 60, seed=99)).save(test / "Low" / "low00099.png")
    Image.fromarray(dark_image(40, 60, seed=98)).save(test / "Normal" / "normal00099.png")
    overlaps = find_overlaps(find_pairs(train, "lol-v1"), find_pairs(tmp_path / "v2", "lol-v2", "Test"))
    assert sorted(overlaps) == [("3", "00003", "high"), ("3", "00003", "low"), ("5", "00005", "high"), ("5", "00005", "low")]


@pytest.mark.skipif(not (SHARED / "datasets" / "lol-v1").exists(), reason="needs ../shared/datasets")
def test_shared_splits_are_leak_free_and_disjoint():
    root = SHARED / "datasets"
    train = find_pairs(root / "lol-v1", "lol-v1", split=root / "splits" / "lol-v1-train.txt")
    val = find_pairs(root / "lol-v1", "lol-v1", split=root / "splits" / "lol-v1-val.txt")
    assert len(train) == 359 and len(val) == 40 and not {p.id for p in train} & {p.id for p in val}
    test = find_pairs(root / "lol-v2-real", "lol-v2", "Test")
    assert len(test) == 100
    assert find_overlaps(train[:40] + val, test) == []
    found = find_overlaps(test[:5], test)  # the guard does see identical images
    assert all((p.id, p.id, kind) in found for p in test[:5] for kind in ("low", "high"))


def test_data_check_cli(tmp_path, capsys):
    from nanolily.interfaces.cli import main

    train = make_layout(tmp_path / "v1", "lol-v1", ["1", "2", "3"])
    (tmp_path / "test" / "low").mkdir(parents=True)
    (tmp_path / "test" / "high").mkdir(parents=True)
    Image.open(train / "our485" / "low" / "2.png").save(tmp_path / "test" / "low" / "x.webp", lossless=True)
    Image.fromarray(dark_image(40, 60, seed=50)).save(tmp_path / "test" / "high" / "x.png")
    assert main(["data", "check", "--train", str(train), "--test", str(tmp_path / "test"), "-q"]) == 1
    assert "1 test low images are in the training set" in capsys.readouterr().err
    assert main(["data", "check", "--train", str(train), "--test", str(train), "--test-split", str(_split(tmp_path, "3"))]) == 1
    out = capsys.readouterr().out
    assert "train 3 <-> test 3: same low image" in out and "train 3 <-> test 3: same reference" in out


def _split(tmp_path, *ids):
    path = tmp_path / "split.txt"
    path.write_text("\n".join(ids) + "\n")
    return path


def test_exposure_augmentation_darkens_only_the_low_image(tmp_path):
    from nanolily.training.data import expose_linear
    from nanolily.engine.corrections import linear_to_srgb, srgb_to_linear

    x = torch.rand(3, 8, 8)
    assert torch.allclose(expose_linear(x, 1.0), x, atol=1e-5)
    expected = linear_to_srgb(srgb_to_linear(x.numpy()) * 0.25)
    assert np.allclose(expose_linear(x, 0.25).numpy(), expected, atol=1e-5)
    make_layout(tmp_path, "pair", ["a"])
    data = PairedImages(find_pairs(tmp_path, "pair"))
    plain = data.sample(0, torch.Generator().manual_seed(0), size=32, crop="resize", flips=False, rot90=False)
    dark = data.sample(0, torch.Generator().manual_seed(0), size=32, crop="resize", flips=False, rot90=False,
                       exposure=(0.3, 0.5))
    assert torch.equal(plain[1], dark[1]) and dark[0].mean() < 0.8 * plain[0].mean()


def test_zoom_shows_the_scene_larger(tmp_path):
    ramp = np.tile(np.arange(0, 240, 2, dtype=np.uint8), (100, 1))  # 100x120, +2 grey levels per pixel
    for folder in ("low", "high"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(tmp_path / folder / "a.png")
    data = PairedImages(find_pairs(tmp_path, "pair"))

    def slope(zoom):
        low, high = data.sample(0, torch.Generator().manual_seed(0), size=64, crop="random", flips=False,
                                rot90=False, zoom=zoom)
        assert low.shape == high.shape == (3, 64, 64) and torch.equal(low, high)
        return (low[0, 32, 40] - low[0, 32, 20]).item() * 255 / 20

    assert slope(None) == pytest.approx(2.0, abs=1e-3)
    assert slope((1.0, 1.0)) == pytest.approx(2.0, abs=1e-3)
    assert slope((2.0, 2.0)) == pytest.approx(1.0, abs=0.02)  # a 32-pixel crop shown over 64 pixels


def test_zoom_needs_random_crops_and_ordered_bounds():
    from nanolily.training.train import TrainConfig

    with pytest.raises(ValueError, match="zoom"):
        TrainConfig.from_dict({"crop": "resize", "zoom": [1, 2]})
    with pytest.raises(ValueError, match="zoom"):
        TrainConfig.from_dict({"crop": "random", "zoom": [2, 1]})
    assert TrainConfig.from_dict({"crop": "random", "zoom": [1, 2]}).zoom == [1, 2]


def test_identity_views_re_exposed_and_grey_views(tmp_path):
    make_layout(tmp_path, "pair", ["a"])
    data = PairedImages(find_pairs(tmp_path, "pair"))
    view = dict(size=32, crop="resize", flips=False, rot90=False)
    plain = data.sample(0, torch.Generator().manual_seed(0), **view)
    # identity view, re-exposed: input equals target, both darker than the reference
    low, high = data.sample(0, torch.Generator().manual_seed(0), **view, identity=0.999, identity_exposure=(0.4, 0.5))
    assert torch.equal(low, high) and high.mean() < 0.9 * plain[1].mean()
    # grey view: three equal channels, the luma of the colour view, on both sides
    low, high = data.sample(0, torch.Generator().manual_seed(0), **view, gray=0.999)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    for grey, colour in ((low, plain[0]), (high, plain[1])):
        assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
        assert torch.allclose(grey[0], (colour * luma).sum(0), atol=1e-6)


def test_spec_ids_and_repeat_weight_part_of_a_pool(tmp_path):
    from nanolily.training.data import DatasetSpec, pairs_from_spec

    make_layout(tmp_path / "set", "lol-v1", ["5", "689", "690", "700", "789", "790"])
    split = _split(tmp_path, "5", "690", "700", "790")
    spec = DatasetSpec(layout="lol-v1", path="set", split=str(split), ids="690-789", repeat=3)
    pairs = pairs_from_spec(tmp_path, spec)
    assert [p.id for p in pairs] == ["690", "700"] * 3  # the range within the split, listed three times
    images = PairedImages(pairs)
    assert len(images) == 6 and images.low[0] is images.low[2]  # repeated pairs decoded once
    with pytest.raises(DatasetError, match="no ids in 100-200"):
        pairs_from_spec(tmp_path, DatasetSpec(layout="lol-v1", path="set", ids="100-200"))
    for bad in ({"ids": "790-690"}, {"ids": "690..789"}, {"repeat": 0}, {"repeat": 1.5}):
        with pytest.raises(ValueError):
            DatasetSpec(layout="lol-v1", path="set", **bad)


def test_light_views_paste_one_light_into_input_and_target(tmp_path):
    make_layout(tmp_path, "pair", ["a"])
    data = PairedImages(find_pairs(tmp_path, "pair"))
    view = dict(size=32, crop="resize", flips=False, rot90=False)
    plain = data.sample(0, torch.Generator().manual_seed(0), **view)
    assert all(torch.equal(a, b) for a, b in zip(plain, data.sample(0, torch.Generator().manual_seed(0), **view,
                                                                    lights=0.0)))
    low, high = data.sample(0, torch.Generator().manual_seed(0), **view, lights=0.999)
    changed = (low != plain[0]).any(0)
    assert changed.any() and torch.equal(changed, (high != plain[1]).any(0))  # the same place on both sides
    rows, cols = changed.nonzero().unbind(1)
    box = (slice(None), slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))
    assert torch.equal(low[box], high[box]) and low[box].min() >= 0.85 * 0.75  # a bright, near-white or warm patch
    assert changed[box[1:]].float().mean() > 0.9  # a rectangle (its pixels that equal the plain view's aside)
    assert torch.equal(low[:, ~changed], plain[0][:, ~changed]) and torch.equal(high[:, ~changed], plain[1][:, ~changed])
    from nanolily.training.train import TrainConfig

    with pytest.raises(ValueError, match="lights"):
        TrainConfig.from_dict({"lights": 1.0})


def test_jpeg_views_compress_the_input_only(tmp_path):
    from nanolily.training.data import jpeg_roundtrip
    from nanolily.training.train import TrainConfig

    make_layout(tmp_path, "pair", ["a"])
    data = PairedImages(find_pairs(tmp_path, "pair"))
    view = dict(size=32, crop="resize", flips=False, rot90=False)
    plain = data.sample(0, torch.Generator().manual_seed(0), **view)
    low, high = data.sample(0, torch.Generator().manual_seed(0), **view, jpeg=0.999, jpeg_quality=(50, 50))
    assert torch.equal(high, plain[1])  # the target stays lossless
    expected = jpeg_roundtrip(plain[0], 50)
    assert torch.equal(low, expected) and not torch.equal(low, plain[0])
    for bad in ({"jpeg": 1.0}, {"jpeg_quality": [90, 60]}, {"jpeg_quality": [0, 90]}):
        with pytest.raises(ValueError, match="jpeg"):
            TrainConfig.from_dict(bad)
