"""Build a labelled proxy MOS benchmark from freely licensed music in Debian packages.

No MOS-labelled music can be had offline, so the labels come from an objective full-reference model that
nobody on this project wrote: ViSQOL v3 in audio mode (``visqol-python``). Clean 10 s clips cut from game
soundtracks are passed through degradation chains ("systems"); each degraded clip is labelled against its
clean source with

* ``MOS``   ViSQOL MOS-LQO of the whole clip, and
* ``LOCAL`` the worst ViSQOL MOS-LQO over the clip's 1 s segments (each against its clean segment), which
  reacts to short faults that barely move the global score (a 300 ms dropout: 4.73 -> 4.62 globally,
  3.19 on its segment).

Everything is cached under ``--cache`` and ``--out``: re-running skips downloaded packages, written clips
and computed labels, so an interrupted run resumes where it stopped. The plan (tracks, splits, clip
offsets, systems and their random severities) depends only on ``--seed`` and the size options.

    python benchmarks/proxy/prepare.py --tracks 48 --clips-per-track 2

See benchmarks/proxy/README.md for the outputs, licenses and timings.
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

# One thread everywhere: the benchmark is built on shared machines, and numba's parallel kernels in
# visqol would otherwise take every core. Must be set before numpy / numba are imported.
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402
from scipy.signal import butter, sosfiltfilt  # noqa: E402

SR = 48_000  # ViSQOL audio mode works at 48 kHz only
HERE = Path(__file__).resolve().parent
LEVEL_RMS = 10 ** (-23 / 20)  # clean clips are set to -23 dBFS RMS ...
PEAK_MAX = 10 ** (-1 / 20)  # ... unless that would put a peak above -1 dBFS
QUIET_SEGMENT = 0.1  # a clean clip whose 1 s segment is 20 dB below the clip's RMS is skipped (near silence)
EDGE = 0.3  # s; local faults start at least this far from the clip's ends


# ---------------------------------------------------------------------------------------------
# Sources: Debian packages of game music, each with where its tracks are and how to read them.

@dataclass(frozen=True)
class Package:
    name: str
    patterns: tuple[str, ...]  # globs, relative to the extracted package, of the track files
    license: str  # from the package's debian/copyright (and the album license files it points to)
    min_seconds: float = 30.0  # shorter files are jingles or sound effects
    stems: bool = False  # each folder holds one song split into stems (song.ogg + guitar.ogg ...): sum them


PACKAGES = {
    p.name: p
    for p in (
        Package("singularity-music", ("usr/share/games/singularity/music/**/*.ogg",), "CC-BY-SA-3.0 (Max McCracken)"),
        Package("wesnoth-1.16-music", ("usr/share/games/wesnoth/1.16/data/core/music/*.ogg",), "GPL-2+ (Wesnoth project)"),
        Package("warzone2100-music", ("usr/share/games/warzone2100/music/albums/*/*.opus",),
                "GPL-2+; the aftermath and legacy albums also CC-BY-SA-3.0+ (LupusMechanicus)"),
        Package("hyperrogue-music", ("usr/share/hyperrogue/music/*.ogg",), "GPL-2+ (Zeno Rogue et al.)"),
        Package("planetblupi-music-ogg", ("usr/share/planetblupi/music/*.ogg",), "GPL-3+ (Mathieu Schroeter)"),
        Package("fretsonfire-songs-muldjord", ("usr/share/games/fretsonfire/data/songs/muldjord/*/song.ogg",),
                "CC-BY-SA-3.0 (El Senator / Muldjord)", stems=True),
        Package("fretsonfire-songs-sectoid", ("usr/share/games/fretsonfire/data/songs/sectoid/*/song.ogg",),
                "Expat (MIT) (Carlos Viola Iborra)", stems=True),
    )
}


def fetch(packages: list[str], cache: Path) -> dict[str, Path]:
    """Download each package with ``apt-get download`` and unpack it with ``dpkg-deb -x``, once."""
    cache = cache.resolve()
    debs, roots = cache / "debs", {}
    debs.mkdir(parents=True, exist_ok=True)
    for name in packages:
        root = cache / "pkgs" / name
        if not (root / ".extracted").exists():
            found = sorted(debs.glob(f"{name}_*.deb"))
            if not found:
                done = subprocess.run(["apt-get", "download", name], cwd=debs, capture_output=True, text=True)
                found = sorted(debs.glob(f"{name}_*.deb"))
                if done.returncode or not found:
                    raise SystemExit(f"apt-get download {name} failed: {done.stderr.strip()[-300:]}\n"
                                     "run `apt-get update` once, or pick packages with --packages")
            root.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(root)], check=True)
            (root / ".extracted").touch()
        roots[name] = root
    return roots


@dataclass(frozen=True)
class Track:
    id: str  # package/stem, the unit of the train/val/test split
    package: str
    files: tuple[str, ...]  # one file, or the stems of one song
    seconds: float


def find_tracks(roots: dict[str, Path]) -> list[Track]:
    tracks = []
    for name, root in roots.items():
        pkg = PACKAGES[name]
        files = sorted({f for pat in pkg.patterns for f in glob.glob(str(root / pat), recursive=True)})
        for f in files:
            if pkg.stems:
                parts = tuple(sorted(glob.glob(os.path.join(os.path.dirname(f), "*.ogg"))))
                stem = os.path.basename(os.path.dirname(f))
            else:
                parts, stem = (f,), Path(f).stem
            info = sf.info(parts[0])
            if info.duration < pkg.min_seconds or info.samplerate < 44_100:
                continue  # jingles, and sources too band-limited to serve as clean references
            track_id = f"{name}/{stem}"
            if any(t.id == track_id for t in tracks):  # the same name in two albums: keep them apart
                track_id = f"{name}/{Path(f).parent.name}-{stem}"
            tracks.append(Track(track_id, name, parts, info.duration))
    return tracks


def read_region(track: Track, start_s: float, seconds: float) -> np.ndarray:
    """Mono 48 kHz audio of ``track`` from ``start_s``, stems summed."""
    out = None
    for f in track.files:
        info = sf.info(f)
        x, sr = sf.read(f, start=int(start_s * info.samplerate), frames=int(seconds * info.samplerate),
                        dtype="float64", always_2d=True)
        x = soxr.resample(x.mean(axis=1), sr, SR, quality="HQ")
        out = x if out is None else out[: len(x)] + x[: len(out)]
    return out


# ---------------------------------------------------------------------------------------------
# Degradations. Each takes the clean clip and a generator, and returns the degraded clip and the
# parameters it drew (recorded with the labels).

def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)) + 1e-12)


def lowpass(x, cutoff):
    return sosfiltfilt(butter(8, cutoff, "low", fs=SR, output="sos"), x)


def bandpass(x, lo, hi):
    return sosfiltfilt(butter(4, [lo, hi], "band", fs=SR, output="sos"), x)


def noise(x, snr_db, rng):
    return x + rng.standard_normal(len(x)) * rms(x) / 10 ** (snr_db / 20)


def clip(x, fraction):
    t = fraction * np.max(np.abs(x))
    return np.clip(x, -t, t)


def codec(x, fmt, subtype, level, sr=SR):
    """Encode and decode in memory with libsndfile's encoders (lame, vorbis, opus)."""
    y = soxr.resample(x, SR, sr) if sr != SR else x
    buf = io.BytesIO()
    # MP3 at constant bitrate so a level names a bitrate (48 kHz mono: 0.9 -> 56 kb/s, 0.7 -> 113, 0.6 -> 161);
    # libsndfile refuses a bitrate mode for vorbis and opus, whose level sets a (content-dependent) quality.
    mode = "CONSTANT" if fmt == "MP3" else None
    sf.write(buf, y, sr, format=fmt, subtype=subtype, compression_level=level, bitrate_mode=mode)
    buf.seek(0)
    z, _ = sf.read(buf, dtype="float64")
    z = soxr.resample(z, sr, SR) if sr != SR else z
    return np.pad(z, (0, max(0, len(x) - len(z))))[: len(x)]


