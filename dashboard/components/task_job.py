"""Following a task's job (a decode, a weights download: `engine.jobs.queue.submit_task`) from a page.

The job runs in its own process; the page only polls the store, so a reload, a second session or a
server restart finds the same job. Unlike `widgets.job_progress` (a run's job of one kind) this follows
one job by id and leaves its outcome to the caller, which knows what to show once it has ended.
"""

from __future__ import annotations

import streamlit as st

from dashboard.components import widgets
from engine import jobs
from engine.store import QUEUED, Job, Workspace


def follow(workspace: Workspace, job: Job, doing: str, *, cancel_key: str, cancel_label: str = "Cancel") -> None:
    """A progress bar with the job's line and a Cancel button, polled every second; the page reruns when it ends.

    Args:
        workspace: where the job is queued.
        job: an active job.
        doing: what the bar says it is doing, e.g. "Decoding into the cache".
        cancel_key: the Cancel button's widget key.
        cancel_label: the Cancel button's label.
    """

    def body() -> None:
        jobs.refresh(workspace)
        current = workspace.get_job(job.id)
        if not current.active:
            st.rerun()  # the whole page: the caller shows the outcome
        line = "queued, waiting for the job process" if current.status == QUEUED else (current.message or "starting")
        widgets.job_bar(workspace, current, f"{doing}: {line}", cancel_key=cancel_key, cancel_label=cancel_label)

    st.fragment(body, run_every="1s")()
