"""Inputs described in files: manifests (CSV or JSONL), system maps, prompt tables, and labelled
datasets (a labelled manifest, MusicEval as distributed, AES-Natural / AudioMOS 2025 track 2).

Every malformed line raises :class:`DataError` naming the file and the line number.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import math
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from .errors import ConfigError, DataError

# MusicEval / AudioMOS 2025 track 1 names: audiomos2025-track1-S002_P044.wav -> S002
MUSICEVAL_SYSTEM = re.compile(r"(S\d{3})_P\d+")


@dataclass(frozen=True)
class ClipInput:
    """One clip to score: a file (or part of one), or samples already in memory."""

    path: str  # file path; for in-memory audio, a name used in reports
    system: str | None = None
    prompt: str | None = None
    start: float | None = None  # seconds into the file
    end: float | None = None
    samples: object = None  # numpy array (N,) or (N, C) when the audio is in memory
    sample_rate: int | None = None  # of ``samples``

    @property
    def key(self) -> str:
        """Identifies the clip in a run: the path, plus the time range when one is given."""
        if self.start is None and self.end is None:
            return self.path
        return f"{self.path}#{self.start or 0:g}-{'' if self.end is None else f'{self.end:g}'}"


def _open_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read as UTF-8 text ({e})") from None


def json_lines(p: Path, text: str) -> Iterator[tuple[int, dict]]:
    """``(line_number, object)`` for each non-blank line of a JSONL text; one object per line."""
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{p} line {n}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{p} line {n}: expected a JSON object per line")
        yield n, obj


def read_rows(path: str | os.PathLike, required: tuple[str, ...] = ()) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV (with a header) or JSONL file as ``(line_number, {column: text})``.

    Column names are matched case-insensitively and returned lower-case.
    """
    p = Path(path)
    text = _open_text(p)
    rows: list[tuple[int, dict[str, str]]] = []
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        for n, obj in json_lines(p, text):
            rows.append((n, {str(k).lower(): ("" if v is None else str(v)) for k, v in obj.items()}))
        columns = set().union(*(r.keys() for _, r in rows)) if rows else set()
    else:
        reader = csv.reader(text.splitlines())
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{p}: empty file (expected a header line)") from None
        except csv.Error as e:
            raise DataError(f"{p} line 1: {e}") from None
        if len(set(header)) != len(header):
            raise DataError(f"{p} line 1: duplicate column names in the header {header}")
        columns = set(header)
        try:
            for values in reader:
                n = reader.line_num
                if not values or all(not v.strip() for v in values):
                    continue
                if len(values) != len(header):
                    raise DataError(f"{p} line {n}: {len(values)} fields, the header has {len(header)}")
                rows.append((n, {h: v.strip() for h, v in zip(header, values)}))
        except csv.Error as e:
            raise DataError(f"{p} line {reader.line_num}: {e}") from None
    for column in required:
        if rows and column not in columns:
            raise DataError(f"{p}: no {column!r} column (columns: {', '.join(sorted(columns))})")
        for n, row in rows:
            if not row.get(column, "").strip():
                raise DataError(f"{p} line {n}: empty {column!r}")
    return rows


