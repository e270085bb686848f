"""Folders of image files (PNG, JPEG, BMP, GIF, TIFF, WebP) read with Pillow.

``folder/*.png`` gives unlabelled images; ``folder/CLASS/*.png`` (one sub-folder per class)
gives images with labels 0..K-1 in the sorted order of the sub-folder names. All images must
have one size. Grey images give one channel; if any image has colour, all are read as RGB.
Pixels become float32 in [0, 1] (8-bit: value / 255), shape (N, C, H, W).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from ..limits import require_memory

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def is_image_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    return bool(_images_in(path)) or any(sub.is_dir() and _images_in(sub) for sub in path.iterdir())


def list_images(folder: Path) -> tuple[list[Path], np.ndarray | None, list[str] | None]:
    """The image files and, with class sub-folders, their labels and the class names."""
    top = _images_in(folder)
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and _images_in(p))
    if top and subs:
        raise DataError(
            f"{folder} holds images both directly and in sub-folders ({subs[0].name}/); "
            "put all of them in class sub-folders or none"
        )
    if top:
        return top, None, None
    if not subs:
        raise DataError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    files, labels = [], []
    for k, sub in enumerate(subs):
        imgs = _images_in(sub)
        files += imgs
        labels += [k] * len(imgs)
    return files, np.asarray(labels, dtype=np.int64), [s.name for s in subs]


def _open(path: Path):
    from PIL import Image

    try:
        img = Image.open(path)
        img.load()
    except Exception as err:  # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error, IndexError, ...
        raise DataError(
            f"cannot read image {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    return img


def _pixels(img, colour: bool) -> np.ndarray:
    """(C, H, W) float32 in [0, 1]."""
    if colour:
        a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        return a.transpose(2, 0, 1)
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        a = np.asarray(img, dtype=np.float32) / 65535.0
    elif img.mode == "F":
        a = np.asarray(img, dtype=np.float32)
    else:
        a = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    return a[None]


def load_image_folder(folder: Path) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...], dict]:
    """(x (N, C, H, W), labels, image_shape, info)."""
    files, labels, classes = list_images(folder)
    images = [_open(p) for p in files]
    first = images[0]
    for p, img in zip(files, images):
        if img.size != first.size:
            w0, h0 = first.size
            w, h = img.size
            raise DataError(
                f"images differ in size: {files[0].name} is {h0}x{w0} (height x width), "
                f"{p.relative_to(folder)} is {h}x{w}; resize them to one size first"
            )
    colour = any(img.mode not in _GREY_MODES for img in images)
    w, h = first.size
    try:
        require_memory(4.0 * len(images) * (3 if colour else 1) * h * w, f"{len(images)} images of {h}x{w} pixels")
    except ValueError as err:
        raise DataError(str(err)) from None
    x = np.stack([_pixels(img, colour) for img in images])
    for img in images:
        img.close()
    h, w = x.shape[2:]
    image_shape = (3, h, w) if colour else (h, w)
    info = {
        "path": str(folder.resolve()),
        "files": len(files),
        "channels": x.shape[1],
        "levels": 256 if all(img.mode in ("L", "RGB", "RGBA", "P", "LA", "1") for img in images) else None,
    }
    if classes is not None:
        info["label_names"] = classes
    return x, labels, image_shape, info


def save_image(path: str | Path, pixels: np.ndarray) -> None:
    """Write one image (H, W) or (C, H, W) with values in [0, 1] as an 8-bit file."""
    from PIL import Image

    a = np.asarray(pixels, dtype=np.float32)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    Image.fromarray(np.clip(np.round(a * 255), 0, 255).astype(np.uint8)).save(path)