def _starts(x, rng, n, dur):
    """``n`` random start samples for events of ``dur`` seconds, inside the clip."""
    lo, hi = int(EDGE * SR), len(x) - int((dur + EDGE) * SR)
    return rng.integers(lo, max(lo + 1, hi), size=n)


def dropouts(x, rng, n, dur):
    y, d = x.copy(), [float(rng.uniform(*dur)) for _ in range(n)]
    for s, di in zip(_starts(x, rng, n, max(d)), d):
        y[s : s + int(di * SR)] = 0.0
    return y, {"dropouts_s": [round(v, 3) for v in d]}


def clicks(x, rng, n):
    y, peak = x.copy(), np.max(np.abs(x))
    for s in _starts(x, rng, n, 0.005):
        length = int(rng.integers(48, 144))  # 1-3 ms
        y[s : s + length] += rng.choice([-1, 1]) * rng.uniform(0.5, 1.0) * peak * np.exp(-np.arange(length) / (length / 4))
    return y, {"clicks": n}


def bursts(x, rng, n, dur, snr):
    y, level = x.copy(), rms(x)
    params = []
    for s in _starts(x, rng, n, dur[1]):
        d, sn = int(rng.uniform(*dur) * SR), float(rng.uniform(*snr))
        y[s : s + d] += rng.standard_normal(d) * level / 10 ** (sn / 20)
        params.append((round(d / SR, 3), round(sn, 1)))
    return y, {"bursts_s_snr": params}


