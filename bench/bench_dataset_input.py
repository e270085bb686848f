"""Rotating rounds: seconds per epoch of fit on digits (1500 x 64, batch 128, MLP 64-64, threads=1)
from a tensor, a map-style TensorDataset, and a Dataset of PNG files with a transform.

    PYTHONPATH=src python bench/bench_dataset_input.py
"""

import glob
import os
import tempfile

import numpy as np
import torch
from PIL import Image

import vaekit

x = vaekit.datasets.digits(binarize=True).x[:1500].astype(np.float32)
folder = tempfile.mkdtemp(prefix="vaekit-png-")
for i, img in enumerate(x.reshape(-1, 8, 8)):
    Image.fromarray((img * 255).astype(np.uint8)).save(os.path.join(folder, f"{i:04d}.png"))


class Pictures(torch.utils.data.Dataset):
    def __init__(self, paths):
        self.paths = sorted(paths)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return torch.from_numpy(np.asarray(Image.open(self.paths[i]).convert("L"), dtype=np.float32) / 255).reshape(
            -1
        ), 0


contenders = {
    "tensor": torch.as_tensor(x),
    "TensorDataset": torch.utils.data.TensorDataset(torch.as_tensor(x)),
    "png Dataset": Pictures(glob.glob(os.path.join(folder, "*.png"))),
}
cfg = vaekit.TrainConfig(epochs=3, batch_size=128, threads=1, progress=False)
best = {k: [] for k in contenders}
for r in range(3):
    for name, data in list(contenders.items())[r % 3 :] + list(contenders.items())[: r % 3]:
        torch.manual_seed(0)
        m = vaekit.build_model(
            vaekit.ModelSpec(data_shape=(64,), latent_dim=4, hidden=(64, 64), likelihood="bernoulli")
        )
        h = vaekit.fit(m, data, None, cfg).history
        best[name].append(min(h.column("seconds")))
for k, v in best.items():
    print(f"{k:14s} median s/epoch {np.median(v):.4f}  ratio to tensor {np.median(v) / np.median(best['tensor']):.1f}")
