"""Every setting of a run, typed, in one place: ``DataConfig``, ``ModelSpec``, ``TrainConfig`` and
``RunConfig`` (= data + model + train + output settings).

Each dataclass field owns its default, type, allowed values, check and help text (in
``field(metadata=...)``, made by ``setting``). The CLI builds its flags from these fields, TOML and
JSON config files go through ``RunConfig.from_settings``, the scikit-learn ``VAE`` and ``nets.MLP``
take their defaults from them, and checkpoints are read back with the same checks. A wrong value
from any door raises ``ValueError`` with one line naming the setting, the value and what is allowed.

This module imports neither torch nor numpy, so ``vaekit --help`` stays instant.

The default network (``ModelSpec``): 8 latent units, two hidden layers of 128, ReLU. Chosen because
it is the network the CLI's default run (digits) and its report were built around; 128-wide ReLU
layers train quickly and well on the small tabular and image sets vaekit targets, and 8 latent units
are enough for them while units the data do not need collapse to the prior (the KL-per-unit figure
shows which). ``vaekit train``, ``vaekit.VAE()`` and ``build_model(ModelSpec(data_shape=...))`` all
build this network.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

# Names known without importing torch (tests check them against the registries). A likelihood,
# network or activation registered at run time is accepted too, once its module is imported.
LIKELIHOOD_NAMES = ("bernoulli", "categorical", "categorical256", "continuous_bernoulli", "gaussian", "mixed")
LIKELIHOOD_ALIASES = {
    "cb": "continuous_bernoulli",
    "continuous-bernoulli": "continuous_bernoulli",
    "normal": "gaussian",
    "categorical-256": "categorical256",
    "categorical_256": "categorical256",
}
NETWORK_NAMES = ("conv", "mlp", "table")
ACTIVATION_NAMES = ("elu", "gelu", "leaky_relu", "relu", "sigmoid", "silu", "softplus", "tanh")
BUILTIN_DATA = ("digits", "pinwheel", "sine")
AMP_NAMES = ("bf16",)
PRIORS = ("normal", "mog", "vamp")
POSTERIORS = ("diagonal", "full", "iaf")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class SettingError(ValueError):
    """A setting with a value that is not allowed (one line: the setting, the value, what is allowed)."""


def _registered(module: str, attr: str) -> tuple[str, ...]:
    mod = sys.modules.get(module)  # only when already imported: never pull torch in for a check
    return tuple(getattr(mod, attr, {})) if mod is not None else ()


def likelihood_names() -> tuple[str, ...]:
    return tuple(sorted({*LIKELIHOOD_NAMES, *_registered("vaekit.likelihoods", "REGISTRY")}))


def network_names() -> tuple[str, ...]:
    return tuple(sorted({*NETWORK_NAMES, *_registered("vaekit.spec", "NETWORKS")}))


def activation_names() -> tuple[str, ...]:
    return tuple(sorted({*ACTIVATION_NAMES, *_registered("vaekit.nets", "ACTIVATIONS")}))


# -- one setting -------------------------------------------------------------------------
def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    kind: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
    choices: Any = None,
    check: Callable[[Any], str | None] | None = None,
    allowed: str | None = None,
    flag: str | None = None,
    key: str | None = None,
    cli: bool = True,
    metavar: str | None = None,
    const: Any = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field with its checks. ``kind``: int, float, str, bool, ints (a tuple of positive
    ints, text "64,64" or "linear"), names (a tuple of names, text "a,b"), any (checked by ``check``).
    ``choices``: allowed values (or a function giving them). ``check(value)`` returns a complaint
    (what is allowed) or None. ``key``: the name in settings and config files (default: the field's)."""
    meta = dict(
        kind=kind,
        low=low,
        high=high,
        low_open=low_open,
        high_open=high_open,
        optional=optional,
        choices=choices,
        check=check,
        allowed=allowed,
        flag=flag,
        key=key,
        cli=cli,
        help=help,
        metavar=metavar,
        const=const,
    )
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _choices(meta: dict[str, Any]) -> tuple | None:
    c = meta["choices"]
    return tuple(c()) if callable(c) else (tuple(c) if c is not None else None)