def local_distortion(x, rng, n, dur, drive):
    y, peak = x.copy(), np.max(np.abs(x))
    params = []
    for s in _starts(x, rng, n, dur[1]):
        d, g = int(rng.uniform(*dur) * SR), float(rng.uniform(*drive))
        y[s : s + d] = np.tanh(g * y[s : s + d] / peak) / np.tanh(g) * peak
        params.append((round(d / SR, 3), round(g, 1)))
    return y, {"distortion_s_drive": params}


def stutter(x, rng, n):
    y = x.copy()
    params = []
    for s in _starts(x, rng, n, 0.6):
        c, r = int(rng.uniform(0.06, 0.15) * SR), int(rng.integers(2, 5))
        y[s : s + c * r] = np.tile(x[s : s + c], r)[: len(y[s : s + c * r])]
        params.append((round(c / SR, 3), r))
    return y, {"stutter_s_repeats": params}


def _random_global(x, rng, mild=False):
    """One global artefact with a random severity (milder ranges for mixtures' background)."""
    kind = rng.choice(["lowpass", "noise", "clip", "mp3"] if not mild else ["lowpass", "noise"])
    if kind == "lowpass":
        f = float(rng.uniform(8000, 14000) if mild else rng.uniform(2500, 12000))
        return lowpass(x, f), {"lowpass_hz": round(f)}
    if kind == "noise":
        snr = float(rng.uniform(35, 50) if mild else rng.uniform(20, 50))
        return noise(x, snr, rng), {"snr_db": round(snr, 1)}
    if kind == "clip":
        f = float(rng.uniform(0.2, 0.7))
        return clip(x, f), {"clip_fraction": round(f, 2)}
    level = float(rng.uniform(0.6, 0.9))  # 161 to 56 kb/s
    return codec(x, "MP3", "MPEG_LAYER_III", level), {"mp3_level": round(level, 2)}


def _random_local(x, rng):
    kind = rng.choice(["dropouts", "clicks", "bursts", "distortion"])
    if kind == "dropouts":
        return dropouts(x, rng, int(rng.integers(1, 4)), (0.05, 0.5))
    if kind == "clicks":
        return clicks(x, rng, int(rng.integers(2, 20)))
    if kind == "bursts":
        return bursts(x, rng, int(rng.integers(1, 4)), (0.05, 0.4), (-5, 20))
    return local_distortion(x, rng, int(rng.integers(1, 3)), (0.1, 0.7), (3, 30))


def mix_global(x, rng):
    params = {}
    for _ in range(int(rng.integers(1, 3))):
        x, p = _random_global(x, rng)
        params.update(p)
    return x, params


def mix_local(x, rng):
    params = {}
    if rng.random() < 0.5:
        x, params = _random_global(x, rng, mild=True)
    for _ in range(int(rng.integers(1, 3))):
        x, p = _random_local(x, rng)
        params.update(p)
    return x, params


def noisy_dropouts(x, rng):
    snr = float(rng.uniform(25, 40))
    y, p = dropouts(noise(x, snr, rng), rng, int(rng.integers(2, 5)), (0.15, 0.35))
    return y, {"snr_db": round(snr, 1), **p}


@dataclass(frozen=True)
class System:
    name: str
    kind: str  # clean, global, local or mixture: what a reader of the results groups by
    render: object  # (x, rng) -> (y, params)
    heldout: bool = False  # only on test tracks, never in train / val


def _fixed(f):
    return lambda x, rng: (f(x, rng), {})