def _seconds(p: Path, n: int, row: dict[str, str], key: str) -> float | None:
    value = row.get(key, "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise DataError(f"{p} line {n}: {key} {value!r} is not a number of seconds") from None
    if seconds < 0 or seconds != seconds:
        raise DataError(f"{p} line {n}: {key} must be a non-negative number of seconds, got {value}")
    return seconds


def _clip_from_row(p: Path, n: int, row: dict[str, str]) -> ClipInput:
    audio = Path(row["path"]).expanduser()
    if not audio.is_absolute():
        audio = p.parent / audio
    start, end = _seconds(p, n, row, "start"), _seconds(p, n, row, "end")
    if start is not None and end is not None and end <= start:
        raise DataError(f"{p} line {n}: end {end} is not after start {start}")
    return ClipInput(str(audio), system=row.get("system") or None, prompt=row.get("prompt") or None, start=start, end=end)


def read_manifest(path: str | os.PathLike) -> list[ClipInput]:
    """A manifest: ``path`` and optional ``system``, ``prompt``, ``start``, ``end`` per clip.

    Relative paths are taken from the manifest's folder.
    """
    p = Path(path)
    clips = [_clip_from_row(p, n, row) for n, row in read_rows(p, required=("path",))]
    if not clips:
        raise DataError(f"{p}: the manifest lists no clips")
    return clips


class PathTable:
    """Values looked up by file: each rule is an exact relative path, a file name, or a glob.

    The first rule that matches wins, in file order.
    """

    def __init__(self, rules: list[tuple[str, str]], source: str) -> None:
        self.rules = rules
        self.source = source

    @classmethod
    def from_file(cls, path: str | os.PathLike, value_column: str) -> PathTable:
        p = Path(path)
        rows = read_rows(p)
        if not rows:
            raise DataError(f"{p}: no rows")
        key_column = next((c for c in ("path", "file", "pattern", "name") if c in rows[0][1]), None)
        if key_column is None or value_column not in rows[0][1]:
            raise DataError(f"{p}: needs a path/file/pattern column and a {value_column!r} column, has {', '.join(rows[0][1])}")
        rules = []
        for n, row in rows:
            key, value = row.get(key_column, "").strip(), row.get(value_column, "").strip()
            if not key or not value:
                raise DataError(f"{p} line {n}: empty {key_column if not key else value_column!r}")
            rules.append((key, value))
        return cls(rules, str(p))

    def lookup(self, path: str, roots: list[str] = ()) -> str | None:
        pure = PurePosixPath(Path(path).as_posix())
        candidates = {pure.as_posix(), pure.name}
        for root in roots:
            try:
                candidates.add(Path(path).resolve().relative_to(Path(root).resolve()).as_posix())
            except ValueError:
                pass
        for key, value in self.rules:
            if key in candidates or any(fnmatch.fnmatchcase(c, key) for c in candidates):
                return value
        return None


def system_from_name(path: str, pattern: re.Pattern[str] = MUSICEVAL_SYSTEM) -> str | None:
    """The system named in a file name by ``pattern``'s first group (MusicEval's by default).

    >>> system_from_name("wav/audiomos2025-track1-S002_P044.wav")
    'S002'
    """
    m = pattern.search(Path(path).name)
    return (m.group(1) if m.groups() else m.group(0)) if m else None


def _system_for(path: str, rule: str, system_map: PathTable | None, regex: re.Pattern[str], roots: list[str]) -> str | None:
    folder = Path(path).parent.name or None
    if rule == "map" or (rule == "auto" and system_map is not None):
        return system_map.lookup(path, roots) if system_map is not None else None
    if rule == "name":
        return system_from_name(path, regex)
    if rule == "folder":
        return folder
    if rule == "auto":
        return system_from_name(path, regex) or folder
    return None


def assign_systems(
    clips: list[ClipInput], rule: str, system_map: PathTable | None = None, pattern: str | None = None, roots: list[str] = ()
) -> tuple[list[ClipInput], list[str]]:
    """Give each clip a system; returns the clips and the paths no rule matched.

    ``rule``: ``map`` (the system map), ``folder`` (the parent folder's name), ``name`` (a
    file-name regex whose first group is the system, MusicEval's ``S002`` by default), ``auto``
    (the map if one is given, else the name pattern if it matches, else the parent folder) or
    ``none``. A system already set (by a manifest) is kept.
    """
    if rule not in ("auto", "map", "folder", "name", "none"):
        raise DataError(f"unknown system rule {rule!r}; choose auto, map, folder, name or none")
    try:
        regex = re.compile(pattern) if pattern else MUSICEVAL_SYSTEM
    except re.error as e:
        raise DataError(f"system pattern {pattern!r} is not a valid regular expression ({e})") from None
    out, unmatched = [], []
    for clip in clips:
        if clip.system is None and rule != "none":
            system = _system_for(clip.path, rule, system_map, regex, roots)
            if system is None:
                unmatched.append(clip.path)
            clip = replace(clip, system=system)
        out.append(clip)
    return out, unmatched


# ---------------------------------------------------------------------------------------------
# Labelled datasets: clips with human ratings, for training and evaluating MOS predictors.

SPLITS = ("train", "val", "test")
# Spellings of a split accepted in a manifest's split column and in list file names.
_SPLIT_NAMES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "eval": "test",
}
# Manifest columns that describe the clip; every other column is a label axis.
_CLIP_COLUMNS = ("path", "system", "prompt", "start", "end", "track", "split")

