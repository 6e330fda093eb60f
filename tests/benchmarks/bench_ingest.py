"""Benchmarks ingest, in one run: `python tests/benchmarks/bench_ingest.py [--quick]`.

(a) Images/s of Aperture's first decode of a folder (`load_images` into the memmapped cache, in
    parallel) vs one pass of `keras.utils.image_dataset_from_directory` over the same folder of
    224 px JPEGs (target: at least 2x).
    Also the same for 512 px JPEGs decoded to 224 (real photos are bigger than the model's input;
    Aperture lets libjpeg decode at half scale, Keras decodes every pixel).
(b) Peak RSS of the decode at 5,000 vs 20,000 images (target: within +200 MiB: memory stays flat
    because images go straight into the memmap). `--quick`: 1,000 vs 4,000 images.

Each measurement runs in a fresh process, timed after its imports; its peak RSS is its own VmHWM
(`ru_maxrss` would report this script's, which a child inherits across exec). Page cache:
every folder is read once in full (a warm-up read of every file) right before each timed pass,
so both decoders read from memory alike, and dirty pages are written back (`sync`) first, so no
pass is throttled for what an earlier one wrote; Aperture's pass still writes its cache. Prints the figures and the
targets; asserts nothing about time; exits 0. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.photo_folder import source_photos  # noqa: E402

CLASSES = 10

_DECODE = """
import json, re, sys, time
import engine
from engine.data import load_images
started = time.perf_counter()
images = load_images(sys.argv[1], 224, cache_dir=sys.argv[2])
elapsed = time.perf_counter() - started
print(json.dumps({"images": len(images), "seconds": elapsed,
                  "peak_rss_mib": int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read())[1]) / 1024}))
"""

_KERAS = """
import json, re, sys, time
import engine, keras
started = time.perf_counter()
ds = keras.utils.image_dataset_from_directory(sys.argv[1], image_size=(224, 224), batch_size=64, shuffle=False,
                                              verbose=False)
count = sum(int(x.shape[0]) for x, _ in ds)
elapsed = time.perf_counter() - started
print(json.dumps({"images": count, "seconds": elapsed,
                  "peak_rss_mib": int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read())[1]) / 1024}))
"""


def write_folder(out: Path, total: int, seed: int = 0, pixels: int = 224) -> Path:
    """`total` `pixels` x `pixels` JPEG crops of the ten bundled photos, one class per photo."""
    rng = np.random.default_rng(seed)
    photos = list(source_photos().items())[:CLASSES]
    for index in range(total):
        name, photo = photos[index % CLASSES]
        width, height = photo.size
        side = int(min(width, height) * rng.uniform(0.3, 0.9))
        left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        crop = photo.crop((left, top, left + side, top + side)).resize((pixels, pixels), Image.Resampling.BILINEAR)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        crop.save(folder / f"{index:06d}.jpg", quality=90)
    return out


def warm(folder: Path) -> None:
    """Reads every file of `folder` once, so the timed pass finds them all in the page cache."""
    for path in folder.rglob("*.jpg"):
        path.read_bytes()


def measure(script: str, *args: str) -> dict:
    warm(Path(args[0]))
    os.sync()  # no pass pays for writing back what came before it (the folders just written, an earlier cache)
    result = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    if result.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 vs 4,000 images instead of 5,000 vs 20,000")
    args = parser.parse_args()
    small, large = (1_000, 4_000) if args.quick else (5_000, 20_000)
    with tempfile.TemporaryDirectory(prefix="aperture-bench-ingest-") as scratch:
        scratch = Path(scratch)
        began = time.perf_counter()
        write_folder(scratch / "small", small)
        write_folder(scratch / "large", large, seed=1)
        write_folder(scratch / "photos", small, seed=2, pixels=512)
        print(f"wrote {small:,} + {large:,} JPEGs of 224x224 and {small:,} of 512x512 in "
              f"{time.perf_counter() - began:.0f} s")

        keras_pass = measure(_KERAS, str(scratch / "small"))
        first = measure(_DECODE, str(scratch / "small"), str(scratch / "cache"))
        again = measure(_DECODE, str(scratch / "small"), str(scratch / "cache"))  # from the cache
        big = measure(_DECODE, str(scratch / "large"), str(scratch / "cache"))
        keras_photos = measure(_KERAS, str(scratch / "photos"))
        photos = measure(_DECODE, str(scratch / "photos"), str(scratch / "cache"))
    print(f"\n(a) {small:,} images, one pass to 224 px (each in a fresh process, timed after the imports, "
          "files in the page cache)")
    for label, ours, theirs in (("224 px JPEGs", first, keras_pass), ("512 px JPEGs", photos, keras_photos)):
        rate, keras_rate = ours["images"] / ours["seconds"], theirs["images"] / theirs["seconds"]
        print(f"    {label}: Aperture first decode {rate:6.0f} images/s ({ours['seconds']:.1f} s), "
              f"image_dataset_from_directory {keras_rate:6.0f} images/s ({theirs['seconds']:.1f} s): "
              f"ratio {rate / keras_rate:.2f}x   (target >= 2x)")
    print(f"    Aperture second load (the memmapped cache): {again['images'] / again['seconds']:.0f} images/s")
    growth = big["peak_rss_mib"] - first["peak_rss_mib"]
    print(f"\n(b) peak RSS of the decode: {small:,} images {first['peak_rss_mib']:.0f} MiB, {large:,} images "
          f"{big['peak_rss_mib']:.0f} MiB: +{growth:.0f} MiB (target <= +200 MiB; the decoded {large:,} are "
          f"{large * 224 * 224 * 3 / 1024**2:,.0f} MiB on disk)")
    print(f"    image_dataset_from_directory peak RSS at {small:,}: {keras_pass['peak_rss_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
