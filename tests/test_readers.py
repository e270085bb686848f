"""Readers for real data: IDX files, image folders, .npy on disk, tables (CSV, Parquet)."""

import gzip
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from vaekit import datasets
from vaekit.batches import DiskSource, TensorSource, make_source
from vaekit.data import DiskArray, Schema, read_idx, write_idx
from vaekit.data.images import save_image
from vaekit.data.tables import read_table
from vaekit.errors import DataError


# -- IDX ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_every_type(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4)
    a = (a % 256 if dtype == np.uint8 else a).astype(dtype)
    path = write_idx(tmp_path / ("a.idx" + (".gz" if gz else "")), a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_idx_header_is_mnist_layout(tmp_path):
    """Written by hand, as the MNIST page describes it: 0, 0, type 0x08, 3 dims, sizes big-endian."""
    pixels = np.arange(2 * 3 * 2, dtype=np.uint8).reshape(2, 3, 2)
    raw = (
        bytes([0, 0, 0x08, 3])
        + (2).to_bytes(4, "big")
        + (3).to_bytes(4, "big")
        + (2).to_bytes(4, "big")
        + pixels.tobytes()
    )
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw)
    labels = bytes([0, 0, 0x08, 1]) + (2).to_bytes(4, "big") + bytes([7, 3])
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(labels)
    assert (tmp_path / "train-images-idx3-ubyte").read_bytes() == write_idx(
        tmp_path / "copy-idx3-ubyte", pixels
    ).read_bytes()
    ds = datasets.load(str(tmp_path / "train-images-idx3-ubyte"))
    assert ds.x.shape == (2, 1, 3, 2) and ds.x.dtype == np.float32
    np.testing.assert_allclose(ds.x[1, 0], pixels[1] / 255.0)
    assert ds.labels.tolist() == [7, 3] and ds.image_shape == (3, 2)


def test_idx_gzip_with_labels_beside(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (20, 5, 7)).astype(np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(20).astype(np.uint8) % 10)
    ds = datasets.load(str(tmp_path / "t10k-images-idx3-ubyte.gz"))
    np.testing.assert_allclose(ds.x[:, 0] * 255, imgs, atol=1e-4)
    assert ds.labels.tolist() == [i % 10 for i in range(20)]


@pytest.mark.parametrize(
    "content,match",
    [
        (bytes([1, 0, 8, 1, 0, 0, 0, 1, 5]), "not an IDX file"),
        (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 5]), "unknown IDX type code 0x42"),
        (bytes([0, 0, 8, 2, 0, 0, 0, 3]), "truncated inside its header"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2, 3]), "truncated"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 1, 1, 2]), "bytes after"),
    ],
)
def test_bad_idx_files(tmp_path, content, match):
    (tmp_path / "x-idx1-ubyte").write_bytes(content)
    with pytest.raises(DataError, match=match) as err:
        datasets.load(str(tmp_path / "x-idx1-ubyte"))
    assert "\n" not in str(err.value)


def test_truncated_gzip_idx(tmp_path):
    good = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 100]) + bytes(100))
    (tmp_path / "x-idx1-ubyte.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cannot read"):
        datasets.load(str(tmp_path / "x-idx1-ubyte.gz"))


# -- images ---------------------------------------------------------------------------------
def _png_folder(root, classes=("cat", "dog"), per_class=3, size=(6, 5), colour=False, seed=0):
    rng = np.random.default_rng(seed)
    truth = {}
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 256, (3, *size) if colour else size).astype(np.uint8)
            save_image(root / c / f"{i}.png", a / 255.0)
            truth[(c, i)] = a
    return truth


def test_image_folder_with_classes(tmp_path):
    truth = _png_folder(tmp_path / "imgs")
    ds = datasets.load(str(tmp_path / "imgs"))
    assert ds.x.shape == (6, 1, 6, 5) and ds.image_shape == (6, 5)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1] and ds.info["label_names"] == ["cat", "dog"]
    np.testing.assert_allclose(ds.x[4, 0] * 255, truth[("dog", 1)], atol=1e-3)


