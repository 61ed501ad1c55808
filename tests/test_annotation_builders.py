"""Tests of the annotation JSON builders: real UCF101 split lists, hand-made ActivityNet and
VGGSound inputs with hand-computed segments."""
import io
import json
import os
import tarfile
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from util_scripts import activitynet_json, ucf101_json, vggsound_json

SHARED = Path(__file__).resolve().parents[2] / "shared"
UCF = SHARED / "data" / "UCF101"


def tiny_jpeg() -> np.ndarray:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 200, 30)).save(buffer, format="JPEG")
    return np.frombuffer(buffer.getvalue(), np.uint8)


def write_hdf5(path: Path, n_frames: int) -> None:
    """A video HDF5 file of `n_frames` identical tiny JPEG frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    items = np.empty(n_frames, dtype=object)
    items[:] = [tiny_jpeg()] * n_frames
    with h5py.File(path, "w") as f:
        f.create_dataset("video", data=items, dtype=h5py.vlen_dtype(np.dtype("uint8")))


def frames_of(video_id: str) -> int:
    """Frame count the UCF fixture gives `video_id`: 1, 2 or 3."""
    return 1 + zlib.crc32(video_id.encode()) % 3


def parse_list(path: Path) -> list[tuple[str, str]]:
    """Independent reading of an official list: (class, id) per line."""
    pairs = []
    for raw in path.read_bytes().split(b"\n"):
        name = raw.decode().strip().split(" ")[0]
        if name:
            cls, file = name.split("/")
            pairs.append((cls, file[: -len(".avi")]))
    return pairs


@pytest.fixture(scope="module")
def ucf(tmp_path_factory) -> dict:
    """Real split lists and audio tree; a 1-3 frame HDF5 for every listed video of the
    audio classes (symlinks to three template files, so thousands cost little)."""
    if not UCF.is_dir():
        pytest.skip(f"shared data not found at {UCF}")
    root = tmp_path_factory.mktemp("ucf")
    with tarfile.open(UCF / "audiocnn14embed512_features.tar.gz") as archive:
        members = [m for m in archive.getmembers()
                   if m.name.startswith("audiocnn14embed512_features")]
        archive.extractall(root, members=members, filter="data")
    audio = root / "audiocnn14embed512_features"
    classes = sorted(p.name for p in audio.iterdir() if p.is_dir())
    lists = UCF / "ucfTrainTestlist"
    expected = {subset: [(c, v) for c, v in parse_list(lists / f"{name}01.txt") if c in classes]
                for name, subset in (("trainlist", "training"), ("testlist", "validation"))}
    templates = {n: root / f"template_{n}.hdf5" for n in (1, 2, 3)}
    for n, path in templates.items():
        write_hdf5(path, n)
    videos = root / "hdf5"
    for cls in classes:
        (videos / cls).mkdir(parents=True)
    for pairs in expected.values():
        for cls, video_id in pairs:
            os.symlink(templates[frames_of(video_id)], videos / cls / f"{video_id}.hdf5")
    return {"root": root, "audio": audio, "videos": videos, "lists": lists,
            "classes": classes, "expected": expected}


def test_ucf51_split1_matches_the_spec(ucf):
    data, missing = ucf101_json.build_ucf_split(ucf["lists"], 1, ucf["videos"], ucf["audio"])
    assert missing == []
    assert data["labels"] == ucf["classes"] and len(data["labels"]) == 51
    database = data["database"]
    for subset, count in (("training", 4901), ("validation", 1944)):
        ids = [k for k, v in database.items() if v["subset"] == subset]
        assert len(ids) == count
        assert sorted(ids) == sorted(v for _, v in ucf["expected"][subset])
    for video_id, entry in database.items():
        assert entry["annotations"]["segment"] == [1, frames_of(video_id) + 1]
    # Ids keep the list's spelling (v_HandStandPushups) under the folder's label.
    assert database["v_HandStandPushups_g01_c01"]["annotations"]["label"] == "HandstandPushups"
    no_audio = [k for k, v in database.items() if v["subset"] == "training"
                and not (ucf["audio"] / v["annotations"]["label"] / f"{k}.npy").exists()]
    assert len(no_audio) == 8  # SPEC §1


def test_ucf_cli_reports_and_drops_a_missing_video(ucf, tmp_path, capsys):
    gone = ucf["videos"] / "Archery" / "v_Archery_g01_c01.hdf5"
    target = gone.readlink()
    gone.unlink()
    try:
        code = ucf101_json.main(["--dir_path", str(ucf["lists"]), "--video_path",
                                 str(ucf["videos"]), "--audio_path", str(ucf["audio"]),
                                 "--dst_path", str(tmp_path), "--video_type", "hdf5"])
    finally:
        os.symlink(target, gone)
    err = capsys.readouterr().err
    assert code == 0
    assert "warning: 1 of 6845 listed videos" in err and "v_Archery_g01_c01" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ucf51_01.json"]
    data = json.loads((tmp_path / "ucf51_01.json").read_text())
    assert "v_Archery_g01_c01" not in data["database"]
    assert len(data["database"]) == 6844


def test_ucf101_without_audio_keeps_classind_order(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "classInd.txt").write_bytes(b"1 Zeta\r\n2 Alpha\r\n")
    (lists / "trainlist02.txt").write_bytes(b"Zeta/v_Zeta_g01_c01.avi 1\r\n"
                                            b"Alpha/v_Alpha_g01_c01.avi 2\r\n")
    (lists / "testlist02.txt").write_bytes(b"Alpha/v_Alpha_g02_c01.avi\r\n")
    write_hdf5(tmp_path / "hdf5/Zeta/v_Zeta_g01_c01.hdf5", 5)
    write_hdf5(tmp_path / "hdf5/Alpha/v_Alpha_g01_c01.hdf5", 7)
    write_hdf5(tmp_path / "hdf5/Alpha/v_Alpha_g02_c01.hdf5", 2)
    code = ucf101_json.main(["--dir_path", str(lists), "--video_path", str(tmp_path / "hdf5"),
                             "--dst_path", str(tmp_path / "out")])
    assert code == 0
    data = json.loads((tmp_path / "out/ucf101_02.json").read_text())
    assert data == {"labels": ["Zeta", "Alpha"], "database": {
        "v_Zeta_g01_c01": {"subset": "training",
                           "annotations": {"label": "Zeta", "segment": [1, 6]}},
        "v_Alpha_g01_c01": {"subset": "training",
                            "annotations": {"label": "Alpha", "segment": [1, 8]}},
        "v_Alpha_g02_c01": {"subset": "validation",
                            "annotations": {"label": "Alpha", "segment": [1, 3]}}}}


def test_ucf_user_errors_are_one_line(tmp_path, capsys):
    code = ucf101_json.main(["--dir_path", str(tmp_path), "--video_path", str(tmp_path),
                             "--dst_path", str(tmp_path), "--split", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    assert "classInd.txt" in err


ACTIVITYNET = {
    "database": {
        # 250 frames over 10 s: 25 fps.
        "abc": {"subset": "training", "duration": 10.0, "annotations": [
            {"label": "Surfing", "segment": [2.0, 4.5]},
            {"label": "Archery", "segment": [0.0, 10.5]},
            {"label": "Surfing", "segment": [9.99, 12.0]}]},
        # 30 frames over 4 s: 7.5 fps; the HDF5 is named without the v_ prefix.
        "def": {"subset": "validation", "duration": 4.0, "annotations": [
            {"label": "Bowling", "segment": [1.1, 2.3]},
            {"label": "Bowling", "segment": [5.0, 6.0]}]},
        "ghi": {"subset": "testing", "duration": 3.0, "annotations": []},
        "jkl": {"subset": "training", "duration": 5.0, "annotations": [
            {"label": "Zumba", "segment": [0.0, 1.0]}]},
    },
    "taxonomy": [],
}


def test_activitynet_segments_are_frame_exact(tmp_path, capsys):
    write_hdf5(tmp_path / "hdf5/v_abc.hdf5", 250)
    write_hdf5(tmp_path / "hdf5/def.hdf5", 30)
    write_hdf5(tmp_path / "hdf5/v_ghi.hdf5", 12)
    (tmp_path / "anet.json").write_text(json.dumps(ACTIVITYNET))
    code = activitynet_json.main(["--annotation_path", str(tmp_path / "anet.json"),
                                  "--video_path", str(tmp_path / "hdf5"),
                                  "--dst_path", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0
    assert "1 of 4 listed videos" in err and "jkl" in err and "def_1" in err
    data = json.loads((tmp_path / "out/activitynet.json").read_text())
    assert data["labels"] == ["Archery", "Bowling", "Surfing", "Zumba"]
    # Hand-computed: first = max(1, floor(start * fps) + 1), end = min(n, ceil(end * fps)) + 1.
    assert data["database"] == {
        "abc_0": {"subset": "training", "video": "v_abc",
                  "annotations": {"label": "Surfing", "segment": [51, 114]}},
        "abc_1": {"subset": "training", "video": "v_abc",
                  "annotations": {"label": "Archery", "segment": [1, 251]}},
        "abc_2": {"subset": "training", "video": "v_abc",
                  "annotations": {"label": "Surfing", "segment": [250, 251]}},
        "def_0": {"subset": "validation", "video": "def",
                  "annotations": {"label": "Bowling", "segment": [9, 19]}},
        "ghi": {"subset": "testing", "video": "v_ghi", "annotations": {"segment": [1, 13]}},
    }


def test_activitynet_frame_math_survives_inexact_fps():
    # 0.3 s at 10 fps starts frame 4 and 0.7 s ends at frame 7, whatever the float error.
    assert activitynet_json.segment_frames(0.3, 0.7, 30 / 3.0, 30) == (4, 8)
    assert activitynet_json.segment_frames(0.3, 0.7, 9.9999999999999, 30) == (4, 8)


VGGSOUND_CSV = (
    'abc,30,"male speech, man speaking",train\n'
    "def,0,dog barking,test\n"
    'ghi,5,"male speech, man speaking",test\n'
    "x-y,120,cat purring,train\n"
)


def test_vggsound_quoted_labels_layouts_and_missing(tmp_path, capsys):
    (tmp_path / "vggsound.csv").write_text(VGGSOUND_CSV)
    write_hdf5(tmp_path / "hdf5/abc_000030.hdf5", 4)
    write_hdf5(tmp_path / "hdf5/def_000000.hdf5", 9)
    write_hdf5(tmp_path / "hdf5/cat purring/x-y_000120.hdf5", 3)
    code = vggsound_json.main(["--csv_path", str(tmp_path / "vggsound.csv"),
                               "--video_path", str(tmp_path / "hdf5"),
                               "--dst_path", str(tmp_path / "out.json")])
    err = capsys.readouterr().err
    assert code == 0 and "1 of 4 listed videos" in err and "ghi_000005" in err
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["labels"] == ["cat purring", "dog barking", "male speech, man speaking"]
    assert data["database"] == {
        "abc_000030": {"subset": "training", "video": "abc_000030", "annotations": {
            "label": "male speech, man speaking", "segment": [1, 5]}},
        "def_000000": {"subset": "validation", "video": "def_000000", "annotations": {
            "label": "dog barking", "segment": [1, 10]}},
        "x-y_000120": {"subset": "training", "video": "cat purring/x-y_000120",
                       "annotations": {"label": "cat purring", "segment": [1, 4]}},
    }


def test_vggsound_file_pattern_option(tmp_path):
    (tmp_path / "vggsound.csv").write_text(VGGSOUND_CSV)
    write_hdf5(tmp_path / "hdf5/def-0.hdf5", 2)
    clips = vggsound_json.read_vggsound_csv(tmp_path / "vggsound.csv")
    data, missing = vggsound_json.build_vggsound(clips, tmp_path / "hdf5", "{youtube_id}-{start}")
    assert list(data["database"]) == ["def-0"]
    assert missing == ["abc-30", "ghi-5", "x-y-120"]


def test_vggsound_bad_row_names_file_and_line(tmp_path, capsys):
    (tmp_path / "vggsound.csv").write_text("abc,30,dog,train\nabc,30,dog,holdout\n")
    (tmp_path / "hdf5").mkdir()
    code = vggsound_json.main(["--csv_path", str(tmp_path / "vggsound.csv"),
                               "--video_path", str(tmp_path / "hdf5"),
                               "--dst_path", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith(f"error: {tmp_path / 'vggsound.csv'}:2:")


@pytest.mark.parametrize("kind, words", [("missing", "does not exist (pass the official vggsound.csv)"),
                                         ("folder", "is a folder, not a file: pass the official vggsound.csv")])
def test_vggsound_csv_path_that_is_not_a_file_is_named_as_such(tmp_path, capsys, kind, words):
    if kind == "folder":
        (tmp_path / "vggsound.csv").mkdir()
    (tmp_path / "hdf5").mkdir()
    code = vggsound_json.main(["--csv_path", str(tmp_path / "vggsound.csv"), "--video_path", str(tmp_path / "hdf5"),
                               "--dst_path", str(tmp_path / "out.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"error: --csv_path {tmp_path / 'vggsound.csv'} {words}"
