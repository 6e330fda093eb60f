"""The transfer zoo's catalogue and its ImageNet weights on disk: what each base is, where its weights come from.

No TensorFlow here: `weights list`, the Train page and the refusal of a run without weights read it
cheaply. Building a base is `engine.models.transfer`; downloading and importing is `engine.weights`.

Weights live where keras.applications looks (`$KERAS_HOME/models`, default `~/.keras/models`),
under the file name it would download, so a base built with a file found here is the same network
`weights="imagenet"` builds. A file that was imported rather than downloaded has a sidecar
`<file>.source.json` saying so (and its sha256).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from engine.config import TRANSFER_BASES
from engine.data.archive import file_digest

WEIGHTS_URL_ENV = "APERTURE_WEIGHTS_URL"  # replaces the download folder of every base (tests, mirrors)
_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Base:
    """One transfer base.

    Attributes:
        name: the `model.base` value, e.g. `mobilenet_v3_small`.
        constructor: the `keras.applications` function, e.g. `MobileNetV3Small`.
        file: the no-top ImageNet weights file keras.applications caches.
        folder: the URL folder it is published in.
        published_hash: the hash Keras publishes for it (md5 or sha256 hex), or None where it publishes none.
        rescale: `(scale, offset)` applied in the graph before the base, or None when the base
            preprocesses 0..255 RGB itself (`include_preprocessing`).
        last_conv: the base's last convolutional feature map (Grad-CAM's layer); a layer with a fixed name
            (MobileNetV3's last activation is named by a global counter, so its batch norm is used).
        megabytes: the file's size, roughly (for the Get button).
    """

    name: str
    constructor: str
    file: str
    folder: str
    published_hash: str | None
    rescale: tuple[float, float] | None
    last_conv: str
    megabytes: int

    @property
    def url(self) -> str:
        folder = os.environ.get(WEIGHTS_URL_ENV, "").strip() or self.folder
        return folder.rstrip("/") + "/" + self.file


_MINUS_ONE_TO_ONE = (1.0 / 127.5, -1.0)
BASES = {base.name: base for base in (
    Base("mobilenet_v2", "MobileNetV2", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
         _APPS + "mobilenet_v2/", None, _MINUS_ONE_TO_ONE, "out_relu", 9),
    Base("mobilenet_v3_small", "MobileNetV3Small", "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
         _APPS + "mobilenet_v3/", "d3e8ec802a04aa4fc771ee12a9a9b836", None, "conv_1_bn", 4),
    Base("mobilenet_v3_large", "MobileNetV3Large", "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
         _APPS + "mobilenet_v3/", "07fb09a5933dd0c8eaafa16978110389", None, "conv_1_bn", 12),
    Base("efficientnet_v2b0", "EfficientNetV2B0", "efficientnetv2-b0_notop.h5", _APPS + "efficientnet_v2/",
         "893217f2bb855e2983157299931e43ff", None, "top_activation", 24),
    Base("efficientnet_v2b1", "EfficientNetV2B1", "efficientnetv2-b1_notop.h5", _APPS + "efficientnet_v2/",
         "0e80663031ca32d657f9caa404b6ec37", None, "top_activation", 28),
    Base("efficientnet_v2s", "EfficientNetV2S", "efficientnetv2-s_notop.h5", _APPS + "efficientnet_v2/",
         "af0682fb74e8c54910f2d4393339c070", None, "top_activation", 80),
    Base("resnet50_v2", "ResNet50V2", "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5", _APPS + "resnet/",
         "fac2f116257151a9d068a22e544a4917", _MINUS_ONE_TO_ONE, "post_relu", 91),
    Base("convnext_tiny", "ConvNeXtTiny", "convnext_tiny_notop.h5", _APPS + "convnext/",
         "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1", None,
         "convnext_tiny_stage_3_block_2_identity", 106),
)}
assert tuple(BASES) == TRANSFER_BASES, "engine.config.TRANSFER_BASES and the zoo must list the same bases"
# MobileNetV2 also publishes one no-top file per input size; without the top any of them fits any size.
_MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)


class WeightsMissing(FileNotFoundError):
    """A transfer run asks for pretrained weights that are not on this machine; the message says how to get them."""


def get_base(name: str) -> Base:
    if name not in BASES:
        raise ValueError(f"base={name!r}: must be one of {', '.join(BASES)}")
    return BASES[name]


def keras_cache_dir() -> Path:
    """The folder where keras.applications caches weights: `$KERAS_HOME/models` or `~/.keras/models`."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def imported_file_name(base: str) -> str:
    """Where a Keras 3 `.weights.h5` file imported for `base` is kept (a legacy `.h5` takes the Keras name)."""
    return f"aperture_{get_base(base).name}_notop.weights.h5"


def weights_file_names(base: str, image_size: int | None = None) -> list[str]:
    """The names a base's no-top ImageNet weights may have in the Keras cache, preferred first (imported first)."""
    entry = get_base(base)
    names = [imported_file_name(base)]
    if base == "mobilenet_v2" and image_size in _MOBILENET_V2_SIZES and image_size != 224:
        names.append(entry.file.replace("_224_", f"_{image_size}_"))
    return [*names, entry.file]


def weights_path(base: str, image_size: int | None = None) -> Path | None:
    """The base's ImageNet weights file in the Keras cache, or None when it is not there (nothing is downloaded)."""
    folder = keras_cache_dir()
    return next((folder / n for n in weights_file_names(base, image_size) if (folder / n).is_file()), None)


def file_sha256(path: Path) -> str:
    return file_digest(path)


def file_hash(path: Path, kind: str) -> str:
    """The `md5` or `sha256` hex digest of a file, read in chunks."""
    return file_digest(path, kind)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".source.json")


