"""The typed settings (vaekit.config): one default network, one source of every default, and a
one-line refusal naming the setting, the value and what is allowed, from every door."""

import inspect
import json
import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

import vaekit
from vaekit import likelihoods, nets, runs
from vaekit.cli import main
from vaekit.config import (
    ACTIVATION_NAMES,
    LIKELIHOOD_NAMES,
    NETWORK_NAMES,
    DataConfig,
    ModelSpec,
    RunConfig,
    SettingError,
    TrainConfig,
    field_default,
)
from vaekit.estimator import VAE
from vaekit.spec import NETWORKS, build_model

SRC = Path(vaekit.__file__).parent


def exit_code(argv):
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def _structure(model):
    """The architecture: module tree and every parameter's name and shape."""
    return repr(model.encoder), repr(model.decoder), {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_train_the_estimator_and_build_model_make_the_same_default_network(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(0).normal(size=(120, 6)).astype(np.float32)  # real values: auto -> gaussian
    np.save(tmp_path / "x.npy", x)
    assert main(["train", "--data", "x.npy", "--epochs", "1", "--out", "r", "--no-progress", "--no-figures"]) == 0
    cli_model = vaekit.load(tmp_path / "r")
    est_model = VAE(epochs=1, device="cpu").fit(x).model_
    built = build_model(ModelSpec(data_shape=(6,)))
    assert cli_model.spec == est_model.spec == built.spec
    assert _structure(cli_model) == _structure(est_model) == _structure(built)
    # and it is the documented default: 8 latent units, hidden (128, 128), ReLU
    assert (built.spec.latent_dim, built.spec.hidden, built.spec.activation) == (8, (128, 128), "relu")
    assert sum(isinstance(m, torch.nn.ReLU) for m in built.encoder.modules()) == 2


def test_every_default_comes_from_the_fields():
    # the estimator's signature must list literals (scikit-learn); they equal the fields' defaults
    params = inspect.signature(VAE.__init__).parameters
    for name, (owner, attr) in VAE.SETTINGS.items():
        assert params[name].default == field_default(owner, attr), name
    mlp = inspect.signature(nets.MLP.__init__).parameters
    assert mlp["hidden"].default == field_default(ModelSpec, "hidden")
    assert mlp["activation"].default == field_default(ModelSpec, "activation")
    assert runs.DEFAULTS["latent_dim"] == ModelSpec().latent_dim and runs.DEFAULTS["epochs"] == TrainConfig().epochs
    assert runs.DEFAULTS["data"] == DataConfig().source and runs.DEFAULTS["checkpoint_every"] == 1
    # a default declared a second time somewhere would drift: the old copies are gone
    assert "DEFAULTS: dict[str, Any] = {" not in (SRC / "runs" / "__init__.py").read_text()


def test_the_torch_free_name_lists_match_the_registries():
    assert set(LIKELIHOOD_NAMES) == set(likelihoods.REGISTRY)
    assert set(NETWORK_NAMES) == set(NETWORKS)
    assert set(ACTIVATION_NAMES) == set(nets.ACTIVATIONS)
    assert set(vaekit.config.BUILTIN_DATA) == set(vaekit.datasets.BUILTIN)


def test_run_config_round_trip_and_strict_keys():
    config = RunConfig.from_settings(
        {
            "data": "sine",
            "latent-dim": 3,
            "hidden": "16,8",
            "epochs": 4,
            "lr": 0.01,
            "val_fraction": 0.2,
            "checkpoint_every": 2,
        }
    )
    assert config.model.hidden == (16, 8) and config.data.val_fraction == 0.2 and config.train.lr == 0.01
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(SettingError, match="unknown setting 'latnet_dim'.*did you mean 'latent_dim'"):
        RunConfig.from_settings({"latnet_dim": 2})
    with pytest.raises(SettingError, match="unknown setting 'activaton'"):
        ModelSpec.from_dict({**ModelSpec(data_shape=(3,)).to_dict(), "activaton": "tanh"})
    with pytest.raises(SettingError, match="unknown setting 'epoch'"):
        TrainConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: TrainConfig(batch_size=12.5), "setting batch_size=12.5 is not allowed: expected an integer >= 1"),
        (lambda: TrainConfig(epochs=2.5), "setting epochs=2.5 is not allowed: expected an integer >= 1"),
        (lambda: TrainConfig(iw_samples=1), "setting iw_samples=1 is not allowed: expected 0 (off) or an integer >= 2"),
        (lambda: TrainConfig(lr=float("nan")), "setting lr=nan is not allowed: expected a finite number > 0"),
        (lambda: TrainConfig(lr=float("inf")), "setting lr=inf is not allowed: expected a finite number > 0"),
        (lambda: TrainConfig(device=5), "setting device=5 is not allowed: expected auto, cpu, cuda, cuda:N or mps"),
        (lambda: TrainConfig(compile=1), "setting compile=1 is not allowed: expected true or false"),
        (lambda: DataConfig(val_fraction="0.1"), "setting val_fraction='0.1' is not allowed: expected a finite number"),
        (lambda: DataConfig(val_fraction=0.6, test_fraction=0.6), "sum below 1"),
        (lambda: ModelSpec(latent_dim=True), "setting latent_dim=True is not allowed: expected an integer >= 1"),
        (lambda: ModelSpec(hidden=(8, 0)), "setting hidden=(8, 0) is not allowed: expected positive integers"),
        (lambda: ModelSpec(latent_dim=10**12), "needs about .* more than this machine's"),
        (lambda: ModelSpec(data_shape=(10**7,), hidden=(10**6,)), "needs about .* use smaller latent_dim or hidden"),
        (lambda: RunConfig.from_settings({"batch_size": 12.5}), "setting batch_size=12.5 is not allowed"),
    ],
)
def test_python_door_refuses_with_one_line(make, message):
    with pytest.raises(ValueError, match=re.escape(message) if "." not in message else message) as err:
        make()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "toml, message",
    [
        ("batch_size = 12.5", "setting batch_size=12.5 is not allowed: expected an integer >= 1"),
        ("epochs = 2.5", "setting epochs=2.5 is not allowed: expected an integer >= 1"),
        ('val_fraction = "0.1"', "setting val_fraction='0.1' is not allowed: expected a finite number >= 0"),
        ("device = 5", "setting device=5 is not allowed: expected auto, cpu, cuda, cuda:N or mps"),
        ("iw_samples = 1", "setting iw_samples=1 is not allowed: expected 0 (off) or an integer >= 2"),
        ('binarize = "sometimes"', "setting binarize='sometimes' is not allowed: expected one of static, dynamic"),
        ("latent_dim = 1000000000000", "latent_dim=1000000000000 and hidden=[128, 128]"),
        ("lattent_dim = 2", "unknown setting 'lattent_dim'"),
    ],
)
def test_config_file_door_refuses_with_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, toml, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(f'data = "sine"\n{toml}\n')
    (tmp_path / "c.json").write_text(json.dumps({"data": "sine", **_toml_value(toml)}))
    for name in ("c.toml", "c.json"):
        assert exit_code(["train", "--config", name, "--out", "r", "--no-progress", "--no-figures"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and f"config file {name}" in err and "\n" not in err, err
        assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


def _toml_value(line):
    import tomllib

    return tomllib.loads(line)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "nan"], "argument --lr: setting lr=nan is not allowed: expected a finite number > 0"),
        (["--lr", "1e309"], "argument --lr: setting lr=inf is not allowed: expected a finite number > 0"),
        (["--device", "bogus"], "setting device='bogus' is not allowed: expected auto, cpu, cuda, cuda:N or mps"),
        (["--batch-size", "-5"], "setting batch_size=-5 is not allowed: expected an integer >= 1"),
        (["--batch-size", "0"], "setting batch_size=0 is not allowed: expected an integer >= 1"),
        (["--latent-dim", "abc"], "setting latent_dim='abc' is not allowed: expected an integer >= 1"),
        (["--iw-samples", "1"], "setting iw_samples=1 is not allowed: expected 0 (off) or an integer >= 2"),
        (["--latent-dim", "1000000000000"], "latent_dim=1000000000000"),
        (["--likelihood", "poisson"], "setting likelihood='poisson' is not allowed: expected auto or one of"),
    ],
)
def test_flag_door_refuses_with_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)
    assert exit_code(["train", "--data", "sine", *flags, "--out", "r", "--no-progress", "--no-figures"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "usage:" not in err, err
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for extra in (["--device", "cuda"], ["--device", "cuda:1"]):
        assert exit_code(["train", "--data", "sine", *extra, "--epochs", "1", "--no-figures"]) == 2
        err = capsys.readouterr().err.strip()
        assert "CUDA is not available" in err and "\n" not in err
        assert not (tmp_path / "runs").exists()


def test_estimator_door_refuses_with_one_line():
    x = np.random.default_rng(0).normal(size=(20, 3))
    for params, message in [
        ({"batch_size": 12.5}, "VAE: setting batch_size=12.5 is not allowed"),
        ({"lr": float("inf")}, "VAE: setting lr=inf is not allowed"),
        ({"device": "bogus"}, "VAE: setting device='bogus' is not allowed"),
        ({"threads": -1}, "VAE: setting threads=-1 is not allowed: expected an integer >= 0"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)) as err:
            VAE(epochs=1, **params).fit(x)
        assert "\n" not in str(err.value)


def test_estimator_passes_its_settings_to_training():
    config = VAE(threads=1, batch_size=16, lr=0.01)._train_config(seed=3)
    assert (config.threads, config.batch_size, config.lr, config.seed) == (1, 16, 0.01, 3)


def test_likelihood_resolution_lives_in_likelihoods():
    rng = np.random.default_rng(0)
    assert likelihoods.resolve("auto", (rng.random((20, 3)) > 0.5).astype(np.float32)).name == "bernoulli"
    grey = rng.integers(0, 5, size=(20, 3)).astype(np.float32)
    assert likelihoods.resolve("categorical", grey).config() == {"name": "categorical", "num_classes": 5}
    assert likelihoods.resolve("auto", None).config()["scale"] == "learned"  # no data: auto's choice for reals
    assert likelihoods.resolve("normal", None, scale=0.5).config()["scale"] == 0.5
    with pytest.raises(ValueError, match="setting scale applies to the Gaussian likelihood, not 'bernoulli'") as err:
        likelihoods.resolve("bernoulli", None, scale=0.5)
    assert "--" not in str(err.value)  # a library error names the setting, not a CLI flag
    with pytest.raises(ValueError, match="the mixed likelihood models tables"):
        likelihoods.resolve("mixed", grey)
    # capabilities are methods on the base class
    mixed = likelihoods.Mixed([{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "binary"}])
    assert mixed.handles_missing() and mixed.column_names() == ["a", "b"]
    assert not likelihoods.Gaussian().handles_missing() and likelihoods.Bernoulli().column_names() is None


def test_no_attribute_probes_for_capabilities_remain():
    probes = re.compile(r"(getattr|hasattr)\([^)]*[\"'](handles_missing|column_names)[\"']")
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if probes.search(p.read_text())]
    assert offenders == []
    assert "def choose_likelihood" not in "".join(p.read_text() for p in (SRC / "runs").glob("*.py"))


def test_no_module_imports_the_package_init():
    pattern = re.compile(r"^\s*from (\.|\.\.|vaekit) import (.*\b__version__\b)", re.M)
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_fields_carry_help_and_checks():
    for cls in (DataConfig, ModelSpec, TrainConfig):
        for f in fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
            assert f.metadata.get("kind"), f"{cls.__name__}.{f.name} has no type"
