"""Built-in sources: scikit-learn digits, Keras's cached MNIST/Fashion-MNIST/CIFAR-10, synthetic shapes.

The Keras datasets are read straight from Keras's cache files with numpy, so the
Streamlit server never imports TensorFlow to look at them.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import os
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from engine.data.imageset import DatasetError, ImageSet, SourceInfo, cap_per_class, fingerprint_arrays
from engine.data.shapes import make_shapes

logger = logging.getLogger(__name__)

BUILTIN_SOURCES = ("digits", "mnist", "fashion_mnist", "cifar10", "shapes")
# Enough for a CNN to learn shape rather than colour (300 a class left a ResNet at chance).
SHAPES_PER_CLASS = 1000
# Where Keras downloads its datasets from; tests point these at a closed local port.
KERAS_DATASETS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
DOWNLOAD_TIMEOUT = 10  # seconds without progress before a download is abandoned

FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
DIGIT_NAMES = [str(i) for i in range(10)]
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

DESCRIPTIONS = {
    "digits": "1,797 handwritten digits, 8x8 gray (ships with scikit-learn)",
    "mnist": "70,000 handwritten digits, 28x28 gray",
    "fashion_mnist": "70,000 clothing photos in 10 classes, 28x28 gray",
    "cifar10": "60,000 photos in 10 classes, 32x32 colour",
    "shapes": "synthetic circles, squares, triangles and crosses with object masks",
}


_KERAS_SOURCES = ("mnist", "fashion_mnist", "cifar10")


def datasets_dir() -> Path:
    """Keras's dataset cache: `$KERAS_HOME/datasets`, else `~/.keras/datasets`."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets"


def _cifar_dir() -> Path | None:
    """The folder holding the CIFAR-10 batches in either layout Keras has used, if complete."""
    base = datasets_dir()
    for folder in (base / "cifar-10-batches-py", base / "cifar-10-batches-py-target" / "cifar-10-batches-py"):
        if all((folder / name).is_file() for name in CIFAR10_BATCHES):
            return folder
    return None


def _needed_files(source: str) -> list[tuple[Path, str]]:
    """The cache files a Keras source needs, with the URL each comes from."""
    base = datasets_dir()
    if source == "mnist":
        return [(base / "mnist.npz", KERAS_DATASETS_URL + "mnist.npz")]
    if source == "fashion_mnist":
        return [(base / "fashion-mnist" / name, KERAS_DATASETS_URL + name) for name in FASHION_FILES]
    return [(base / "cifar-10-python.tar.gz", CIFAR10_URL)]


def _is_cached(source: str) -> bool:
    if source == "cifar10":
        return _cifar_dir() is not None
    return all(path.is_file() for path, _ in _needed_files(source))


def list_sources() -> list[SourceInfo]:
    """Describes the built-in sources and whether each loads offline now; never downloads.

    Returns:
        One `SourceInfo` per name in `BUILTIN_SOURCES`.
    """
    infos = []
    for name in BUILTIN_SOURCES:
        if name == "digits":
            infos.append(SourceInfo(name, DESCRIPTIONS[name], True, "ships with scikit-learn"))
        elif name == "shapes":
            infos.append(SourceInfo(name, DESCRIPTIONS[name], True, "generated on the fly"))
        elif _is_cached(name) or (name == "cifar10" and _needed_files(name)[0][0].is_file()):
            where = (_cifar_dir() or _needed_files(name)[0][0]) if name == "cifar10" else _needed_files(name)[0][0].parent
            infos.append(SourceInfo(name, DESCRIPTIONS[name], True, f"cached at {_tilde(where)}"))
        else:
            infos.append(SourceInfo(name, DESCRIPTIONS[name], False, f"needs internet, or {_missing_hint(name)}"))
    return infos