def test_colour_images_are_channels_first_rgb(tmp_path):
    folder = tmp_path / "rgb"
    folder.mkdir()
    red = np.zeros((3, 4, 4))
    red[0] = 1.0
    save_image(folder / "red.png", red)
    save_image(folder / "grey.png", np.full((4, 4), 0.5))  # grey beside colour: read as RGB too
    ds = datasets.load(str(folder))
    assert ds.x.shape == (2, 3, 4, 4) and ds.labels is None and ds.image_shape == (3, 4, 4)
    grey, r = ds.x  # sorted file names: grey.png, red.png
    np.testing.assert_allclose(r[0], 1.0)
    np.testing.assert_allclose(r[1:], 0.0)
    np.testing.assert_allclose(grey, 128 / 255, atol=1e-6)


def test_bad_image_folders(tmp_path):
    a = tmp_path / "sizes"
    a.mkdir()
    save_image(a / "a.png", np.zeros((4, 4)))
    save_image(a / "b.png", np.zeros((5, 4)))
    with pytest.raises(DataError, match="differ in size: a.png is 4x4 .* b.png is 5x4"):
        datasets.load(str(a))
    b = tmp_path / "broken"
    b.mkdir()
    save_image(b / "a.png", np.zeros((4, 4)))
    (b / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="cannot read image"):
        datasets.load(str(b))
    c = tmp_path / "empty"
    c.mkdir()
    (c / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="without image files"):
        datasets.load(str(c))


# -- arrays on disk -------------------------------------------------------------------------
@pytest.fixture
def on_disk(tmp_path):
    x = np.random.default_rng(0).normal(size=(103, 2, 3)).astype(">f8")  # big-endian float64
    np.save(tmp_path / "x.npy", x)
    return x.astype(np.float32), tmp_path / "x.npy"


def test_disk_array_reads_what_numpy_reads(on_disk):
    x, path = on_disk
    d = DiskArray(path)
    assert d.shape == x.shape and len(d) == 103 and d.dtype == np.float32
    np.testing.assert_array_equal(d[10:20], x[10:20])
    np.testing.assert_array_equal(d[5], x[5])
    idx = np.array([50, 3, 3, 102, 0, 51, 52])  # unsorted, repeated, runs
    np.testing.assert_array_equal(d[idx], x[idx])
    sub = d.subset(np.array([9, 1, 60]))
    np.testing.assert_array_equal(np.asarray(sub), x[[9, 1, 60]])
    np.testing.assert_array_equal(sub[[2, 0]], x[[60, 9]])
    np.testing.assert_array_equal(d.binarized(0.0)[:4], (x[:4] > 0).astype(np.float32))
    again = pickle.loads(pickle.dumps(sub))
    np.testing.assert_array_equal(np.asarray(again), x[[9, 1, 60]])
    with pytest.raises(IndexError):
        d[np.array([103])]


def test_disk_source_gives_the_tensor_source_batches(on_disk):
    x, path = on_disk
    for world, rank in ((1, 0), (2, 1)):
        a = TensorSource(x, 16, rank=rank, world_size=world)
        b = make_source(np.load(path, mmap_mode="r"), 16, "cpu", rank=rank, world_size=world)
        assert isinstance(b, DiskSource) and len(a) == len(b) and a.n_examples == b.n_examples
        ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        for xa, xb in zip(a.batches(ga), b.batches(gb), strict=True):
            torch.testing.assert_close(xa, xb, rtol=0, atol=0)