def record_source(path: Path, source: str, sha256: str, origin: str) -> None:
    """Writes the sidecar that says where a weights file came from (`imagenet` download or `import`)."""
    _sidecar(path).write_text(json.dumps({"source": source, "sha256": sha256, "from": origin}))


def weights_source(path: Path) -> dict:
    """`{"source": "imagenet"|"import", "sha256": ...}` for a weights file (sha256 from its sidecar, else computed)."""
    try:
        recorded = json.loads(_sidecar(path).read_text())
        if recorded.get("sha256"):
            return {"source": recorded.get("source", "imagenet"), "sha256": recorded["sha256"]}
    except (OSError, ValueError):
        pass
    return {"source": "imagenet", "sha256": file_sha256(path)}


@dataclass(frozen=True)
class WeightsStatus:
    """Whether a base's pretrained weights are here: its file, size and where it came from."""

    base: str
    path: Path | None
    size_bytes: int
    source: str | None  # "imagenet" (downloaded / found), "import", or None when missing

    @property
    def present(self) -> bool:
        return self.path is not None


def status(base: str) -> WeightsStatus:
    """The base's weights status, without hashing the file (cheap: for pages)."""
    path = weights_path(base)
    if path is None:
        return WeightsStatus(base, None, 0, None)
    try:
        source = json.loads(_sidecar(path).read_text()).get("source", "imagenet")
    except (OSError, ValueError):
        source = "imagenet"
    return WeightsStatus(base, path, path.stat().st_size, source)


def how_to_get(base: str) -> str:
    """The one-line how-to for a base whose weights are missing."""
    entry = get_base(base)
    return (f"no ImageNet weights for {base} in {keras_cache_dir()}: run `python -m engine weights get {base}` "
            f"(downloads {entry.url}), or offline `python -m engine weights import FILE --base {base}`; or set "
            "model.weights=random to train the base from scratch")


def resolve_weights(base: str, weights: str, image_size: int | None = None) -> tuple[Path | None, dict]:
    """What a transfer run starts from: the file to load and `{"source", "sha256"}` for its record.

    Args:
        base: the `model.base`.
        weights: `model.weights`: `imagenet`, `random` or a path of a weights file.
        image_size: the input side (MobileNetV2 prefers its size's file).

    Returns:
        `(path or None for random, {"source": "imagenet"|"import"|"random", "sha256": hex or None})`.

    Raises:
        WeightsMissing: `imagenet` weights are not here, or the path does not exist; says how to get them.
    """
    if weights == "random":
        return None, {"source": "random", "sha256": None}
    if weights == "imagenet":
        path = weights_path(base, image_size)
        if path is None:
            raise WeightsMissing(how_to_get(base))
        return path, weights_source(path)
    path = Path(os.path.expanduser(weights))
    if not path.is_file():
        raise WeightsMissing(f"model.weights={weights!r}: no such file. Give imagenet, random or the path of a "
                             f".h5/.weights.h5 file saved from a {base} base")
    return path, {"source": "import", "sha256": file_sha256(path)}