SYSTEMS = [
    System("clean", "clean", _fixed(lambda x, rng: x.copy())),
    System("lowpass_11k", "global", _fixed(lambda x, rng: lowpass(x, 11000))),
    System("lowpass_3k", "global", _fixed(lambda x, rng: lowpass(x, 3000))),
    System("noise_45db", "global", _fixed(lambda x, rng: noise(x, 45, rng))),
    System("noise_25db", "global", _fixed(lambda x, rng: noise(x, 25, rng))),
    System("clip_30", "global", _fixed(lambda x, rng: clip(x, 0.3))),  # clipped at 30% of the peak
    System("mp3_112k", "global", _fixed(lambda x, rng: codec(x, "MP3", "MPEG_LAYER_III", 0.7))),
    System("mp3_56k", "global", _fixed(lambda x, rng: codec(x, "MP3", "MPEG_LAYER_III", 0.9))),
    System("vorbis_16k", "global", _fixed(lambda x, rng: codec(x, "OGG", "VORBIS", 1.0, sr=16000))),  # ~28 kb/s
    System("opus_20k", "global", _fixed(lambda x, rng: codec(x, "OGG", "OPUS", 0.95))),  # ~20 kb/s
    System("dropouts", "local", lambda x, rng: dropouts(x, rng, int(rng.integers(1, 4)), (0.1, 0.4))),
    System("clicks", "local", lambda x, rng: clicks(x, rng, int(rng.integers(3, 13)))),
    System("bursts", "local", lambda x, rng: bursts(x, rng, int(rng.integers(1, 4)), (0.1, 0.3), (0, 10))),
    System("local_distortion", "local",
           lambda x, rng: local_distortion(x, rng, int(rng.integers(1, 3)), (0.2, 0.6), (10, 30))),
    System("mix_global", "mixture", mix_global),
    System("mix_local", "mixture", mix_local),
    # Held out: kinds or combinations that training never shows.
    System("telephone", "global", _fixed(lambda x, rng: bandpass(x, 300, 3400)), heldout=True),
    System("opus_6k", "global", _fixed(lambda x, rng: codec(x, "OGG", "OPUS", 1.0)), heldout=True),  # ~6 kb/s
    System("stutter", "local", lambda x, rng: stutter(x, rng, int(rng.integers(1, 4))), heldout=True),
    System("noisy_dropouts", "mixture", noisy_dropouts, heldout=True),
]
BY_NAME = {s.name: s for s in SYSTEMS}


# ---------------------------------------------------------------------------------------------
# The plan: which tracks, which split, which 10 s windows, which systems. Deterministic in the seed.

def rng_for(seed: int, *key: str) -> np.random.Generator:
    """A generator that depends on the seed and the key only, not on what ran before (resumable)."""
    digest = hashlib.sha256("\x00".join((str(seed),) + key).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def pick_tracks(tracks: list[Track], n: int, seed: int) -> list[tuple[Track, str]]:
    """``n`` tracks taken round-robin over packages (so every genre is in), each with its split."""
    by_pkg = defaultdict(list)
    for t in tracks:
        by_pkg[t.package].append(t)
    queues = [list(rng_for(seed, "tracks", p).permutation(np.array(ts, dtype=object))) for p, ts in sorted(by_pkg.items())]
    chosen = []
    while len(chosen) < n and any(queues):
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop(0))
    # 14 / 3 / 3 of every 20 tracks, in the round-robin order: about 70 / 15 / 15 % in every package.
    pattern = ["train"] * 14 + ["val"] * 3 + ["test"] * 3
    order = rng_for(seed, "split").permutation(len(pattern))
    return [(t, pattern[order[i % len(pattern)]]) for i, t in enumerate(chosen)]


def pick_windows(track: Track, k: int, seconds: float, seed: int) -> list[tuple[float, np.ndarray]]:
    """Up to ``k`` non-overlapping windows of music (no near-silent second), levelled."""
    rng = rng_for(seed, "windows", track.id)
    lo, hi = 0.05 * track.seconds, 0.95 * track.seconds - seconds
    starts = [] if hi <= lo else list(np.floor(rng.uniform(lo, hi, size=8 * k)))
    out = []
    for s in starts:
        if len(out) == k:
            break
        if any(abs(s - o) < seconds for o, _ in out):
            continue
        x = read_region(track, s, seconds)
        if len(x) < int(seconds * SR) or rms(x) < 1e-3:
            continue
        x = x[: int(seconds * SR)]
        segs = x.reshape(-1, SR)  # (seconds, SR)
        if np.sqrt((segs**2).mean(axis=1)).min() < QUIET_SEGMENT * rms(x):
            continue
        x = x * LEVEL_RMS / rms(x)
        x = x * min(1.0, PEAK_MAX / np.max(np.abs(x)))
        out.append((float(s), x))
    return out


