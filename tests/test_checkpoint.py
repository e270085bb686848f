import hashlib
import json
import os
import random
import struct

import pytest
import torch
from safetensors.torch import save as st_save

import vaekit
from vaekit import checkpoint
from vaekit.errors import CheckpointError


def _model():
    torch.manual_seed(0)
    return vaekit.build_model(
        vaekit.ModelSpec(
            data_shape=(5,),
            latent_dim=2,
            hidden=(8,),
            activation="tanh",
            likelihood={"name": "gaussian", "scale": "learned"},
        )
    )


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
    assert checkpoint.read_json(target) == {"a": 1}
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


# -- format 2: the checksum covers the metadata; strict loading; format 1 still loads ---------------------


def _v1_digest(tensors):  # the tensors-only checksum of format 1, copied here so the test does not lean on the code
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(key.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _write_v1(path, tensors, metadata):
    """The format-1 writer (vaekit before the format bump): metadata entries as JSON, outside the checksum."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {k: json.dumps(checkpoint._jsonable(v)) for k, v in metadata.items()}
    meta.update(format_version="1", vaekit_version="0.1.0", sha256=_v1_digest(tensors))
    path.write_bytes(st_save(tensors, metadata=meta))
    return path


def _flip_key(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) >= 1 and len(old) == len(new)
    return data.replace(old, new, 1)


def _trained(tmp_path):
    model = _model()
    x = torch.randn(48, 5)
    h = vaekit.fit(model, x, x[:16], vaekit.TrainConfig(epochs=2, batch_size=16, early_stopping=5, progress=False))
    return model, h.state


def test_activation_key_flip_is_refused(tmp_path):
    """The case from issue 11: one flipped letter in the spec's key `activation` used to load the model with
    the default activation. Format 2: the checksum catches it; format 1: the strict key check does."""
    model = _model()
    data = vaekit.save(model, tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "flip.safetensors").write_bytes(_flip_key(data, b"activation", b"activatioN"))
    with pytest.raises(CheckpointError, match="flip.safetensors is corrupted: its tensors or metadata"):
        vaekit.load(tmp_path / "flip.safetensors")
    old = _write_v1(tmp_path / "old.safetensors", model.state_dict(), {"spec": model.spec.to_dict()})
    (tmp_path / "old_flip.safetensors").write_bytes(_flip_key(old.read_bytes(), b"activation", b"activatioN"))
    with pytest.raises(CheckpointError, match="old_flip.safetensors: the model spec has unknown key.*'activatioN'"):
        vaekit.load(tmp_path / "old_flip.safetensors")


def test_format_1_checkpoints_still_load(tmp_path):
    model, state = _trained(tmp_path)
    _write_v1(tmp_path / "m.safetensors", model.state_dict(), {"spec": model.spec.to_dict()})
    again = vaekit.load(tmp_path / "m.safetensors")
    assert again.spec == model.spec
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])
    # the trainer file of format 1 (no spec entry), written as today's save_trainer wrote it
    tensors = {}
    skeleton = {
        "model": checkpoint._flatten(dict(model.state_dict()), "model", tensors),
        "optimizer": checkpoint._flatten(state.optimizer, "optimizer", tensors),
        "rng": checkpoint._flatten(state.rng, "rng", tensors),
        "best_weights": None,
    }
    counters = {
        "epoch": state.epoch,
        "step": state.step,
        "best_val": state.best_val,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        "stopped_early": state.stopped_early,
    }
    _write_v1(
        tmp_path / "t.safetensors",
        tensors,
        {"skeleton": skeleton, "counters": counters, "history": list(state.history)},
    )
    loaded = checkpoint.load_trainer(tmp_path / "t.safetensors", _model())
    assert (loaded.epoch, loaded.step, loaded.history) == (2, state.step, list(state.history))
    for i, s in state.optimizer["state"].items():
        for name, t in s.items():
            assert torch.equal(t, loaded.optimizer["state"][i][name])
    # format 1's metadata are outside its checksum, so a raised epoch counter is caught by the consistency check
    _write_v1(
        tmp_path / "t3.safetensors",
        tensors,
        {"skeleton": skeleton, "counters": {**counters, "epoch": 3}, "history": list(state.history)},
    )
    with pytest.raises(
        CheckpointError, match="t3.safetensors: its epoch counter says 3 completed epochs but its history holds 2"
    ):
        checkpoint.load_trainer(tmp_path / "t3.safetensors", _model())


def _raw_trainer_parts(model, state, tmp_path):
    checkpoint.save_trainer(tmp_path / "t.safetensors", model, state)
    return checkpoint.read_tensors(tmp_path / "t.safetensors")


def _rewrite(path, tensors, meta):
    """A re-checksummed file with edited metadata: what a foreign or buggy writer could produce."""
    meta = {k: v for k, v in meta.items() if k not in ("format_version", "vaekit_version", "sha256")}
    checkpoint.write_tensors(path, tensors, meta)
    return path


def test_counters_that_disagree_with_the_history_are_refused(tmp_path):
    model, state = _trained(tmp_path)
    tensors, meta = _raw_trainer_parts(model, state, tmp_path)
    cases = [
        ({"epoch": 5}, "epoch counter says 5 completed epochs but its history holds 2"),
        ({"step": 0}, "step counter \\(0\\) does not fit 2 completed epochs"),
        ({"best_epoch": 9}, "best_epoch \\(9\\) and bad_epochs"),
        ({"epoch": -1}, "the epoch counter must be a non-negative integer"),
        ({"stopped_early": "no"}, "stopped_early must be true or false"),
    ]
    for change, match in cases:
        path = _rewrite(tmp_path / "edited.safetensors", tensors, {**meta, "counters": {**meta["counters"], **change}})
        with pytest.raises(CheckpointError, match=match):
            checkpoint.load_trainer(path, _model())
    shuffled = [dict(r) for r in meta["history"]][::-1]
    path = _rewrite(tmp_path / "edited.safetensors", tensors, {**meta, "history": shuffled})
    with pytest.raises(CheckpointError, match="numbered \\[2, 1\\]"):
        checkpoint.load_trainer(path, _model())
    # and a raised counter in a real file (not re-checksummed) is refused by the checksum
    data = (tmp_path / "t.safetensors").read_bytes()
    raised = _flip_key(data, b'\\"epoch\\": 2', b'\\"epoch\\": 3')
    (tmp_path / "raised.safetensors").write_bytes(raised)
    with pytest.raises(CheckpointError, match="checksum"):
        checkpoint.load_trainer(tmp_path / "raised.safetensors", _model())


def test_broken_structure_gives_one_checkpoint_error_not_a_key_error(tmp_path):
    model, state = _trained(tmp_path)
    tensors, meta = _raw_trainer_parts(model, state, tmp_path)
    opt = meta["skeleton"]["optimizer"]
    pairs = dict((k, v) for k, v in opt["__dict__"])
    bad_param = {
        "__dict__": [
            ["state", {"__dict__": [[99, pairs["state"]["__dict__"][0][1]]]}],
            ["param_groups", pairs["param_groups"]],
        ]
    }
    wrong_shape = {
        "__dict__": [
            ["state", {"__dict__": [[0, pairs["state"]["__dict__"][1][1]]]}],
            ["param_groups", pairs["param_groups"]],
        ]
    }
    groups = pairs["param_groups"]
    nan_lr = {
        "__dict__": [
            ["state", pairs["state"]],
            [
                "param_groups",
                [
                    {"__dict__": [[k, {"__float__": "nan"} if k == "lr" else v] for k, v in g["__dict__"]]}
                    for g in groups
                ],
            ],
        ]
    }
    cases = [
        ({"skeleton": {**meta["skeleton"], "optimizer": nan_lr}}, "learning rate is nan"),
        (
            {"skeleton": {**meta["skeleton"], "optimizer": {"__dict__": [["state", {"__dict__": []}]]}}},
            "optimiser state is corrupted \\(it must hold exactly",
        ),
        ({"skeleton": {**meta["skeleton"], "optimizer": bad_param}}, "state entry 99 names no parameter"),
        ({"skeleton": {**meta["skeleton"], "optimizer": wrong_shape}}, "has shape"),
        ({"skeleton": {**meta["skeleton"], "rng": {"__dict__": []}}}, "random-number state is corrupted"),
        ({"skeleton": {k: v for k, v in meta["skeleton"].items() if k != "rng"}}, "lacks key\\(s\\) 'rng'"),
        ({"counters": {**meta["counters"], "epochs": 1}}, "the counters has unknown key\\(s\\) 'epochs'"),
        ({"extra": 1}, "the header has unknown key\\(s\\) 'extra'"),
        (
            {"skeleton": {**meta["skeleton"], "model": {"__dict__": [["nope", {"__tensor__": "missing"}]]}}},
            "not a usable trainer checkpoint \\(KeyError",
        ),
    ]
    for change, match in cases:
        path = _rewrite(tmp_path / "edited.safetensors", tensors, {**meta, **change})
        with pytest.raises(CheckpointError, match=match):
            checkpoint.load_trainer(path, _model())
    # spec records: an unknown likelihood option, a missing likelihood name, an unknown likelihood
    spec = model.spec.to_dict()
    for lik, match in [
        ({"name": "gaussian", "scale": "learned", "scael": 1}, "unknown key\\(s\\) 'scael'"),
        ({"scale": "learned"}, "unknown likelihood None"),
        ({"name": "gaussiam"}, "unknown likelihood 'gaussiam'"),
    ]:
        path = tmp_path / "m.safetensors"
        checkpoint.write_tensors(path, model.state_dict(), {"spec": {**spec, "likelihood": lik}})
        with pytest.raises(CheckpointError, match=match):
            vaekit.load(path)
    checkpoint.write_tensors(path, model.state_dict(), {"spec": {k: v for k, v in spec.items() if k != "data_shape"}})
    with pytest.raises(CheckpointError, match="the model spec lacks key\\(s\\) 'data_shape'"):
        vaekit.load(path)
    # a trainer state written for another architecture (config.json edited and re-checksummed) is refused
    other = vaekit.build_model(
        vaekit.ModelSpec(
            data_shape=(5,),
            latent_dim=2,
            hidden=(8,),
            activation="relu",
            likelihood={"name": "gaussian", "scale": "learned"},
        )
    )
    with pytest.raises(CheckpointError, match="different model \\(spec differs in activation\\)"):
        checkpoint.load_trainer(tmp_path / "t.safetensors", other)


def _same_model(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return a.spec == b.spec and sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _flip(data: bytes, rng: random.Random, header: bool) -> bytes:
    n = struct.unpack("<Q", data[:8])[0]
    pos = rng.randrange(0, 8 + n) if header else rng.randrange(8 + n, len(data))
    out = bytearray(data)
    out[pos] ^= 1 << rng.randrange(8)
    return bytes(out)


def test_450_random_bit_flips_never_load_silently(tmp_path):
    """Issue 11 measured 15 of 450 random flips loading with changed content. Every flip must now either be
    refused with a CheckpointError naming the file, or load exactly the original content."""
    model = _model()
    data = vaekit.save(model, tmp_path / "m.safetensors").read_bytes()
    rng = random.Random(450)
    target = tmp_path / "flipped.safetensors"
    refused = 0
    for i in range(450):
        target.write_bytes(_flip(data, rng, header=i % 2 == 0))  # half in the JSON header, half in the tensors
        try:
            loaded = vaekit.load(target)
        except CheckpointError as err:
            assert "flipped.safetensors" in str(err) and "\n" not in str(err)
            refused += 1
            continue
        assert _same_model(model, loaded), f"flip {i} loaded changed content"
    assert refused >= 440  # a flip can only load if it changes nothing that is read (e.g. JSON padding)


def _state_view(state):
    tensors = {}
    skeleton = checkpoint._flatten({"opt": state.optimizer, "rng": state.rng, "best": state.best_weights}, "s", tensors)
    return (
        json.dumps(skeleton),
        state.epoch,
        state.step,
        list(state.history),
        state.best_epoch,
        state.bad_epochs,
        repr(state.best_val),
        state.stopped_early,
        {k: v.clone() for k, v in tensors.items()},
    )


def test_trainer_bit_flips_and_truncations_are_refused(tmp_path):
    model, state = _trained(tmp_path)
    checkpoint.save_trainer(tmp_path / "t.safetensors", model, state)
    data = (tmp_path / "t.safetensors").read_bytes()
    reference = _state_view(checkpoint.load_trainer(tmp_path / "t.safetensors", _model()))
    rng = random.Random(7)
    target = tmp_path / "flipped.safetensors"
    for i in range(150):
        target.write_bytes(_flip(data, rng, header=i % 3 != 0))
        other = _model()
        try:
            view = _state_view(checkpoint.load_trainer(target, other))
        except CheckpointError as err:
            assert "flipped.safetensors" in str(err)
            continue
        assert view[:-1] == reference[:-1] and all(torch.equal(view[-1][k], reference[-1][k]) for k in reference[-1])
        assert _same_model(model, other)
    for cut in [0, 4, 8, 9, 50, len(data) // 3, len(data) // 2, len(data) - 1]:
        target.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="flipped.safetensors"):
            checkpoint.load_trainer(target, _model())


def test_checksummed_json_files(tmp_path):
    config = {"format_version": checkpoint.FORMAT_VERSION, "model": {"activation": "relu", "latent_dim": 2}}
    checkpoint.write_json(tmp_path / "config.json", config)
    assert checkpoint.read_json(tmp_path / "config.json") == config
    assert '"sha256"' in (tmp_path / "config.json").read_text()
    text = (tmp_path / "config.json").read_text()
    for old, new in [
        ('"relu"', '"rulu"'),
        ('"activation"', '"activatioN"'),
        ('"latent_dim": 2', '"latent_dim": 3'),
        ('"sha256"', '"sha257"'),
        ('"sha256": "', '"sha256": "0'),
    ]:
        (tmp_path / "config.json").write_text(text.replace(old, new, 1))
        with pytest.raises(CheckpointError, match="config.json is corrupted"):
            checkpoint.read_json(tmp_path / "config.json")
    (tmp_path / "config.json").write_text(json.dumps(config))  # format 2 without a checksum: refused
    with pytest.raises(CheckpointError, match="checksum entry is missing"):
        checkpoint.read_json(tmp_path / "config.json")
    legacy = {**config, "format_version": 1}  # a run folder from before the bump still opens
    (tmp_path / "config.json").write_text(json.dumps(legacy))
    assert checkpoint.read_json(tmp_path / "config.json") == legacy
    checkpoint.write_json(tmp_path / "preprocessing.json", {"columns": [{"name": "a", "mean": 1.5}]})
    text = (tmp_path / "preprocessing.json").read_text()
    (tmp_path / "preprocessing.json").write_text(text.replace("1.5", "2.5"))
    with pytest.raises(CheckpointError, match="preprocessing.json is corrupted or was edited"):
        checkpoint.read_json(tmp_path / "preprocessing.json")
    checkpoint.write_json(tmp_path / "metrics.json", {"elbo": -3.0})  # an output: not checksummed
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"elbo": -3.0}


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    import errno

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match=f"no space left on the device to write {tmp_path / 'model.safetensors'}"):
        vaekit.save(_model(), tmp_path)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def _to_format_1(run):
    """Rewrite a run folder as vaekit wrote it before the format bump (no JSON checksums, format-1 tensor files)."""
    config = checkpoint.read_json(run / "config.json")
    (run / "config.json").write_text(json.dumps({**config, "format_version": 1}, indent=2))
    for name in ("model.safetensors", "trainer.safetensors"):
        tensors, meta = checkpoint.read_tensors(run / name)
        meta = {k: v for k, v in meta.items() if k not in ("format_version", "vaekit_version", "sha256")}
        if name == "trainer.safetensors":
            meta.pop("spec")  # format 1 trainer files carried no spec
        _write_v1(run / name, tensors, meta)


def test_run_folders_corrupted_config_is_refused_and_format_1_runs_resume(tmp_path, monkeypatch, capsys):
    from vaekit.cli import main

    monkeypatch.chdir(tmp_path)
    args = [
        "train",
        "--data",
        "sine",
        "--latent-dim",
        "1",
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--no-progress",
        "--no-figures",
    ]
    assert main([*args, "--out", "r"]) == 0
    config_text = (tmp_path / "r" / "config.json").read_text()
    assert '"sha256"' in config_text and '"latent_dim": 1' in config_text
    (tmp_path / "r" / "config.json").write_text(config_text.replace('"latent_dim": 1', '"latent_dim": 2'))
    capsys.readouterr()
    assert main(["train", "--resume", "r", "--epochs", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "config.json is corrupted or was edited" in err and "\n" not in err
    (tmp_path / "r" / "config.json").write_text(config_text)
    _to_format_1(tmp_path / "r")
    assert checkpoint.read_tensors(tmp_path / "r" / "model.safetensors")[1]["format_version"] == 1
    assert main(["train", "--resume", "r", "--epochs", "2", "--no-progress"]) == 0
    assert len((tmp_path / "r" / "history.jsonl").read_text().splitlines()) == 2
    assert (
        checkpoint.read_tensors(tmp_path / "r" / "trainer.safetensors")[1]["format_version"]
        == checkpoint.FORMAT_VERSION
    )


def test_a_trainer_file_is_not_a_model(tmp_path):
    model, state = _trained(tmp_path)
    checkpoint.save_trainer(tmp_path / "t.safetensors", model, state)
    with pytest.raises(CheckpointError, match="t.safetensors is a trainer state, not a model: load model.safetensors"):
        vaekit.load(tmp_path / "t.safetensors")


def test_damaged_history_file_is_one_line(tmp_path):
    checkpoint.write_history(tmp_path / "history.jsonl", [{"epoch": 1, "train_elbo": -3.0}, {"epoch": 2}])
    assert [r["epoch"] for r in checkpoint.read_history(tmp_path / "history.jsonl")] == [1, 2]
    for text, match in [
        ('{"epoch": 1}\n3\n', "line 2 is not a record"),
        ('{"epoch": 1\n', "corrupted"),
        (b"\xff\xfe{}", "not UTF-8"),
    ]:
        (tmp_path / "history.jsonl").write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(CheckpointError, match=match):
            checkpoint.read_history(tmp_path / "history.jsonl")


def test_the_run_checkpointer_fsyncs_the_trainer_state_each_epoch_and_everything_at_the_end(tmp_path, monkeypatch):
    """One fsync per epoch (trainer.safetensors, the resume point), three after the last epoch; the
    files written without one are complete all the same (atomic renames) and match the trainer state."""
    from vaekit.train import TrainConfig, fit

    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).split(".")[1])
        real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    torch.manual_seed(0)
    model = vaekit.build_model(vaekit.ModelSpec(data_shape=(3,), latent_dim=1, hidden=(4,)))
    epochs = []
    saver = checkpoint.RunCheckpointer(tmp_path, every=1, total_epochs=3)
    config = TrainConfig(epochs=3, batch_size=16, progress=False, threads=1)
    fit(model, torch.randn(32, 3), config=config, callbacks=[saver, lambda m, s: epochs.append(list(synced))])
    assert epochs == [["trainer"], ["trainer"] * 2, ["trainer"] * 3 + ["model", "history"]]
    state = checkpoint.load_trainer(tmp_path / "trainer.safetensors", vaekit.load(tmp_path))
    assert [dict(r) for r in checkpoint.read_history(tmp_path / "history.jsonl")] == [dict(r) for r in state.history]
    for key, value in vaekit.load(tmp_path).state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[key], rtol=0, atol=0)


def test_checkpoints_take_at_most_their_share_of_the_time(tmp_path, monkeypatch):
    """With ``share``, an epoch that ends sooner after the last write than the write's cost / share
    is not checkpointed (the first and the last always are), and a run stopped in between resumes
    exactly from the checkpoint it has; without ``share`` every epoch is written."""
    from vaekit import TrainConfig, fit

    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(epochs=6, batch_size=16, progress=False, threads=1, seed=3)

    def model():
        torch.manual_seed(0)
        return vaekit.build_model(vaekit.ModelSpec(data_shape=(3,), latent_dim=1, hidden=(4,)))

    (tmp_path / "every").mkdir()
    every = checkpoint.RunCheckpointer(tmp_path / "every", total_epochs=6)
    uninterrupted = model()
    fit(uninterrupted, x, config=config, callbacks=[every])
    assert every.written == 6
    # writes that look slow (10 s each on the checkpoints' clock): within a 5 % share, the epochs after the
    # first are skipped until 200 s have passed
    ticks = iter(range(0, 10**6, 10))
    monkeypatch.setattr(checkpoint, "_clock", lambda: float(next(ticks)))
    (tmp_path / "share").mkdir()
    throttled = checkpoint.RunCheckpointer(tmp_path / "share", total_epochs=6, share=0.05)
    seen = []

    def stop_after_3(m, s):
        seen.append(throttled.written)
        if s.epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(model(), x, config=config, callbacks=[throttled, stop_after_3])
    assert seen == [1, 1, 1]  # only epoch 1 is on disk
    resumed = model()
    state = checkpoint.load_trainer(tmp_path / "share" / "trainer.safetensors", resumed)
    assert state.epoch == 1
    fit(resumed, x, config=config, resume=state, callbacks=[throttled])
    assert throttled.written == 2  # the last epoch is always written
    for key, value in uninterrupted.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    with pytest.raises(ValueError, match="share"):
        checkpoint.RunCheckpointer(tmp_path, share=0)


def test_the_checkpoint_share_is_a_run_setting(tmp_path, monkeypatch, capsys):
    """``--checkpoint-share`` reaches the run's checkpointer and config.json: 0 writes every epoch,
    the default 0.02 skips epochs while slow-looking writes would exceed it; a share outside [0, 1]
    is refused in one line, before any folder is made."""
    from vaekit import runs
    from vaekit.cli import main

    ticks = iter(range(0, 10**6, 10))  # every write looks like 10 s on the checkpoints' clock
    monkeypatch.setattr(checkpoint, "_clock", lambda: float(next(ticks)))
    written = []
    real = checkpoint.save_trainer
    monkeypatch.setattr(checkpoint, "save_trainer", lambda path, m, s: written.append(s.epoch) or real(path, m, s))
    base = ["train", "--data", "sine", "--epochs", "5", "--latent-dim", "1", "--no-figures", "--no-progress"]
    assert main([*base, "--checkpoint-share", "0", "--out", str(tmp_path / "every")]) == 0
    assert written == [1, 2, 3, 4, 5]
    assert runs.RunFolder(tmp_path / "every").run_config().checkpoint_share == 0.0
    written.clear()
    assert main([*base, "--out", str(tmp_path / "default")]) == 0
    assert written == [1, 5]  # the first and the last
    assert runs.RunFolder(tmp_path / "default").run_config().checkpoint_share == 0.02
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([*base, "--checkpoint-share", "1.5", "--out", str(tmp_path / "bad")])
    assert exit_.value.code == 2 and not (tmp_path / "bad").exists()
    err = capsys.readouterr().err.strip()
    assert "checkpoint" in err and "\n" not in err
