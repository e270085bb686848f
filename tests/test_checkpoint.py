import json
import os

import pytest
import torch

import vaekit
from vaekit import checkpoint
from vaekit.errors import CheckpointError


def _model():
    torch.manual_seed(0)
    return vaekit.build_model(vaekit.ModelSpec(data_shape=(5,), latent_dim=2, hidden=(8,),
                                               likelihood={"name": "gaussian", "scale": "learned"}))


def test_save_load_round_trip(tmp_path):
    model = _model()
    path = vaekit.save(model, tmp_path / "m.safetensors")
    again = vaekit.load(path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    assert again.spec == model.spec
    x = torch.randn(3, 5)
    torch.testing.assert_close(model.encode(x), again.encode(x))
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind
    with open(path, "rb") as f:
        assert b"pickle" not in f.read(200)


def test_truncated_and_corrupted_files_give_clear_errors(tmp_path):
    path = vaekit.save(_model(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    (tmp_path / "short.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        vaekit.load(tmp_path / "short.safetensors")
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF  # a bit flip in the tensor bytes
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum"):
        vaekit.load(tmp_path / "flip.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        vaekit.load(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        vaekit.load(tmp_path / "missing.safetensors")


def test_newer_format_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 99)
    path = vaekit.save(_model(), tmp_path / "m.safetensors")
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 1)
    with pytest.raises(CheckpointError, match="newer vaekit"):
        vaekit.load(path)


def test_custom_models_cannot_be_saved_blindly(tmp_path):
    from vaekit.nets import MLP

    model = vaekit.Model(MLP(3, 4, ()), MLP(2, 3, ()), "bernoulli", latent_dim=2)
    with pytest.raises(TypeError, match="build_model"):
        vaekit.save(model, tmp_path / "m.safetensors")


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "config.json"
    checkpoint.write_json(target, {"a": 1})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        checkpoint.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_trainer_state_round_trip(tmp_path):
    model = _model()
    x = torch.randn(64, 5)
    h = vaekit.fit(model, x, x[:16], vaekit.TrainConfig(epochs=2, batch_size=16, early_stopping=5, progress=False))
    state, h = h.state, h.history
    checkpoint.save_trainer(tmp_path / "t.safetensors", model, state)
    other = _model()
    loaded = checkpoint.load_trainer(tmp_path / "t.safetensors", other)
    assert loaded.epoch == 2 and loaded.step == state.step and loaded.best_epoch == state.best_epoch
    assert loaded.history == list(state.history)
    assert torch.equal(loaded.rng["torch"], state.rng["torch"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])
    opt_a, opt_b = state.optimizer, loaded.optimizer
    assert opt_a["param_groups"][0]["betas"] == opt_b["param_groups"][0]["betas"]
    for i, s in opt_a["state"].items():
        for name, t in s.items():
            assert torch.equal(t, opt_b["state"][i][name])
