"""The scoring engine and `drasp score`: batch invariance, bad inputs, systems, outputs, gate."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import free_port
from drasp_cli.backbones.base import BackboneConfig
from drasp_cli.checkpoint import save_model
from drasp_cli.data import ClipInput
from drasp_cli.errors import EXIT_GATE_FAILED, EXIT_INPUTS_FAILED, DataError
from drasp_cli.model import ModelConfig, MosModel
from drasp_cli.pooling import PoolingConfig
from drasp_cli.scoring import Failure, Scorer, ScoreRequest, run_scoring, score_arrays

from test_audio import bad_inputs


def tone(seconds, freq, sr=44_100, amp=0.3, channels=2):
    t = np.arange(int(seconds * sr)) / sr
    x = (amp * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture(scope="module")
def model():
    cfg = ModelConfig(
        backbone=BackboneConfig("mel", options={"dim": 32, "channels": 16}),
        pooling=PoolingConfig("drasp", segment_size=10),
        head_activation="relu",
    )
    m = MosModel(cfg).eval()
    import torch

    with torch.no_grad():
        m.pooling.beta.fill_(0.5)
    return m


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    return str(save_model(model, tmp_path_factory.mktemp("ckpt") / "model"))


@pytest.fixture
def clips(tmp_path):
    folder = tmp_path / "clips"
    for system, base in (("S001", 220.0), ("S002", 440.0), ("S003", 660.0)):
        (folder / system).mkdir(parents=True)
        for i, seconds in enumerate((2.0, 11.0, 4.5)):
            sf.write(str(folder / system / f"track1-{system}_P00{i}.wav"), tone(seconds, base * (1 + 0.1 * i)), 44_100)
    sf.write(str(folder / "S003" / "long-S003_P009.ogg"), tone(25.0, 500.0), 44_100)
    return folder


def scores_of(results):
    return {r.path: r.scores["MOS"] for r in results if not isinstance(r, Failure)}


def test_scores_do_not_depend_on_batch_size_order_or_company(model, clips):
    files = sorted(str(p) for p in clips.rglob("*.*"))
    inputs = [ClipInput(f) for f in files]
    reference = scores_of(Scorer(model, batch_size=1, device="cpu").score(inputs))
    assert len(reference) == len(files)
    for batch_size, order, workers in ((3, inputs[::-1], 2), (16, inputs, 1), (5, inputs[2:5], 2)):
        got = scores_of(Scorer(model, batch_size=batch_size, device="cpu", workers=workers).score(order))
        for path, value in got.items():
            assert value == pytest.approx(reference[path], abs=1e-5), path
    assert len({round(v, 5) for v in reference.values()}) == len(files)


def test_arrays_in_memory_score_like_files(model, tmp_path):
    x = tone(3.0, 330.0, sr=22_050, channels=1)
    sf.write(str(tmp_path / "a.wav"), x, 22_050, subtype="FLOAT")
    [from_file] = Scorer(model, device="cpu").score([ClipInput(str(tmp_path / "a.wav"))])
    [from_array] = score_arrays(model, [(x, 22_050)], device="cpu")
    assert from_array.scores["MOS"] == pytest.approx(from_file.scores["MOS"], abs=1e-5)
    assert from_array.duration == pytest.approx(3.0)


def test_every_bad_input_fails_alone_and_the_rest_is_scored(model, tmp_path):
    reasons = bad_inputs(tmp_path)
    sf.write(str(tmp_path / "good.wav"), tone(1.0, 440.0), 44_100)
    sf.write(str(tmp_path / "silent.wav"), np.zeros(44_100, np.float32), 44_100)
    sf.write(str(tmp_path / "short.wav"), tone(0.1, 440.0), 44_100)
    sf.write(str(tmp_path / "six.flac"), tone(1.0, 440.0, channels=6), 44_100)
    sf.write(str(tmp_path / "k8.wav"), tone(1.0, 440.0, sr=8_000), 8_000)
    sf.write(str(tmp_path / "k96.wav"), tone(1.0, 440.0, sr=96_000), 96_000)
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, (4 * 44_100, 2)).astype(np.float32)
    sf.write(str(tmp_path / "whole.ogg"), noise, 44_100)  # noise: many Ogg pages
    data = (tmp_path / "whole.ogg").read_bytes()
    (tmp_path / "cut.ogg").write_bytes(data[: 2 * len(data) // 3])  # libsndfile decodes what is there
    names = list(reasons) + ["good.wav", "silent.wav", "short.wav", "six.flac", "k8.wav", "k96.wav", "cut.ogg"]
    results = list(Scorer(model, device="cpu", batch_size=4).score([ClipInput(str(tmp_path / n)) for n in names]))
    by_name = {r.path.rsplit("/", 1)[-1]: r for r in results}
    assert len(by_name) == len(names)
    for name, reason in reasons.items():
        assert isinstance(by_name[name], Failure), name
        assert str(tmp_path / name) in by_name[name].reason and "\n" not in by_name[name].reason
    for name in ("good.wav", "silent.wav", "short.wav", "six.flac", "k8.wav", "k96.wav", "cut.ogg"):
        assert np.isfinite(by_name[name].scores["MOS"]), name
    assert by_name["silent.wav"].flags and "silent" in by_name["silent.wav"].flags[0]
    assert not by_name["good.wav"].flags
    assert by_name["cut.ogg"].flags and "truncated?" in by_name["cut.ogg"].flags[0]
    assert 0 < by_name["cut.ogg"].duration < 3.5
    assert by_name["short.wav"].duration == pytest.approx(0.1)
    # Resampled and downmixed copies of the same tone score like the original.
    for name in ("six.flac", "k96.wav"):
        assert by_name[name].scores["MOS"] == pytest.approx(by_name["good.wav"].scores["MOS"], abs=2e-3)


def test_a_sixty_minute_file_is_streamed(model, tmp_path):
    path = tmp_path / "hour.wav"
    sr = 8_000
    with sf.SoundFile(str(path), "w", sr, 1, subtype="PCM_16") as f:
        block = tone(60.0, 300.0, sr=sr, channels=1)
        for _ in range(60):
            f.write(block)
    [result] = Scorer(model, device="cpu", batch_size=16).score([ClipInput(str(path))])
    assert result.duration == pytest.approx(3600.0)
    assert np.isfinite(result.scores["MOS"])


def test_segments_report_windows_and_attention(model, clips):
    path = str(clips / "S003" / "long-S003_P009.ogg")
    [r] = Scorer(model, device="cpu", segments=True).score([ClipInput(path)])
    assert [(w["start"], w["end"]) for w in r.windows] == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    assert all(np.isfinite(w["scores"]["MOS"]) for w in r.windows)
    starts = [s["start"] for s in r.segments]
    assert starts[:2] == [0.0, 0.8] and r.segments[-1]["end"] == pytest.approx(25.0, abs=0.01)
    assert sum(s["weight"]["MOS"] for s in r.segments) == pytest.approx(1.0, abs=1e-5)


def test_manifest_systems_and_start_end(model, tmp_path, clips):
    first = sorted(clips.rglob("*.wav"))[0]
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,system,start,end\n{first},mine,0.5,1.5\n{first},,,\n")
    report = run_scoring(model, ScoreRequest(manifest=str(manifest)), Scorer(model, device="cpu"))
    assert sorted((c["duration"], c["system"]) for c in report["clips"]) == [(1.0, "mine"), (2.0, "S001")]
    assert sum("key" in c for c in report["clips"]) == 1


@pytest.mark.parametrize(
    "text,message",
    [
        ("path,system\nx.wav,A\ny.wav\n", r"m.csv line 3: 1 fields, the header has 2"),
        ("file,system\nx.wav,A\n", "no 'path' column"),
        ('{"path": "x.wav"}\n{"path": \n', r"m.jsonl line 2: not valid JSON"),
        ("path,start\nx.wav,soon\n", r"line 2: start 'soon' is not a number"),
    ],
)
def test_malformed_manifests_name_the_line(model, tmp_path, text, message):
    name = "m.jsonl" if text.startswith("{") else "m.csv"
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=message):
        run_scoring(model, ScoreRequest(manifest=str(tmp_path / name)), Scorer(model, device="cpu"))


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `drasp ARGS...` in this process (much faster than a subprocess); returns an object
    with returncode, stdout and stderr."""
    from types import SimpleNamespace

    from drasp_cli import cli as cli_module

    def run(*args):
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["drasp", *args])
        with pytest.raises(SystemExit) as exit_info:
            cli_module.main()
        out, err = capsys.readouterr()
        code = exit_info.value.code
        return SimpleNamespace(returncode=0 if code is None else code, stdout=out, stderr=err)

    return run


