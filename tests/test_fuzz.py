"""Fuzzing every reader and checkpoint loading with hypothesis (issue 11).

Each test starts from a valid file, damages it (bit flips, overwritten bytes, truncation, edited
header text) or builds one from random parts, and reads it. Reading may succeed or be refused,
but a refusal must be one line of a documented type (a vaekit error, ValueError or TypeError),
never another exception; a checkpoint that loads must hold exactly what was saved. Examples are
bounded so the file runs in well under a minute.
"""

import io
import struct

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import vaekit  # noqa: E402
from vaekit import checkpoint, datasets  # noqa: E402
from vaekit.data import write_idx  # noqa: E402
from vaekit.errors import CheckpointError, VaekitError  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DOCUMENTED = (VaekitError, ValueError, TypeError)


def _read(path, **options):
    """Read ``path``; a refusal must be documented and one line. Returns the Dataset or None."""
    try:
        data = datasets.load(str(path), **options)
    except DOCUMENTED as err:
        assert "\n" not in str(err).strip(), f"a refusal of more than one line: {err!r}"
        return None
    x = np.asarray(data.x[: min(len(data.x), 64)], dtype=np.float32)  # read the rows (a streamed file reads now)
    assert x.ndim >= 2 and len(data.x) > 0
    return data


# mutations of a valid file's bytes: flip bits, overwrite bytes, cut the end
flips = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=4)
overwrites = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=8)), max_size=3)
cuts = st.one_of(st.none(), st.floats(0, 1))


def _mutate(data: bytes, flip, over, cut, region: tuple[int, int] | None = None) -> bytes:
    lo, hi = region or (0, len(data))
    out = bytearray(data)
    for where, bit in flip:
        out[lo + int(where * (hi - lo))] ^= 1 << bit
    for where, chunk in over:
        at = lo + int(where * (hi - lo))
        out[at : at + len(chunk)] = chunk
    if cut is not None:
        out = out[: int(cut * len(out))]
    return bytes(out)


small_arrays = st.builds(
    lambda n, d, dtype, seed: (np.random.default_rng(seed).normal(size=(n, d)) * 3).astype(dtype),
    st.integers(1, 12),
    st.integers(1, 5),
    st.sampled_from(["<f4", ">f8", "<i2", "u1", "?"]),
    st.integers(0, 99),
)


def _npy_bytes(x) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


# -- arrays -------------------------------------------------------------------------------------------
@FUZZ
@given(x=small_arrays, flip=flips, over=overwrites, cut=cuts, header_only=st.booleans(), stream=st.booleans())
def test_fuzz_npy(tmp_path, x, flip, over, cut, header_only, stream):
    raw = _npy_bytes(x)
    header_end = 10 + struct.unpack("<H", raw[8:10])[0]
    (tmp_path / "f.npy").write_bytes(_mutate(raw, flip, over, cut, (0, header_end) if header_only else None))
    _read(tmp_path / "f.npy", stream=stream)


header_text = st.text(st.sampled_from("{}()[],:'\" 0123456789descrshapefortran_orderTrueFalse<f4>i8c16O"), max_size=80)


@FUZZ
@given(text=header_text, stream=st.booleans(), body=st.binary(max_size=64))
def test_fuzz_npy_header_text(tmp_path, text, stream, body):
    """Random header dicts, balanced or not, in a well-formed .npy envelope."""
    header = text.encode("latin1")
    pad = (64 - (10 + len(header) + 1) % 64) % 64
    header = header + b" " * pad + b"\n"
    (tmp_path / "f.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body)
    _read(tmp_path / "f.npy", stream=stream)


@FUZZ
@given(x=small_arrays, flip=flips, over=overwrites, cut=cuts, compressed=st.booleans(), labels=st.booleans())
def test_fuzz_npz(tmp_path, x, flip, over, cut, compressed, labels):
    buf = io.BytesIO()
    arrays = {"x": x, **({"y": np.arange(len(x))} if labels else {})}
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    (tmp_path / "f.npz").write_bytes(_mutate(buf.getvalue(), flip, over, cut))
    _read(tmp_path / "f.npz")


# -- tables -------------------------------------------------------------------------------------------
cells = st.one_of(
    st.integers(-5, 5).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "a", "b", "NA", "nan", "inf", '"q,1"', '"', "x y", "1e400", "true", "é"]),
)


