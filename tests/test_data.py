import numpy as np
import pytest

from vaekit import datasets
from vaekit.errors import DataError


def test_builtin_sets():
    s = datasets.sine()
    assert s.x.shape == (1000, 2) and s.extra["phase"].shape == (1000,)
    # points lie near (t, sin t)
    assert np.abs(s.x[:, 1] - np.sin(s.extra["phase"])).mean() < 0.2
    p = datasets.pinwheel()
    assert p.x.shape == (4000, 2) and np.bincount(p.labels).tolist() == [800] * 5
    d = datasets.digits()
    assert d.x.shape == (1797, 64) and d.x.max() == 16 and d.labels.max() == 9 and d.image_shape == (8, 8)
    b = datasets.digits(binarize=True)
    assert set(np.unique(b.x)) == {0.0, 1.0}


def test_digits_equal_scikit_learns_without_importing_it():
    """The bundled digits are read from scikit-learn's own file, without the second-long import."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    bunch = load_digits()
    d = datasets.digits()
    assert np.array_equal(d.x, bunch.data.astype(np.float32)) and np.array_equal(d.labels, bunch.target)
    code = "import sys; from vaekit import datasets; datasets.digits(); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_split_is_a_deterministic_partition():
    a = datasets.split(101, (0.8, 0.1, 0.1), seed=3)
    b = datasets.split(101, (0.8, 0.1, 0.1), seed=3)
    assert [len(p) for p in a] == [81, 10, 10]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert sorted(np.concatenate(a).tolist()) == list(range(101))
    with pytest.raises(ValueError, match="sum to 1"):
        datasets.split(10, (0.5, 0.1))


def test_readers(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "a.npy", x)
    np.savez(tmp_path / "b.npz", x=x, y=np.array([0, 1, 0, 1]))
    (tmp_path / "c.csv").write_text("p,q,r\n" + "\n".join(",".join(map(str, r)) for r in x) + "\n")
    for name in ("a.npy", "b.npz"):
        got = datasets.load(str(tmp_path / name))
        np.testing.assert_array_equal(got.x, x)
    # a table comes standardised per column, and goes back through its schema
    table = datasets.load(str(tmp_path / "c.csv"))
    np.testing.assert_allclose(table.x.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(table.schema.inverse(table.x).to_numpy(float), x, rtol=1e-5)
    assert datasets.load(str(tmp_path / "b.npz")).labels.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("inf.csv", "a,b\n1,2\n3,inf\n4,5\n", "infinite"),
        ("ragged.csv", "1,2\n3,4,5\n", "ragged"),
        ("text.csv", "a,b\n1,x\n", "single value"),
        ("empty.csv", "", "empty"),
        ("bad.npy", "garbage", "cannot read"),
        ("data.xyz", "1", "unknown file type"),
    ],
)
def test_bad_files_raise_one_line_errors(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=match) as err:
        datasets.load(str(tmp_path / name))
    assert "\n" not in str(err.value)


def test_unknown_name():
    with pytest.raises(DataError, match="no data set or file"):
        datasets.load("mnist-from-the-internet")
