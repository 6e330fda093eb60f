"""One image explained with a run's model: the class to explain, every method on the image, maps and overlays as files.

The single-image mode of the CLI (`explain RUN --image`); `batch` explains a run's mistakes with
the same writer. The run's class names come from `RunFolder.class_names()`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.explain.methods import METHODS, SIDE_BY_SIDE, Explanation, explain


def resolve_class(name: str, names: list[str]) -> int:
    """A class index from its name (or its index as text); ValueError naming the choices otherwise."""
    if name in names:
        return names.index(name)
    if name.isdigit() and int(name) < len(names):
        return int(name)
    raise ValueError(f"unknown class {name!r}; the run's classes are: {', '.join(names)}")


def explain_image(model, image: np.ndarray, methods=SIDE_BY_SIDE, *, target: int | None = None,
                  names: list[str] | None = None, layer_name: str | None = None) -> list[Explanation]:
    """Every requested method on one image (those that need a conv layer on `layer_name` when given)."""
    results = []
    for method in methods:
        needs_conv = method in METHODS and METHODS[method].needs_conv
        params = {"layer_name": layer_name} if needs_conv and layer_name else {}
        results.append(explain(model, image, method, target=target, class_names=names, **params))
    return results


def write_outputs(out_dir: Path, stem: str, image: np.ndarray, explanations: list[Explanation]) -> list[dict]:
    """Writes `<stem>-<method>.npy` (the map) and `<stem>-<method>.png` (overlay); returns JSON-able summaries."""
    from PIL import Image

    from engine.explain.gradcam import overlay

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
    rows = []
    for result in explanations:
        npy, png = out_dir / f"{stem}-{result.method}.npy", out_dir / f"{stem}-{result.method}.png"
        np.save(npy, result.attribution)
        Image.fromarray(overlay(pixels, result.heatmap())).save(png)
        row = result.summary()
        row.pop("deletion_curve", None)
        row.pop("insertion_curve", None)
        rows.append({**row, "map_path": str(npy), "overlay_path": str(png)})
    return rows