@FUZZ
@given(
    rows=st.lists(st.lists(cells, min_size=1, max_size=5), min_size=0, max_size=12),
    header=st.booleans(),
    tsv=st.booleans(),
    tail=st.sampled_from(["", "\n", "\n\n", ",", "\r\n"]),
)
def test_fuzz_csv_tsv(tmp_path, rows, header, tsv, tail):
    sep, name = ("\t", "f.tsv") if tsv else (",", "f.csv")
    lines = [sep.join(f"c{i}" for i in range(max((len(r) for r in rows), default=1)))] if header else []
    lines += [sep.join(r) for r in rows]
    (tmp_path / name).write_text("\n".join(lines) + tail, encoding="utf-8")
    _read(tmp_path / name)


@FUZZ
@given(
    columns=st.integers(1, 4),
    values=st.lists(
        st.one_of(st.none(), st.text(st.sampled_from('ab ,;"\t\n1.-'), max_size=6)), min_size=4, max_size=40
    ),
    tsv=st.booleans(),
)
def test_well_formed_tables_are_never_called_ragged(tmp_path, columns, values, tsv):
    """The ragged-row check must agree with a real CSV writer: quoted separators, quotes and newlines
    inside fields, and empty (missing) cells are one row each. (No lone carriage returns: pandas writes
    them unquoted, which makes a real extra line, and refusing that is right.)"""
    from vaekit.data.tables import read_table

    pd = pytest.importorskip("pandas")
    rows = len(values) // columns
    frame = pd.DataFrame(
        np.array(values[: rows * columns], dtype=object).reshape(rows, columns),
        columns=[f"c{i}" for i in range(columns)],
    )
    name = "f.tsv" if tsv else "f.csv"
    frame.to_csv(tmp_path / name, index=False, sep="\t" if tsv else ",")
    try:
        read_table(tmp_path / name)
    except DOCUMENTED as err:
        assert "ragged" not in str(err), f"a well-formed table was refused: {err}"


@FUZZ
@given(data=st.binary(max_size=200), tsv=st.booleans())
def test_fuzz_csv_random_bytes(tmp_path, data, tsv):
    name = "f.tsv" if tsv else "f.csv"
    (tmp_path / name).write_bytes(data)
    _read(tmp_path / name)


def _parquet_bytes(seed: int) -> bytes:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=20), "b": rng.integers(0, 3, 20), "c": rng.choice(["u", "v", None], 20)})
    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 3), flip=flips, over=overwrites, cut=cuts)
def test_fuzz_parquet(tmp_path, seed, flip, over, cut):
    (tmp_path / "f.parquet").write_bytes(_mutate(_parquet_bytes(seed), flip, over, cut))
    _read(tmp_path / "f.parquet")


# -- IDX and images -------------------------------------------------------------------------------------
@FUZZ
@given(x=small_arrays, images=st.booleans(), flip=flips, over=overwrites, cut=cuts, gz=st.booleans())
def test_fuzz_idx(tmp_path, x, images, flip, over, cut, gz):
    a = (np.abs(x) * 40).astype(np.uint8).reshape(len(x), 1, -1) if images else x.astype(np.float32)
    name = "f-idx3-ubyte" + (".gz" if gz else "")
    write_idx(tmp_path / name, a)
    (tmp_path / name).write_bytes(_mutate((tmp_path / name).read_bytes(), flip, over, cut))
    _read(tmp_path / name)


@FUZZ
@given(code=st.integers(0, 255), dims=st.lists(st.integers(0, 2**32 - 1), max_size=4), body=st.binary(max_size=64))
def test_fuzz_idx_headers(tmp_path, code, dims, body):
    raw = bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + body
    (tmp_path / "f-idx1-ubyte").write_bytes(raw)
    _read(tmp_path / "f-idx1-ubyte")


def _image_bytes(fmt: str, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    mode = "RGB" if seed % 2 else "L"
    shape = (8, 8, 3) if mode == "RGB" else (8, 8)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode=mode).save(buf, format=fmt)
    return buf.getvalue()


@FUZZ
@given(
    fmt=st.sampled_from(["PNG", "BMP", "GIF", "JPEG", "TIFF", "PPM"]),
    seed=st.integers(0, 5),
    flip=flips,
    over=overwrites,
    cut=cuts,
)
def test_fuzz_image_files(tmp_path, fmt, seed, flip, over, cut):
    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    suffix = {"JPEG": ".jpg", "TIFF": ".tif"}.get(fmt, "." + fmt.lower())
    good = _image_bytes(fmt, seed)
    (folder / f"a{suffix}").write_bytes(good)
    (folder / f"b{suffix}").write_bytes(_mutate(good, flip, over, cut))
    _read(folder)