def assign_systems(n_clips: int, per_clip: int, names: list[str], rng: np.random.Generator) -> list[list[str]]:
    """Balanced draws: ``per_clip`` distinct systems per clip, every system used about equally often."""
    pool, out = [], []
    for _ in range(n_clips):
        picked = []
        while len(picked) < min(per_clip, len(names)):
            if not pool:
                pool = list(rng.permutation(names))
            name = pool.pop()
            if name in picked:
                pool.insert(0, name)
                continue
            picked.append(name)
        out.append(picked)
    return out


# ---------------------------------------------------------------------------------------------
# Labels

class Labeller:
    """ViSQOL audio mode: MOS-LQO of the whole clip and of each segment."""

    def __init__(self, segment_seconds: float, numba: bool):
        import visqol.numba_accel as accel  # noqa: PLC0415 (heavy; only when labelling)

        if not numba:
            accel._HAS_NUMBA = False  # the pure numpy path; bit-exact with numba, about 7x slower
        from visqol import VisqolApi  # noqa: PLC0415

        self.api = VisqolApi()
        self.api.create(mode="audio")
        self.seg = int(segment_seconds * SR)
        self.numba = accel.has_numba()
        self.time = defaultdict(float)

    def __call__(self, ref: np.ndarray, deg: np.ndarray) -> dict:
        t = time.perf_counter()
        mos = self.api.measure_from_arrays(ref, deg, SR).moslqo
        t2 = time.perf_counter()
        segs = [self.api.measure_from_arrays(ref[i : i + self.seg], deg[i : i + self.seg], SR).moslqo
                for i in range(0, len(ref) - self.seg + 1, self.seg)]
        self.time["visqol_clip_s"] += t2 - t
        self.time["visqol_segments_s"] += time.perf_counter() - t2
        return {"MOS": round(float(mos), 4), "LOCAL": round(float(min(segs)), 4),
                "segments": [round(float(v), 4) for v in segs]}


def write_audio(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.flac")
    # libsndfile does not clip floats when writing integers: out-of-range samples would wrap around.
    sf.write(tmp, np.clip(x, -1.0, 1.0 - 2**-23), SR, subtype="PCM_24")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "data" / "proxy", help="benchmark folder (manifests, clips, labels)")
    ap.add_argument("--cache", type=Path, default=HERE / "data" / "cache", help="downloaded and unpacked packages")
    ap.add_argument("--packages", nargs="+", default=list(PACKAGES), choices=list(PACKAGES), metavar="PKG",
                    help=f"Debian packages to draw music from (default: all of {', '.join(PACKAGES)})")
    ap.add_argument("--tracks", type=int, default=48, help="source tracks, taken round-robin over the packages")
    ap.add_argument("--clips-per-track", type=int, default=2, help="clean 10 s windows per track")
    ap.add_argument("--systems-per-clip", type=int, default=5, help="degraded versions (of the seen systems) per clean clip")
    ap.add_argument("--heldout-per-clip", type=int, default=4, help="held-out systems per clean clip of a test track")
    ap.add_argument("--clip-seconds", type=int, default=10)
    ap.add_argument("--segment-seconds", type=float, default=1.0, help="segment length for the LOCAL axis")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-numba", action="store_true", help="ViSQOL's pure-numpy path (about 7x slower; same numbers)")
    args = ap.parse_args(argv)

    from tqdm import tqdm  # noqa: PLC0415

    timings = defaultdict(float)
    t0 = time.perf_counter()
    roots = fetch(args.packages, args.cache)
    timings["fetch_s"] = time.perf_counter() - t0

    tracks = find_tracks(roots)
    chosen = pick_tracks(tracks, args.tracks, args.seed)
    seen = [s.name for s in SYSTEMS if not s.heldout and s.name != "clean"]
    heldout = [s.name for s in SYSTEMS if s.heldout]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    labels_path = out / "labels.jsonl"
    labels = {}
    if labels_path.exists():
        for line in labels_path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # empty, or the last line of a run killed while writing it: computed again
            labels[row["path"]] = row

    # The plan: every (clean clip, system) pair, fixed before any audio is made.
    t1 = time.perf_counter()
    plan = []  # (track, split, clip id, start, [systems]); the clean clips are written here
    for track, split in tqdm(chosen, desc="cutting clips", unit="track", file=sys.stderr):
        for start, x in pick_windows(track, args.clips_per_track, args.clip_seconds, args.seed):
            clip_id = f"{track.id.replace('/', '__').replace(' ', '_')}__{int(start):04d}s"
            if not (out / f"clips/clean/{clip_id}.flac").exists():
                write_audio(out / f"clips/clean/{clip_id}.flac", x)
            plan.append([track, split, clip_id, start, ["clean"]])
    timings["decode_s"] = time.perf_counter() - t1
    for split in ("train", "val", "test"):
        rows = [p for p in plan if p[1] == split]
        for p, names in zip(rows, assign_systems(len(rows), args.systems_per_clip, seen, rng_for(args.seed, "assign", split))):
            p[4] += names
        if split == "test" and args.heldout_per_clip:
            for p, names in zip(rows, assign_systems(len(rows), args.heldout_per_clip, heldout, rng_for(args.seed, "heldout"))):
                p[4] += names

    todo = sum(len(p[4]) for p in plan)
    labeller = Labeller(args.segment_seconds, numba=not args.no_numba)
    print(f"{len(plan)} clean clips from {len(chosen)} tracks, {todo} labelled clips; "
          f"{len(labels)} already labelled; numba: {labeller.numba}", file=sys.stderr)
    bar = tqdm(total=todo, desc="labelling", unit="clip", file=sys.stderr)
    records = []
    with labels_path.open("a") as log:
        for track, split, clip_id, start, names in plan:
            # Systems degrade the stored clean clip, so a resumed run renders from the same samples.
            ref = sf.read(out / f"clips/clean/{clip_id}.flac", dtype="float64")[0]
            for name in names:
                rel = f"clips/{name}/{clip_id}.flac"
                row = labels.get(rel)
                if row is None:
                    t = time.perf_counter()
                    path = out / rel
                    # Rendering is deterministic, so redoing it (after an interruption) gives the same file
                    # and the parameters to log.
                    y, params = BY_NAME[name].render(ref, rng_for(args.seed, "render", clip_id, name))
                    if name != "clean":
                        write_audio(path, y)
                    deg = sf.read(path, dtype="float64")[0]  # label exactly what is stored
                    timings["render_s"] += time.perf_counter() - t
                    row = {"path": rel, "system": name, "track": track.id, "split": split, "start_s": start,
                           "params": params, **labeller(ref, deg)}
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    labels[rel] = row
                records.append(row)
                bar.update()
    bar.close()
    timings.update(labeller.time)
    timings["total_s"] = time.perf_counter() - t0

    write_outputs(out, records, heldout, tracks, chosen, args, timings, labeller.numba)
    return 0