MUSICEVAL_AXES = ("MI", "TA")  # musical impression (overall quality), textual alignment
# MusicEval list names: sets/<name>_mos_list.txt; "total" is the union of the others.
_MUSICEVAL_LIST = re.compile(r"(.+)_mos_list\.txt$")
_MUSICEVAL_PROMPT_ID = re.compile(r"_(P\d+)\.\w+$")
# Systems whose clips come from demo pages: their prompts are in demo_prompt_info.txt, keyed by file
# name, and their P numbers are not prompt_info.txt's (the list the challenge baseline hard-codes).
MUSICEVAL_DEMO_SYSTEMS = frozenset({"S001", "S006", "S013", "S017", "S018", "S033"})

# AES-Natural list columns, in the order of the list files, and the short axis names we use.
AES_AXES = {
    "PQ": "production_quality",
    "PC": "production_complexity",
    "CE": "content_enjoyment",
    "CU": "content_usefulness",
}
AES_PLACEHOLDER = "your_path"  # data_path in the lists reads /your_path/<corpus>/...
_AES_PREFIX = "audiomos2025-track2-"
# sample_id = audiomos2025-track2-<domain>-<corpus folder>_<rest>; the corpus is the system.
_AES_CORPORA = (
    ("unbalanced_train_segments", "AudioSet"),
    ("MUSDB18", "MUSDB18"),
    ("musiccaps", "MusicCaps"),
    ("EARS", "EARS"),
    ("LibriTTS", "LibriTTS"),
    ("cv-corpus", "CommonVoice"),
)
_AES_EVAL_ID = re.compile(r"audiomos2025-track2-(sys[A-Za-z0-9]+)-utt[A-Za-z0-9]+")
_AUDIOSET_SEGMENT = re.compile(r"_\d+_\d+$")  # <youtube id>_<start ms>_<end ms>


@dataclass(frozen=True)
class Example:
    """One rated clip."""

    clip: ClipInput  # path, system, prompt (start/end optional)
    labels: dict[str, float]  # axis name -> rating, e.g. {"MI": 3.2, "TA": 4.0}
    track: str | None = None  # source track / source corpus item: clips of one track stay on one side of a split


@dataclass
class Dataset:
    """Rated clips in train / validation / test splits."""

    axes: tuple[str, ...]  # label axes, in the order models predict them
    train: list[Example]
    val: list[Example]
    test: list[Example] = field(default_factory=list)
    name: str = ""  # "MusicEval", "AES-Natural", or the manifest's path

    def split(self, name: str) -> list[Example]:
        """The examples of ``name``: ``train``, ``val``, ``test`` or ``all`` (the three, in that order)."""
        if name == "all":
            return self.train + self.val + self.test
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; choose train, val, test or all")
        return getattr(self, name)


# An example while loading: where it came from (for messages) and the split its source gave it.
@dataclass(frozen=True)
class _Loaded:
    example: Example
    origin: str  # "<file> line <n>"
    split: str | None  # train / val / test, or None when the source does not say


def _number(value: str, where: str, what: str, hint: str = "") -> float:
    try:
        x = float(value)
    except ValueError:
        raise DataError(f"{where}: {what} {value!r} is not a number{hint}") from None
    if not math.isfinite(x):
        raise DataError(f"{where}: {what} must be a finite number, got {value!r}{hint}")
    return x


def _split_name(value: str, where: str) -> str:
    split = _SPLIT_NAMES.get(value.strip().lower())
    if split is None:
        raise DataError(f"{where}: split {value!r} is not one of train, val (or dev), test")
    return split


