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
    """The base's weights status, without hashing the file (cheap: for pages); a hub base's path is its folder."""
    if is_hub_base(base):
        folder = hub_preset_dir(base)
        if folder is None:
            return WeightsStatus(base, None, 0, None)
        source = "import" if folder == hub_import_dir(base) else "preset"
        return WeightsStatus(base, folder, (folder / "model.weights.h5").stat().st_size, source)
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
    if is_hub_base(base):
        return (f"no KerasHub preset {hub_preset(base)} here (imported in {hub_import_root()} or "
                f"downloaded in {kagglehub_cache_dir()}): run `python -m engine weights get {base}` (KerasHub "
                f"downloads it), or offline `python -m engine weights import PRESET_FOLDER --base {base}`, or set "
                "model.weights to a preset folder")
    entry = get_base(base)
    return (f"no ImageNet weights for {base} in {keras_cache_dir()}: run `python -m engine weights get {base}` "
            f"(downloads {entry.url}), or offline `python -m engine weights import FILE --base {base}`; or set "
            "model.weights=random to train the base from scratch")


def resolve_weights(base: str, weights: str, image_size: int | None = None) -> tuple[Path | None, dict]:
    """What a transfer run starts from: the file to load and `{"source", "sha256"}` for its record.

    Args:
        base: the `model.base`.
        weights: `model.weights`: `imagenet`, `random` or a path of a weights file (a preset folder for a
            hub base; `imagenet` is then the preset's own weights, `random` its architecture only).
        image_size: the input side (MobileNetV2 prefers its size's file).

    Returns:
        `(path or None for random, {"source": "imagenet"|"import"|"random", "sha256": hex or None})`; for a hub
        base `(preset folder, {"source": "preset"|"import"|"random", "sha256", "preset": folder})`: random still
        needs the folder (its config.json).

    Raises:
        WeightsMissing: `imagenet` weights are not here, or the path does not exist; says how to get them.
    """
    if is_hub_base(base):
        return _resolve_hub(base, weights)
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


# -- KerasHub image-classifier presets ------------------------------------------------------------------------
# A hub base is `hub:<preset>`: the preset names the backbone's architecture and its weights together. Its
# folder (config.json, model.weights.h5, image_converter.json) is one KerasHub downloaded into its cache
# (`weights get hub:<preset>`) or one imported (`weights import FOLDER --base hub:<preset>`) into
# `$KERAS_HOME/hub/<preset>`; `model.weights` may also name a preset folder directly.

HUB_PREFIX = "hub:"
HUB_FEATURES = "hub_features"  # the identity layer on a hub backbone's last feature map: Grad-CAM's layer
PRESET_FILES = ("config.json", "model.weights.h5", "image_converter.json")
_HUB_SOURCE = "aperture_source.json"  # inside an imported preset folder


def is_hub_base(name: str) -> bool:
    return isinstance(name, str) and name.startswith(HUB_PREFIX)


def hub_preset(base: str) -> str:
    """`resnet_50_imagenet` for `hub:resnet_50_imagenet`."""
    return base[len(HUB_PREFIX):]


def hub_import_root() -> Path:
    """Where imported preset folders are kept, one per hub base: `$KERAS_HOME/hub`."""
    return keras_cache_dir().parent / "hub"


def hub_import_dir(base: str) -> Path:
    """Where a preset folder imported for a hub base is kept."""
    return hub_import_root() / hub_preset(base)


def kagglehub_cache_dir() -> Path:
    """KerasHub's download cache (kagglehub's): `$KAGGLEHUB_CACHE` or `~/.cache/kagglehub`."""
    return Path(os.environ.get("KAGGLEHUB_CACHE") or Path.home() / ".cache" / "kagglehub")


def _downloaded_preset(preset: str) -> Path | None:
    # kagglehub keeps kaggle://keras/<family>/keras/<preset>/<version> under models/keras/<family>/keras/...
    found = [p.parent for p in kagglehub_cache_dir().glob(f"models/*/*/keras/{preset}/*/config.json")]
    return max(found, key=lambda p: int(p.name) if p.name.isdigit() else -1) if found else None


def hub_preset_dir(base: str) -> Path | None:
    """The hub base's preset folder here (imported first, then KerasHub's download), or None (nothing downloads)."""
    imported = hub_import_dir(base)
    if (imported / "config.json").is_file():
        return imported
    return _downloaded_preset(hub_preset(base))


def check_preset_folder(folder: Path) -> None:
    """Raises `WeightsMissing` naming what makes `folder` not a KerasHub image-backbone preset (JSON only)."""
    if not folder.is_dir():
        raise WeightsMissing(f"{folder}: no such preset folder")
    missing = [name for name in PRESET_FILES if not (folder / name).is_file()]
    if missing:
        raise WeightsMissing(f"{folder} is not a KerasHub image-classifier preset: it lacks {', '.join(missing)} "
                             "(save one with `ImageClassifier.save_to_preset`)")
    try:
        backbone = json.loads((folder / "config.json").read_text()).get("class_name", "")
    except (OSError, ValueError) as error:
        raise WeightsMissing(f"{folder / 'config.json'} is not valid JSON: {error}") from None
    if not str(backbone).endswith("Backbone"):
        raise WeightsMissing(f"{folder / 'config.json'} holds {backbone or 'no class_name'}, not a KerasHub Backbone")
    with open(folder / "model.weights.h5", "rb") as handle:
        if handle.read(8) != b"\x89HDF\r\n\x1a\n":
            raise WeightsMissing(f"{folder / 'model.weights.h5'} is not an HDF5 weights file")


def record_preset_source(folder: Path, source: str, origin: str) -> dict:
    """Writes (and returns) where an imported preset folder came from, with its weights file's sha256."""
    record = {"source": source, "sha256": file_sha256(folder / "model.weights.h5"), "from": origin}
    (folder / _HUB_SOURCE).write_text(json.dumps(record))
    return record


def preset_source(folder: Path, default: str = "preset") -> dict:
    """`{"source": "preset"|"import", "sha256": ...}` of a preset folder's weights file."""
    try:
        recorded = json.loads((folder / _HUB_SOURCE).read_text())
        if recorded.get("sha256"):
            return {"source": recorded.get("source", default), "sha256": recorded["sha256"]}
    except (OSError, ValueError):
        pass
    return {"source": default, "sha256": file_sha256(folder / "model.weights.h5")}


def local_hub_bases() -> list[str]:
    """The hub bases whose presets are here (imported or downloaded by KerasHub), sorted."""
    imported = [p.name for p in hub_import_root().glob("*") if (p / "config.json").is_file()]
    downloaded = [p.parts[-2] for p in kagglehub_cache_dir().glob("models/*/*/keras/*/*/config.json")
                  if (p.parent / "model.weights.h5").is_file()]
    return sorted({HUB_PREFIX + name for name in imported + downloaded})


def _resolve_hub(base: str, weights: str) -> tuple[Path, dict]:
    if weights in ("imagenet", "random"):
        folder = hub_preset_dir(base)
        if folder is None:
            raise WeightsMissing(how_to_get(base))
        default = "import" if folder == hub_import_dir(base) else "preset"
        record = {"source": "random", "sha256": None} if weights == "random" else preset_source(folder, default)
    else:
        folder = Path(os.path.expanduser(weights))
        check_preset_folder(folder)
        record = {"source": "import", "sha256": file_sha256(folder / "model.weights.h5")}
    return folder, {**record, "preset": str(folder)}