def allowed_text(meta: dict[str, Any]) -> str:
    """What a setting allows, in words (for error messages and help)."""
    if meta["allowed"]:
        text = meta["allowed"]
    elif _choices(meta) is not None:
        text = "one of " + ", ".join(str(c) for c in _choices(meta))
    else:
        kind = meta["kind"]
        text = {
            "int": "an integer",
            "float": "a finite number",
            "str": "text",
            "bool": "true or false",
            "ints": "positive integers such as 64,64 (or 'linear' for none)",
            "names": "names such as a,b",
            "any": "a valid value",
        }[kind]
        lo, hi = meta["low"], meta["high"]
        if lo is not None:
            text += f" {'>' if meta['low_open'] else '>='} {lo:g}"
        if hi is not None:
            text += f"{' and' if lo is not None else ''} {'<' if meta['high_open'] else '<='} {hi:g}"
    return text + (" (or none)" if meta["optional"] and "none" not in text else "")


def _refuse(name: str, value: Any, meta: dict[str, Any], why: str | None = None) -> SettingError:
    return SettingError(f"setting {name}={value!r} is not allowed: expected {why or allowed_text(meta)}")


def check_value(name: str, value: Any, meta: dict[str, Any]) -> Any:
    """``value`` (from Python, TOML or JSON) checked strictly and normalised, or ``SettingError``."""
    kind = meta["kind"]
    if value is None:
        if meta["optional"]:
            return None
        raise _refuse(name, value, meta)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if not (type(value).__name__.startswith("int") and hasattr(value, "item")):  # numpy integers
                raise _refuse(name, value, meta)
            value = int(value)
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if not (type(value).__name__.startswith(("float", "int")) and hasattr(value, "item")):
                raise _refuse(name, value, meta)
        value = float(value)
        if not math.isfinite(value):
            raise _refuse(name, value, meta)
    elif kind == "str":
        if not isinstance(value, str):
            raise _refuse(name, value, meta)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise _refuse(name, value, meta)
    elif kind == "ints":
        if isinstance(value, int) and not isinstance(value, bool):
            value = (value,)
        if isinstance(value, str):
            value = parse_ints(name, value, meta)
        if not isinstance(value, (tuple, list)) or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value
        ):
            raise _refuse(name, value, meta)
        value = tuple(int(v) for v in value)
    elif kind == "names":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
            raise _refuse(name, value, meta)
        value = tuple(value)
    if kind in ("int", "float"):
        lo, hi = meta["low"], meta["high"]
        if lo is not None and (value < lo or (meta["low_open"] and value == lo)):
            raise _refuse(name, value, meta)
        if hi is not None and (value > hi or (meta["high_open"] and value == hi)):
            raise _refuse(name, value, meta)
    choices = _choices(meta)
    if choices is not None and value not in choices:
        raise _refuse(name, value, meta)
    if meta["check"] is not None:
        why = meta["check"](value)
        if why:
            raise _refuse(name, value, meta, why)
    return value


def parse_ints(name: str, text: str, meta: dict[str, Any]) -> tuple[int, ...]:
    text = text.strip()
    if text.lower() in ("", "none", "linear"):
        return ()
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise _refuse(name, text, meta) from None
    return sizes


def parse_text(name: str, text: str, meta: dict[str, Any]) -> Any:
    """A command-line string -> the typed value, then ``check_value``."""
    kind = meta["kind"]
    if meta["optional"] and kind in ("int", "float") and text.strip().lower() in ("none", "off"):
        return None
    if kind == "int":
        try:
            value: Any = int(text)
        except ValueError:
            raise _refuse(name, text, meta) from None
    elif kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise _refuse(name, text, meta) from None
    elif kind == "ints":
        value = parse_ints(name, text, meta)
    else:
        value = text
    return check_value(name, value, meta)


def settings_key(f) -> str:
    return f.metadata.get("key") or f.name


