"""Inputs described in files: manifests (CSV or JSONL), system maps and prompt tables.

Every malformed line raises :class:`DataError` naming the file and the line number.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from .errors import DataError

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


def read_rows(path: str | os.PathLike, required: tuple[str, ...] = ()) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV (with a header) or JSONL file as ``(line_number, {column: text})``.

    Column names are matched case-insensitively and returned lower-case.
    """
    p = Path(path)
    text = _open_text(p)
    rows: list[tuple[int, dict[str, str]]] = []
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p} line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{p} line {n}: expected a JSON object per line")
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


def read_manifest(path: str | os.PathLike) -> list[ClipInput]:
    """A manifest: ``path`` and optional ``system``, ``prompt``, ``start``, ``end`` per clip.

    Relative paths are taken from the manifest's folder.
    """
    p = Path(path)
    clips = []
    for n, row in read_rows(p, required=("path",)):
        audio = Path(row["path"]).expanduser()
        if not audio.is_absolute():
            audio = p.parent / audio
        start, end = _seconds(p, n, row, "start"), _seconds(p, n, row, "end")
        if start is not None and end is not None and end <= start:
            raise DataError(f"{p} line {n}: end {end} is not after start {start}")
        clips.append(
            ClipInput(str(audio), system=row.get("system") or None, prompt=row.get("prompt") or None, start=start, end=end)
        )
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
