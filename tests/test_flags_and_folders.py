"""--method_args / --dataset_args values typed by the constructor's defaults, and an output folder
holding someone else's files left alone."""

import os

import pytest

from apps import run_dir
from tfaux import strategies


@pytest.mark.parametrize("text, expected", [("weighted=false", False), ("weighted=False", False),
                                            ("weighted=0", False), ("weighted=true", True), ("weighted=1", True)])
def test_booleans_take_the_usual_spellings(text, expected):
    args = strategies.method_args("gcs", text)
    assert args == {"weighted": expected}
    assert strategies.get("gcs", **args).weighted is expected


@pytest.mark.parametrize("method, text, words", [
    ("gcs", "weighted=yes", "'weighted' is true or false"),
    ("arml", "temperature=True", "'temperature' is not true or false"),
    ("arml", "interval=2.5", "'interval' is a whole number"),
    ("dwa", "temperature=hot", "'temperature' is a number"),
    ("dwa", "temperature=True", "'temperature' is a number"),
    ("stl", "trainable=False", "it accepts: none"),
])
def test_mistyped_values_name_the_argument_and_type(method, text, words):
    with pytest.raises(strategies.MethodError, match=words):
        strategies.method_args(method, text)


def test_accepted_names_are_the_methods_own():
    assert list(strategies.accepted_args("stl")) == []
    assert list(strategies.accepted_args("gcs")) == ["weighted"]
    assert strategies.method_args("dwa", "temperature=3") == {"temperature": 3.0}


def test_a_folder_of_someone_elses_files_is_refused_and_kept(tmp_path):
    os.makedirs(tmp_path / "logs")
    (tmp_path / "logs" / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(run_dir.OutputDirError, match="no tfaux run wrote .*logs"):
            with run_dir.Claim(str(tmp_path), {"method": "stl"}, overwrite=overwrite):
                pass
    assert (tmp_path / "logs" / "notes.txt").read_text() == "mine"


def test_a_runs_own_folder_is_cleared_of_its_outputs_only(tmp_path):
    with run_dir.Claim(str(tmp_path), {"method": "stl"}):
        (tmp_path / "history.csv").write_text("epoch\n")
    (tmp_path / "notes.txt").write_text("mine")
    with run_dir.Claim(str(tmp_path), {"method": "stl"}):  # a fresh start over its own run: outputs go
        pass
    assert not (tmp_path / "history.csv").exists() and (tmp_path / "notes.txt").exists()
    with run_dir.Claim(str(tmp_path / "new"), {"method": "stl"}):  # a new folder
        pass


def test_unusable_output_folders_get_one_sentence(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(run_dir.OutputDirError, match="which is a file"):
        run_dir.checked_path(str(tmp_path / "a_file" / "run"))
    with pytest.raises(run_dir.OutputDirError, match="cannot be used"):
        with run_dir.Claim(str(tmp_path / ("x" * 300)), {"method": "stl"}):
            pass


def test_flags_a_method_does_not_read(parse, tmp_path):
    from apps import compare, experiment

    with pytest.raises(SystemExit, match="--aux_weights sets the fixed task weights"):
        experiment.main_with_errors(parse("--method=stl", "--aux_weights=rotation=0.5", f"--output_dir={tmp_path}"))
    assert compare.for_method("stl", ["--upper_lr=5", "--aux_weights=rotation=2", "--epochs=2", "--solver=cg"]) == [
        "--epochs=2"]
    assert compare.for_method("equal", ["--upper_lr=5", "--aux_weights=rotation=2"]) == ["--aux_weights=rotation=2"]
    assert compare.for_method("jtds", ["--upper_lr=5", "--dev_batch_size=8"]) == ["--upper_lr=5", "--dev_batch_size=8"]
