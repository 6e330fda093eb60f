"""Datasets for Aperture: built-in sources, image folders and zips, splits, and tf.data pipelines.

Everything here except `make_augmenter` and `make_dataset` works without TensorFlow,
so the Streamlit server can list and load data without paying for its import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.data.archive import MAX_UPLOAD_BYTES, check_upload_size, extract_zip
from engine.data.builtin import BUILTIN_SOURCES, download_source, list_sources
from engine.data.images import IMAGE_EXTENSIONS, ImageReadError, read_image
from engine.data.imageset import SPLIT_CODES, DatasetError, ImageSet, SkippedFile, SourceInfo
from engine.data.layouts import LAYOUTS, DataScan, scan_dataset
from engine.data.manifest import ManifestColumns
from engine.data.progress import DecodeCancelled, DecodeProgress
from engine.data.sources import DATA_ROOTS_ENV, check_source_allowed, data_roots, load_images, scan_source
from engine.data.split import SPLITS, Split, split_dataset, split_indices

if TYPE_CHECKING:
    from engine.data.pipeline import make_augmenter, make_dataset

_LAZY = {"make_augmenter", "make_dataset"}

__all__ = [
    "BUILTIN_SOURCES", "DATA_ROOTS_ENV", "IMAGE_EXTENSIONS", "check_source_allowed", "data_roots", "DatasetError",
    "ImageReadError", "MAX_UPLOAD_BYTES", "check_upload_size", "download_source", "ImageSet", "SkippedFile",
    "SourceInfo", "Split", "extract_zip", "list_sources", "load_images", "make_augmenter", "make_dataset",
    "read_image", "split_indices", "split_dataset", "scan_source", "scan_dataset", "DataScan", "ManifestColumns",
    "LAYOUTS", "SPLITS", "SPLIT_CODES", "DecodeCancelled", "DecodeProgress",
]


def __getattr__(name: str):
    # The pipeline imports TensorFlow when called; importing it lazily keeps `import engine.data` light.
    if name in _LAZY:
        from engine.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'engine.data' has no attribute {name!r}")
