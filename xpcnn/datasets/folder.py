"""Image folders: ``path/<class name>/<image files>`` as a lazily decoded dataset (Pillow).

Class names are the sorted subfolder names and a label is its class's index. Files are listed
and their headers read when the dataset is made (so a non-image or unreadable file is found
then); pixels are decoded only when a batch asks for them. Names starting with "." are ignored.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .._validate import pair
from ..errors import ArgumentError, ArgumentTypeError, DataError
from .protocol import indices_of

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise DataError("reading images needs Pillow: pip install 'xpcnn[images]' (or pip install pillow)") from None
    return Image


def to_mode(img, color: str, alpha: str = "black"):
    """A Pillow image as mode "RGB" (``color="rgb"``) or "L" ("gray"), every mode converted
    explicitly: 1 and 16-bit grayscale (I;16, I: value / 257, rounded) to L; any alpha (LA, RGBA,
    PA, P with a transparent colour) composited on black (``alpha="drop"``: ignored, as Pillow's
    convert does); P, CMYK (Pillow's conversion) and the
    rest to RGB; RGB to L by Pillow's ITU-R 601-2 luma."""
    image = _pillow()
    if img.mode in SIXTEEN_BIT:
        img = image.fromarray(np.clip(np.rint(np.asarray(img, dtype=np.float64) / 257), 0, 255).astype(np.uint8))
    elif img.mode == "1":
        img = img.convert("L")
    elif ("A" in img.mode or "a" in img.mode or "transparency" in img.info) and alpha == "black":
        black = image.new("RGBA", img.size, (0, 0, 0, 255))
        img = image.alpha_composite(black, img.convert("RGBA")).convert("RGB")
    elif img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return img.convert("L" if color == "gray" else "RGB")


def read_image(path, color: str = "rgb", size=None, alpha: str = "black") -> np.ndarray:
    """One image file as uint8 (C, H, W), C = 3 (rgb) or 1 (gray); resized to ``size`` (H, W)
    with Pillow's bilinear filter when it differs. The first frame of an animation."""
    image = _pillow()
    if not Path(path).is_file():  # a FIFO or a device would block or never end
        raise DataError(f"{os.fspath(path)}: not a regular file")
    try:
        with image.open(path) as img:
            _check_pixels(image, img)
            img = to_mode(img, color, alpha)
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, image.DecompressionBombError) as e:
        raise DataError(f"{os.fspath(path)}: cannot decode the image ({e})") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _check_pixels(image, img) -> None:
    """Refuse an image whose header declares more pixels than Pillow's MAX_IMAGE_PIXELS (Pillow
    itself only warns below twice that): a small file must not decode into gigabytes."""
    if image.MAX_IMAGE_PIXELS and img.size[0] * img.size[1] > image.MAX_IMAGE_PIXELS:
        raise image.DecompressionBombError(f"{img.size[0]}x{img.size[1]} pixels, more than Pillow's "
                                           f"MAX_IMAGE_PIXELS ({image.MAX_IMAGE_PIXELS})")


class ImageFolder:
    """The dataset :func:`image_folder` returns: ``files`` (paths), ``labels`` (int64 (N,)),
    ``class_names``, ``sample_shape`` (C, H, W), ``skipped`` ((path, reason) of skipped entries);
    ``batch(indices)`` decodes x float32 (n, C, H, W) in [0, 1] and y int64 (n,)."""

    def __init__(self, files, labels, class_names, sample_shape, color, resize, skipped) -> None:
        self.files, self.labels, self.class_names = files, np.asarray(labels, dtype=np.int64), class_names
        self.sample_shape, self.color, self.resize, self.skipped = sample_shape, color, resize, skipped

    def __len__(self) -> int:
        return len(self.files)

    def batch(self, indices):
        idx = indices_of(indices, len(self))
        size = self.sample_shape[1:] if self.resize else None
        pixels = [read_image(self.files[i], self.color, size) for i in idx.tolist()]
        for i, p in zip(idx.tolist(), pixels):
            if p.shape != self.sample_shape:
                raise DataError(f"{self.files[i]}: the image is {p.shape[1]}x{p.shape[2]} (HxW), the folder's are "
                                f"{self.sample_shape[1]}x{self.sample_shape[2]}; pass image_size=(H, W) to resize")
        return np.stack(pixels).astype(np.float32) / np.float32(255), self.labels[idx]


