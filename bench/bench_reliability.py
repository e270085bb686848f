"""Count how vaekit's readers and checkpoint loading treat bad input (the README's reliability table).

    PYTHONPATH=src python bench/bench_reliability.py            # about half a minute on one core

Every case is a file built from a valid one by a seeded random damage (bit flips, overwritten
bytes, truncation) or one of the named bad inputs of issue 11. Each outcome is one of
- read: the file was read (for a checkpoint: with exactly the saved content);
- refused: a documented error (a vaekit error, ValueError or TypeError) with a one-line message;
- crash: any other exception, or a message of more than one line;
- silent: a checkpoint or checksummed JSON file loaded with changed content.
Point PYTHONPATH at another checkout to count an older vaekit the same way.
"""

from __future__ import annotations

import argparse
import io
import random
import struct
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

import vaekit
from vaekit import checkpoint, datasets
from vaekit.errors import VaekitError

DOCUMENTED = (VaekitError, ValueError, TypeError)


def outcome(fn) -> tuple[str, str]:
    try:
        return ("read" if fn() is not False else "silent"), ""
    except DOCUMENTED as err:
        return ("refused" if "\n" not in str(err).strip() else "crash"), str(err)
    except Exception as err:  # noqa: BLE001 - counting exactly these is the point
        return "crash", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def damage(data: bytes, rng: random.Random, lo: int = 0, hi: int | None = None, flips_only: bool = False) -> bytes:
    hi = len(data) if hi is None else hi
    out = bytearray(data)
    kind = "flip" if flips_only else rng.choice(["flip", "flip", "bytes", "cut"])
    if kind == "flip":
        out[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
    elif kind == "bytes":
        at = rng.randrange(lo, hi)
        out[at : at + 4] = bytes(rng.randrange(256) for _ in range(4))
    else:
        out = out[: rng.randrange(0, len(out))]
    return bytes(out)


def npy_bytes(x) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def read(path, **options):
    def go():
        data = datasets.load(str(path), **options)
        np.asarray(data.x[:64])

    return go


# -- the named bad inputs of issue 11 ---------------------------------------------------------------------
def named_cases(d: Path):
    ok = npy_bytes(np.ones((3, 4), np.float32))
    huge = io.BytesIO()
    np.lib.format.write_array_header_1_0(huge, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 10**6)})
    (d / "huge.npy").write_bytes(huge.getvalue() + bytes(64))
    (d / "bracket.npy").write_bytes(ok.replace(b"(3, 4)", b"(3, 4 ", 1))
    np.save(d / "complex.npy", np.ones((4, 2)) * (1 + 1j))
    (d / "ragged.csv").write_text("a,b,c\n1,2,3\n4,5\n6,7,8\n")
    (d / "index.csv").write_text("a,b\n1,2,\n3,4,\n")
    buf = io.BytesIO()
    np.savez_compressed(buf, x=np.random.default_rng(0).normal(size=(40, 6)))
    (d / "cut.npz").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    garbled = bytearray(buf.getvalue())
    garbled[100:140] = bytes(40)
    (d / "garbled.npz").write_bytes(bytes(garbled))
    (d / "magic-idx3-ubyte").write_bytes(bytes([1, 0, 8, 1, 0, 0, 0, 3]) + b"abc")
    (d / "size-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 2**31, 2**31, 2**31) + bytes(9))
    images = d / "images"
    images.mkdir()
    from vaekit.data.images import save_image

    save_image(images / "a.png", np.random.default_rng(0).random((8, 8)))
    good = (images / "a.png").read_bytes()
    (images / "b.png").write_bytes(good[: len(good) // 2])
    cases = [
        ("huge shape .npy", read(d / "huge.npy")),
        ("huge shape .npy, --stream on", read(d / "huge.npy", stream=True)),
        ("unbalanced bracket .npy", read(d / "bracket.npy")),
        ("unbalanced bracket .npy, --stream on", read(d / "bracket.npy", stream=True)),
        ("complex .npy", read(d / "complex.npy")),
        ("complex .npy, --stream on", read(d / "complex.npy", stream=True)),
        ("CSV row with too few fields", read(d / "ragged.csv")),
        ("CSV rows with one field too many", read(d / "index.csv")),
        ("truncated .npz", read(d / "cut.npz")),
        ("garbled .npz", read(d / "garbled.npz")),
        ("IDX with wrong magic", read(d / "magic-idx3-ubyte")),
        ("IDX claiming 2^93 values", read(d / "size-idx3-ubyte")),
        ("truncated PNG in a folder", read(images)),
    ]
    return cases


# -- random damage, per reader -------------------------------------------------------------------------------
def reader_cases(d: Path, rng: random.Random, n: int):
    from PIL import Image

    from vaekit.data import write_idx

    x = np.random.default_rng(1).normal(size=(12, 4)).astype(np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x, y=np.arange(12))
    frame_csv = "a,b,c\n" + "".join(f"{v:.3f},{i % 3},{'uvw'[i % 3]}\n" for i, v in enumerate(x[:, 0]))
    import pandas as pd

    pq = io.BytesIO()
    pd.DataFrame({"a": x[:, 0], "b": np.arange(12) % 3, "c": list("uvwuvwuvwuvw")}).to_parquet(pq)
    write_idx(d / "src-idx3-ubyte", (np.abs(x) * 50).astype(np.uint8).reshape(12, 1, 4))
    img = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(img, format="PNG")
    sources = {
        ".npy": npy_bytes(x),
        ".npz": buf.getvalue(),
        ".csv": frame_csv.encode(),
        ".tsv": frame_csv.replace(",", "\t").encode(),
        ".parquet": pq.getvalue(),
        "-idx3-ubyte": (d / "src-idx3-ubyte").read_bytes(),
        ".png": img.getvalue(),
    }
    for suffix, good in sources.items():
        for i in range(n):
            name = f"fuzz{i}{suffix}"
            if suffix == ".png":
                folder = d / f"img{i}"
                folder.mkdir()
                (folder / "a.png").write_bytes(good)
                (folder / "b.png").write_bytes(damage(good, rng))
                yield f"fuzzed {suffix} files", read(folder)
                continue
            (d / name).write_bytes(damage(good, rng))
            options = {"stream": i % 2 == 0} if suffix == ".npy" else {}
            yield f"fuzzed {suffix} files", read(d / name, **options)


# -- checkpoints ---------------------------------------------------------------------------------------------
def checkpoint_cases(d: Path, rng: random.Random, n_model: int, n_trainer: int, n_json: int):
    torch.manual_seed(0)
    spec = vaekit.ModelSpec(
        data_shape=(5,),
        latent_dim=2,
        hidden=(8,),
        activation="relu",
        likelihood={"name": "gaussian", "scale": "learned"},
    )
    model = vaekit.build_model(spec)
    x = torch.randn(48, 5)
    state = vaekit.fit(
        model, x, x[:16], vaekit.TrainConfig(epochs=2, batch_size=16, early_stopping=5, progress=False)
    ).state
    raw = vaekit.save(model, d / "m.safetensors").read_bytes()
    checkpoint.save_trainer(d / "t.safetensors", model, state)
    traw = (d / "t.safetensors").read_bytes()
    weights = {k: v.clone() for k, v in model.state_dict().items()}

    def same(a):
        sa = a.state_dict()
        return a.spec == spec and sa.keys() == weights.keys() and all(torch.equal(sa[k], weights[k]) for k in sa)

    def view(s):
        t = {}
        sk = checkpoint._flatten({"o": s.optimizer, "r": s.rng}, "s", t)
        return repr(sk), s.epoch, s.step, list(s.history), s.best_epoch, s.bad_epochs, s.stopped_early, t

    ref = view(state)

    def load_model(path):
        return lambda: same(vaekit.load(path))

    def load_trainer(path):
        def go():
            other = vaekit.build_model(spec)
            v = view(checkpoint.load_trainer(path, other))
            return v[:-1] == ref[:-1] and all(torch.equal(v[-1][k], ref[-1][k]) for k in ref[-1]) and same(other)

        return go

    header_end = 8 + struct.unpack("<Q", raw[:8])[0]
    for i in range(n_model):  # single-bit flips, as in issue 11: half in the JSON header, half in the tensors
        p = d / f"flip{i}.safetensors"
        p.write_bytes(damage(raw, rng, *((0, header_end) if i % 2 == 0 else (header_end, len(raw))), flips_only=True))
        yield "model.safetensors, 1-bit flips", load_model(p)
    flipped = d / "activation.safetensors"
    flipped.write_bytes(raw.replace(b"activation", b"activatioN", 1))
    yield "model.safetensors, `activation` key flip", load_model(flipped)
    for i, cut in enumerate(range(0, len(raw), max(1, len(raw) // 40))):
        p = d / f"cut{i}.safetensors"
        p.write_bytes(raw[:cut])
        yield "model.safetensors, truncations", load_model(p)
    theader = 8 + struct.unpack("<Q", traw[:8])[0]
    for i in range(n_trainer):
        p = d / f"tflip{i}.safetensors"
        p.write_bytes(damage(traw, rng, *((0, theader) if i % 3 else (theader, len(traw))), flips_only=True))
        yield "trainer.safetensors, 1-bit flips", load_trainer(p)
    raised = d / "raised.safetensors"
    raised.write_bytes(traw.replace(b'\\"epoch\\": 2', b'\\"epoch\\": 3', 1))
    yield "trainer.safetensors, epoch counter raised", load_trainer(raised)
    content = {
        "format_version": checkpoint.FORMAT_VERSION,
        "model": spec.to_dict(),
        "train": {"epochs": 5, "lr": 0.001},
    }
    for i in range(n_json):
        name = ("config.json", "preprocessing.json")[i % 2]
        folder = d / f"json{i}"
        folder.mkdir()
        checkpoint.write_json(folder / name, content)
        (folder / name).write_bytes(damage((folder / name).read_bytes(), rng, flips_only=True))
        yield (
            "config.json / preprocessing.json, 1-bit flips",
            (lambda p=folder / name: checkpoint.read_json(p) == content),
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-reader", type=int, default=120, help="fuzzed files per reader (default 120: 840 in all)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--show", action="store_true", help="print every crash and silent load")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    rows: dict[str, Counter] = {}
    bad: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        named, readers, ckpt = (Path(tmp) / part for part in ("named", "readers", "ckpt"))
        for folder in (named, readers, ckpt):
            folder.mkdir()
        groups = [
            named_cases(named),
            reader_cases(readers, rng, args.per_reader),
            checkpoint_cases(ckpt, rng, 450, 150, 200),
        ]
        for group in groups:
            for label, fn in group:
                result, message = outcome(fn)
                key = (
                    label
                    if not label.startswith(("huge", "unbalanced", "complex", "CSV", "truncated", "garbled", "IDX"))
                    else "issue 11's named bad inputs"
                )
                rows.setdefault(key, Counter())[result] += 1
                if result in ("crash", "silent"):
                    bad.append(f"{label}: {result} {message}")
    print(
        f"vaekit {vaekit.__version__} from {Path(vaekit.__file__).parent}; seed {args.seed}; "
        f"{time.perf_counter() - started:.0f} s\n"
    )
    print("| input | tried | read | refused cleanly | crashes | silent loads |")
    print("|---|---:|---:|---:|---:|---:|")
    total = Counter()
    for key, c in rows.items():
        total.update(c)
        print(f"| {key} | {sum(c.values())} | {c['read']} | {c['refused']} | {c['crash']} | {c['silent']} |")
    print(
        f"| **all** | {sum(total.values())} | {total['read']} | {total['refused']} | {total['crash']} | {total['silent']} |"
    )
    if args.show:
        for line in bad:
            print(line)
    return 1 if total["crash"] or total["silent"] else 0


if __name__ == "__main__":
    sys.exit(main())
