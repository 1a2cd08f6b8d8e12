"""Results out: per-system aggregates, tables, CSV / JSON / JSONL writers, and the CI gate."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataError

FORMATS = ("table", "csv", "json", "jsonl")


@dataclass
class SystemStats:
    """Aggregate of one system on one axis: n clips, mean, std and a 95% t-interval."""

    n: int
    mean: float
    std: float | None
    ci95: tuple[float, float] | None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci95": list(self.ci95) if self.ci95 else None}


def aggregate(values: list[float]) -> SystemStats:
    """Mean, sample std and 95% Student-t interval of the mean.

    >>> s = aggregate([3.0, 4.0, 5.0])
    >>> s.mean, s.std, [round(x, 3) for x in s.ci95]
    (4.0, 1.0, [1.516, 6.484])
    """
    from scipy import stats

    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return SystemStats(n, mean, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return SystemStats(n, mean, std, (mean - half, mean + half))


def system_table(clips: Iterable[dict[str, Any]], axes: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per-system aggregates of clip records (``{"system", "scores"}``), sorted by the first
    axis' mean, best first. Clips without a system are left out."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in clips:
        if c.get("system") is not None:
            groups.setdefault(c["system"], []).append(c)
    rows = []
    for system, members in groups.items():
        row: dict[str, Any] = {"system": system, "n": len(members), "axes": {}}
        for axis in axes:
            values = [m["scores"][axis] for m in members if m["scores"].get(axis) is not None]
            row["axes"][axis] = aggregate(values).to_dict() if values else None
        rows.append(row)
    first = axes[0]
    return sorted(rows, key=lambda r: (r["axes"][first] is None, -(r["axes"][first] or {"mean": 0})["mean"], r["system"]))


def _fmt(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _common_folder(paths: list[str]) -> str | None:
    """The folder all ``paths`` lie under (the table shows paths relative to it), or None when
    there is none worth naming (the current folder, or paths on different roots)."""
    folders = [os.path.dirname(p) for p in paths]
    if not folders or any(not f for f in folders):
        return None
    try:
        root = os.path.commonpath(folders)
    except ValueError:  # absolute and relative paths mixed
        return None
    return root if root not in ("", ".", os.sep) else None


def render_tables(report: dict[str, Any], console) -> None:
    """The per-clip and per-system tables, with Rich, on ``console``."""
    from rich.table import Table

    axes = report["axes"]
    rows = sorted(report["clips"], key=lambda c: c["path"])
    root = _common_folder([c["path"] for c in rows])
    title = f"Clips ({len(rows)} scored" + (f", under {root})" if root else ")")
    clips = Table(title=title, title_justify="left")
    clips.add_column("clip", overflow="fold")
    clips.add_column("system")
    for axis in axes:
        clips.add_column(axis, justify="right")
    clips.add_column("flags")
    for c in rows:
        name = os.path.relpath(c["path"], root) if root else c["path"]
        clips.add_row(name, c.get("system") or "", *(_fmt(c["scores"].get(a)) for a in axes), "; ".join(c.get("flags", [])))
    console.print(clips)
    if report["systems"]:
        systems = Table(title="Systems, best first", title_justify="left")
        systems.add_column("system")
        systems.add_column("n", justify="right")
        for axis in axes:
            systems.add_column(f"{axis}: mean ± std [95% interval]", justify="right")
        for s in report["systems"]:
            cells = []
            for axis in axes:
                a = s["axes"][axis]
                if a is None:
                    cells.append("")
                    continue
                text = f"{a['mean']:.3f}" + (f" ± {a['std']:.3f}" if a["std"] is not None else "")
                if a["ci95"]:
                    text += f" [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]"
                cells.append(text)
            systems.add_row(s["system"], str(s["n"]), *cells)
        console.print(systems)
    if report["failures"]:
        failed = Table(title=f"Failed ({len(report['failures'])})", title_justify="left")
        failed.add_column("input", overflow="fold")
        failed.add_column("reason", overflow="fold")
        for f in report["failures"]:
            failed.add_row(f["path"], f["error"])
        console.print(failed)


def clips_csv(report: dict[str, Any]) -> str:
    """One CSV row per clip (failures too, with their error)."""
    axes = report["axes"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "system", *axes, "duration", "flags", "error"])
    for c in report["clips"]:
        w.writerow([c["path"], c.get("system") or "", *(_fmt(c["scores"].get(a), 6) for a in axes), c["duration"], "; ".join(c.get("flags", [])), ""])
    for f in report["failures"]:
        w.writerow([f["path"], f.get("system") or "", *([""] * len(axes)), "", "", f["error"]])
    return buf.getvalue()


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


def to_jsonl(report: dict[str, Any]) -> str:
    lines = [json.dumps({"type": "run", **report["run"]}, ensure_ascii=False)]
    lines += [json.dumps({"type": "clip", **c}, ensure_ascii=False) for c in report["clips"]]
    lines += [json.dumps({"type": "failure", **f}, ensure_ascii=False) for f in report["failures"]]
    return "\n".join(lines) + "\n"


def render(report: dict[str, Any], fmt: str) -> str:
    """The report as text in ``fmt`` (``csv``, ``json`` or ``jsonl``)."""
    return {"csv": clips_csv, "json": to_json, "jsonl": to_jsonl}[fmt](report)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Write ``path`` through ``write(tmp_path)`` on a temporary file in the same folder, then a
    rename, so a reader never sees a half-written file."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class JsonlLog:
    """An append-only JSONL run log that a rerun resumes: records are flushed as clips finish."""

    def __init__(self, path: str | os.PathLike, run: dict[str, Any]) -> None:
        self.path = Path(path)
        self.done: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, dict[str, Any]] = {}
        if self.path.exists() and self.path.stat().st_size:
            self._read(run)
            self.f = open(self.path, "a", encoding="utf-8")
        else:
            self.f = open(self.path, "w", encoding="utf-8")
            self._write({"type": "run", **run})

    def _read(self, run: dict[str, Any]) -> None:
        raw = self.path.read_bytes()
        if not raw.endswith(b"\n"):
            # The last record was cut short by an interruption: drop it (that clip is scored again).
            raw = raw[: raw.rfind(b"\n") + 1]
            with open(self.path, "r+b") as f:
                f.truncate(len(raw))
        lines = raw.decode("utf-8").splitlines()
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{self.path} line {n}: not valid JSON; not a drasp run log?") from None
            kind = rec.pop("type", None)
            if kind == "run":
                for key in ("model", "precision", "segments"):
                    if rec.get(key) != run.get(key):
                        raise DataError(
                            f"{self.path}: made with {key}={rec.get(key)!r}, this run has {run.get(key)!r}; "
                            "use another --output to start a new run"
                        )
            elif kind == "clip":
                self.done[rec.get("key", rec["path"])] = rec
            elif kind == "failure":
                self.failed[rec.get("key", rec["path"])] = rec

    def _write(self, record: dict[str, Any]) -> None:
        self.f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.f.flush()

    def add(self, record: dict[str, Any], failed: bool = False) -> None:
        self._write({"type": "failure" if failed else "clip", **record})

    def close(self) -> None:
        self.f.close()


def parse_thresholds(items: list[str], option: str) -> dict[str, float]:
    """``["MI=3.5", "TA=3"]`` -> ``{"MI": 3.5, "TA": 3.0}``."""
    out = {}
    for item in items:
        axis, sep, value = item.partition("=")
        try:
            if not sep or not axis:
                raise ValueError
            out[axis.strip()] = float(value)
        except ValueError:
            raise DataError(f"{option} {item!r}: expected AXIS=NUMBER, e.g. MI=3.5") from None
    return out


def check_gate(
    report: dict[str, Any],
    fail_under: dict[str, float],
    baseline: dict[str, Any] | None = None,
    max_drop: dict[str, float] | None = None,
) -> list[str]:
    """The gate's failures, one line each: a system whose mean is under ``fail_under[axis]``, or
    that fell by more than ``max_drop[axis]`` since ``baseline`` (a saved JSON report)."""
    axes = report["axes"]
    for axis in list(fail_under) + list(max_drop or {}):
        if axis not in axes:
            raise DataError(f"gate axis {axis!r} is not predicted by this model (axes: {', '.join(axes)})")
    problems = []
    current = {s["system"]: s for s in report["systems"]}
    for s in report["systems"]:
        for axis, floor in fail_under.items():
            a = s["axes"].get(axis)
            if a is not None and a["mean"] < floor:
                problems.append(f"system {s['system']}: {axis} mean {a['mean']:.3f} is under {floor}")
    if baseline is not None and max_drop:
        for key in ("precision",):
            if baseline.get("run", {}).get(key) != report["run"].get(key):
                raise DataError(
                    f"the baseline was scored with {key}={baseline.get('run', {}).get(key)!r}, this run with "
                    f"{report['run'].get(key)!r}; compare runs made the same way"
                )
        for old in baseline.get("systems", []):
            new = current.get(old.get("system"))
            if new is None:
                continue
            for axis, drop in max_drop.items():
                a, b = (old.get("axes") or {}).get(axis), new["axes"].get(axis)
                if a and b and a["mean"] - b["mean"] > drop:
                    problems.append(f"system {old['system']}: {axis} fell {a['mean'] - b['mean']:.3f} (from {a['mean']:.3f} to {b['mean']:.3f}), more than {drop}")
    return problems


def read_baseline(path: str | os.PathLike) -> dict[str, Any]:
    """A saved ``drasp score --format json`` report."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{p}: no such baseline file") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: not a drasp JSON report ({e})") from None
    if not isinstance(data, dict) or "systems" not in data:
        raise DataError(f"{p}: not a drasp JSON report (no 'systems'); save one with --format json --output")
    return data