def test_score_json_for_ci_with_systems_from_names(checkpoint, clips, tmp_path, cli):
    r = cli("score", str(clips), "--model", checkpoint, "--systems", "name", "--format", "json", "--device", "cpu", "-q")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["run"]["model"] == checkpoint and report["run"]["precision"] == "fp32"
    assert report["summary"]["scored"] == 10 and report["summary"]["failed"] == 0
    assert {s["system"]: s["n"] for s in report["systems"]} == {"S001": 3, "S002": 3, "S003": 4}
    means = [s["axes"]["MOS"]["mean"] for s in report["systems"]]
    assert means == sorted(means, reverse=True)


def test_system_map_and_unmatched_files(checkpoint, clips, tmp_path, cli):
    system_map = tmp_path / "systems.csv"
    system_map.write_text("pattern,system\nS001/*,alpha\n*S002_P000.wav,beta\n")
    r = cli("score", str(clips), "--model", checkpoint, "--system-map", str(system_map), "-f", "json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert {s["system"]: s["n"] for s in report["systems"]} == {"alpha": 3, "beta": 1}
    assert len(report["unassigned"]) == 6
    assert "no system rule matched" in r.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("pattern,system\nS001/*,\n")
    r = cli("score", str(clips), "--model", checkpoint, "--system-map", str(bad))
    assert r.returncode == 1 and r.stderr.strip() == f"drasp: error: {bad} line 2: empty 'system'"


def test_exit_codes_gate_and_output_file(checkpoint, clips, tmp_path, cli):
    (clips / "S001" / "broken.wav").write_text("oops")
    out = tmp_path / "run.json"
    r = cli("score", str(clips), "--model", checkpoint, "-o", str(out), "-q", "-f", "csv")
    assert r.returncode == EXIT_INPUTS_FAILED
    assert "broken.wav: not a readable audio file" in r.stdout
    saved = json.loads(out.read_text())
    assert saved["summary"]["failed"] == 1
    top = max(s["axes"]["MOS"]["mean"] for s in saved["systems"])
    gated = tmp_path / "gated.json"
    r = cli("score", str(clips), "--model", checkpoint, "-o", str(gated), "--fail-under", f"MOS={top + 1}", "-f", "json")
    assert r.returncode == EXIT_GATE_FAILED
    assert gated.exists() and "gate failed: system" in r.stderr
    # Against a baseline: no drop passes (but the broken file still fails -> 3); a shifted baseline fails.
    r = cli("score", str(clips), "--model", checkpoint, "--baseline", str(out), "--max-drop", "MOS=0.001", "-q", "-f", "json")
    assert r.returncode == EXIT_INPUTS_FAILED
    shifted = json.loads(out.read_text())
    shifted["systems"][0]["axes"]["MOS"]["mean"] += 0.5
    (tmp_path / "shifted.json").write_text(json.dumps(shifted))
    r = cli("score", str(clips), "--model", checkpoint, "--baseline", str(tmp_path / "shifted.json"), "--max-drop", "MOS=0.1", "-f", "json")
    assert r.returncode == EXIT_GATE_FAILED and "fell 0.500" in r.stderr
    r = cli("score", str(clips / "S001" / "broken.wav"), "--model", checkpoint, "-q")
    assert r.returncode == 1 and "no input could be scored" in r.stderr
    r = cli("score", str(clips), "--model", checkpoint, "--strict", "-q")
    assert r.returncode == 1 and "broken.wav" in r.stderr


def test_jsonl_output_resumes(checkpoint, clips, tmp_path, cli):
    log = tmp_path / "run.jsonl"
    some = sorted(str(p) for p in clips.rglob("*.wav"))[:4]
    r = cli("score", *some, "--model", checkpoint, "-o", str(log), "-q", "-f", "json")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    lines = log.read_text().splitlines()
    assert json.loads(lines[0])["type"] == "run" and len(lines) == 5
    with open(log, "a") as f:
        f.write('{"type": "clip", "path": "cut sho')  # an interrupted write
    r = cli("score", str(clips), "--model", checkpoint, "-o", str(log), "-q", "-f", "json")
    assert r.returncode == 0, r.stderr
    clip_lines = [json.loads(x) for x in log.read_text().splitlines()[1:] if x.startswith('{"type": "clip", "path": "/')]
    assert len(clip_lines) == 10  # the 4 earlier ones were not scored again
    again = {c["path"]: c["scores"]["MOS"] for c in json.loads(r.stdout)["clips"]}
    for c in first["clips"]:
        assert again[c["path"]] == c["scores"]["MOS"]
    r = cli("score", str(clips), "--model", checkpoint, "-o", str(log), "--segments", "-q")
    assert r.returncode == 1 and "made with segments=False" in r.stderr


def test_shards_cover_every_file_once_and_merge(model, clips):
    from drasp_cli.scoring import merge_reports

    files = [str(clips), str(clips / "missing.wav")]
    whole = run_scoring(model, ScoreRequest(inputs=files), Scorer(model, device="cpu"))
    parts = [run_scoring(model, ScoreRequest(inputs=files, shard=(i, 3)), Scorer(model, device="cpu")) for i in range(3)]
    assert sorted(len(p["clips"]) for p in parts) == [3, 3, 4]
    merged = merge_reports(parts)
    assert [c["path"] for c in merged["clips"]] == sorted(c["path"] for c in whole["clips"])
    assert merged["summary"] == whole["summary"]
    assert [s["system"] for s in merged["systems"]] == [s["system"] for s in whole["systems"]]


def test_score_under_torchrun_merges_on_rank_zero(checkpoint, clips, tmp_path):
    import os
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "drasp_cli", "score", str(clips), "--model", checkpoint, "-f", "json", "--device", "cpu", "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)  # only rank 0 printed
    assert report["summary"]["scored"] == 10 and report["run"]["shards"] == 2


def test_window_mean_backbones_report_per_window_scores_and_attention(model, clips, monkeypatch):
    monkeypatch.setattr(model.backbone, "long_audio", "window-mean")
    path = str(clips / "S003" / "long-S003_P009.ogg")
    [r] = Scorer(model, device="cpu", segments=True).score([ClipInput(path)])
    w = [x["scores"]["MOS"] for x in r.windows]
    assert len(w) == 3
    assert r.scores["MOS"] == pytest.approx((w[0] + w[1] + 0.5 * w[2]) / 2.5, abs=1e-5)  # weighted by real length
    assert {s["window"] for s in r.segments} == {0, 1, 2}
    per_window = [sum(s["weight"]["MOS"] for s in r.segments if s["window"] == i) for i in range(3)]
    assert per_window == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert r.segments[-1]["end"] == pytest.approx(25.0, abs=0.01)


def test_default_decoding_threads_follow_the_device(monkeypatch, model):
    from drasp_cli.scoring import default_workers

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert default_workers(torch.device("cpu")) == 1
    assert default_workers(torch.device("cuda")) == 7
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert default_workers(torch.device("cuda", 1)) == 16
    assert Scorer(model, device="cpu", workers=None).workers == 1