def _select_axes(available: tuple[str, ...], requested: tuple[str, ...] | None, source: str,
                 aliases: dict[str, str] | None = None) -> tuple[str, ...]:
    """``requested`` matched case-insensitively (and through ``aliases``) to ``available``."""
    if requested is None:
        return available
    by_name = {a.lower(): a for a in available}
    by_name.update({k.lower(): v for k, v in (aliases or {}).items()})
    chosen = []
    for axis in requested:
        match = by_name.get(str(axis).lower())
        if match is None:
            raise DataError(f"{source}: no label axis {axis!r} (axes: {', '.join(available) or 'none'})")
        if match in chosen:
            raise DataError(f"{source}: label axis {axis!r} is asked for twice")
        chosen.append(match)
    if not chosen:
        raise DataError(f"{source}: no label axes were asked for")
    return tuple(chosen)


def split_by_group(
    examples: list[Example], val_fraction: float, by: str = "system", seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """Split ``examples`` into train and validation so that no group is on both sides.

    Groups are systems (``by="system"``) or source tracks (``by="track"``). Whole groups, drawn in
    a shuffled order fixed by ``seed``, go to validation while that brings its share of the clips
    closer to ``val_fraction``; each side gets at least one group. The result depends only on the
    groups, their sizes and the seed (not on the order of ``examples``); each side keeps the
    examples' order.

    Examples
    --------
    >>> ex = [Example(ClipInput(f"{s}_{i}.wav", system=s), {"MOS": 3.0}) for s in "ABCD" for i in range(5)]
    >>> train, val = split_by_group(ex, 0.25, by="system", seed=0)
    >>> len(train), len(val), len({e.clip.system for e in val} & {e.clip.system for e in train})
    (15, 5, 0)
    """
    if by not in ("system", "track"):
        raise ConfigError(f"unknown split_by {by!r}; choose system or track")
    if isinstance(val_fraction, bool) or not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    sizes: dict[str, int] = {}
    for ex in examples:
        group = ex.clip.system if by == "system" else ex.track
        if group is None:
            hint = "give each clip a system" if by == "system" else "give each clip a track"
            raise DataError(f"cannot split by {by}: {ex.clip.key} has no {by} ({hint}, or split by the other)")
        sizes[group] = sizes.get(group, 0) + 1
    if len(sizes) < 2:
        raise DataError(
            f"cannot split by {by}: needs at least 2 {by}s, found {len(sizes)}"
            f"{' (' + next(iter(sizes)) + ')' if sizes else ''}; use a split column or split by the other"
        )
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    target = val_fraction * sum(sizes.values())
    chosen: list[str] = []
    count = 0
    for group in order:
        if not chosen or abs(count + sizes[group] - target) < abs(count - target):
            chosen.append(group)
            count += sizes[group]
    if len(chosen) == len(sizes):  # every group went to validation: give the last one back
        chosen.pop()
    val_groups = set(chosen)
    train = [ex for ex in examples if (ex.clip.system if by == "system" else ex.track) not in val_groups]
    val = [ex for ex in examples if (ex.clip.system if by == "system" else ex.track) in val_groups]
    return train, val


def _assemble(name: str, axes: tuple[str, ...], items: list[_Loaded], val_fraction: float | None,
              split_by: str, seed: int) -> Dataset:
    if not items:
        raise DataError(f"{name}: no labelled clips")
    seen: dict[str, str] = {}
    for item in items:
        key = item.example.clip.key
        if key in seen:
            raise DataError(f"{item.origin}: {key} is listed twice (first at {seen[key]})")
        seen[key] = item.origin
    missing = [item for item in items if item.example.clip.samples is None and not Path(item.example.clip.path).is_file()]
    if missing:
        first = missing[0]
        more = f" and {len(missing) - 1} more of {len(items)} clips" if len(missing) > 1 else ""
        raise DataError(f"{first.origin}: audio file {first.example.clip.path} not found{more}")
    test = [item.example for item in items if item.split == "test"]
    if val_fraction is None:
        train = [item.example for item in items if item.split in (None, "train")]
        val = [item.example for item in items if item.split == "val"]
    else:
        pool = [item.example for item in items if item.split != "test"]
        if not pool:
            raise DataError(f"{name}: val_fraction needs train or validation clips, all {len(items)} are test clips")
        train, val = split_by_group(pool, val_fraction, by=split_by, seed=seed)
    return Dataset(axes=axes, train=train, val=val, test=test, name=name)


def _column_spellings(p: Path) -> dict[str, str]:
    """Lower-case column name -> its spelling in the file (``read_rows`` lower-cases names)."""
    text = _open_text(p)
    spellings: dict[str, str] = {}
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        for line in text.splitlines():
            obj = json.loads(line) if line.strip() else {}
            for k in obj if isinstance(obj, dict) else ():
                spellings.setdefault(str(k).lower(), str(k))
    else:
        header = next(csv.reader(text.splitlines()), [])
        spellings = {h.strip().lower(): h.strip() for h in header}
    return spellings


def _load_manifest(p: Path, axes: tuple[str, ...] | None) -> tuple[tuple[str, ...], list[_Loaded]]:
    rows = read_rows(p, required=("path",))
    if not rows:
        raise DataError(f"{p}: the manifest lists no clips")
    spellings = _column_spellings(p)
    columns = [c for c in spellings if c not in _CLIP_COLUMNS]
    available = tuple(spellings[c] for c in columns)
    if not available:
        raise DataError(f"{p}: no label columns (every column other than {', '.join(_CLIP_COLUMNS)} is a label axis)")
    chosen = _select_axes(available, axes, str(p))
    has_split = "split" in spellings
    hint = "" if axes is not None else f" (every column but {', '.join(_CLIP_COLUMNS)} is a label; pass axes= to choose)"
    items = []
    for n, row in rows:
        where = f"{p} line {n}"
        labels = {}
        for axis in chosen:
            value = row.get(axis.lower(), "").strip()
            if not value:
                raise DataError(f"{where}: no {axis!r} label")
            labels[axis] = _number(value, where, f"label {axis!r}", hint)
        split = None
        if has_split:
            value = row.get("split", "").strip()
            if not value:
                raise DataError(f"{where}: empty 'split' (the manifest has a split column, so every clip needs one)")
            split = _split_name(value, where)
        example = Example(_clip_from_row(p, n, row), labels, track=row.get("track", "").strip() or None)
        items.append(_Loaded(example, where, split))
    return chosen, items


def _musiceval_root(folder: Path) -> Path | None:
    """The MusicEval folder holding ``sets/``: ``folder`` itself, or its only subfolder that has one
    (archives unpack to MusicEval-full/MusicEval-full/)."""
    if (folder / "sets").is_dir():
        return folder
    inner = [d for d in folder.iterdir() if d.is_dir() and (d / "sets").is_dir()] if folder.is_dir() else []
    return inner[0] if len(inner) == 1 else None


def _read_prompt_table(p: Path) -> dict[str, str]:
    """A MusicEval prompt table: tab-separated ``id`` and ``text`` with a header line."""
    if not p.is_file():
        return {}
    lines = _open_text(p).splitlines()
    table: dict[str, str] = {}
    reader = csv.reader(lines, delimiter="\t")
    try:
        for fields in reader:
            n = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if n == 1 and [f.strip().lower() for f in fields[:2]] == ["id", "text"]:
                continue
            if len(fields) < 2 or not fields[0].strip():
                raise DataError(f"{p} line {n}: expected an id and a prompt separated by a tab")
            table[fields[0].strip()] = "\t".join(fields[1:]).strip()
    except csv.Error as e:
        raise DataError(f"{p} line {reader.line_num}: {e}") from None
    return table


def _musiceval_list_split(p: Path) -> str | None:
    m = _MUSICEVAL_LIST.match(p.name)
    stem = m.group(1).lower() if m else ""
    if stem in ("total", "all"):
        return None
    split = _SPLIT_NAMES.get(stem)
    if split is None:
        raise DataError(f"{p}: cannot tell the split from the name; expected train, dev, test or total _mos_list.txt")
    return split


def _load_musiceval(root: Path, lists: list[Path], audio_root: str | None) -> list[_Loaded]:
    wav_dir = Path(audio_root).expanduser() if audio_root else root / "wav"
    if not wav_dir.is_dir():
        raise DataError(f"{wav_dir}: no such folder (MusicEval keeps its audio in wav/; pass audio_root if it is elsewhere)")
    prompts = _read_prompt_table(root / "prompt_info.txt")
    demo_prompts = _read_prompt_table(root / "demo_prompt_info.txt")
    demo_systems = MUSICEVAL_DEMO_SYSTEMS | {s for s in (system_from_name(k) for k in demo_prompts) if s}
    items = []
    for lst in lists:
        split = _musiceval_list_split(lst)
        for n, line in enumerate(_open_text(lst).splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{lst} line {n}"
            fields = [f.strip() for f in line.split(",")]
            if len(fields) != 3 or not fields[0]:
                raise DataError(f"{where}: expected <file>,<MI>,<TA>, got {line.strip()!r}")
            name = fields[0]
            labels = {"MI": _number(fields[1], where, "MI"), "TA": _number(fields[2], where, "TA")}
            system = system_from_name(name)
            m = _MUSICEVAL_PROMPT_ID.search(name)
            if system is None or m is None:
                raise DataError(f"{where}: {name!r} is not named like audiomos2025-track1-S002_P044.wav")
            pid = m.group(1)
            if system in demo_systems:
                prompt, track, table = demo_prompts.get(name), f"{system}_{pid}", "demo_prompt_info.txt"
            else:
                prompt, track, table = prompts.get(pid), pid, "prompt_info.txt"
            if prompt is None and (prompts or demo_prompts):
                raise DataError(f"{where}: no prompt for {name} in {root / table}")
            clip = ClipInput(str(wav_dir / name), system=system, prompt=prompt)
            items.append(_Loaded(Example(clip, labels, track=track), where, split))
    return items


def _aes_system(sample_id: str) -> str:
    m = _AES_EVAL_ID.fullmatch(sample_id)
    if m:
        return m.group(1)
    rest = sample_id[len(_AES_PREFIX):] if sample_id.startswith(_AES_PREFIX) else sample_id
    _, _, rest = rest.partition("-")  # drop the domain: audio, music or speech
    for folder, corpus in _AES_CORPORA:
        if rest.startswith(folder):
            return corpus
    return rest.split("_")[0] or sample_id


def _aes_track(corpus: str, audio: PurePosixPath) -> str:
    """The recording a clip comes from: clips of one song, speaker or video stay together."""
    if corpus == "MUSDB18":  # stems of one song: MUSDB18/<split>/<song>/<stem>.wav
        key = audio.parent.name
    elif corpus == "EARS":  # EARS/<speaker>/<utterance>.wav
        key = audio.parent.name
    elif corpus == "LibriTTS":  # <speaker>_<chapter>_<utterance>.wav
        key = audio.stem.split("_")[0]
    elif corpus == "AudioSet":  # <youtube id>_<start ms>_<end ms>.flac
        key = _AUDIOSET_SEGMENT.sub("", audio.stem)
    else:
        key = audio.stem
    return f"{corpus}:{key}"


def _aes_audio(data_path: str, list_file: Path, audio_root: str | None, where: str) -> Path:
    pure = PurePosixPath(data_path.replace("\\", "/"))
    parts = [q for q in pure.parts if q != "/"]
    if audio_root:
        if len(parts) < 2:
            raise DataError(f"{where}: data_path {data_path!r} has no folder for audio_root to replace")
        return Path(audio_root).expanduser().joinpath(*parts[1:])
    if parts and parts[0] == AES_PLACEHOLDER:
        raise DataError(
            f"{where}: data_path {data_path!r} starts with the placeholder /{AES_PLACEHOLDER}; "
            "pass audio_root (the folder holding the source corpora)"
        )
    audio = Path(data_path).expanduser()
    return audio if audio.is_absolute() else list_file.parent / audio


def _load_aes_list(p: Path, split: str | None, audio_root: str | None) -> list[_Loaded]:
    rows = read_rows(p, required=("sample_id", "data_path"))
    if rows:
        absent = [c for c in AES_AXES.values() if c not in rows[0][1]]
        if absent:
            raise DataError(f"{p}: no {', '.join(absent)} column (an AES-Natural list has {', '.join(AES_AXES.values())})")
    items = []
    for n, row in rows:
        where = f"{p} line {n}"
        labels = {}
        for axis, column in AES_AXES.items():
            value = row[column].strip()
            if not value:
                raise DataError(f"{where}: no {column} rating")
            labels[axis] = _number(value, where, column)
        audio = _aes_audio(row["data_path"], p, audio_root, where)
        system = _aes_system(row["sample_id"])
        track = None if _AES_EVAL_ID.fullmatch(row["sample_id"]) else _aes_track(system, PurePosixPath(audio.as_posix()))
        items.append(_Loaded(Example(ClipInput(str(audio), system=system), labels, track=track), where, split))
    return items


def _load_aes_annotations(p: Path, audio_root: str | None) -> list[_Loaded]:
    """The evaluation set's ratings: one JSON object per clip, ten ratings per axis, keyed by clip id."""
    base = Path(audio_root).expanduser() if audio_root else p.parent
    items = []
    for n, obj in json_lines(p, _open_text(p)):
        where = f"{p} line {n}"
        obj = {str(k).lower(): v for k, v in obj.items()}
        clip_id = str(obj.get("data_path") or "").strip()
        if not clip_id:
            raise DataError(f"{where}: empty 'data_path'")
        labels = {}
        for axis, column in AES_AXES.items():
            ratings = obj.get(column)
            ratings = ratings if isinstance(ratings, list) else [ratings]
            if not ratings or not all(_is_rating(r) for r in ratings):
                raise DataError(f"{where}: {column} must be a number or a list of numbers, got {obj.get(column)!r}")
            labels[axis] = sum(ratings) / len(ratings)
        audio = base / (clip_id if Path(clip_id).suffix else clip_id + ".wav")
        items.append(_Loaded(Example(ClipInput(str(audio), system=_aes_system(clip_id)), labels), where, "test"))
    return items


def _is_rating(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _aes_list_split(p: Path) -> str | None:
    stem = p.stem.lower()
    stem = stem[len(_AES_PREFIX):] if stem.startswith(_AES_PREFIX) else stem
    for word in re.split(r"[^a-z]+", stem):
        if word in _SPLIT_NAMES:
            return _SPLIT_NAMES[word]
    return None


def _is_aes_list(p: Path) -> bool:
    if p.name.lower().startswith(_AES_PREFIX) and p.suffix.lower() == ".csv":
        return True
    if p.suffix.lower() != ".csv":
        return False
    header = {h.strip().lower() for h in next(csv.reader(_open_text(p).splitlines()[:1]), [])}
    return {"sample_id", "data_path", *AES_AXES.values()} <= header


def load_dataset(
    spec: str | os.PathLike,
    *,
    audio_root: str | None = None,
    val_fraction: float | None = None,
    split_by: str = "system",
    seed: int = 0,
    axes: tuple[str, ...] | None = None,
) -> Dataset:
    """Load rated clips, recognising the layout of ``spec``.

    Parameters
    ----------
    spec
        One of:

        - a labelled manifest (CSV or JSONL, as ``drasp score --manifest`` reads): ``path`` and
          optional ``system``, ``prompt``, ``start``, ``end``, ``track`` and ``split``
          (train / val / test) columns; every other column is a numeric label axis;
        - a MusicEval folder (``wav/``, ``sets/*_mos_list.txt``, ``prompt_info.txt``,
          ``demo_prompt_info.txt``) or one of its ``*_mos_list.txt`` files: axes MI and TA, the
          system from the file name (S002), the track the prompt;
        - an AES-Natural folder holding ``audiomos2025-track2-{train,dev}_list.csv``, one such list,
          or the evaluation set's ``audiomos2025_track2_human_annotations.jsonl`` (its ratings are
          averaged): axes PQ, PC, CE, CU; the system is the source corpus (EARS, MUSDB18, ...) or,
          for the evaluation set, the ``sys...`` id; the track is the song, speaker or video.
    audio_root
        MusicEval: the folder of the audio files (default ``wav/`` beside ``sets/``).
        AES-Natural: replaces the placeholder first folder (``/your_path``) of each ``data_path``;
        for the evaluation set, the folder of ``<clip id>.wav`` (default: beside the jsonl).
    val_fraction
        When given, the validation set is drawn again from the train and validation clips, whole
        groups at a time (see :func:`split_by_group`); test clips stay test clips. When not given,
        the source's splits are used; clips that have none are training clips.
    split_by
        ``system`` or ``track``: the groups ``val_fraction`` keeps whole.
    seed
        Fixes which groups ``val_fraction`` draws.
    axes
        The label axes to keep, in this order (case-insensitive; AES-Natural also takes the long
        names such as ``Production_Quality``). Default: all, in the source's order.

    Every audio file must exist; a missing one, a malformed line or a missing label raises
    :class:`DataError` naming the file and line.
    """
    p = Path(spec).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if split_by not in ("system", "track"):
        raise ConfigError(f"unknown split_by {split_by!r}; choose system or track")
    if val_fraction is not None and (isinstance(val_fraction, bool) or not 0 < val_fraction < 1):
        raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    aes_aliases = {long: short for short, long in AES_AXES.items()}

    if p.is_dir():
        root = _musiceval_root(p)
        if root is not None:
            lists = sorted((root / "sets").glob("*_mos_list.txt"))
            split_lists = [f for f in lists if _musiceval_list_split(f) is not None]
            lists = split_lists or lists  # the total list repeats the split ones
            if not lists:
                raise DataError(
                    f"{root / 'sets'}: no *_mos_list.txt files (MusicEval has train_mos_list.txt, dev_mos_list.txt, ...)"
                )
            chosen = _select_axes(MUSICEVAL_AXES, axes, str(root))
            items = _load_musiceval(root, lists, audio_root)
            return _assemble("MusicEval", chosen, _keep_axes(items, chosen), val_fraction, split_by, seed)
        lists = sorted(f for f in p.glob(f"{_AES_PREFIX}*.csv"))
        if lists:
            by_split: dict[str | None, Path] = {}
            for f in lists:
                split = _aes_list_split(f)
                if split in by_split:
                    raise DataError(
                        f"{p}: both {by_split[split].name} and {f.name} look like {split or 'unsplit'} lists; "
                        "pass one list file"
                    )
                by_split[split] = f
            chosen = _select_axes(tuple(AES_AXES), axes, str(p), aes_aliases)
            order = [s for s in (*SPLITS, None) if s in by_split]  # train first, as the lists are meant
            items = [item for s in order for item in _load_aes_list(by_split[s], s, audio_root)]
            return _assemble("AES-Natural", chosen, _keep_axes(items, chosen), val_fraction, split_by, seed)
        raise DataError(
            f"{p}: not a dataset folder (expected MusicEval's sets/ and wav/, or AES-Natural's {_AES_PREFIX}*_list.csv files)"
        )

    if _MUSICEVAL_LIST.match(p.name):
        root = p.parent.parent if p.parent.name == "sets" else p.parent
        chosen = _select_axes(MUSICEVAL_AXES, axes, str(p))
        items = _load_musiceval(root, [p], audio_root)
        return _assemble("MusicEval", chosen, _keep_axes(items, chosen), val_fraction, split_by, seed)
    if p.suffix.lower() in (".jsonl", ".ndjson") and "track2_human_annotations" in p.name.lower():
        chosen = _select_axes(tuple(AES_AXES), axes, str(p), aes_aliases)
        items = _load_aes_annotations(p, audio_root)
        return _assemble("AES-Natural-eval", chosen, _keep_axes(items, chosen), val_fraction, split_by, seed)
    if _is_aes_list(p):
        chosen = _select_axes(tuple(AES_AXES), axes, str(p), aes_aliases)
        items = _load_aes_list(p, _aes_list_split(p), audio_root)
        return _assemble("AES-Natural", chosen, _keep_axes(items, chosen), val_fraction, split_by, seed)
    if p.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        chosen, items = _load_manifest(p, axes)
        return _assemble(str(p), chosen, items, val_fraction, split_by, seed)
    raise DataError(
        f"{p}: cannot tell the dataset layout (expected a .csv/.jsonl manifest, a *_mos_list.txt, or a dataset folder)"
    )


def _keep_axes(items: list[_Loaded], axes: tuple[str, ...]) -> list[_Loaded]:
    return [replace(i, example=replace(i.example, labels={a: i.example.labels[a] for a in axes})) for i in items]
