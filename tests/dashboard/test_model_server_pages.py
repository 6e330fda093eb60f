"""Demo and Explain through the dashboard's model server: TensorFlow never loads in the Streamlit process,
and what they predict is in the prediction log."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.runfolder import RunFolder
from engine.store import PredictionLog
from tests.dashboard.apptest import HEAVY_LOADED, in_fresh_interpreter


def run_with_model(workspace) -> str:
    """A completed digits run (16 px) with a real, untrained LeNet-5 (made in a subprocess: no TF here)."""
    import subprocess
    import sys

    from tests.dashboard.test_evaluate_page import completed_run

    run_id = completed_run(workspace)
    path = RunFolder(workspace, run_id).model_file
    subprocess.run([sys.executable, "-c", "import engine; from engine.config import ModelConfig; "
                    "from engine.models import make_model; "
                    f"make_model(ModelConfig(), (16, 16, 3), 10, seed=0).save({str(path)!r})"], check=True,
                   timeout=180)
    return run_id


def digit_png() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_no_page_imports_tensorflow_after_demo_and_explain_and_their_predictions_are_logged(workspace, tmp_path):
    run_id = run_with_model(workspace)
    upload = tmp_path / "digit.png"
    upload.write_bytes(digit_png())
    seen = in_fresh_interpreter(f"""
        seen = {{}}
        at.switch_page("views/demo.py").run()
        at.file_uploader(key="demo.upload").upload("digit.png", open({str(upload)!r}, "rb").read(), "image/png").run()
        assert not at.exception, [e.value for e in at.exception]
        assert any(m.label == "Prediction" for m in at.metric), [e.value for e in at.error]
        assert len(at.image) >= 2  # the input and the Grad-CAM overlay
        seen["demo"] = {HEAVY_LOADED}
        at.switch_page("views/explain.py").run()
        assert not at.exception, [e.value for e in at.exception]
        assert "deletion AUC" in " ".join(c.value for c in at.caption), [e.value for e in at.error]
        at.button(key="explain.run_slow").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert " ".join(c.value for c in at.caption).count("deletion AUC") == 3
        seen["explain"] = {HEAVY_LOADED}
        seen["shap"] = "shap" in sys.modules
        for page in ("data", "train", "runs", "sweeps", "evaluate", "export", "monitor"):
            at.switch_page(f"views/{{page}}.py").run()
            assert not at.exception, (page, [e.value for e in at.exception])
            seen[page] = {HEAVY_LOADED}
        print(json.dumps(seen))
    """, run=run_id)
    assert not any(seen.values()), seen  # whatever page was used
    assert set(seen) == {"demo", "explain", "shap", "data", "train", "runs", "sweeps", "evaluate", "export",
                         "monitor"}
    logged = PredictionLog(workspace).recent(run_id)
    assert [r.source for r in logged] == ["demo"], logged  # the Demo's upload; Explain's test image is not traffic
    assert logged[0].format == "keras" and logged[0].image is None  # recent() leaves images out
    assert PredictionLog(workspace).get(logged[0].id).image is not None
