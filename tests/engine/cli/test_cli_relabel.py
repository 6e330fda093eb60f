"""`relabel RUN --csv FILE` and `versions [SOURCE]`: fixes become a dataset version; a bad CSV writes nothing."""

from __future__ import annotations

import json

import pytest

from engine.cli import main
from engine.config import RunConfig
from engine.data import versions as dv
from tests.engine.cli.test_cli import cli
from tests.engine.data.test_versions import _tree_digest


@pytest.fixture
def folder_run(workspace, image_folder):
    """A run (queued, never trained: relabelling needs only its data) on a three-class folder."""
    config = RunConfig.from_dict({"name": "r", "data": {"source": str(image_folder), "image_size": 16, "seed": 2}})
    return workspace.create_run(config).id


def _csv(tmp_path, text: str, name: str = "fixes.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_relabel_prints_the_new_version_and_versions_lists_it(workspace, image_folder, folder_run, tmp_path):
    before = _tree_digest(image_folder)
    fixes = _csv(tmp_path, "file,new_label\ncircle/circle_0.png,square\ncross/cross_1.png,exclude\n"
                           "square/square_2.png,checked\n")
    result = cli("relabel", folder_run, "--csv", fixes, "--note", "two fixes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "version:1" and "--data version:1" in result.stderr
    version = dv.load_version(workspace.root, 1)
    assert version.counts() == {"relabel": 1, "exclude": 1, "checked": 1} and version.run_id == folder_run
    assert version.settings["seed"] == 2 and version.note == "two fixes"

    listed = cli("versions", image_folder, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [v["name"] for v in json.loads(listed.stdout)] == ["version:1"]
    table = cli("versions")
    assert "version:1" in table.stdout and "two fixes" in table.stdout
    assert _tree_digest(image_folder) == before


def test_relabel_json_and_training_on_a_version(workspace, folder_run, tmp_path, capsys):
    assert main(["relabel", folder_run, "--csv", str(_csv(tmp_path, "File,New_Label\ncircle/circle_0.png,cross\n")),
                 "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["name"] == "version:1" and made["changes"][0] == {
        "file": "circle/circle_0.png", "action": "relabel", "old_label": "circle", "new_label": "cross"}
    assert main(["train", "--data", "version:9"]) == 2
    assert "no dataset version 9" in capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    ("file,label\ncircle/circle_0.png,square\n", "unknown column(s) 'label'; missing new_label"),
    ("file,new_label,extra\ncircle/circle_0.png,square,1\n", "unknown column(s) 'extra'"),
    ("file,new_label\ncircle/circle_0.png,square\nnope/ghost.png,square\n", "row 3 (nope/ghost.png): no image"),
    ("file,new_label\ncircle/circle_0.png,triangle\n", "row 2 (circle/circle_0.png): 'triangle' is not one"),
    ("file,new_label\ncircle/circle_0.png,square\ncircle/circle_0.png,exclude\n", "row 3: 'circle/circle_0.png' is "
                                                                                  "already on row 2"),
    ("file,new_label\ncircle/circle_0.png,\n", "row 2: needs both a file and a new_label"),
    ("file,new_label\ncircle/circle_0.png,square,x\n", "row 2: more values"),
    ("file,new_label\n", "no rows to apply"),
    ("", "the columns must be file, new_label"),
    ("file,new_label\n../../etc/passwd,exclude\n", "no image with that id"),
])
def test_a_hostile_csv_is_refused_by_row_and_nothing_is_written(workspace, folder_run, tmp_path, capsys, text,
                                                                  message):
    assert main(["relabel", folder_run, "--csv", str(_csv(tmp_path, text))]) == 2
    error = capsys.readouterr().err
    assert message in error, error
    assert dv.list_versions(workspace.root) == []


def test_binary_or_missing_csvs_and_unknown_sources_get_clear_errors(workspace, folder_run, tmp_path, capsys):
    binary = tmp_path / "fixes.csv"
    binary.write_bytes(b"\xff\xfe\x00\x01garbage")
    assert main(["relabel", folder_run, "--csv", str(binary)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert main(["relabel", folder_run, "--csv", str(tmp_path / "none.csv")]) == 2
    assert "cannot read it" in capsys.readouterr().err
    assert main(["versions", "version:4"]) == 2
    assert "no dataset version 4" in capsys.readouterr().err
    assert main(["versions", "digits"]) == 0
    assert "no dataset versions of digits" in capsys.readouterr().out
