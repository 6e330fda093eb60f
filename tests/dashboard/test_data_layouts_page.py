"""The Data page on split folders and manifests (scan shown before decoding), and the Runs page's data used."""

from __future__ import annotations

import pytest

from engine import store
from engine.runfolder import RunFolder
from tests.dashboard.apptest import texts
from tests.dashboard.test_pages import _zip, finished_run, open_page, table_with
from tests.helpers.images import write_image_folder


@pytest.fixture
def split_zip(tmp_path):
    root = tmp_path / "clothes"
    write_image_folder(root / "train", classes=("coat", "shirt", "shoe"), per_class=12, size=16)
    write_image_folder(root / "train" / "shoe", classes=("extra",), per_class=30, size=16)  # shoe: 42 images
    write_image_folder(root / "valid", classes=("coat", "shirt", "shoe"), per_class=3, size=16, seed=1)
    return _zip({f"clothes/{p.relative_to(root).as_posix()}": p.read_bytes() for p in root.rglob("*.png")})


def test_data_page_shows_the_layout_of_a_split_folder_zip_and_carries_it_to_train(workspace, split_zip):
    at = open_page()
    at.segmented_control(key="data.kind").set_value("Upload a zip").run()
    at.file_uploader(key="data.upload").upload("clothes.zip", split_zip, "application/zip").run()
    assert not at.exception and not at.error, texts(at.error)
    metrics = {m.label: m.value for m in at.metric}
    assert "**Layout:** split folders" in texts(at.markdown) and metrics["Classes"] == "3"
    assert "train 66 · validation 9" in " ".join(m.value for m in at.markdown)
    assert "No test split is given" in texts(at.info)
    counts = table_with(at, "validation")
    assert counts.loc["shoe", "train"] == 42 and counts.loc["coat", "validation"] == 3
    assert "imbalanced" in texts(at.warning) and "3.5×" in texts(at.warning)
    assert at.toggle(key="data.class_weight").value is True
    assert int(metrics["Validation"]) == 9, "the given validation split is used as it is"
    at.button(key="data.use").click().run()
    assert not at.exception
    assert at.selectbox(key="cfg.train.class_weight").value == "balanced"


def test_data_page_manifest_columns_can_be_chosen(workspace, tmp_path):
    root = tmp_path / "kaggle"
    write_image_folder(root / "img", classes=("a", "b"), per_class=6, size=8)
    rows = ["file,kind,colour"] + [f"img/{c}/{c}_{i}.png,{c},{'red' if i % 2 else 'blue'}"
                                    for c in ("a", "b") for i in range(6)]
    (root / "labels.csv").write_text("\n".join(rows))
    at = open_page()
    at.segmented_control(key="data.kind").set_value("Folder on the server").run()
    at.text_input(key="data.folder").input(str(root)).run()
    assert "**Layout:** manifest (CSV/TSV) · `labels.csv`" in texts(at.markdown)
    assert "labels from 'kind'" in texts(at.info)
    at.selectbox(key="data.manifest.label").set_value("colour").run()
    assert not at.error, texts(at.error)
    assert table_with(at, "all").index.tolist() == ["blue", "red"]


def test_runs_page_shows_the_data_a_run_used(workspace):
    run_id = finished_run(workspace)
    report = {"source": "/x", "layout": "split_folders", "notes": ["No test split is given: it is carved from train."],
              "class_names": ["coat", "shirt"], "fingerprint": "f",
              "counts": {"train": [5, 6], "val": [2, 2], "test": [1, 2]}, "skipped": []}
    store.write_json_atomic(RunFolder(workspace, run_id).data_report_file, report)
    store.write_json_atomic(RunFolder(workspace, run_id).weights_record_file,
                            {"base": "convnext_tiny", "source": "import", "sha256": "ab" * 32})
    at = open_page("runs", run=run_id)
    assert not at.exception
    assert "Split folders · 2 classes · train 11 · val 4 · test 3" in " ".join(m.value for m in at.markdown)
    assert "convnext_tiny base from **import** weights · sha256 `abababababab`" in texts(at.caption)
