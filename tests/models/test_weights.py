import json
from pathlib import Path

import pytest
import torch

import nanolily.models.weights as W
from nanolily.models.v1 import NanoLILY, NanoLILYConfig
from nanolily.training.train import TrainConfig


def test_round_trip_with_metadata(tmp_path):
    torch.manual_seed(1)
    m = NanoLILY()
    path = W.save_weights(m, tmp_path / "m.safetensors", version="v-test", training_data="unit test",
                          metrics={"psnr": 1.5})
    meta = W.read_metadata(path)
    assert meta["architecture"] == "NanoLILY" and meta["version"] == "v-test"
    assert json.loads(meta["config"]) == NanoLILYConfig().__dict__
    assert json.loads(meta["metrics"]) == {"psnr": 1.5}
    loaded = W.load_model(path, device="cpu")
    assert not loaded.training
    for k, v in m.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_config_travels_with_the_weights(tmp_path):
    path = W.save_weights(NanoLILY(NanoLILYConfig(size=64, width=8)), tmp_path / "s.safetensors", version="small")
    assert W.load_model(path, device="cpu").config == NanoLILYConfig(size=64, width=8)


def test_unshipped_default_gives_a_clear_error(monkeypatch):
    name = W.DEFAULT_MODEL
    monkeypatch.setitem(W.SHIPPED, name, W.ShippedModel(f"{name}.safetensors", None, "x", "configs/cpu.yaml"))
    with pytest.raises(W.WeightsError, match=f"no trained weights ship for '{name}'.*nanolily train --config"):
        W.load_model()


def test_shipped_file_with_the_wrong_sha256_is_refused(monkeypatch, tmp_path):
    path = W.save_weights(NanoLILY(), tmp_path / "fake.safetensors", version="fake")
    monkeypatch.setattr(W, "ASSETS", tmp_path)
    monkeypatch.setitem(W.SHIPPED, "fake", W.ShippedModel("fake.safetensors", "0" * 64, "x", ""))
    with pytest.raises(W.WeightsError, match="does not match the shipped"):
        W.load_model("fake")
    monkeypatch.setitem(W.SHIPPED, "fake", W.ShippedModel("fake.safetensors", W.file_sha256(path), "x", ""))
    assert isinstance(W.load_model("fake", device="cpu"), NanoLILY)


def test_shipped_models_load_and_verify():
    for name, shipped in W.SHIPPED.items():
        if shipped.sha256 is None:
            continue
        model = W.load_model(name, device="cpu")
        meta = W.read_metadata(W.ASSETS / shipped.file)
        assert model.num_parameters() == int(meta["parameters"]) <= 129_016
        assert meta["version"] == name and json.loads(meta["metrics"])
        recipe = Path(__file__).resolve().parents[2] / shipped.recipe  # the config that made it
        trained = json.loads(meta["train_config"])
        assert TrainConfig.from_yaml(recipe).name == trained["name"]
        assert f"seed={trained['seed']}" in shipped.recipe_overrides or trained["seed"] == TrainConfig.from_yaml(recipe).seed
        if shipped.starts_from:  # a run that continued another shipped model started from its weights
            assert shipped.starts_from in W.SHIPPED and trained["init_from"]


def test_unknown_name_lists_the_models():
    with pytest.raises(W.WeightsError, match=r"no such weights file, and not a model name; available models = \["):
        W.load_model("nanolily-v9")


def test_pickles_are_refused_unless_allowed(tmp_path):
    m = NanoLILY()
    path = tmp_path / "m.ckpt"
    torch.save({"model": m.state_dict(), "model_config": m.config_dict()}, path)
    with pytest.raises(W.WeightsError, match="refusing to load a pickle checkpoint"):
        W.load_model(path)
    assert isinstance(W.load_model(path, device="cpu", allow_pickle=True), NanoLILY)


def test_pickle_with_code_is_refused_even_when_allowed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(W.WeightsError, match="cannot read checkpoint"):
        W.load_model(path, allow_pickle=True)


def test_mismatched_keys_are_named(tmp_path):
    from safetensors.torch import save_file

    state = NanoLILY().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["fuse.bias"]
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(W.WeightsError, match=r"missing keys \['fuse.bias'\], unexpected keys \['extra.weight'\]"):
        W.load_model(tmp_path / "bad.safetensors")


def test_tampered_tensors_are_detected(tmp_path):
    from safetensors.torch import save_file

    path = W.save_weights(NanoLILY(), tmp_path / "m.safetensors", version="v")
    meta = W.read_metadata(path)
    state = NanoLILY().state_dict()
    state["fuse.bias"] += 1
    save_file(state, str(path), metadata=meta)
    with pytest.raises(W.WeightsError, match="do not match the digest"):
        W.load_model(path)


def test_not_a_safetensors_file(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(W.WeightsError, match="not a readable safetensors file"):
        W.load_model(tmp_path / "junk.safetensors")


def test_device_resolution():
    assert W.resolve_device("cpu").type == "cpu"
    assert W.resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        W.resolve_device("gpu0")