def render_eval(result: dict[str, Any], console) -> None:
    """Clip- and system-level metrics per axis as a Rich table."""
    from rich.table import Table

    table = Table(title=f"{result.get('name', 'evaluation')}: {result['n_clips']} clips, {result['n_systems']} systems", title_justify="left")
    for col in ("level", "axis", "n", "MSE", "LCC", "SRCC", "KTAU", "SRCC 95% CI"):
        table.add_column(col, justify="left" if col in ("level", "axis") else "right")
    for level in ("clip", "system"):
        for axis, m in result[level].items():
            ci = m.get("SRCC_CI95")
            table.add_row(level, axis, str(m["n"]), *(_fmt(m[k]) for k in ("MSE", "LCC", "SRCC", "KTAU")),
                          f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
    console.print(table)


def plot_systems(result: dict[str, Any], out_dir: str | os.PathLike, label: str = "drasp") -> list[Path]:
    """The paper's Fig. 3 per axis: system-level predicted vs. human MOS with the ideal line.

    Writes ``systems_<AXIS>.png`` files into ``out_dir`` and returns their paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for axis, points in result["points"].items():
        if not points:
            continue
        pred = [p[1] for p in points]
        true = [p[2] for p in points]
        lo, hi = min(pred + true), max(pred + true)
        pad = 0.05 * (hi - lo or 1.0)
        fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=120)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="grey", linewidth=1, label="ideal")
        ax.scatter(true, pred, s=22, color="tab:blue", label=label)
        m = result["system"][axis]
        ax.set_title(f"{axis}: system SRCC {m['SRCC']:.3f}, LCC {m['LCC']:.3f}", fontsize=9)
        ax.set_xlabel("human MOS (system mean)")
        ax.set_ylabel("predicted MOS (system mean)")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        path = out / f"systems_{axis}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths
