"""The terminal tables of `drasp score` (report.render_tables)."""

from __future__ import annotations

import io

from rich.console import Console

from drasp_cli.report import _common_folder, render_tables, system_table


def report_of(paths: list[str]) -> dict:
    clips = [
        {"path": p, "system": "A" if i % 2 else "B", "duration": 10.0, "scores": {"MOS": 3.0 + i / 10}}
        for i, p in enumerate(paths)
    ]
    clips[0]["flags"] = ["silent: peak below -80 dBFS; the score is not meaningful"]
    return {
        "axes": ["MOS"],
        "clips": clips,
        "systems": system_table(clips, ("MOS",)),
        "failures": [{"path": "/data/run/bad.wav", "error": "/data/run/bad.wav: empty file (0 bytes)"}],
    }


def rendered(report: dict) -> str:
    out = io.StringIO()
    render_tables(report, Console(file=out, width=160, soft_wrap=False))
    return out.getvalue()


def test_clip_paths_are_shown_under_their_common_folder():
    text = rendered(report_of([f"/data/run/sys{i % 2}/clip{i}.wav" for i in range(4)]))
    assert "Clips (4 scored, under /data/run)" in text
    clips_table, systems = text.split("Systems, best first")
    assert "sys1/clip1.wav" in clips_table and "/data/run/sys1" not in clips_table
    assert "silent" in clips_table
    assert "MOS: mean ± std [95% interval]" in systems
    assert systems.index("A") < systems.index("B")  # best first: A's clips score higher
    assert "Failed (1)" in text and "empty file (0 bytes)" in text


def test_common_folder_cases():
    assert _common_folder(["/a/b/x.wav", "/a/c/y.wav"]) == "/a"
    assert _common_folder(["/a/b/x.wav"]) == "/a/b"
    assert _common_folder(["x.wav", "y.wav"]) is None  # the current folder: nothing to name
    assert _common_folder(["/x.wav", "/y.wav"]) is None
    assert _common_folder(["/a/x.wav", "b/y.wav"]) is None  # absolute and relative mixed
    assert _common_folder([]) is None
