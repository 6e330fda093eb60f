"""A model card per run (Markdown and HTML): data, model, training, metrics, confusions, exports, limits.

Built only from what the run folder and the index hold (no TensorFlow), so the dashboard
can write it on demand and the export job refreshes it with the parity table.
"""

from __future__ import annotations

import dataclasses
import html
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.runfolder import RunFolder
from engine.store import Workspace

TOP_CONFUSIONS = 5


@dataclass(frozen=True)
class Section:
    """One section: a heading, then paragraphs, bullet lists and tables in order."""

    title: str
    blocks: tuple = ()  # ("p", text) | ("ul", [items]) | ("table", headers, rows)


@dataclass(frozen=True)
class ModelCard:
    title: str
    subtitle: str
    sections: tuple[Section, ...]

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", "", self.subtitle, ""]
        for section in self.sections:
            lines += [f"## {section.title}", ""]
            for block in section.blocks:
                if block[0] == "p":
                    lines += [block[1], ""]
                elif block[0] == "ul":
                    lines += [f"- {item}" for item in block[1]] + [""]
                else:
                    _, headers, rows = block
                    lines.append("| " + " | ".join(headers) + " |")
                    lines.append("|" + "|".join("---" for _ in headers) + "|")
                    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
                    lines.append("")
        return "\n".join(lines).rstrip() + "\n"

    def to_html(self) -> str:
        esc = html.escape
        parts = [f"<h1>{esc(self.title)}</h1>", f"<p class='sub'>{esc(self.subtitle)}</p>"]
        for section in self.sections:
            parts.append(f"<h2>{esc(section.title)}</h2>")
            for block in section.blocks:
                if block[0] == "p":
                    parts.append(f"<p>{esc(block[1])}</p>")
                elif block[0] == "ul":
                    parts.append("<ul>" + "".join(f"<li>{esc(str(i))}</li>" for i in block[1]) + "</ul>")
                else:
                    _, headers, rows = block
                    head = "".join(f"<th>{esc(str(h))}</th>" for h in headers)
                    body = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>" for row in rows)
                    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        style = ("body{font-family:system-ui,sans-serif;max-width:960px;margin:2rem auto;padding:0 1rem;color:#222}"
                 "table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid #ddd;padding:4px 10px;"
                 "text-align:left}th{background:#f4f5f7}.sub{color:#666}h2{margin-top:2rem}")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(self.title)}</title>"
                f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def build_model_card(workspace: Workspace, run_id: str) -> ModelCard:
    """Collects a run's facts into a `ModelCard`.

    Args:
        workspace: the workspace holding the run.
        run_id: the run; it should have finished training (missing parts are said to be missing).

    Returns:
        The card; `to_markdown()` and `to_html()` render it.
    """
    from engine.export.formats import format_label
    from engine.export.report import read_report

    run, folder = workspace.get_run(run_id), RunFolder(workspace, run_id)
    config = run.config
    data = folder.data_report()
    class_names = data.get("class_names") or []
    counts = data.get("counts") or {}
    sections = []

    overview = [("Run", run.id), ("Name", run.name or "—"), ("Created", _time(run.created_at)),
                ("Status", run.status), ("Model", run.model), ("Parameters", _int(run.params)),
                ("Dataset", config.data.source), ("Image size", f"{config.data.image_size}×{config.data.image_size}"
                                                                " RGB"),
                ("Classes", str(len(class_names) or run.num_classes or "—")),
                ("Test accuracy", _pct(run.test_accuracy)), ("Best validation accuracy", _pct(run.best_val_accuracy)),
                ("Epochs", f"{run.epochs_done}/{run.epochs_total}"), ("Device", run.device or "—"),
                ("Training time", "—" if run.train_seconds is None else f"{run.train_seconds:.1f} s")]
    sections.append(Section("Overview", (("table", ("Field", "Value"), overview),)))

    total = sum(sum(v) for v in counts.values()) if counts else 0
    data_blocks = [("p", f"Source: {config.data.source}. {total:,} images in {len(class_names)} classes, split "
                         f"{100 * (1 - config.data.val_fraction - config.data.test_fraction):.0f}/"
                         f"{100 * config.data.val_fraction:.0f}/{100 * config.data.test_fraction:.0f} "
                         f"(train/validation/test, stratified, seed {config.data.seed}); "
                         f"{len(data.get('skipped') or [])} files skipped as unreadable.")]
    if class_names and counts:
        rows = [(name, *(counts.get(s, [0] * len(class_names))[i] for s in ("train", "val", "test")))
                for i, name in enumerate(class_names)]
        data_blocks.append(("table", ("Class", "Train", "Validation", "Test"), rows))
    sections.append(Section("Data", tuple(data_blocks)))

    model_rows = [(section, key, _value(value)) for section in ("model", "train", "augment")
                  for key, value in dataclasses.asdict(getattr(config, section)).items()]
    sections.append(Section("Model and training configuration", (
        ("p", f"Architecture {config.model.name}; inputs are float32 RGB pixels in 0..255 at "
              f"{config.data.image_size}×{config.data.image_size}, rescaled inside the model; the output is a "
              "softmax over the classes."),
        ("table", ("Section", "Setting", "Value"), model_rows))))

    metrics_blocks = []
    predictions = _read_predictions(folder)
    confusions = []
    if predictions is not None:
        probabilities, labels = predictions["probabilities"], predictions["labels"]
        names = list(predictions["class_names"]) or class_names
        predicted = probabilities.argmax(1)
        n = len(names)
        matrix = np.zeros((n, n), dtype=int)
        np.add.at(matrix, (labels, predicted), 1)
        rows = []
        for c, name in enumerate(names):
            support = matrix[c].sum()
            precision = matrix[c, c] / matrix[:, c].sum() if matrix[:, c].sum() else 0.0
            recall = matrix[c, c] / support if support else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            rows.append((name, support, f"{precision:.3f}", f"{recall:.3f}", f"{f1:.3f}"))
        metrics_blocks.append(("p", f"Test accuracy {_pct(float(np.mean(predicted == labels)))} on {len(labels)} "
                                    "held-out images."))
        metrics_blocks.append(("table", ("Class", "Test images", "Precision", "Recall", "F1"), rows))
        off = [(matrix[i, j], names[i], names[j]) for i in range(n) for j in range(n) if i != j and matrix[i, j]]
        confusions = sorted(off, reverse=True)[:TOP_CONFUSIONS]
    else:
        metrics_blocks.append(("p", "No test predictions yet (the run has not finished)."))
    sections.append(Section("Metrics", tuple(metrics_blocks)))
    sections.append(Section("Known confusions", (
        ("table", ("True class", "Predicted as", "Test images"), [(t, p, c) for c, t, p in confusions]),)
        if confusions else (("p", "No test image was misclassified."
                             if predictions is not None else "Unknown until the run finishes."),)))

    report = read_report(workspace, run_id)
    if report is not None:
        rows = []
        for a in report.artifacts:
            if a.error:
                rows.append((format_label(a.format), _size(a.size_bytes), "—", "—", "—", "—",
                             f"failed: {a.error}"))
                continue
            rows.append((format_label(a.format), _size(a.size_bytes), _pct(a.accuracy),
                         f"{-a.accuracy_drop:+.2f}", len(a.flipped), f"{a.latency_ms_median:.2f}",
                         "passed" if a.passed else f"failed: {a.suggestion}"))
        sections.append(Section("Exports and parity", (
            ("p", f"Each artifact was loaded back in its own runtime and run on the {report.test_size} test images; "
                  f"Δ is in accuracy points against the Keras model ({_pct(report.reference_accuracy)}); an export "
                  f"fails above a {report.max_drop:g}-point drop. Latency: median single image on "
                  f"{run.device or 'the export machine'}."),
            ("table", ("Format", "Size", "Accuracy", "Δ points", "Flipped", "Latency (ms)", "Gate"), rows))))
    else:
        sections.append(Section("Exports and parity", (("p", "Not exported yet."),)))

    names_text = ", ".join(class_names[:12]) + (" …" if len(class_names) > 12 else "")
    sections.append(Section("Intended use and limits", (("ul", [
        f"Classifies a {config.data.image_size}×{config.data.image_size} RGB image into one of: {names_text}.",
        "It always answers with one of these classes, even for an image of something else: check the "
        "top probability, and treat low-confidence answers as unknown.",
        f"It learned only from {config.data.source}; accuracy on images from other cameras, lighting, "
        "backgrounds or sources is unmeasured and likely lower.",
        "The test accuracy above comes from a small held-out split of the same source; it is an estimate "
        "with sampling error, not a guarantee.",
        "Not for decisions about people or safety without a review of the data and an evaluation on the "
        "intended images.",
        "Explanations (Grad-CAM) show where the model looked, not why it is right.",
    ]),)))
    return ModelCard(title=f"Model card: {run.label}",
                     subtitle=f"Run {run.id} · generated {_time(time.time())} by Aperture", sections=tuple(sections))


def write_model_card(workspace: Workspace, run_id: str) -> tuple[Path, Path]:
    """Writes `model_card.md` and `model_card.html` into the run folder; returns their paths."""
    card = build_model_card(workspace, run_id)
    folder = RunFolder(workspace, run_id)
    paths = folder.model_card_file, folder.model_card_html_file
    for path, text in zip(paths, (card.to_markdown(), card.to_html())):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return paths


def _read_predictions(folder: RunFolder) -> dict | None:
    try:
        saved = folder.predictions() if folder.has_predictions else None
    except (OSError, KeyError, ValueError):
        return None
    return None if saved is None else {"probabilities": saved.probabilities, "labels": saved.labels.astype(int),
                                       "class_names": saved.class_names}


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _int(value) -> str:
    return "—" if value is None else f"{value:,}"


def _size(size: int) -> str:
    return f"{size / 1024:,.1f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:,.2f} MiB"


def _value(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _time(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))
