"""fit and VAE.fit on torch Datasets and DataLoaders: a torchvision-style dataset of PNG files with a
transform, seeded shuffling equal to the array path, exact resume, and the warning for loaders."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset

import vaekit
from vaekit import TrainConfig, checkpoint, fit


class ImageFolder(Dataset):
    """As torchvision's datasets: (image, label) items, PIL images read from files, a transform."""

    def __init__(self, paths, labels, transform=None):
        self.paths, self.labels, self.transform = list(paths), list(labels), transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        image = Image.open(self.paths[i]).convert("L")
        return (self.transform(image) if self.transform else image), self.labels[i]


def to_unit_tensor(image):  # the transform: a PIL image -> (8, 8) float tensor in [0, 1]
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)


class Stream(IterableDataset):
    def __init__(self, x):
        self.x = x

    def __iter__(self):
        return iter(torch.as_tensor(self.x))


@pytest.fixture
def pngs(tiny_digits, tmp_path):
    train, _ = tiny_digits
    x = train[:160].reshape(-1, 8, 8)
    paths = []
    for i, img in enumerate(x):
        path = tmp_path / f"{i:03d}.png"
        Image.fromarray((np.asarray(img) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths, x.astype(np.float32)


def _model(seed=0):
    torch.manual_seed(seed)
    spec = vaekit.ModelSpec(data_shape=(8, 8), latent_dim=2, hidden=(32,), likelihood={"name": "bernoulli"})
    return vaekit.build_model(spec)


CFG = TrainConfig(epochs=4, batch_size=32, seed=5, threads=1, progress=False)


def test_png_dataset_trains_like_the_same_arrays(pngs):
    paths, x = pngs
    ds = ImageFolder(paths, range(len(paths)), transform=to_unit_tensor)
    a, b = _model(1), _model(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a map-style Dataset is exact: no warning
        h_ds = fit(a, ds, ds, CFG).history
    h_arr = fit(b, x, x, CFG).history
    # the same seeded permutation, the same examples: the same run, bit for bit
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert h_ds.column("val_elbo") == h_arr.column("val_elbo")
    assert h_ds.last["val_elbo"] > h_ds[0]["val_elbo"]


def test_dataset_resume_is_bitwise(pngs, tmp_path):
    paths, _ = pngs
    ds = ImageFolder(paths, [0] * len(paths), transform=to_unit_tensor)
    full = _model(2)
    h_full = fit(full, ds, None, CFG).history
    path = tmp_path / "trainer.safetensors"

    def stop(model, state):
        if state.epoch == 2:
            checkpoint.save_trainer(path, model, state)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_model(2), ds, None, CFG, callbacks=[stop])
    resumed = _model(50)
    torch.manual_seed(4321)
    h_res = fit(resumed, ds, None, CFG, resume=checkpoint.load_trainer(path, resumed)).history
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert h_res.column("train_elbo") == h_full.column("train_elbo")


def test_loader_and_iterable_train_and_warn(pngs):
    paths, x = pngs
    ds = ImageFolder(paths, range(len(paths)), transform=to_unit_tensor)
    loader = DataLoader(ds, batch_size=32, shuffle=True)
    with pytest.warns(UserWarning, match="resumed run does not continue exactly"):
        h = fit(_model(3), loader, x, CFG).history
    assert len(h) == 4 and h.last["val_elbo"] > h[0]["val_elbo"]
    with pytest.warns(UserWarning, match="iterable Dataset"):
        h2 = fit(_model(3), Stream(x), None, CFG).history
    # the iterable's examples in its own order, batched by vaekit: every example counted once an epoch
    assert np.isfinite(h2.column("train_elbo")).all()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="warm-up"):
        fit(_model(3), Stream(x), None, TrainConfig(epochs=1, warmup=1, progress=False))


def test_bad_datasets_are_refused(pngs):
    paths, _ = pngs
    raw = ImageFolder(paths, range(len(paths)))  # no transform: PIL pixels in 0..255, checked on the first batch
    with pytest.raises(ValueError, match=r"Bernoulli likelihood needs data in \[0, 1\]"):
        fit(_model(), raw, None, CFG)
    named = ImageFolder(paths, range(len(paths)), transform=lambda im: "not a picture")
    with pytest.raises(TypeError, match="transform"):
        fit(_model(), named, None, CFG)
    flat = ImageFolder(paths, range(len(paths)), transform=lambda im: to_unit_tensor(im).reshape(-1))
    with pytest.raises(ValueError, match="shape"):
        fit(_model(), flat, None, CFG)


def test_estimator_fits_a_dataset(pngs):
    paths, x = pngs
    ds = ImageFolder(paths, range(len(paths)), transform=lambda im: to_unit_tensor(im).reshape(-1))
    a = vaekit.VAE(latent_dim=2, hidden=(16,), epochs=2, random_state=0, threads=1).fit(ds)
    b = vaekit.VAE(latent_dim=2, hidden=(16,), epochs=2, random_state=0, threads=1).fit(x.reshape(len(x), -1))
    np.testing.assert_array_equal(a.transform(x.reshape(len(x), -1)), b.transform(x.reshape(len(x), -1)))