class _Checked:
    """Mixin: every field is checked (and normalised) on construction; strict ``from_dict``."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if "kind" in f.metadata:
                setattr(self, f.name, check_value(settings_key(f), getattr(self, f.name), f.metadata))
        self._check_together()

    def _check_together(self) -> None:
        """Checks that involve more than one field."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Strict: an unknown key is refused by name (a missing one takes its default)."""
        if not isinstance(d, dict):
            raise SettingError(f"{cls.__name__} settings must be a table of names and values, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise SettingError(unknown_message(unknown[0], names, cls.__name__))
        return cls(**d)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        out = {}
        for f in fields(cls):
            if f.default is not MISSING:
                out[f.name] = f.default
            elif f.default_factory is not MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
        return out


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def unknown_message(key: str, known, where: str) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
    return f"unknown setting {key!r} in {where}{hint}"


# -- data ---------------------------------------------------------------------------------
def _binarize(value: Any) -> Any:
    """None (off), "static" or "dynamic"; true/false and on/off spellings are accepted."""
    if value in (False, "", "none", "off", "no", "false"):
        return None
    if value is True or value in ("on", "yes", "true"):
        return "static"
    return value


def _fraction(value: float) -> str | None:
    return None if value < 1 else "a share in [0, 1)"


CONDITIONS = ("label",)
TABLE_SETTINGS = ("label_column", "numeric", "binary", "categorical")


@dataclass
class DataConfig(_Checked):
    """Where the data come from and how they are split."""

    source: str = setting(
        "digits",
        "a built-in data set (sine, pinwheel, digits), a .npy/.npz array, a .csv/.tsv/"
        ".parquet table, an IDX file (MNIST's ...-idx3-ubyte[.gz]) or a folder of images "
        "(class sub-folders give labels)",
        kind="str",
        key="data",
        flag="--data",
    )
    binarize: str | None = setting(
        None,
        "pixels to 0/1: static thresholds once (> 0.5; digits: > 8); dynamic draws "
        "a fresh Bernoulli(pixel) every batch (validation/test drawn once, seeded); "
        "alone: static",
        kind="str",
        optional=True,
        choices=("static", "dynamic"),
        const="static",
    )
    label_column: str | None = setting(
        None,
        "tables: the column holding labels, kept out of training (for plots and scores)",
        kind="str",
        optional=True,
    )
    numeric: tuple[str, ...] = setting(
        (), "tables: comma-separated columns to treat as numeric", kind="names", metavar="COLS"
    )
    binary: tuple[str, ...] = setting(
        (), "tables: columns to treat as binary (two values)", kind="names", metavar="COLS"
    )
    categorical: tuple[str, ...] = setting((), "tables: columns to treat as categorical", kind="names", metavar="COLS")
    stream: str = setting(
        "auto",
        "read a .npy file from disk batch by batch (memory stays flat); auto: when larger than 1 GiB",
        kind="str",
        choices=("auto", "on", "off"),
    )
    val_fraction: float = setting(
        0.1, "share of the data held out for validation", kind="float", low=0, check=_fraction
    )
    test_fraction: float = setting(0.1, "share held out for testing", kind="float", low=0, check=_fraction)
    split_seed: int = setting(0, "seed of the train/validation/test split", kind="int")
    condition: str | None = setting(
        None,
        "conditional VAE: label conditions q(z|x, c) and p(x|z, c) on the data's class labels (digits, "
        "folders of class sub-folders, an .npz with y, a table's label_column)",
        kind="str",
        optional=True,
        choices=CONDITIONS,
    )
    condition_columns: tuple[str, ...] = setting(
        (),
        "tables: conditional VAE on these columns (comma-separated): they become the condition c "
        "(categorical one-hot, numeric standardised by the training rows) and are not modelled",
        kind="names",
        metavar="COLS",
    )

    def __post_init__(self) -> None:
        self.binarize = _binarize(self.binarize)
        for name in ("numeric", "binary", "categorical", "condition_columns"):
            if getattr(self, name) is None:
                setattr(self, name, ())
        super().__post_init__()

    def _check_together(self) -> None:
        if self.val_fraction + self.test_fraction >= 1:
            raise SettingError(
                f"settings val_fraction={self.val_fraction} and test_fraction={self.test_fraction} "
                "are not allowed: expected shares in [0, 1) that sum below 1"
            )
        if self.condition_columns:
            if self.condition:
                raise SettingError(
                    f"setting condition_columns={','.join(self.condition_columns)!r} conflicts with "
                    f"condition={self.condition!r}: condition on the class labels or on table columns, not both"
                )
            if self.label_column in self.condition_columns:
                raise SettingError(
                    f"column {self.label_column!r} is named both label_column and in condition_columns; "
                    "a column is either the label or a condition"
                )
            if len(set(self.condition_columns)) != len(self.condition_columns):
                raise SettingError(f"setting condition_columns={','.join(self.condition_columns)!r} repeats a column")
        given = [k for k in (*TABLE_SETTINGS, "condition_columns") if getattr(self, k)]
        if self.source in BUILTIN_DATA:
            if given:
                raise SettingError(
                    f"setting {given[0]}={getattr(self, given[0])!r} is not allowed for data "
                    f"{self.source!r}: it applies to tables (.csv, .tsv, .parquet)"
                )
            if self.stream != "auto":
                raise SettingError(
                    f"setting stream={self.stream!r} is not allowed for data {self.source!r}: it applies to .npy files"
                )
            if self.binarize and self.source != "digits":
                raise SettingError(
                    f"setting binarize={self.binarize!r} is not allowed for data {self.source!r}: "
                    "it applies to images and pixel arrays in [0, 1]"
                )
        elif Path(self.source).exists():
            self.source = str(Path(self.source).resolve())

    # config.json keeps the layout readers have always used: source, options (for data.load), split
    def load_options(self) -> dict[str, Any]:
        """Keyword options for ``vaekit.data.load(source, ...)``."""
        if self.source in BUILTIN_DATA:
            if self.source == "digits":
                return {"unit": True} if self.binarize == "dynamic" else {"binarize": self.binarize == "static"}
            return {}
        options: dict[str, Any] = {}
        if self.label_column:
            options["label_column"] = self.label_column
        for k in ("numeric", "binary", "categorical"):
            if getattr(self, k):
                options[k] = list(getattr(self, k))
        if self.binarize == "static":
            options["binarize"] = True
        if self.stream != "auto":
            options["stream"] = self.stream
        return options

    @property
    def fractions(self) -> list[float]:
        return [1 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "source": self.source,
            "options": self.load_options(),
            "split": {"fractions": self.fractions, "seed": self.split_seed},
        }
        if self.binarize == "dynamic":
            d["dynamic_binarize"] = True
        if self.condition:
            d["condition"] = self.condition
        if self.condition_columns:
            d["condition_columns"] = list(self.condition_columns)
        return d

    # facts about the data written next to the settings (not settings themselves)
    FACTS = ("name", "sizes", "image_shape", "n_features", "feature_names")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        if not isinstance(d, dict):
            raise SettingError(f"the data settings must be a table, got {type(d).__name__}")
        known = {"source", "options", "split", "dynamic_binarize", "condition", "condition_columns", *cls.FACTS}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SettingError(unknown_message(unknown[0], known, "the data settings"))
        options = dict(d.get("options") or {})
        split = d.get("split") or {"fractions": [0.8, 0.1, 0.1], "seed": 0}
        fr = split.get("fractions", [0.8, 0.1, 0.1])
        if not (isinstance(fr, (list, tuple)) and len(fr) == 3):
            raise SettingError(f"setting split.fractions={fr!r} is not allowed: expected three shares")
        binarize = "dynamic" if d.get("dynamic_binarize") else ("static" if options.pop("binarize", False) else None)
        options.pop("unit", None)
        kwargs = {k: options.pop(k) for k in (*TABLE_SETTINGS, "stream") if k in options}
        if options:
            raise SettingError(
                unknown_message(sorted(options)[0], {*TABLE_SETTINGS, "stream", "binarize"}, "the data options")
            )
        return cls(
            source=d.get("source", "digits"),
            binarize=binarize,
            val_fraction=fr[1],
            test_fraction=fr[2],
            split_seed=split.get("seed", 0),
            condition=d.get("condition"),
            condition_columns=tuple(d.get("condition_columns") or ()),
            **kwargs,
        )


# -- model ---------------------------------------------------------------------------------
def _likelihood(value: Any) -> str | None:
    if isinstance(value, str):
        key = LIKELIHOOD_ALIASES.get(value.lower(), value.lower())
        return None if key == "auto" or key in likelihood_names() else "auto or one of " + ", ".join(likelihood_names())
    if isinstance(value, dict):
        return None if isinstance(value.get("name"), str) else "a likelihood config with a 'name'"
    return "a likelihood name (or auto) or a config dict such as {'name': 'gaussian', 'scale': 0.1}"


def _shape(value: Any) -> str | None:
    ok = isinstance(value, (tuple, list)) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value
    )
    return None if ok else "a shape of positive integers"


PARAMETER_BYTES = 16  # float32 weight + gradient + Adam's two moments


@dataclass
class ModelSpec(_Checked):
    """Everything needed to rebuild a model's architecture (weights live elsewhere).

    ``likelihood="auto"`` and ``network="auto"`` are decided from the data when a run is trained;
    ``build_model`` on a spec without data resolves them as for real-valued data (a Gaussian with
    a learned scale, the MLP). The defaults are vaekit's one default network (see the module
    docstring for why)."""

    data_shape: tuple[int, ...] | None = setting(
        None, "shape of one example", kind="any", optional=True, check=_shape, cli=False
    )
    latent_dim: int = setting(8, "size of z", kind="int", low=1)
    hidden: tuple[int, ...] = setting(
        (128, 128),
        "hidden layer sizes of the encoder (the decoder mirrors them), e.g. 32,32; 'linear' for none",
        kind="ints",
    )
    activation: str = setting("relu", "hidden-layer activation", kind="str", choices=activation_names)
    likelihood: Any = setting(
        "auto",
        "observation model; auto: binary -> bernoulli, few integer levels -> "
        "categorical, values in [0,1] -> continuous_bernoulli, other reals -> gaussian with "
        "learned scale",
        kind="any",
        check=_likelihood,
        allowed="auto or one of " + ", ".join(LIKELIHOOD_NAMES),
    )
    scale: float | None = setting(
        None,
        "fixed standard deviation of a Gaussian likelihood (none: learned)",
        kind="float",
        low=0,
        low_open=True,
        optional=True,
    )
    network: str = setting(
        "auto",
        "encoder/decoder: auto picks conv for images (C,H,W), table for tables, mlp otherwise",
        kind="str",
        choices=lambda: ("auto", *network_names()),
    )
    channels: tuple[int, ...] = setting(
        (32, 64), "conv network: channels of its stride-2 convolutions, e.g. 32,64", kind="ints"
    )
    image_shape: tuple[int, ...] | None = setting(
        None,
        "conv network on flat data: the (C, H, W) of one example",
        kind="any",
        optional=True,
        check=_shape,
        cli=False,
    )
    # the variants (vaekit.priors, vaekit.posteriors): checked together in _check_variant
    prior: str = setting(
        "normal",
        "p(z): normal N(0, I); mog a learned Gaussian mixture; vamp the VampPrior (a "
        "mixture of the encoder's posteriors at learned pseudo-inputs)",
        kind="str",
        choices=PRIORS,
    )
    n_components: int | None = setting(
        None, "mixture components of prior mog / vamp (none: 10)", kind="int", low=1, optional=True
    )
    posterior: str = setting(
        "diagonal",
        "q(z|x): diagonal Gaussian, full covariance, or iaf (inverse autoregressive flow on the diagonal Gaussian)",
        kind="str",
        choices=POSTERIORS,
    )
    iaf_steps: int | None = setting(None, "MADE steps of posterior iaf (none: 2)", kind="int", low=1, optional=True)
    layers: int = setting(
        1, "stochastic layers: 1, or 2 (x <-> z1 <-> z2; latent_dim is z1's size)", kind="int", choices=(1, 2)
    )
    top_dim: int | None = setting(
        None, "layers 2: size of z2 (none: latent_dim // 2)", kind="int", low=1, optional=True
    )
    condition_dim: int = setting(
        0,
        "conditional VAE: values per condition (the number of classes for labels); 0: not conditional",
        kind="int",
        low=0,
        cli=False,
    )
    # cli=False until the run layer feeds conditions (labels, covariates) to fit: a flag would build a model
    # that cannot be trained from the command line
    conditional_prior: bool = setting(False, "conditional VAE: learn p(z|c) instead of N(0, I)", kind="bool", cli=False)

    def __post_init__(self) -> None:
        if not isinstance(self.likelihood, (str, dict)) and callable(getattr(type(self.likelihood), "config", None)):
            self.likelihood = self.likelihood.config()  # a Likelihood object: keep its config
        if isinstance(self.likelihood, str):
            self.likelihood = LIKELIHOOD_ALIASES.get(self.likelihood.lower(), self.likelihood.lower())
        super().__post_init__()
        if self.data_shape is not None:
            self.data_shape = tuple(self.data_shape)
        if self.image_shape is not None:
            self.image_shape = tuple(self.image_shape)

    def _check_together(self) -> None:
        from .limits import require_memory

        self._check_variant()
        n = self.parameter_estimate()
        require_memory(
            PARAMETER_BYTES * n,
            f"a model with latent_dim={self.latent_dim} and hidden={list(self.hidden)} (about {n:.3g} parameters)",
            hint="use smaller latent_dim or hidden sizes",
        )

    def _check_variant(self) -> None:
        """Prior, posterior, layers and condition: options set only where they apply, no two in conflict,
        defaults filled in (so the saved spec says what was built)."""
        for name, value, needs, ok in (
            ("n_components", self.n_components, "prior mog or vamp", self.prior != "normal"),
            ("iaf_steps", self.iaf_steps, "posterior iaf", self.posterior == "iaf"),
            ("top_dim", self.top_dim, "layers 2", self.layers == 2),
        ):
            if value is not None and not ok:
                raise SettingError(f"setting {name}={value!r} applies only to {needs}; drop it or choose {needs}")
        if self.prior != "normal" and self.n_components is None:
            self.n_components = 10
        if self.posterior == "iaf" and self.iaf_steps is None:
            self.iaf_steps = 2
        if self.layers == 2:
            if self.top_dim is None:
                self.top_dim = max(1, self.latent_dim // 2)
            for what, bad in (
                ("prior", self.prior != "normal"),
                ("posterior", self.posterior != "diagonal"),
                ("condition_dim", self.condition_dim > 0),
            ):
                if bad:
                    raise SettingError(
                        f"layers=2 conflicts with {what}={getattr(self, what)!r}: the two-layer model "
                        "has its own prior p(z2) p(z1|z2) and posterior q(z1|x) q(z2|z1); use layers=1"
                    )
        if self.prior == "vamp" and self.posterior != "diagonal":
            raise SettingError(
                f"prior='vamp' conflicts with posterior={self.posterior!r}: the VampPrior is a mixture "
                "of diagonal Gaussian posteriors; use posterior='diagonal' or prior='mog'"
            )
        if self.conditional_prior and not self.condition_dim:
            raise SettingError("setting conditional_prior=True needs a conditional model: set condition_dim")
        if self.condition_dim and self.prior != "normal":
            raise SettingError(
                f"condition_dim={self.condition_dim} conflicts with prior={self.prior!r}: a conditional "
                "VAE takes the normal prior or a learned conditional one (conditional_prior=True)"
            )
        if self.condition_dim and self.network == "conv":
            raise SettingError(
                f"condition_dim={self.condition_dim} conflicts with network='conv': the condition is "
                "concatenated to flat inputs; use network='mlp'"
            )

    def parameter_estimate(self) -> float:
        """Weights of the MLP encoder and decoder (a lower bound for the other networks)."""
        d = math.prod(self.data_shape) if self.data_shape else 1
        enc = [d, *self.hidden, 2 * self.latent_dim]
        dec = [self.latent_dim, *self.hidden[::-1], d]
        return float(sum(a * b + b for net in (enc, dec) for a, b in zip(net[:-1], net[1:])))

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["likelihood"] = dict(self.likelihood) if isinstance(self.likelihood, dict) else self.likelihood
        return d


# -- training ------------------------------------------------------------------------------
def _iw(value: int) -> str | None:
    return None if value == 0 or value >= 2 else "0 (off) or an integer >= 2"


def _device(value: str) -> str | None:
    return None if _DEVICE.match(value) else "auto, cpu, cuda, cuda:N or mps"


OPTIMIZER_NAMES = ("adam", "adamw")
SCHEDULE_NAMES = ("constant", "cosine", "step", "plateau")


@dataclass
class TrainConfig(_Checked):
    """Training settings. Defaults follow common practice (Adam 1e-3, batch 128)."""

    epochs: int = setting(100, "passes over the training data", kind="int", low=1)
    batch_size: int = setting(128, "examples per step", kind="int", low=1)
    optimizer: str = setting(
        "adam",
        "adam (weight decay as an L2 term in the gradient) or adamw (decoupled weight decay)",
        kind="str",
        choices=OPTIMIZER_NAMES,
    )
    lr: float = setting(1e-3, "learning rate (the peak of a schedule)", kind="float", low=0, low_open=True)
    weight_decay: float = setting(
        0.0,
        "weight decay: L2 in the gradient for adam, decoupled (lr * wd * w per step) for adamw",
        kind="float",
        low=0,
    )
    lr_schedule: str = setting(
        "constant",
        "learning-rate schedule over epochs: constant, cosine (to lr_min at the last epoch), step "
        "(times lr_factor every lr_step epochs) or plateau (times lr_factor after lr_patience epochs "
        "without a better validation ELBO)",
        kind="str",
        choices=SCHEDULE_NAMES,
    )
    lr_min: float = setting(0.0, "lowest learning rate of the cosine and plateau schedules", kind="float", low=0)
    lr_step: int = setting(30, "epochs between learning-rate drops (step schedule)", kind="int", low=1)
    lr_factor: float = setting(
        0.1,
        "factor the learning rate is multiplied by at a drop (step, plateau)",
        kind="float",
        low=0,
        low_open=True,
        high=1,
        high_open=True,
    )
    lr_patience: int = setting(
        5, "epochs without a better validation ELBO before the plateau schedule drops the rate", kind="int", low=1
    )
    beta: float = setting(1.0, "weight of the KL term (beta-VAE)", kind="float", low=0)
    warmup: float = setting(0.0, "epochs of linear KL warm-up from 0 to beta", kind="float", low=0)
    free_bits: float = setting(0.0, "KL floor in nats per latent unit (Kingma et al. 2016)", kind="float", low=0)
    n_samples: int = setting(1, "z samples per example in the ELBO", kind="int", low=1)
    iw_samples: int = setting(
        0,
        "train on the IWAE bound with this many samples (>= 2); 0: off",
        kind="int",
        check=_iw,
        allowed="0 (off) or an integer >= 2",
    )
    grad_clip: float | None = setting(
        None, "clip the gradient norm to this value (none: off)", kind="float", low=0, low_open=True, optional=True
    )
    early_stopping: int | None = setting(
        None,
        "stop after this many epochs without a better validation ELBO (none: off)",
        kind="int",
        low=1,
        optional=True,
        metavar="PATIENCE",
    )
    min_delta: float = setting(
        0.0, "validation ELBO gain that counts as better (early stopping)", kind="float", low=0, cli=False
    )
    restore_best: bool = setting(
        True, "after early stopping, go back to the best validation weights", kind="bool", cli=False
    )
    seed: int = setting(0, "seed for initial weights, shuffling and sampling", kind="int")
    device: str = setting(
        "auto", "auto, cpu, cuda, cuda:1 or mps", kind="str", check=_device, allowed="auto, cpu, cuda, cuda:N or mps"
    )
    progress: bool | None = setting(
        None, "show a progress bar (none: only when stderr is a terminal)", kind="bool", optional=True
    )
    eval_batch_size: int = setting(4096, "examples per batch when evaluating", kind="int", low=1, cli=False)
    threads: int = setting(
        0, "CPU threads; 0: automatic (the fastest of 1, 2 and all cores, timed at the start)", kind="int", low=0
    )
    compile: bool = setting(False, "torch.compile the training step (falls back if it fails)", kind="bool")
    amp: str | None = setting(
        None,
        "bfloat16 autocast for the networks; likelihood and KL stay float32 (float16 "
        "would need loss scaling, which vaekit does not do)",
        kind="str",
        optional=True,
        choices=AMP_NAMES,
    )
    dynamic_binarize: bool = setting(
        False, "the training data hold probabilities; each batch is a fresh Bernoulli draw", kind="bool", cli=False
    )
    skip_nonfinite: bool = setting(
        False,
        "skip batches whose loss or gradients are non-finite (counted in the "
        "history's skipped_batches) instead of stopping",
        kind="bool",
    )


# -- a whole run ------------------------------------------------------------------------------
def _model_field_names() -> set[str]:
    return {f.name for f in fields(ModelSpec) if f.metadata.get("cli", True)}


@dataclass
class RunConfig(_Checked):
    """A run's settings: ``data`` + ``model`` + ``train``, plus where and how often to write."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str | None = setting(None, "run folder to create (default: runs/DATA-TIME)", kind="str", optional=True)
    checkpoint_every: int = setting(1, "epochs between checkpoints", kind="int", low=1)
    checkpoint_share: float = setting(
        0.02,
        "the largest share of the training time that writing checkpoints may take: a due checkpoint waits until "
        "the time since the last one is the last write's time / this share (the first and last epochs are "
        "always written); 0 writes every due checkpoint",
        kind="float",
        low=0.0,
        high=1.0,
    )
    # the model's conditional_prior, set from the command line before the number of classes is known
    # (ModelSpec refuses conditional_prior without condition_dim; the run layer sets both together)
    conditional_prior: bool = setting(
        False, "with --condition label or --condition-columns: learn the prior p(z|c) instead of N(0, I)", kind="bool"
    )

    SECTIONS = {"data": DataConfig, "model": ModelSpec, "train": TrainConfig}

    def _check_together(self) -> None:
        conditional = self.data.condition or self.data.condition_columns or self.model.condition_dim
        if self.conditional_prior and not conditional:
            raise SettingError(
                "setting conditional_prior=True needs a conditional run: add condition='label' (--condition label) "
                "or condition_columns (--condition-columns COLS)"
            )

    @classmethod
    def section_fields(cls):
        """(section or None, field) for every user setting, in help order."""
        for section, klass in cls.SECTIONS.items():
            for f in fields(klass):
                if f.metadata.get("cli", True) and "kind" in f.metadata:
                    yield section, f
        for f in fields(cls):
            if "kind" in f.metadata:
                yield None, f

    @classmethod
    def from_settings(cls, settings: dict[str, Any], where: str = "the settings") -> RunConfig:
        """From flat settings (CLI flags, a TOML/JSON file, Python keywords): names with dashes or
        underscores; ``[data]``, ``[model]``, ``[train]`` tables are accepted too."""
        flat: dict[str, Any] = {}
        for k, v in settings.items():
            k = str(k).replace("-", "_")
            if k in cls.SECTIONS and isinstance(v, dict):
                flat.update({str(kk).replace("-", "_"): vv for kk, vv in v.items()})
            else:
                flat[k] = v
        by_key = {settings_key(f): (s, f) for s, f in cls.section_fields()}
        unknown = sorted(set(flat) - set(by_key))
        if unknown:
            raise SettingError(unknown_message(unknown[0], by_key, where))
        parts: dict[str | None, dict[str, Any]] = {s: {} for s in (*cls.SECTIONS, None)}
        for key, value in flat.items():
            section, f = by_key[key]
            parts[section][f.name] = value
        return cls(
            data=DataConfig(**parts["data"]),
            model=ModelSpec(**parts["model"]),
            train=TrainConfig(**parts["train"]),
            **parts[None],
        )

    @classmethod
    def flat_defaults(cls) -> dict[str, Any]:
        """Every user setting's default by its settings name."""
        return {
            settings_key(f): (f.default if f.default is not MISSING else f.default_factory())  # type: ignore
            for _, f in cls.section_fields()
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data.to_dict(),
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "checkpoint_every": self.checkpoint_every,
            "checkpoint_share": self.checkpoint_share,
        }

    METADATA = ("format_version", "vaekit_version", "created", "estimator")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """From a config.json (metadata keys are skipped; anything else unknown is refused)."""
        known = {"data", "model", "train", "checkpoint_every", "checkpoint_share", "out", *cls.METADATA}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SettingError(unknown_message(unknown[0], known, "config.json"))
        return cls(
            data=DataConfig.from_dict(d.get("data", {})),
            model=ModelSpec.from_dict(d.get("model", {})),
            train=TrainConfig.from_dict(d.get("train", {})),
            checkpoint_every=d.get("checkpoint_every", 1),
            checkpoint_share=d.get("checkpoint_share", field_default(cls, "checkpoint_share")),
            out=d.get("out"),
        )


def field_default(cls, name: str) -> Any:
    """The default of one field (for signatures that must list literals, checked by a test)."""
    f = next(f for f in fields(cls) if f.name == name)
    return f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
