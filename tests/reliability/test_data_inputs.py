"""Issue 13 (11, data part): malformed inputs get errors that name the file and the fix, not raw ones or, worse,
a silently wrong dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.charades import read_frame_list
from datamodules.kinetics import read_annotations
from datamodules.moving_digits import MovingDigitsParams, ensure_moving_digits


def test_a_split_json_that_does_not_parse_names_its_file(tmp_path: Path) -> None:
    # before: json.JSONDecodeError "Expecting value: line 1 column 25 (char 24)", no file named
    (tmp_path / "splits").mkdir()
    path = tmp_path / "splits" / "train.json"
    path.write_text('{"abc": {"annotations": ')
    with pytest.raises(ValueError, match=r"train\.json is not valid JSON \(Expecting value.*write_split_json"):
        read_annotations(tmp_path, "train")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # another header (4 columns, other names): before, read as a frame of video 'video_id' without labels
        ("video_id frame_id path labels\nv1 0 v1/0.jpg 1\n", 1),
        # commas instead of spaces: before, one column holding the whole row, silently a video without frames' paths
        ("v1,v1,0,v1/0.jpg,1\n", 1),
        # a row with a non-integer label
        ("original_vido_id video_id frame_id path labels\nv1 v1 0 v1/0.jpg 1\nv1 v1 1 v1/1.jpg x\n", 3),
    ],
)
def test_a_charades_frame_list_of_another_format_is_refused(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "train.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"train\.csv, line {line}: .* is not a frame row; .*original_vido_id"):
        read_frame_list(path)


def test_a_well_formed_frame_list_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text('original_vido_id video_id frame_id path labels\nv1 v1 0 v1/0.jpg 1,3\nv1 v1 1 v1/1.jpg ""\n')
    frames = read_frame_list(path)
    assert list(frames.video_ids) == ["v1"] and list(frames.label_values) == [1, 3]


def test_moving_digits_under_a_data_dir_that_is_a_file_names_it(tmp_path: Path) -> None:
    # before: NotADirectoryError "[Errno 20] Not a directory: '<file>/.moving_digits.tmp-<host>-<pid>/data/train/up'"
    data_dir = tmp_path / "afile"
    data_dir.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"afile is a file, not a folder; point DATA_DIR \(data\.root\)"):
        ensure_moving_digits(data_dir / "moving_digits", MovingDigitsParams(), progress=False)
