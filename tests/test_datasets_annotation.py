"""Annotation JSON loading, validation and path resolution (SPEC §1 + DESIGN.md)."""
import json
import logging

import pytest

from datasets import (check_audio_classes, check_n_classes, classes_without_audio_folder, load_annotation,
                      resolve_samples)
from errors import UserError


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


@pytest.mark.parametrize("data", [{"database": {}}, {"labels": []}, [1, 2]])
def test_missing_keys_name_the_file(tmp_path, data):
    path = write_json(tmp_path / "broken.json", data)
    with pytest.raises(ValueError, match=r"broken\.json: .*'labels' and 'database'"):
        load_annotation(path)


def test_invalid_json_and_missing_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: not a valid JSON"):
        load_annotation(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match=r"nothere\.json does not exist"):
        load_annotation(tmp_path / "nothere.json")


def test_check_n_classes_message(tmp_path):
    path = write_json(tmp_path / "ucf101_01.json",
                      {"labels": [f"c{i}" for i in range(101)], "database": {}})
    check_n_classes(path, 101)
    with pytest.raises(ValueError) as info:
        check_n_classes(load_annotation(path), 51)
    assert str(info.value) == f"--n_classes 51 but {path} lists 101 labels: pass --n_classes 101"


def test_paths_labels_segments_and_audio(tmp_path, caplog):
    database = {
        "v_a_1": {"subset": "training", "annotations": {"label": "Bb", "segment": [1, 11]}},
        "v_a_2": {"subset": "training", "annotations": {"label": "Aa", "segment": [5, 9]}},
        "seg_3": {"subset": "training", "annotations": {"label": "Aa", "segment": [20, 40]},
                  "video": "long/video_x"},
        "v_val": {"subset": "validation", "annotations": {"label": "Aa", "segment": [1, 5]}},
    }
    path = write_json(tmp_path / "ann.json", {"labels": ["Aa", "Bb"], "database": database})
    for stem in ("Bb/v_a_1", "Aa/v_a_2", "long/video_x", "Aa/v_val"):
        touch(tmp_path / "hdf5" / f"{stem}.hdf5")
    for stem in ("Bb/v_a_1", "long/video_x"):
        touch(tmp_path / "audio" / f"{stem}.npy")
    with caplog.at_level(logging.INFO, logger="datasets.annotation"):
        samples = resolve_samples(load_annotation(path), "training", tmp_path / "hdf5",
                                  tmp_path / "audio")
    assert [s.sample_id for s in samples] == ["v_a_1", "v_a_2", "seg_3"]
    assert [s.label for s in samples] == [1, 0, 0]
    assert [s.segment for s in samples] == [(1, 11), (5, 9), (20, 40)]
    assert samples[2].hdf5_file == tmp_path / "hdf5" / "long" / "video_x.hdf5"
    assert [s.audio_file for s in samples] == [tmp_path / "audio" / "Bb" / "v_a_1.npy", None,
                                               tmp_path / "audio" / "long" / "video_x.npy"]
    assert "1 of 3 samples have no audio feature" in caplog.text


def test_user_errors_are_one_line(tmp_path):
    database = {"x": {"subset": "training", "annotations": {"label": "Zz", "segment": [1, 5]}}}
    path = write_json(tmp_path / "ann.json", {"labels": ["Aa"], "database": database})
    (tmp_path / "hdf5").mkdir()
    annotation = load_annotation(path)
    with pytest.raises(ValueError, match=r"ann\.json: sample x has label 'Zz'"):
        resolve_samples(annotation, "training", tmp_path / "hdf5")
    with pytest.raises(ValueError, match="subset 'train' is not one of"):
        resolve_samples(annotation, "train", tmp_path / "hdf5")
    with pytest.raises(ValueError, match=r"no samples with subset 'validation' \(its samples by subset: training 1\)"):
        resolve_samples(annotation, "validation", tmp_path / "hdf5")
    with pytest.raises(FileNotFoundError, match="--video_path .*nowhere does not exist"):
        resolve_samples(annotation, "training", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="--audio_path .*noaudio does not exist"):
        resolve_samples(annotation, "training", tmp_path / "hdf5", tmp_path / "noaudio")


def test_bad_segment_is_rejected(tmp_path):
    database = {"x": {"subset": "training", "annotations": {"label": "Aa", "segment": [0, 5]}}}
    path = write_json(tmp_path / "ann.json", {"labels": ["Aa"], "database": database})
    touch(tmp_path / "hdf5" / "Aa" / "x.hdf5")
    with pytest.raises(ValueError, match=r"sample x has segment \[0, 5\]"):
        resolve_samples(load_annotation(path), "training", tmp_path / "hdf5")


def test_classes_without_audio_folder_only_for_a_layout_by_class(tmp_path):
    path = write_json(tmp_path / "ann.json", {"labels": ["Bb", "Aa", "Cc"], "database": {}})
    annotation = load_annotation(path)
    audio = tmp_path / "audio"
    audio.mkdir()
    touch(audio / "v_x.npy")                                    # flat layout: nothing to say
    assert classes_without_audio_folder(annotation, audio) == []
    (audio / "Aa").mkdir()
    touch(audio / "Bb")                                         # a file is not a class folder
    assert classes_without_audio_folder(annotation, audio) == ["Bb", "Cc"]
    (audio / "Bb").unlink()
    for label in ("Bb", "Cc"):
        (audio / label).mkdir()
    assert classes_without_audio_folder(annotation, audio) == []


def test_use_audio_without_audio_path_asks_for_it(tmp_path):
    annotation = load_annotation(write_json(tmp_path / "ann.json", {"labels": ["Aa"], "database": {}}))
    with pytest.raises(UserError) as raised:
        check_audio_classes(annotation, None)
    message = str(raised.value)
    assert message.startswith("--use_audio needs --audio_path") and "None" not in message