def test_training_from_disk_equals_training_in_memory(tmp_path):
    import vaekit

    rng = np.random.default_rng(1)
    x = (rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    disk = DiskArray(tmp_path / "x.npy")
    weights = []
    for train, val in ((x[:250], x[250:]), (disk.subset(np.arange(250)), disk.subset(np.arange(250, 300)))):
        torch.manual_seed(0)
        model = vaekit.build_model(vaekit.ModelSpec(data_shape=(5,), latent_dim=2, hidden=(16,)))
        history = vaekit.fit(
            model, train, val, vaekit.TrainConfig(epochs=3, batch_size=32, device="cpu", progress=False)
        ).history
        weights.append((model.state_dict(), history.column("val_elbo")))
    (wa, ha), (wb, hb) = weights
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert ha == hb


def test_streamed_npy_errors(tmp_path):
    bad = np.ones((10, 3), np.float32)
    bad[7, 1] = np.inf
    np.save(tmp_path / "inf.npy", bad)
    with pytest.raises(DataError, match="NaN or infinite"):
        datasets.load(str(tmp_path / "inf.npy"), stream=True)
    np.save(tmp_path / "ok.npy", np.ones((100, 3), np.float32))
    raw = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:-50])
    for stream in (True, False):
        with pytest.raises(DataError, match="cannot read|truncated"):
            datasets.load(str(tmp_path / "cut.npy"), stream=stream)
    np.save(tmp_path / "f.npy", np.asfortranarray(np.ones((4, 3), np.float32)))
    with pytest.raises(DataError, match="Fortran order"):
        datasets.load(str(tmp_path / "f.npy"), stream=True)
    with pytest.raises(DataError, match="--label-column do not apply to ok.npy"):
        datasets.load(str(tmp_path / "ok.npy"), label_column="y")


def test_static_binarisation_of_pixels(tmp_path):
    x = np.array([[0.2, 0.7], [0.5, 0.51]], np.float32)
    np.save(tmp_path / "p.npy", x)
    for stream in (True, False):
        got = datasets.load(str(tmp_path / "p.npy"), binarize=True, stream=stream).x
        np.testing.assert_array_equal(np.asarray(got), [[0, 1], [0, 1]])
    np.save(tmp_path / "big.npy", x * 3)
    with pytest.raises(DataError, match=r"--binarize needs values in \[0, 1\]"):
        datasets.load(str(tmp_path / "big.npy"), binarize=True)


