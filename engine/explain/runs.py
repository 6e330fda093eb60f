"""Moved: to `engine.explain.single`, and the class names to `RunFolder.class_names()`.

This name stays only until `engine/cli/explain.py` imports them from there.
"""

from engine.explain.single import explain_image, resolve_class, write_outputs  # noqa: F401
from engine.runfolder import RunFolder


def class_names(workspace, run_id: str) -> list[str]:
    return RunFolder(workspace, run_id).class_names()