def write_outputs(out, records, heldout, tracks, chosen, args, timings, numba) -> None:
    columns = ["path", "system", "track", "split", "MOS", "LOCAL"]
    for name, keep in (("manifest.csv", lambda r: r["system"] not in heldout),
                       ("heldout.csv", lambda r: r["system"] in heldout)):
        with (out / name).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(columns)
            for r in records:
                if keep(r):
                    w.writerow([r["path"], r["system"], r["track"], r["split"], f"{r['MOS']:.4f}", f"{r['LOCAL']:.4f}"])
    (out / "heldout_systems.txt").write_text("".join(f"{s}\n" for s in heldout))

    splits = defaultdict(lambda: defaultdict(int))
    for r in records:
        splits[r["split"]]["clips"] += 1
    for t, split in chosen:
        splits[split]["tracks"] += 1
    summary = {
        "seed": args.seed, "packages": args.packages, "tracks_available": len(tracks), "tracks": len(chosen),
        "clips": len(records), "clean_clips": sum(r["system"] == "clean" for r in records),
        "splits": {k: dict(v) for k, v in splits.items()}, "heldout_systems": heldout, "numba": numba,
        "options": {k: str(v) for k, v in vars(args).items()},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    # Per-system means on stdout: the check that labels fall with severity.
    by = defaultdict(list)
    for r in records:
        by[r["system"]].append(r)
    print(f"{'system':18s} {'kind':8s} {'held':4s} {'n':>4s} {'MOS':>6s} {'sd':>5s} {'LOCAL':>6s} {'sd':>5s}")
    for s in sorted(by, key=lambda s: -np.mean([r["MOS"] for r in by[s]])):
        m = np.array([r["MOS"] for r in by[s]])
        loc = np.array([r["LOCAL"] for r in by[s]])
        print(f"{s:18s} {BY_NAME[s].kind:8s} {'yes' if BY_NAME[s].heldout else '':4s} {len(m):4d} "
              f"{m.mean():6.2f} {m.std():5.2f} {loc.mean():6.2f} {loc.std():5.2f}")


if __name__ == "__main__":
    sys.exit(main())