# -- checkpoints ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A model file and a trainer file of a tiny trained model, and what loading them must give back."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    model = vaekit.build_model(
        vaekit.ModelSpec(
            data_shape=(4,),
            latent_dim=2,
            hidden=(6,),
            activation="relu",
            likelihood={"name": "gaussian", "scale": "learned"},
        )
    )
    x = torch.randn(32, 4)
    state = vaekit.fit(model, x, x[:8], vaekit.TrainConfig(epochs=2, batch_size=16, progress=False)).state
    vaekit.save(model, folder / "m.safetensors")
    checkpoint.save_trainer(folder / "t.safetensors", model, state)
    return {
        "model": (folder / "m.safetensors").read_bytes(),
        "trainer": (folder / "t.safetensors").read_bytes(),
        "spec": model.spec,
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "state": _state_view(state),
    }


def _state_view(state):
    tensors = {}
    skeleton = checkpoint._flatten({"o": state.optimizer, "r": state.rng, "b": state.best_weights}, "s", tensors)
    return (
        repr(skeleton),
        state.epoch,
        state.step,
        list(state.history),
        state.best_epoch,
        state.bad_epochs,
        repr(state.best_val),
        state.stopped_early,
        tensors,
    )


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def _region(raw: bytes, where: str) -> tuple[int, int]:
    """The byte range to damage: the JSON header, its metadata entries (spec, counters, history,
    optimiser skeleton) or the tensor bytes."""
    end = 8 + struct.unpack("<Q", raw[:8])[0]
    if where == "metadata":
        return raw.index(b'"__metadata__"'), end
    return (0, end) if where == "header" else (end, len(raw))


regions = st.sampled_from(["header", "metadata", "tensors"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flip=flips, over=overwrites, cut=cuts, where=regions)
def test_fuzz_model_checkpoint(tmp_path, saved, flip, over, cut, where):
    raw = saved["model"]
    damaged = _mutate(raw, flip, over, cut, _region(raw, where))
    (tmp_path / "m.safetensors").write_bytes(damaged)
    try:
        model = vaekit.load(tmp_path / "m.safetensors")
    except CheckpointError as err:
        assert "m.safetensors" in str(err) and "\n" not in str(err)
        return
    assert model.spec == saved["spec"] and _same_weights(model.state_dict(), saved["weights"]), (
        "a damaged checkpoint loaded with changed content"
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flip=flips, over=overwrites, cut=cuts, where=regions)
def test_fuzz_trainer_checkpoint(tmp_path, saved, flip, over, cut, where):
    raw = saved["trainer"]
    damaged = _mutate(raw, flip, over, cut, _region(raw, where))
    (tmp_path / "t.safetensors").write_bytes(damaged)
    model = vaekit.build_model(saved["spec"])
    try:
        state = checkpoint.load_trainer(tmp_path / "t.safetensors", model)
    except CheckpointError as err:
        assert "t.safetensors" in str(err) and "\n" not in str(err)
        return
    view, ref = _state_view(state), saved["state"]
    assert view[:-1] == ref[:-1] and _same_weights(view[-1], ref[-1]), "a damaged trainer state loaded with changes"
    assert _same_weights(model.state_dict(), saved["weights"])


@FUZZ
@given(flip=flips, over=overwrites, cut=cuts, name=st.sampled_from(["config.json", "preprocessing.json"]))
def test_fuzz_checksummed_json(tmp_path, flip, over, cut, name):
    content = {
        "format_version": checkpoint.FORMAT_VERSION,
        "model": {"activation": "relu", "hidden": [8, 8]},
        "columns": [{"name": "a", "kind": "numeric", "mean": 1.25, "scale": 0.5}],
    }
    checkpoint.write_json(tmp_path / name, content)
    raw = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(_mutate(raw, flip, over, cut))
    try:
        again = checkpoint.read_json(tmp_path / name)
    except CheckpointError as err:
        assert name in str(err) and "\n" not in str(err)
        return
    assert again == content, "a damaged checksummed JSON file loaded with changed content"