# -- tables ---------------------------------------------------------------------------------
def _frame():
    return pd.DataFrame(
        {
            "age": [23, 35, 41, None, 52, 29],
            "smoker": ["yes", "no", "no", "yes", None, "no"],
            "city": ["Oslo", "Rome", "Oslo", "Lima", "Rome", None],
            "rooms": [1, 2, 3, 2, 1, 3],
            "ok": [True, False, True, True, False, True],
            "same": ["x"] * 6,
            "y": [0, 1, 0, 1, 1, 0],
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_types_missing_values_and_round_trip(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    frame = _frame()
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    ds = datasets.load(str(path), label_column="y", categorical=["rooms"])
    kinds = {c["name"]: c["kind"] for c in ds.schema.columns}
    assert kinds == {
        "age": "numeric",
        "smoker": "binary",
        "city": "categorical",
        "rooms": "categorical",
        "ok": "binary",
        "same": "constant",
    }
    assert ds.labels.tolist() == [0, 1, 0, 1, 1, 0]
    # numeric(1) + binary(1) + city(3) + rooms(3) + binary(1)
    assert ds.x.shape == (6, 9) and ds.schema.width == 9
    age = ds.x[:, 0]
    assert (
        np.isnan(age[3])
        and np.nanmean(age) == pytest.approx(0, abs=1e-6)
        and np.nanstd(age) == pytest.approx(1, abs=1e-5)
    )
    assert np.isnan(ds.x[4, 1]) and np.isnan(ds.x[5, 2:5]).all()
    np.testing.assert_array_equal(ds.x[0, 2:5], [0, 1, 0])  # categories sorted: Lima, Oslo, Rome
    back = ds.schema.inverse(ds.x)
    assert list(back.columns) == ["age", "smoker", "city", "rooms", "ok", "same"]
    assert back["city"].tolist()[:5] == ["Oslo", "Rome", "Oslo", "Lima", "Rome"] and pd.isna(back["city"][5])
    assert back["age"].tolist()[:3] == [23, 35, 41] and back["rooms"].tolist() == [1, 2, 3, 2, 1, 3]
    assert back["ok"].tolist() == frame["ok"].tolist() and set(back["same"]) == {"x"}
    assert Schema.from_dict(ds.schema.to_dict()).to_dict() == ds.schema.to_dict()


def test_unknown_categories_are_reported_not_fatal(tmp_path):
    schema = Schema.fit(_frame().drop(columns="y"))
    new = _frame().drop(columns="y")
    new.loc[0, "city"] = "Paris"
    new.loc[1, "smoker"] = "sometimes"
    new["extra"] = 1
    x, report = schema.transform(new)
    assert report["unknown"] == {"city": {"Paris": 1}, "smoker": {"sometimes": 1}}
    assert report["extra_columns"] == ["extra"]
    assert np.isnan(x[0, 2:5]).all() and np.isnan(x[1, 1])
    with pytest.raises(DataError, match="lacks column\\(s\\) 'city'"):
        schema.transform(new.drop(columns="city"))


def test_headerless_numeric_csv(tmp_path):
    (tmp_path / "n.csv").write_text("1,2.5\n3,4.5\n5,0.5\n")
    ds = datasets.load(str(tmp_path / "n.csv"))
    assert ds.schema.names == ["x0", "x1"] and len(ds) == 3
    np.testing.assert_allclose(
        ds.schema.inverse(ds.x)[["x0", "x1"]].to_numpy(float), [[1, 2.5], [3, 4.5], [5, 0.5]], rtol=1e-6
    )


@pytest.mark.parametrize(
    "content,options,match",
    [
        ("", {}, "empty"),
        ("a,b\n1,2\n3,4,5\n", {}, "ragged rows"),
        ("a,b\n1,2\n", {"label_column": "c"}, "--label-column 'c' is not a column"),
        ("a,b\n1,x\n2,y\n3,z\n", {"numeric": ["b"]}, "column 'b' is numeric but holds 'x'"),
        ("a,b\n1,x\n2,y\n3,z\n", {"binary": ["b"]}, "is binary but holds 3 different values"),
        ("a,b\n1,x\n2,y\n", {"categorical": ["q"]}, "--categorical names column 'q'"),
        ("a,b\n1,\n2,\n", {}, "column 'b' has no values"),
        ("a,b\n1,inf\n2,3\n3,4\n", {}, "infinite"),
        ("a\n" + "\n".join(f"id{i}" for i in range(200)) + "\n", {}, "looks like free text or an identifier"),
    ],
)
def test_bad_tables(tmp_path, content, options, match):
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(DataError, match=match) as err:
        datasets.load(str(tmp_path / "t.csv"), **options)
    assert "\n" not in str(err.value)


def test_parquet_without_pyarrow_says_how_to_get_it(tmp_path, monkeypatch):
    import builtins

    _frame().to_csv(tmp_path / "t.csv")
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    real = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError("no pyarrow")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(DataError, match=r"needs pyarrow: pip install 'vaekit\[parquet\]'"):
        read_table(tmp_path / "t.parquet")


# -- bad inputs from issue 11: one DataError line each, nothing allocated for sizes that cannot fit ----------
def _npy_with_header(path, header: dict, body: bytes = b"\0" * 64):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    path.write_bytes(buf.getvalue() + body)
    return path


def _one_line_error(path, match, **options):
    with pytest.raises(DataError, match=match) as err:
        datasets.load(str(path), **options)
    assert "\n" not in str(err.value) and path.name in str(err.value)


@pytest.mark.parametrize("stream", [False, True])
def test_npy_headers_that_lie_or_do_not_parse(tmp_path, stream):
    huge = _npy_with_header(tmp_path / "huge.npy", {"descr": "<f4", "fortran_order": False, "shape": (10**12, 10**6)})
    _one_line_error(huge, "huge.npy is truncated: its header promises", stream=stream)
    np.save(tmp_path / "ok.npy", np.ones((3, 4), np.float32))
    raw = (tmp_path / "ok.npy").read_bytes()
    assert b"(3, 4)" in raw
    (tmp_path / "bracket.npy").write_bytes(raw.replace(b"(3, 4)", b"(3, 4 ", 1))  # unbalanced: TokenError in numpy
    _one_line_error(tmp_path / "bracket.npy", "cannot read bracket.npy: its .npy header is broken", stream=stream)
    (tmp_path / "magic.npy").write_bytes(b"\x93NUMPX" + raw[6:])
    _one_line_error(tmp_path / "magic.npy", "cannot read magic.npy: its .npy header is broken", stream=stream)
    (tmp_path / "shape.npy").write_bytes(raw.replace(b"(3, 4)", b"('a',)", 1))
    _one_line_error(tmp_path / "shape.npy", "cannot read shape.npy: its .npy header is broken", stream=stream)
    np.save(tmp_path / "complex.npy", np.ones((5, 2)) * (1 + 2j))
    _one_line_error(tmp_path / "complex.npy", "complex.npy holds complex numbers", stream=stream)
    np.save(tmp_path / "text.npy", np.array([["a", "b"]]))
    _one_line_error(tmp_path / "text.npy", "text.npy does not hold a numeric array", stream=stream)


def test_arrays_too_large_for_memory_are_refused_before_allocating(tmp_path, monkeypatch):
    from vaekit import limits

    np.save(tmp_path / "x.npy", np.ones((100, 10), np.float32))
    np.savez(tmp_path / "x.npz", x=np.ones((100, 10), np.float32))
    write_idx(tmp_path / "x-idx3-ubyte", np.ones((100, 5, 5), np.uint8))
    monkeypatch.setattr(limits, "physical_memory", lambda: 2000)
    _one_line_error(tmp_path / "x-idx3-ubyte", "reading x-idx3-ubyte \\(shape \\(100, 5, 5\\)\\) needs about 12.2 KiB")
    allocated = []
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: allocated.append(1))
    _one_line_error(
        tmp_path / "x.npy", "reading x.npy \\(shape \\(100, 10\\), float32\\) needs about 8.8 KiB, more than"
    )
    _one_line_error(
        tmp_path / "x.npz",
        "reading x.npz\\[x\\] .* needs about",
    )
    assert not allocated
    monkeypatch.undo()
    assert datasets.load(str(tmp_path / "x.npy")).x.shape == (100, 10)


def test_broken_npz_archives(tmp_path):
    np.savez_compressed(tmp_path / "ok.npz", x=np.random.default_rng(0).normal(size=(50, 8)), y=np.arange(50))
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    _one_line_error(tmp_path / "cut.npz", "cut.npz is not a readable .npz file")
    garbled = bytearray(raw)
    garbled[100:140] = bytes(40)  # inside the compressed x member: the zip's CRC or zlib catch it
    (tmp_path / "garbled.npz").write_bytes(bytes(garbled))
    _one_line_error(tmp_path / "garbled.npz", "garbled.npz\\[x\\] cannot be read: the archive is corrupted")
    np.save(tmp_path / "plain.npy", np.ones((3, 2)))
    (tmp_path / "plain.npz").write_bytes((tmp_path / "plain.npy").read_bytes())  # a .npy under a .npz name
    _one_line_error(tmp_path / "plain.npz", "plain.npz is not a readable .npz file")
    import zipfile

    with zipfile.ZipFile(tmp_path / "none.npz", "w") as z:
        z.writestr("readme.txt", "no arrays here")
    _one_line_error(tmp_path / "none.npz", "none.npz holds no arrays")
    central = raw.index(b"PK\x01\x02")  # "version needed to extract" 18.6: zipfile raises NotImplementedError
    (tmp_path / "version.npz").write_bytes(raw[: central + 6] + bytes([186, 0]) + raw[central + 8 :])
    _one_line_error(tmp_path / "version.npz", "version.npz is not a readable .npz file \\(zip file version 18.6\\)")
    x, y = datasets.load(str(tmp_path / "ok.npz")).x, datasets.load(str(tmp_path / "ok.npz")).labels
    assert x.shape == (50, 8) and list(y[:3]) == [0, 1, 2]


@pytest.mark.parametrize(
    "content, line",
    [
        ("a,b,c\n1,2,3\n4,5\n6,7,8\n", "line 3 has 2 fields, the first row has 3"),  # too few: pandas reads NaN
        (
            "a,b\n1,2,\n3,4,\n",
            "line 2 has 3 fields, the first row has 2",
        ),  # one too many everywhere: pandas makes an index
        ("1,2,3\n4,5,6\n7\n", "line 3 has 1 fields"),  # headerless
    ],
)
def test_ragged_csv_rows_are_refused(tmp_path, content, line):
    (tmp_path / "t.csv").write_text(content)
    _one_line_error(tmp_path / "t.csv", f"t.csv has ragged rows: {line}")
    (tmp_path / "t.tsv").write_text(content.replace(",", "\t"))
    _one_line_error(tmp_path / "t.tsv", f"t.tsv has ragged rows: {line}")


def test_quoted_fields_and_blank_lines_are_not_ragged(tmp_path):
    (tmp_path / "t.csv").write_text('a,b,c\n1,"x, y",3\n\n2,"z",\n3,"w",5\n')
    frame, _, _ = read_table(tmp_path / "t.csv")
    assert frame.shape == (3, 3) and frame["b"].tolist() == ["x, y", "z", "w"] and np.isnan(frame["c"][1])


def test_bad_idx_sizes_and_broken_images(tmp_path):
    import struct

    (tmp_path / "huge-idx3-ubyte").write_bytes(
        bytes([0, 0, 8, 3]) + struct.pack(">III", 2**31, 2**31, 2**31) + b"\0" * 9
    )
    _one_line_error(tmp_path / "huge-idx3-ubyte", "huge-idx3-ubyte is truncated: its header promises")
    (tmp_path / "magic-idx1-ubyte").write_bytes(bytes([1, 0, 8, 1]) + struct.pack(">I", 3) + b"abc")
    _one_line_error(tmp_path / "magic-idx1-ubyte", "is not an IDX file")
    folder = tmp_path / "imgs"
    folder.mkdir()
    save_image(folder / "a.png", np.zeros((6, 6)))
    good = (folder / "a.png").read_bytes()
    (folder / "b.png").write_bytes(good[: len(good) // 2])  # truncated inside the pixel data
    with pytest.raises(DataError, match="cannot read image .*b.png"):
        datasets.load(str(folder))
    (folder / "b.png").write_bytes(good[:16] + bytes(8) + good[24:])  # zero width and height in IHDR
    with pytest.raises(DataError, match="cannot read image .*b.png"):
        datasets.load(str(folder))


def test_cli_refuses_bad_files_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from vaekit.cli import main

    monkeypatch.chdir(tmp_path)
    np.save("ok.npy", np.ones((30, 4), np.float32))
    raw = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "bracket.npy").write_bytes(raw.replace(b"(30, 4)", b"(30, 4 ", 1))
    np.save("complex.npy", np.ones((30, 2)) * (1 + 1j))
    (tmp_path / "short.csv").write_text("a,b,c\n1,2,3\n4,5\n6,7,8\n")
    cases = [
        (["--data", "bracket.npy", "--stream", "on"], "cannot read bracket.npy: its .npy header is broken"),
        (["--data", "bracket.npy"], "cannot read bracket.npy: its .npy header is broken"),
        (["--data", "complex.npy"], "complex.npy holds complex numbers"),
        (["--data", "short.csv"], "short.csv has ragged rows: line 3 has 2 fields"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(["train", *args, "--epochs", "1", "--no-progress", "--out", "r"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
        assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


def test_parquet_larger_than_memory_is_refused_before_reading(tmp_path, monkeypatch):
    """The footer's row and column counts are checked against memory before any cell is read."""
    import pandas as pd

    pytest.importorskip("pyarrow")
    import vaekit.limits

    path = tmp_path / "big.parquet"
    pd.DataFrame(np.random.default_rng(0).normal(size=(2000, 3)), columns=["a", "b", "c"]).to_parquet(path)
    read = []
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: read.append(a) or pd.DataFrame())
    monkeypatch.setattr(vaekit.limits, "physical_memory", lambda: 10_000)
    with pytest.raises(DataError, match=r"big.parquet \(2000 rows x 3 columns\) needs about .* more than this machine"):
        read_table(path)
    assert not read  # refused from the footer alone
