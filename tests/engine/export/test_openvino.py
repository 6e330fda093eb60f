"""OpenVINO export: the IR and its metadata, and the acceptance check — it runs in a separate virtual
environment that has only openvino, numpy and pillow, from the .xml and metadata.json alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import export
from engine.cpu import ISA_ENV
from engine.runfolder import RunFolder
from engine.store import Workspace
from tests.helpers.runs import train_tiny_run

ROOT = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("APERTURE_TEST_CACHE") or Path.home() / ".cache" / "aperture-tests")
CONSUMER_PACKAGES = ("openvino", "numpy", "pillow")

# What a consumer writes: nothing of Aperture, only the metadata's input rule and the IR.
CONSUMER = r'''
import json, sys
from pathlib import Path
import numpy as np
import openvino as ov
from PIL import Image

folder, data = Path(sys.argv[1]), np.load(sys.argv[2])
metadata = json.loads((folder / "metadata.json").read_text())
entry = metadata["artifacts"][sys.argv[3]]
xml = folder.parent / next(f for f in entry["files"] if f.endswith(".xml"))
spec = metadata["input"]
assert spec["dtype"] == "float32" and spec["color"] == "RGB" and spec["range"] == [0.0, 255.0]
compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
probabilities = compiled(data["images"].astype(np.float32))[compiled.outputs[0]]
size = spec["shape"][1]
picture = Image.open(sys.argv[4]).convert("RGB").resize((size, size), Image.BILINEAR)
one = compiled(np.asarray(picture, dtype=np.float32)[None])[compiled.outputs[0]]
print(json.dumps({"accuracy": float(np.mean(probabilities.argmax(1) == data["labels"])),
                  "classes": len(metadata["class_names"]), "picture": metadata["class_names"][int(one.argmax())],
                  "modules": sorted(m.split(".")[0] for m in sys.modules if m.split(".")[0] in
                                    ("tensorflow", "keras", "engine", "onnxruntime"))}))
'''


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    workspace = Workspace(tmp_path_factory.mktemp("openvino") / "workspace")
    run_id = train_tiny_run(workspace, epochs=2)
    report = export.export_run(workspace, run_id, export.ExportRequest(formats=("openvino", "openvino_int8"),
                                                                      latency_runs=5))
    return workspace, run_id, report


def test_the_ir_folders_and_the_metadata_name_the_files_and_the_input_rule(exported):
    workspace, run_id, report = exported
    folder = RunFolder(workspace, run_id)
    metadata = folder.export_metadata()
    for fmt in ("openvino", "openvino_int8"):
        artifact = report.artifact(fmt)
        assert artifact.error is None and artifact.passed and artifact.runtime == "OpenVINO", artifact
        entry = metadata["artifacts"][fmt]
        assert entry["files"] == [f"exports/{fmt}/model.xml", f"exports/{fmt}/model.bin"]
        assert all(folder.resolve(f).is_file() for f in entry["files"])
        assert entry["input_dtype"] == entry["output_dtype"] == "float32" and entry["layout"] == "NHWC"
        assert artifact.size_bytes == sum(folder.resolve(f).stat().st_size for f in entry["files"])
    assert metadata["artifacts"]["openvino"]["weights"] == "float32"
    assert metadata["artifacts"]["openvino_int8"]["weights"] == "int8"
    assert report.artifact("openvino").mean_abs_prob_diff < 1e-4  # f32 inference, not the CPU's bfloat16
    weights = {fmt: folder.resolve(f"exports/{fmt}/model.bin").stat().st_size for fmt in ("openvino", "openvino_int8")}
    assert weights["openvino_int8"] < 0.4 * weights["openvino"]  # int8 weights (the .xml graph grows instead)


def test_the_runner_compiles_with_aperture_s_onednn_limit_in_force(exported):
    """OpenVINO's CPU plugin refuses AvgPool under DNNL_MAX_CPU_ISA=AVX2; the runner hides it for its compile."""
    workspace, run_id, _ = exported
    assert os.environ.get(ISA_ENV) in (None, "AVX2")
    path = RunFolder(workspace, run_id).export_artifact("openvino")
    code = ("import engine, sys, numpy as np; from engine.export.openvino import OpenVinoRunner; "
            "r = OpenVinoRunner(sys.argv[1]); print(r.predict(np.zeros((2, 16, 16, 3), np.float32)).shape)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, ISA_ENV: "AVX2"}, timeout=120)
    assert done.returncode == 0 and "(2, 10)" in done.stdout, done.stderr[-2000:]


def _pins() -> list[str]:
    text = (ROOT / "requirements.txt").read_text()
    pins = []
    for name in CONSUMER_PACKAGES:
        match = re.search(rf"^{name}==([\w.]+)", text, re.MULTILINE | re.IGNORECASE)
        pins.append(f"{name}=={match.group(1)}" if match else name)
    return pins


def _consumer_python() -> Path:
    """A virtual environment with only openvino, numpy and pillow (kept in the test cache between runs)."""
    pins = _pins()
    venv = CACHE / ("openvino-consumer-" + "-".join(p.replace("==", "") for p in pins))
    python = venv / "bin" / "python"
    if (venv / "ready").exists() and python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        unreachable = re.search(r"connection|resolve|No matching distribution|Could not find a version", done.stderr,
                                re.IGNORECASE)
        if unreachable:
            pytest.skip(f"pip cannot reach a package index for {', '.join(pins)}: {done.stderr.strip()[-300:]}")
        pytest.fail(f"pip install {' '.join(pins)} failed: {done.stderr[-2000:]}")
    (venv / "ready").write_text("\n".join(pins))
    return python


@pytest.mark.slow
def test_an_openvino_export_runs_in_a_venv_with_only_openvino_numpy_and_pillow(exported, tmp_path):
    from PIL import Image

    workspace, run_id, report = exported
    python = _consumer_python()
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            check=True)
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "tensorflow" not in installed and "keras" not in installed and "openvino" in installed

    # What is shipped: the exports folder (IRs + metadata.json), copied away from the run.
    folder = RunFolder(workspace, run_id)
    shipped = tmp_path / "shipped" / "exports"
    shutil.copytree(folder.exports_dir, shipped)
    data = export.load_run_split(workspace, run_id)
    test = data["images"][data["test_indices"]].astype(np.float32)
    np.savez(tmp_path / "test.npz", images=test, labels=data["labels"])
    picture = tmp_path / "picture.png"
    Image.fromarray(np.clip(test[0], 0, 255).astype(np.uint8)).resize((64, 64)).save(picture)

    env = {key: value for key, value in os.environ.items() if key not in (ISA_ENV, "PYTHONPATH")}
    script = tmp_path / "consume.py"
    script.write_text(CONSUMER)
    for fmt in ("openvino", "openvino_int8"):
        done = subprocess.run([str(python), "-I", str(script), str(shipped), str(tmp_path / "test.npz"), fmt,
                               str(picture)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["modules"] == [] and result["classes"] == 10
        assert result["accuracy"] == pytest.approx(report.artifact(fmt).accuracy, abs=1e-9), (fmt, result)
        assert result["picture"] in data["class_names"]
