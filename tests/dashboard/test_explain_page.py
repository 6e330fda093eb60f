"""The Explain page in AppTest: empty state, and a run with a real (untrained) model explained by all three methods."""

from __future__ import annotations


import pytest
from streamlit.testing.v1 import AppTest

from engine.config import ModelConfig, RunConfig
from engine.runfolder import RunFolder
from tests.dashboard.apptest import HEAVY_LOADED, in_fresh_interpreter, open_app, texts



def open_explain(**query) -> AppTest:
    return open_app("explain", timeout=120, **query)


def test_empty_state(workspace):
    workspace.create_run(RunConfig())  # queued: no model yet
    at = open_explain()
    assert "No finished run to explain yet" in texts(at.info)


@pytest.mark.slow
def test_gradcam_inline_then_shap_and_lime_on_request(workspace):
    from tests.dashboard.test_evaluate_page import completed_run

    from engine.models import make_model

    run_id = completed_run(workspace)
    make_model(ModelConfig(), (16, 16, 3), 10, seed=0).save(RunFolder(workspace, run_id).model_file)
    predictions_ids = RunFolder(workspace, run_id).predictions().ids
    at = open_explain(run=run_id, image=str(predictions_ids[3]))
    assert at.selectbox(key="explain.run").value == run_id
    assert at.number_input(key="explain.index").value == 3
    captions = texts(at.caption)
    assert "deletion AUC" in captions and "Not run yet" in captions
    assert "beats chance" in texts(at.info) or "caution" in texts(at.info)
    at.button(key="explain.run_slow").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert texts(at.caption).count("deletion AUC") == 3
    at.selectbox(key="explain.class").set_value(2).run()
    assert not at.exception
    assert texts(at.caption).count("deletion AUC") == 3


# -- batch mode: the most confident mistakes ----------------------------------------------------------


def run_with_batch(workspace, count: int = 3) -> str:
    """A completed digits run with a real (untrained) LeNet-5 and a stored batch of `count` Grad-CAM explanations,
    made synchronously by the engine function the `explain` job runs."""
    from tests.dashboard.test_evaluate_page import completed_run

    from engine.explain import batch
    from engine.models import make_model

    run_id = completed_run(workspace)
    make_model(ModelConfig(), (16, 16, 3), 10, seed=0).save(RunFolder(workspace, run_id).model_file)
    batch.explain_mistakes(workspace, run_id, batch.MistakesRequest(count=count))
    return run_id


@pytest.mark.slow
def test_a_stored_batch_renders_without_tensorflow_and_opens_one_image(workspace):
    from engine.explain import batch

    run_id = run_with_batch(workspace)
    stored = batch.load_mistakes(workspace, run_id)
    # A fresh interpreter (as a restarted server) shows the stored batch without importing TensorFlow.
    seen = in_fresh_interpreter(f"""
        at.switch_page("views/explain.py").run()
        assert not at.exception, [e.value for e in at.exception]
        print(json.dumps([len(at.image), {HEAVY_LOADED}]))
    """, run=run_id, view="mistakes")
    assert seen == [6, False]  # 3 images + 3 overlays, no TensorFlow

    at = open_explain(run=run_id, view="mistakes")
    assert at.segmented_control(key="explain.view").value == "Most confident mistakes"
    assert "The 3 most confident mistakes" in texts(at.subheader)
    summary = next(f.value for f in at.dataframe if "Beats random" in f.value.columns)
    assert summary["Method"].tolist() == ["Grad-CAM"] and summary["Images"].tolist() == [3]
    assert summary["Mean seconds"].iloc[0] == pytest.approx(stored.summary["gradcam"].mean_seconds)
    markdown = texts(at.markdown)
    for row in stored.rows:
        assert f"**#{row.rank}** · true **{row.true_name}** → predicted **{row.predicted_name}**" in markdown
    assert texts(at.caption).count("· ins ") == 3 and "random" in texts(at.caption)
    assert len(at.image) == 6

    at.button(key="explain.batch.open.2").click().run()  # the second mistake, in the single-image view
    assert not at.exception, [e.value for e in at.exception]
    assert dict(at.query_params) == {"run": run_id, "image": stored.rows[1].id}
    assert at.segmented_control(key="explain.view").value == "One image"
    assert at.number_input(key="explain.index").value == stored.rows[1].position
    assert "deletion AUC" in texts(at.caption)


def test_the_batch_form_queues_a_job_and_its_cancel_works(workspace):
    """No TensorFlow: another job holds the only slot, so the batch stays queued until it is cancelled."""
    from tests.dashboard.test_evaluate_page import completed_run

    from engine.explain import batch

    run_id = completed_run(workspace)
    RunFolder(workspace, run_id).model_file.write_bytes(b"never loaded here")
    busy = workspace.create_run(RunConfig())
    holder = workspace.claim_next_job(limit=10)  # "running", no process yet: refresh leaves it alone for a while
    at = open_explain(run=run_id, view="mistakes")
    assert "No mistakes explained yet" in texts(at.info)
    assert at.number_input(key="explain.batch.count").value == 8
    at.number_input(key="explain.batch.count").set_value(2).run()
    at.pills(key="explain.batch.methods").set_value(["gradcam", "lime"]).run()
    assert at.button(key="explain.batch.start").label == "Explain 2 mistakes"
    workspace.heartbeat(holder.id)
    at.button(key="explain.batch.start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = workspace.latest_job(run_id, batch.EXPLAIN_JOB)
    assert job is not None and job.status == "queued"
    request = job.request
    assert request == {"count": 2, "methods": ["gradcam", "lime"], "params": {}}
    assert at.button(key="explain.batch.start").disabled
    cancel = [b for b in at.button if b.key.startswith("explain.job.cancel")]  # the shared job widget's Cancel
    assert [b.label for b in cancel] == ["Cancel"]
    cancel[0].click().run()
    assert workspace.get_job(job.id).status == "cancelled"
    assert not at.button(key="explain.batch.start").disabled and "was cancelled" in texts(at.info)
    workspace.finish_job(holder.id, "cancelled")
    workspace.delete_run(busy.id)


def test_the_batch_view_says_why_there_is_nothing_to_explain(workspace):
    from tests.dashboard.test_evaluate_page import completed_run

    run = workspace.create_run(RunConfig())
    job = workspace.claim_next_job(limit=10)
    RunFolder(workspace, run.id).model_file.write_bytes(b"never loaded here")
    workspace.finish_job(job.id, "completed")
    at = open_explain(run=run.id, view="mistakes")
    assert "has no test predictions" in texts(at.info)
    assert not [b for b in at.button if b.key == "explain.batch.start"]

    perfect = completed_run(workspace, mistakes=0.0)
    RunFolder(workspace, perfect).model_file.write_bytes(b"never loaded here")
    at = open_explain(run=perfect, view="mistakes")
    assert "makes no mistakes on its test set" in texts(at.success)
    assert not [b for b in at.button if b.key == "explain.batch.start"]
