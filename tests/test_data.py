"""Labelled datasets: generic manifests, MusicEval and AES-Natural layouts, group-wise splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from drasp_cli.data import ClipInput, Example, load_dataset, read_manifest, split_by_group
from drasp_cli.errors import ConfigError, DataError


def _audio(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(160, dtype=np.float32), 16000)
    return path


# ---------------------------------------------------------------- MusicEval, as distributed


def _clip_name(system: str, prompt: str) -> str:
    return f"audiomos2025-track1-{system}_{prompt}.wav"


def _musiceval(root: Path, lists: dict[str, list[tuple[str, float, float]]]) -> Path:
    """A MusicEval folder: wav/, sets/<split>_mos_list.txt, prompt_info.txt, demo_prompt_info.txt."""
    (root / "sets").mkdir(parents=True)
    for split, rows in lists.items():
        (root / "sets" / f"{split}_mos_list.txt").write_text("".join(f"{n},{mi},{ta}\n" for n, mi, ta in rows))
        for name, _, _ in rows:
            _audio(root / "wav" / name)
    (root / "prompt_info.txt").write_text(
        "id\ttext\nP001\ta calm piano piece\nP002\tfast drum and bass, 174 bpm\nP003\tjazz trio\n"
    )
    # S001 is a demo system: its prompts are listed per file, and its P numbers are its own.
    (root / "demo_prompt_info.txt").write_text(
        f"id\ttext\n{_clip_name('S001', 'P001')}\tan orchestral fanfare from the demo page\n"
    )
    return root


MUSICEVAL_LISTS = {
    "train": [
        (_clip_name("S002", "P001"), 3.2, 4.0),
        (_clip_name("S002", "P002"), 2.5, 3.5),
        (_clip_name("S003", "P001"), 4.125, 4.5),
        (_clip_name("S001", "P001"), 3.0, 2.0),
    ],
    "dev": [(_clip_name("S003", "P002"), 1.5, 2.25)],
    "test": [(_clip_name("S004", "P003"), 5.0, 4.75)],
}


def test_musiceval_folder_loads_labels_prompts_systems_and_splits(tmp_path):
    root = _musiceval(tmp_path / "MusicEval-full", MUSICEVAL_LISTS)
    ds = load_dataset(str(root))

    assert ds.name == "MusicEval"
    assert ds.axes == ("MI", "TA")
    assert [len(ds.train), len(ds.val), len(ds.test)] == [4, 1, 1]
    by_name = {Path(e.clip.path).name: e for e in ds.split("all")}
    ex = by_name[_clip_name("S003", "P001")]
    assert ex.labels == {"MI": 4.125, "TA": 4.5}
    assert ex.clip.system == "S003"
    assert ex.clip.prompt == "a calm piano piece"
    assert ex.track == "P001"
    assert Path(ex.clip.path) == root / "wav" / _clip_name("S003", "P001")
    # A comma inside a prompt survives; the list's comma split does not touch prompts.
    assert by_name[_clip_name("S002", "P002")].clip.prompt == "fast drum and bass, 174 bpm"
    # The demo system takes its prompt by file name, and its P001 is not the regular P001.
    demo = by_name[_clip_name("S001", "P001")]
    assert demo.clip.prompt == "an orchestral fanfare from the demo page"
    assert demo.track != "P001"
    assert ds.val[0].labels == {"MI": 1.5, "TA": 2.25}
    assert ds.test[0].clip.system == "S004"


def test_musiceval_nested_archive_folder_single_list_and_axes(tmp_path):
    # The archive unpacks to MusicEval-full/MusicEval-full/.
    _musiceval(tmp_path / "MusicEval-full" / "MusicEval-full", MUSICEVAL_LISTS)
    ds = load_dataset(str(tmp_path / "MusicEval-full"), axes=("ta",))
    assert ds.axes == ("TA",)
    assert ds.train[0].labels == {"TA": 4.0}

    one = load_dataset(str(tmp_path / "MusicEval-full" / "MusicEval-full" / "sets" / "dev_mos_list.txt"))
    assert (len(one.train), len(one.val), len(one.test)) == (0, 1, 0)
    assert one.val[0].clip.prompt == "fast drum and bass, 174 bpm"


def test_musiceval_val_fraction_by_track_keeps_a_prompt_together(tmp_path):
    root = _musiceval(tmp_path / "me", MUSICEVAL_LISTS)
    ds = load_dataset(str(root), val_fraction=0.4, split_by="track", seed=3)
    train_tracks = {e.track for e in ds.train}
    val_tracks = {e.track for e in ds.val}
    assert ds.val and ds.train
    assert not train_tracks & val_tracks
    assert len(ds.train) + len(ds.val) == 5  # train and dev are redrawn; test stays test
    assert [e.clip.system for e in ds.test] == ["S004"]


@pytest.mark.parametrize(
    "line, message",
    [
        (f"{_clip_name('S002', 'P001')},3.2\n", "line 2: expected <file>,<MI>,<TA>"),
        (f"{_clip_name('S002', 'P001')},good,4\n", "line 2: MI 'good' is not a number"),
        ("S002-P001.wav,3,4\n", "line 2: 'S002-P001.wav' is not named like"),
        (f"{_clip_name('S002', 'P009')},3,4\n", "line 2: no prompt for"),
    ],
)
def test_musiceval_malformed_list_line_names_file_and_line(tmp_path, line, message):
    root = _musiceval(tmp_path / "me", MUSICEVAL_LISTS)
    _audio(root / "wav" / _clip_name("S002", "P009"))
    lst = root / "sets" / "dev_mos_list.txt"
    lst.write_text(lst.read_text() + line)
    with pytest.raises(DataError) as e:
        load_dataset(str(root))
    assert str(lst) in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_musiceval_demo_clip_never_takes_a_regular_prompt(tmp_path):
    # S006 is a demo system; its P002 is not prompt_info's P002, so a missing demo entry is an error.
    root = _musiceval(tmp_path / "me", {"train": [(_clip_name("S006", "P002"), 3.0, 3.0)]})
    with pytest.raises(DataError, match=r"train_mos_list\.txt line 1: no prompt for .*S006_P002\.wav in .*demo_prompt_info\.txt"):
        load_dataset(str(root))


def test_musiceval_missing_audio_is_reported(tmp_path):
    root = _musiceval(tmp_path / "me", MUSICEVAL_LISTS)
    (root / "wav" / _clip_name("S004", "P003")).unlink()
    with pytest.raises(DataError, match=r"test_mos_list\.txt line 1: audio file .*S004_P003\.wav not found"):
        load_dataset(str(root))


# ---------------------------------------------------------------- AES-Natural / AudioMOS 2025 track 2

AES_HEADER = "sample_id,data_path,Production_Quality,Production_Complexity,Content_Enjoyment,Content_Usefulness\n"
AES_TRAIN = [
    ("audiomos2025-track2-audio-unbalanced_train_segments_audio_-7Wu-EpG838_30000_40000",
     "/your_path/unbalanced_train_segments/audio/-7Wu-EpG838_30000_40000.flac", "4.1,3.5,3.0,4.3"),
    ("audiomos2025-track2-music-MUSDB18_train_Leaf_-_Summerghost_drums",
     "/your_path/MUSDB18/train/Leaf - Summerghost/drums.wav", "8.2,2.5,7.1,7.7"),
    ("audiomos2025-track2-music-MUSDB18_train_Leaf_-_Summerghost_mixture",
     "/your_path/MUSDB18/train/Leaf - Summerghost/mixture.wav", "8.2,6.0,7.8,7.9"),
    ("audiomos2025-track2-music-MUSDB18_train_Jokers_Jacks_&_Kings_-_Sea_Of_Leaves_mixture",
     '"/your_path/MUSDB18/train/Jokers, Jacks & Kings - Sea Of Leaves/mixture.wav"', "7.1,6.8,7.1,6.8"),
    ("audiomos2025-track2-speech-EARS_p009_emo_distress_sentences",
     "/your_path/EARS/p009/emo_distress_sentences.wav", "7.8,1.1,6.2,7.7"),
]
AES_DEV = [
    ("audiomos2025-track2-music-musiccaps_0hw_BB4QN34", "/your_path/musiccaps/0hw_BB4QN34.wav", "7.3,3.2,7.0,7.2"),
    ("audiomos2025-track2-speech-LibriTTS_train-clean-360_1445_139387_1445_139387_000005_000003",
     "/your_path/LibriTTS/train-clean-360/1445/139387/1445_139387_000005_000003.wav", "7.3,1.3,6.6,7.4"),
]


def _aes(folder: Path, audio_root: Path) -> Path:
    folder.mkdir(parents=True)
    for split, rows in (("train", AES_TRAIN), ("dev", AES_DEV)):
        text = AES_HEADER + "".join(f"{sid},{path},{scores}\n" for sid, path, scores in rows)
        (folder / f"audiomos2025-track2-{split}_list.csv").write_text(text)
        for _, path, _ in rows:
            _audio(audio_root / path.strip('"').removeprefix("/your_path/"))
    return folder


def test_aes_folder_replaces_the_placeholder_and_names_corpora(tmp_path):
    folder = _aes(tmp_path / "audiomos2025_track2", tmp_path / "corpora")
    ds = load_dataset(str(folder), audio_root=str(tmp_path / "corpora"))

    assert ds.name == "AES-Natural"
    assert ds.axes == ("PQ", "PC", "CE", "CU")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (5, 2, 0)
    first = ds.train[0]
    assert first.labels == {"PQ": 4.1, "PC": 3.5, "CE": 3.0, "CU": 4.3}
    assert Path(first.clip.path) == tmp_path / "corpora" / "unbalanced_train_segments/audio/-7Wu-EpG838_30000_40000.flac"
    assert first.clip.prompt is None
    assert [e.clip.system for e in ds.train] == ["AudioSet", "MUSDB18", "MUSDB18", "MUSDB18", "EARS"]
    assert [e.clip.system for e in ds.val] == ["MusicCaps", "LibriTTS"]
    # Stems of one song share a track; the AudioSet segment suffix is not part of the video's track.
    assert ds.train[1].track == ds.train[2].track == "MUSDB18:Leaf - Summerghost"
    assert ds.train[0].track == "AudioSet:-7Wu-EpG838"
    assert ds.train[4].track == "EARS:p009"
    assert ds.val[1].track == "LibriTTS:1445"
    # A quoted data_path with a comma in the song name.
    assert ds.train[3].clip.path.endswith("Jokers, Jacks & Kings - Sea Of Leaves/mixture.wav")


def test_aes_single_list_and_long_axis_names(tmp_path):
    folder = _aes(tmp_path / "t2", tmp_path / "corpora")
    ds = load_dataset(
        str(folder / "audiomos2025-track2-dev_list.csv"),
        audio_root=str(tmp_path / "corpora"),
        axes=("Content_Enjoyment", "pq"),
    )
    assert ds.axes == ("CE", "PQ")
    assert (len(ds.train), len(ds.val)) == (0, 2)
    assert ds.val[0].labels == {"CE": 7.0, "PQ": 7.3}


def test_aes_without_audio_root_says_what_to_pass(tmp_path):
    folder = _aes(tmp_path / "t2", tmp_path / "corpora")
    with pytest.raises(DataError, match=r"train_list\.csv line 2: .*placeholder /your_path; pass audio_root"):
        load_dataset(str(folder))


def test_aes_bad_rating_names_file_and_line(tmp_path):
    folder = _aes(tmp_path / "t2", tmp_path / "corpora")
    lst = folder / "audiomos2025-track2-dev_list.csv"
    lst.write_text(lst.read_text().replace("7.3,1.3,6.6,7.4", "7.3,,6.6,7.4"))
    with pytest.raises(DataError, match=r"dev_list\.csv line 3: no production_complexity rating"):
        load_dataset(str(folder), audio_root=str(tmp_path / "corpora"))


def test_aes_evaluation_annotations_average_the_ratings(tmp_path):
    jsonl = tmp_path / "audiomos2025_track2_human_annotations.jsonl"
    rows = [
        {"data_path": "audiomos2025-track2-sys0v1wm-utt0dJodp", "Production_Quality": [3.0, 4.0, 8.0],
         "Production_Complexity": [7.0, 6.0, 5.0], "Content_Enjoyment": [2.0, 1.0, 3.0], "Content_Usefulness": [3.0, 3.0, 6.0]},
        {"data_path": "audiomos2025-track2-sys1abcd-utt1gXajn", "Production_Quality": [5.0],
         "Production_Complexity": [2.0], "Content_Enjoyment": [1.0], "Content_Usefulness": [1.0]},
    ]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _audio(tmp_path / "eval" / "audiomos2025-track2-sys0v1wm-utt0dJodp.wav")
    _audio(tmp_path / "eval" / "audiomos2025-track2-sys1abcd-utt1gXajn.wav")
    ds = load_dataset(str(jsonl), audio_root=str(tmp_path / "eval"))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (0, 0, 2)
    assert ds.test[0].labels == {"PQ": 5.0, "PC": 6.0, "CE": 2.0, "CU": 4.0}
    assert [e.clip.system for e in ds.test] == ["sys0v1wm", "sys1abcd"]


# ---------------------------------------------------------------- generic labelled manifests


def _manifest(tmp_path: Path, rows: list[str], header: str, name: str = "m.csv") -> Path:
    for row in rows:
        _audio(tmp_path / row.split(",")[0])
    p = tmp_path / name
    p.write_text(header + "\n" + "\n".join(rows) + "\n")
    return p


def test_manifest_split_column_decides_and_axes_keep_their_spelling(tmp_path):
    p = _manifest(
        tmp_path,
        ["a.wav,A,train,3.5,4", "b.wav,B,dev,2,1.5", "c.wav,C,test,4.25,3", "d.wav,A,train,1,2"],
        "path,system,split,Overall,Textual",
    )
    ds = load_dataset(str(p))
    assert ds.name == str(p)
    assert ds.axes == ("Overall", "Textual")
    assert [Path(e.clip.path).name for e in ds.train] == ["a.wav", "d.wav"]
    assert [Path(e.clip.path).name for e in ds.val] == ["b.wav"]
    assert ds.test[0].labels == {"Overall": 4.25, "Textual": 3.0}
    assert Path(ds.train[0].clip.path) == tmp_path / "a.wav"
    assert load_dataset(str(p), axes=("textual",)).train[1].labels == {"Textual": 2.0}
    # The scoring reader still reads the same file as plain clips.
    assert [c.system for c in read_manifest(p)] == ["A", "B", "C", "A"]


def _grouped_manifest(tmp_path: Path) -> Path:
    rows = [f"s{s}_t{t}_{i}.wav,S{s},T{t},{1 + (s + t + i) % 4}" for s in range(5) for t in range(3) for i in range(2)]
    return _manifest(tmp_path, rows, "path,system,track,MOS")


@pytest.mark.parametrize("by", ["system", "track"])
def test_val_fraction_never_puts_a_group_on_both_sides(tmp_path, by):
    p = _grouped_manifest(tmp_path)
    ds = load_dataset(str(p), val_fraction=0.3, split_by=by, seed=7)
    group = (lambda e: e.clip.system) if by == "system" else (lambda e: e.track)
    assert ds.train and ds.val and not ds.test
    assert not {group(e) for e in ds.train} & {group(e) for e in ds.val}
    assert len(ds.train) + len(ds.val) == 30
    assert 0.15 <= len(ds.val) / 30 <= 0.45
    again = load_dataset(str(p), val_fraction=0.3, split_by=by, seed=7)
    assert [e.clip.path for e in again.val] == [e.clip.path for e in ds.val]


def test_split_by_group_does_not_depend_on_example_order():
    ex = [Example(ClipInput(f"{s}{i}.wav", system=s), {"MOS": 1.0}) for s in "ABCDEFGH" for i in range(3)]
    val_a = {e.clip.path for e in split_by_group(ex, 0.25, seed=1)[1]}
    val_b = {e.clip.path for e in split_by_group(ex[::-1], 0.25, seed=1)[1]}
    assert val_a == val_b
    seeds = {frozenset(e.clip.system for e in split_by_group(ex, 0.25, seed=s)[1]) for s in range(10)}
    assert len(seeds) > 1  # the seed does choose


def test_one_large_group_still_leaves_both_sides_non_empty():
    ex = [Example(ClipInput(f"a{i}.wav", system="A"), {"MOS": 1.0}) for i in range(20)]
    ex.append(Example(ClipInput("b.wav", system="B"), {"MOS": 1.0}))
    for seed in range(6):
        train, val = split_by_group(ex, 0.9, seed=seed)
        assert train and val


def test_too_few_groups_is_a_clear_error(tmp_path):
    p = _manifest(tmp_path, ["a.wav,S1,3", "b.wav,S1,4"], "path,system,MOS")
    with pytest.raises(DataError, match=r"cannot split by system: needs at least 2 systems, found 1 \(S1\)"):
        load_dataset(str(p), val_fraction=0.5)
    with pytest.raises(DataError, match=r"cannot split by track: .*a\.wav has no track"):
        load_dataset(str(p), val_fraction=0.5, split_by="track")


def test_bad_split_options_are_config_errors(tmp_path):
    p = _manifest(tmp_path, ["a.wav,S1,3", "b.wav,S2,4"], "path,system,MOS")
    with pytest.raises(ConfigError, match="val_fraction"):
        load_dataset(str(p), val_fraction=1.0)
    with pytest.raises(ConfigError, match="split_by"):
        load_dataset(str(p), val_fraction=0.5, split_by="clip")
    with pytest.raises(ConfigError, match="unknown split"):
        load_dataset(str(p)).split("dev")


@pytest.mark.parametrize(
    "rows, header, message",
    [
        (["a.wav,3", "b.wav,high"], "path,MOS", r"m\.csv line 3: label 'MOS' 'high' is not a number"),
        (["a.wav,3,4", "b.wav,,4"], "path,MI,TA", r"m\.csv line 3: no 'MI' label"),
        (["a.wav,3,train", "b.wav,4,holdout"], "path,MOS,split", r"m\.csv line 3: split 'holdout' is not one of"),
        (["a.wav,3,train", "b.wav,4,"], "path,MOS,split", r"m\.csv line 3: empty 'split'"),
        (["a.wav,3,nan"], "path,MI,TA", r"m\.csv line 2: label 'TA' must be a finite number"),
        (["a.wav,3", "a.wav,4"], "path,MOS", r"m\.csv line 3: .*a\.wav is listed twice \(first at .*m\.csv line 2\)"),
        (["a.wav,S1"], "path,system", r"no label columns"),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path, rows, header, message):
    p = _manifest(tmp_path, rows, header)
    with pytest.raises(DataError, match=message):
        load_dataset(str(p))


def test_jsonl_manifest_and_unknown_axis(tmp_path):
    _audio(tmp_path / "x.wav")
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps({"path": "x.wav", "system": "S", "MI": 3.5}) + "\n" + json.dumps({"path": "x.wav", "MI": "?"}) + "\n")
    with pytest.raises(DataError, match=r"m\.jsonl line 2: label 'MI' '\?' is not a number"):
        load_dataset(str(p))
    p.write_text(json.dumps({"path": "x.wav", "system": "S", "MI": 3.5}) + "\n")
    assert load_dataset(str(p)).train[0].labels == {"MI": 3.5}
    with pytest.raises(DataError, match=r"no label axis 'TA' \(axes: MI\)"):
        load_dataset(str(p), axes=("TA",))


def test_missing_manifest_audio_and_unknown_layout(tmp_path):
    (tmp_path / "m.csv").write_text("path,MOS\nnowhere.wav,3\n")
    with pytest.raises(DataError, match=r"m\.csv line 2: audio file .*nowhere\.wav not found"):
        load_dataset(str(tmp_path / "m.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a dataset folder"):
        load_dataset(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(str(tmp_path / "absent.csv"))