def image_folder(path, *, image_size=None, color: str = "rgb", validation_split: float | None = None,
                 subset: str | None = None, seed: int = 0, on_error: str = "raise") -> ImageFolder:
    """The images under ``path/<class name>/`` (PNG, JPEG, BMP, GIF, TIFF, WebP) as a dataset.

    image_size: (H, W) to resize every image to (Pillow's bilinear filter); None: every image must
        have the same size (else a DataError names two files and their sizes).
    color: "rgb" (3 channels) or "gray" (1); every Pillow mode is converted explicitly, alpha
        composited on black (see :func:`to_mode`).
    validation_split, subset: a fraction in (0, 1) and "training" or "validation": within each class
        the files are permuted by ``numpy.random.default_rng(seed)`` and the first
        round(fraction * count) go to validation, so the two subsets are stratified and never
        overlap (the same seed and split on both calls).
    on_error: "raise" (default): an entry of a class folder that is not a readable image (another
        file, a subfolder, a file Pillow cannot identify or open) is a DataError naming it;
        "skip": such entries are left out, counted and reported once (a warning, and ``skipped``).
        A file whose header reads but whose pixels do not (truncated) raises when its batch is
        decoded, naming it.
    Returns an :class:`ImageFolder`; samples ordered by class, then file name.
    """
    image = _pillow()
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"path: expected a folder path, got {type(path).__name__}")
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"path: {root} is not a folder (expected {root}/<class name>/<images>)")
    size = None if image_size is None else pair(image_size, "image_size")
    for name, value, allowed in (("color", color, ("rgb", "gray")), ("on_error", on_error, ("raise", "skip")),
                                 ("subset", subset, (None, "training", "validation"))):
        if value not in allowed:
            raise ArgumentError(f"{name}: expected one of {', '.join(map(repr, allowed))}, got {value!r}")
    if validation_split is not None and (isinstance(validation_split, bool) or not isinstance(
            validation_split, (int, float)) or not 0 < validation_split < 1):
        raise ArgumentError(f"validation_split: expected a fraction in (0, 1) or None, got {validation_split!r}")
    if (validation_split is None) != (subset is None):
        raise ArgumentError(f"subset: give both validation_split and subset, or neither (got {validation_split!r} "
                            f"and {subset!r})")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ArgumentError(f"seed: expected a non-negative int, got {seed!r}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"path: {root} has no class subfolders (expected {root}/<class name>/<images>)")
    files, labels, sizes, skipped = [], [], {}, []
    for label, name in enumerate(classes):
        found = 0
        for entry in sorted((root / name).iterdir()):
            if entry.name.startswith("."):
                continue
            reason = ("a folder nested in a class folder (expected path/<class name>/<images>)" if entry.is_dir()
                      else "not a regular file" if not entry.is_file()
                      else None if entry.suffix.lower() in SUFFIXES else "not an image file (by its name)")
            if reason is None:
                try:
                    with image.open(entry) as img:
                        _check_pixels(image, img)
                        sizes[entry] = (img.size[1], img.size[0])
                except (OSError, ValueError, image.DecompressionBombError) as e:
                    reason = f"cannot read it as an image ({e})"
            if reason is not None:
                if on_error == "raise":
                    raise DataError(f"{entry}: {reason}; pass on_error='skip' to leave such entries out")
                skipped.append((entry, reason))
                continue
            files.append(entry)
            labels.append(label)
            found += 1
        if not found:
            raise DataError(f"{root / name}: the class folder {name!r} holds no readable image")
    if skipped:
        warnings.warn(f"image_folder: skipped {len(skipped)} entries of {root} that are not readable images (first: "
                      f"{skipped[0][0]}: {skipped[0][1]})", stacklevel=2)
    if size is None:
        first = files[0]
        odd = next((f for f in files if sizes[f] != sizes[first]), None)
        if odd is not None:
            raise DataError(f"image sizes differ: {first} is {sizes[first][0]}x{sizes[first][1]} and {odd} is "
                            f"{sizes[odd][0]}x{sizes[odd][1]} (HxW); pass image_size=(H, W) to resize them")
    labels = np.asarray(labels, dtype=np.int64)
    keep = np.arange(len(files))
    if subset is not None:
        rng = np.random.default_rng(seed)
        chosen = []
        for label in range(len(classes)):
            rows = rng.permutation(np.flatnonzero(labels == label))
            cut = round(validation_split * len(rows))
            chosen.append(rows[:cut] if subset == "validation" else rows[cut:])
        keep = np.sort(np.concatenate(chosen))
        if not len(keep):
            raise DataError(f"validation_split: {validation_split} of {len(files)} images in {len(classes)} classes "
                            f"leaves the {subset} subset empty; use a fraction that keeps images in both")
    shape = (3 if color == "rgb" else 1, *(size or sizes[files[0]]))
    return ImageFolder([files[i] for i in keep], labels[keep], classes, shape, color, size is not None, skipped)