def _tilde(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if text.startswith(home + os.sep) else text


def _missing_hint(source: str) -> str:
    files = [(path, url) for path, url in _needed_files(source) if not path.is_file()] or _needed_files(source)
    names = ", ".join(path.name for path, _ in files)
    urls = " ".join(url for _, url in files)
    extracted = " or its extracted cifar-10-batches-py/ folder" if source == "cifar10" else ""
    return f"put {names}{extracted} in {_tilde(files[0][0].parent)}/ (download from {urls})"


def _download(url: str, path: Path) -> None:
    """Downloads `url` to `path` through a temporary file; raises OSError on any failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    logger.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out, 1024**2)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def download_source(source: str) -> None:
    """Downloads a Keras source's missing files into Keras's cache (no-op when cached).

    Raises:
        DatasetError: the download failed; the message says where to put the files by hand.
    """
    if source not in _KERAS_SOURCES:
        raise DatasetError(f"{source!r} is not a downloadable dataset ({', '.join(_KERAS_SOURCES)})")
    if _is_cached(source):
        return
    hint = _missing_hint(source)
    try:
        for path, url in _needed_files(source):
            if not path.is_file():
                _download(url, path)
        if source == "cifar10":
            archive = _needed_files(source)[0][0]
            with tarfile.open(archive) as tar:
                tar.extractall(archive.parent, filter="data")
    except (OSError, urllib.error.URLError, tarfile.TarError, ValueError) as error:
        raise DatasetError(f"{source} is not cached and could not be downloaded ({error}). "
                           f"Without internet, {hint}.") from None
    if not _is_cached(source):
        raise DatasetError(f"{source} is still incomplete after downloading. {hint[0].upper()}{hint[1:]}.")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches, allowing only numpy array reconstruction (no code execution)."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")
        return super().find_class(module.replace("numpy.core.", "numpy._core."), name)


def _read_keras_source(source: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Reads train + test of a Keras source from its cache files into one pool (train first)."""
    download_source(source)
    try:
        if source == "mnist":
            with np.load(_needed_files(source)[0][0], allow_pickle=False) as npz:
                images = np.concatenate([npz["x_train"], npz["x_test"]])
                labels = np.concatenate([npz["y_train"], npz["y_test"]])
            return images, labels, DIGIT_NAMES
        if source == "fashion_mnist":
            folder = datasets_dir() / "fashion-mnist"
            parts = {}
            for name in FASHION_FILES:
                with gzip.open(folder / name, "rb") as handle:
                    parts[name] = np.frombuffer(handle.read(), np.uint8, offset=16 if "images" in name else 8)
            images = np.concatenate([parts[FASHION_FILES[0]], parts[FASHION_FILES[2]]]).reshape(-1, 28, 28)
            labels = np.concatenate([parts[FASHION_FILES[1]], parts[FASHION_FILES[3]]])
            return images, labels, FASHION_NAMES
        batches = []
        for name in CIFAR10_BATCHES:
            with open(_cifar_dir() / name, "rb") as handle:
                batch = _ArrayUnpickler(handle, encoding="bytes").load()
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            batches.append((data, np.asarray(batch[b"labels"])))
        return (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]), CIFAR10_NAMES)
    except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as error:
        raise DatasetError(f"the cached {source} files are damaged ({error}). Delete them and "
                           f"{_missing_hint_all(source)}.") from None


def _missing_hint_all(source: str) -> str:
    files = _needed_files(source)
    return f"put {', '.join(p.name for p, _ in files)} in {_tilde(files[0][0].parent)}/ again " \
           f"(download from {' '.join(u for _, u in files)})"


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (values 0..16) and labels, read from its data file.

    Reading the bundled CSV directly avoids importing scikit-learn (2-3 s) in the server.
    """
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is not None and csv.is_file():
        with gzip.open(csv, "rt") as handle:
            data = np.loadtxt(handle, delimiter=",", dtype=np.float64)
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int32)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def resize_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """Resizes `(N, H, W)` gray or `(N, H, W, 3)` RGB uint8 images to `(N, S, S, 3)` (bilinear).

    Args:
        images: uint8 images.
        image_size: the output side.

    Returns:
        A new `(N, image_size, image_size, 3)` uint8 array.
    """
    n, height, width = images.shape[:3]
    out = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    gray = images.ndim == 3
    for i in range(n):
        if (height, width) == (image_size, image_size):
            resized = images[i]
        else:
            resized = np.asarray(Image.fromarray(images[i]).resize((image_size, image_size), Image.Resampling.BILINEAR))
        out[i] = resized[..., None] if gray else resized
    return out


def load_builtin(source: str, image_size: int, *, max_per_class: int = 0, seed: int = 0) -> ImageSet:
    """Loads one of `BUILTIN_SOURCES`; see `engine.data.load_images`."""
    masks = None
    if source == "digits":
        pixels, labels = _read_digits()
        raw = np.rint(pixels * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        class_names = DIGIT_NAMES
    elif source == "shapes":
        raw, labels, masks, class_names = make_shapes(image_size, per_class=max_per_class or SHAPES_PER_CLASS, seed=seed)
    else:
        raw, labels, class_names = _read_keras_source(source)
    keep = cap_per_class(labels, max_per_class, seed)
    images = resize_images(raw[keep], image_size)
    labels = np.asarray(labels)[keep].astype(np.int32)
    ids = [f"{source}/{i}" for i in keep.tolist()]
    fingerprint = fingerprint_arrays(images, labels, class_names)
    return ImageSet(images, labels, list(class_names), ids, source, fingerprint, (),
                    masks[keep] if masks is not None else None, layout="builtin")
