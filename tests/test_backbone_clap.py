"""The LAION-CLAP backbone against laion-clap's own code, on random weights in LAION's file format.

One random-weight HTSAT-tiny CLAP is built with laion-clap's ``CLAP_Module`` (its RoBERTa built
from roberta-base's configuration instead of downloaded) and saved as LAION releases its ``.pt``
files. drasp then reads that file from a path and from an offline Hub cache, and its frames,
embeddings and text embeddings are compared with laion-clap's forward pass on the same audio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drasp_cli.backbones import build_backbone
from drasp_cli.backbones.base import BackboneConfig, WeightsSource
from drasp_cli.backbones.clap import ClapBackbone, load_roberta_tokenizer
from drasp_cli.errors import AudioError, CheckpointError, ConfigError

SR = 48_000
WINDOW = 10 * SR
# roberta-base's config.json, written out here so the test checks the backbone's copy of it.
ROBERTA_BASE_JSON = dict(
    vocab_size=50265,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=514,
    type_vocab_size=1,
    layer_norm_eps=1e-05,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # roberta-base's ids 0..4
CORPUS = [
    "a calm piano melody with soft strings and a slow drum beat",
    "an energetic rock song with loud drums and electric guitar",
    "a bright synth arpeggio over a deep bass line",
    "a choir singing a quiet hymn in a large church",
]


def music(seconds: float, seed: int = 0) -> np.ndarray:
    """A tone plus noise that peaks above full scale, so the int16 round trip has to clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.8 * np.sin(2 * np.pi * 440 * t) + 0.3 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def official():
    """laion-clap's own HTSAT-tiny CLAP_Module with random weights, built offline."""
    import laion_clap
    import clap_module.model  # the module laion-clap builds CLAP from (its folder is on sys.path)
    from transformers import RobertaConfig, RobertaModel

    class RobertaBaseOffline:
        @staticmethod
        def from_pretrained(name):
            assert name == "roberta-base"
            return RobertaModel(RobertaConfig(**ROBERTA_BASE_JSON))

    torch.manual_seed(1)
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)  # HTSAT's, not ours
        mp.setattr(clap_module.model, "RobertaModel", RobertaBaseOffline)
        module = laion_clap.CLAP_Module(enable_fusion=False, amodel="HTSAT-tiny", device="cpu")
    return module.eval()


@pytest.fixture(scope="module")
def tiny_pt(official, tmp_path_factory):
    """The official model saved as LAION's release files are: ``module.`` keys, with position_ids."""
    state = {f"module.{k}": v for k, v in official.model.state_dict().items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(514)[None]
    path = tmp_path_factory.mktemp("laion") / "630k-audioset-best.pt"
    torch.save({"epoch": 45, "name": "random", "state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A small byte-level BPE tokenizer, saved as a RoBERTa tokenizer folder."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 3, vocab_size=400, min_frequency=1, special_tokens=SPECIALS, show_progress=False)
    bpe.save_model(str(folder))
    RobertaTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_pt, tokenizer_dir):
    """drasp's frozen HTSAT-tiny backbone, read from the local .pt."""
    config = BackboneConfig(
        name="clap",
        variant="HTSAT-tiny",
        options={"tokenizer": str(tokenizer_dir)},
        source=WeightsSource(path=str(tiny_pt)),
        trainable=False,
    )
    backbone = build_backbone(config)
    backbone.load()
    return backbone.eval()


def official_htsat(official, window: np.ndarray) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return official.model.audio_branch({"waveform": torch.from_numpy(window)[None]}, device="cpu")


def frames_of(backbone, signals):
    with torch.no_grad():
        return backbone(signals)


# -- without loading -----------------------------------------------------------------------------
def test_facts_are_known_without_loading_and_bad_settings_fail():
    base = ClapBackbone(BackboneConfig(name="clap"))
    tiny = ClapBackbone(BackboneConfig(name="clap", variant="HTSAT-tiny"))
    assert (base.feature_dim, tiny.feature_dim) == (1024, 768)
    assert (base.sample_rate, base.frame_rate, base.window_samples, base.frames_per_window) == (48000, 3.2, 480000, 32)
    assert (base.embedding_dim, base.has_text, base.long_audio) == (512, True, "concat")
    with pytest.raises(ConfigError, match="HTSAT-huge"):
        ClapBackbone(BackboneConfig(name="clap", variant="HTSAT-huge"))
    with pytest.raises(ConfigError, match="'tokeniser'"):
        ClapBackbone(BackboneConfig(name="clap", options={"tokeniser": "x"}))


def test_importing_the_backbone_does_not_import_laion_clap():
    code = (
        "import sys, drasp_cli.backbones.clap as c; c.ClapBackbone(c.BackboneConfig(name='clap'));"
        "print(sorted(m for m in sys.modules if m.startswith(('laion_clap', 'clap_module', 'transformers'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("seconds", [0.5, 7.0, 10.0])
def test_short_clips_are_prepared_like_the_official_wrapper(seconds):
    from laion_clap.training.data import float32_to_int16, get_audio_features, int16_to_float32

    clip = music(seconds)
    expected = get_audio_features(
        {},
        torch.from_numpy(int16_to_float32(float32_to_int16(clip))),
        WINDOW,
        data_truncating="rand_trunc",
        data_filling="repeatpad",
        audio_cfg={},
    )["waveform"]
    windows, lengths = ClapBackbone(BackboneConfig(name="clap")).prepare(clip)
    np.testing.assert_array_equal(windows, expected.numpy()[None])
    assert lengths.tolist() == [WINDOW]  # a repeat-padded window counts as full: all frames valid
    assert np.abs(windows).max() <= 1.0  # clipped before the int16 cast


def test_long_and_empty_clips_are_windowed_and_bad_audio_is_refused():
    backbone = ClapBackbone(BackboneConfig(name="clap"))
    windows, lengths = backbone.prepare(music(25))
    assert windows.shape == (3, WINDOW) and lengths.tolist() == [WINDOW, WINDOW, 5 * SR]
    assert not windows[2, 5 * SR :].any()  # zero-padded, not repeated
    windows, lengths = backbone.prepare(np.zeros(0, dtype=np.float32))
    assert windows.shape == (1, WINDOW) and lengths.tolist() == [0]
    with pytest.raises(AudioError, match="mono"):
        backbone.prepare(np.zeros((2, SR), dtype=np.float32))
    with pytest.raises(AudioError, match="NaN"):
        backbone.prepare(np.full(SR, np.nan, dtype=np.float32))


# -- weights ---------------------------------------------------------------------------------------
def test_a_laion_pt_file_loads_every_weight(official, tiny):
    ours = tiny.state_dict()
    theirs = official.model.state_dict()
    assert len(ours) > 400
    for key, value in ours.items():
        torch.testing.assert_close(value, theirs[key.removeprefix("clap.")], rtol=0, atol=0, msg=key)
    # Frozen with a source: a drasp checkpoint may leave out every backbone weight.
    assert sorted(tiny.frozen_state_keys()) == sorted(ours)
    assert not any(p.requires_grad for p in tiny.parameters())


def test_the_hub_file_is_read_from_the_offline_cache(tiny, tiny_pt, hf_cache):
    # huggingface_hub's layout: refs/main names the commit, snapshots/<commit>/<file> links to a blob.
    repo = hf_cache / "models--lukewys--laion_clap"
    commit = "a" * 40
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / "0123abcd").symlink_to(tiny_pt)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "630k-audioset-best.pt").symlink_to(repo / "blobs" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    source = WeightsSource(repo_id="lukewys/laion_clap", filename="630k-audioset-best.pt")
    backbone = ClapBackbone(BackboneConfig(name="clap", variant="HTSAT-tiny", source=source))
    backbone.load()
    ours, reference = backbone.state_dict(), tiny.state_dict()
    assert ours.keys() == reference.keys()
    assert [k for k in ours if not torch.equal(ours[k], reference[k])] == []


def test_a_pt_file_needing_python_objects_is_refused(tmp_path):
    path = tmp_path / "args.pt"
    torch.save({"state_dict": {"module.x": torch.zeros(1)}, "args": argparse.Namespace(lr=1e-4)}, path)
    backbone = ClapBackbone(BackboneConfig(name="clap", source=WeightsSource(path=str(path))))
    with pytest.raises(CheckpointError, match="argparse.Namespace"):
        backbone.load()
    assert not backbone.loaded
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        backbone.load()


def test_a_checkpoint_of_another_variant_is_refused(tiny_pt):
    backbone = ClapBackbone(BackboneConfig(name="clap", variant="HTSAT-base", source=WeightsSource(path=str(tiny_pt))))
    expected = r"fit CLAP HTSAT-base: \d+ keys missing.*keys with other shapes.*\(96,\) \(expected \(128,\)\)"
    with pytest.raises(CheckpointError, match=expected):
        backbone.load()


def test_a_state_dict_of_another_model_is_refused(tmp_path):
    path = tmp_path / "htsat-audioset.pt"
    torch.save({"state_dict": {"module.sed_model.head.weight": torch.zeros(527, 768)}}, path)
    backbone = ClapBackbone(BackboneConfig(name="clap", variant="HTSAT-tiny", source=WeightsSource(path=str(path))))
    expected = r"not a LAION-CLAP state dict: no audio_branch\.\*, text_branch\.\*.* keys start with sed_model"
    with pytest.raises(CheckpointError, match=expected):
        backbone.load()


# -- parity with laion-clap ------------------------------------------------------------------------
def test_ten_second_frames_are_htsats_distinct_frames(official, tiny):
    clip = music(10)
    frames = frames_of(tiny, [clip])
    assert frames.features.shape == (1, 1, 32, 768) and bool(frames.mask.all())

    out = official_htsat(official, tiny.prepare(clip)[0][0])
    fine = out["fine_grained_embedding"]  # (1, 1024, 768)
    assert torch.equal(fine, fine[:, ::32].repeat_interleave(32, dim=1))  # nothing lost by keeping 1 in 32
    torch.testing.assert_close(frames.features[0, 0], fine[0, ::32])
    torch.testing.assert_close(frames.features[0, 0].mean(0), out["embedding"][0])

    embedding = official.get_audio_embedding_from_data([clip], use_tensor=False)
    with torch.no_grad():
        ours = F.normalize(tiny.audio_projection(frames.features[0, 0].mean(0, keepdim=True)), dim=-1)
    np.testing.assert_allclose(ours.numpy(), embedding, atol=1e-5)


def test_a_half_second_clip_gives_the_official_embedding(official, tiny):
    clip = music(0.5, seed=3)
    frames = frames_of(tiny, [clip])
    assert frames.mask.sum().item() == 32
    with torch.no_grad():
        ours = F.normalize(tiny.audio_projection(frames.features[0, 0].mean(0, keepdim=True)), dim=-1)
    np.testing.assert_allclose(ours.numpy(), official.get_audio_embedding_from_data([clip]), atol=1e-5)


def test_a_25_second_clip_has_three_windows_with_the_tail_masked(official, tiny):
    clip = music(25, seed=4)
    frames = frames_of(tiny, [clip])
    assert frames.features.shape == (1, 3, 32, 768)
    assert frames.mask.sum(-1).tolist() == [[32, 32, 16]]  # 5 s of real audio = 16 frames of 312.5 ms
    assert frames.window_weight.tolist() == [[1.0, 1.0, 0.5]]
    last = tiny.prepare(clip)[0][2]  # zero-padded, as HTSAT sees it
    fine = official_htsat(official, last)["fine_grained_embedding"]
    torch.testing.assert_close(frames.features[0, 2], fine[0, ::32])


def test_a_three_minute_clip_batched_with_a_short_one(tiny, monkeypatch):
    # Shapes and masks only: HTSAT itself is stubbed (a constant frame per window), as 19 real
    # windows would take most of this file's time budget; the tests above check its frames.
    encoded = []

    def stub(net, windows):
        encoded.append(windows.shape[0])
        return windows.new_ones((windows.shape[0], 32, 768))  # (W, 32, D)

    monkeypatch.setattr(ClapBackbone, "_frames", staticmethod(stub))
    frames = frames_of(tiny, [music(180, seed=5), music(1.0, seed=6)])
    assert frames.features.shape == (2, 18, 32, 768)
    assert frames.mask.sum(dim=(1, 2)).tolist() == [576, 32]  # 180 s x 3.2 frames/s; one repeat-padded window
    assert encoded == [19]  # the short clip's 17 padding windows skip HTSAT...
    assert frames.features[1, 1:].abs().sum() == 0 and frames.features[1, 0].abs().sum() > 0  # ...and are zeros
    assert frames.window_weight[1].tolist() == [1.0] + [0.0] * 17


def test_a_frozen_backbone_gives_the_same_frames_in_training_mode(tiny):
    clip = [music(3, seed=7)]
    expected = frames_of(tiny, clip).features
    try:
        tiny.train()
        assert not tiny.clap.training
        torch.testing.assert_close(frames_of(tiny, clip).features, expected, rtol=0, atol=0)
    finally:
        tiny.eval()


# -- text ------------------------------------------------------------------------------------------
def test_text_embeddings_match_the_official_ones(official, tiny, tokenizer_dir):
    from transformers import RobertaTokenizer

    texts = ["a calm piano melody", "loud drums and electric guitar with a bright synth"]
    tokenizer = RobertaTokenizer.from_pretrained(tokenizer_dir)

    def tokenize(batch):
        return tokenizer(batch, padding="max_length", truncation=True, max_length=77, return_tensors="pt")

    with torch.no_grad():
        ours = tiny.text_embedding(texts)
        theirs = official.get_text_embedding(texts, tokenizer=tokenize, use_tensor=True)
    assert ours.shape == (2, 512)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(ours, theirs)
    assert not torch.allclose(ours[0], ours[1])


def test_a_tokenizer_that_maps_words_to_unk_is_refused(tmp_path, hf_cache):
    from transformers import RobertaTokenizer

    specials_only = tmp_path / "specials-only"
    RobertaTokenizer(vocab={t: i for i, t in enumerate(SPECIALS)}, merges=[]).save_pretrained(specials_only)
    with pytest.raises(CheckpointError, match="ordinary words"):
        load_roberta_tokenizer(str(specials_only), 50265)
    # roberta-base offline and not cached: transformers 5.x gives a 5-token tokenizer without an error.
    with pytest.raises(CheckpointError, match="roberta-base.*offline"):
        load_roberta_tokenizer("roberta-base", 50265)


def test_a_tokenizer_larger_than_the_text_encoder_is_refused(tokenizer_dir):
    assert load_roberta_tokenizer(str(tokenizer_dir), 50265) is not None
    with pytest.raises(CheckpointError, match="more than the text encoder's 100 embeddings"):
        load_roberta_tokenizer(str(tokenizer_dir), 100)


# -- HTSAT-base ------------------------------------------------------------------------------------
def test_htsat_base_gives_1024_wide_frames_and_512_wide_projections():
    backbone = build_backbone(BackboneConfig(name="clap"))
    backbone.load()
    backbone.eval()
    frames = frames_of(backbone, [music(2.0)])
    assert frames.features.shape == (1, 1, 32, 1024)
    with torch.no_grad():
        assert backbone.audio_projection(frames.features[:, 0, 0]).shape == (1, 512)
    assert backbone.frozen_state_keys() == []  # random weights: all of them belong in a drasp checkpoint
    assert any(p.requires_grad for p in backbone.parameters())


# -- the MusicEval / DRASP model on this backbone -------------------------------------------------------


def test_musiceval_model_scores_mi_from_audio_and_ta_with_the_prompt(official, tiny, tmp_path):
    from drasp_cli.checkpoint import load_model, save_model
    from drasp_cli.data import ClipInput
    from drasp_cli.model import MosModel, preset
    from drasp_cli.pooling import PoolingConfig
    from drasp_cli.scoring import Scorer

    config = preset("clap", backbone=tiny.config, pooling=PoolingConfig("average"))
    model = MosModel(config)
    model.backbone = tiny  # the loaded backbone of this module
    with torch.no_grad():  # identity projection: the embedding is then CLAP's own audio embedding
        model.projection.weight.copy_(torch.eye(768))
        model.projection.bias.zero_()
    clip = music(10, seed=5)
    with torch.no_grad():
        frames = tiny([clip])
        emb, _ = model.embed(frames.features[:, 0], frames.mask[:, 0])
    np.testing.assert_allclose(emb.numpy(), official.get_audio_embedding_from_data([clip]), atol=1e-5)

    path = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(str(path), music(4, seed=6), 48_000)
    clips = [ClipInput(str(path), prompt="a calm piano melody"), ClipInput(str(path), prompt="loud metal guitars", start=0.0),
             ClipInput(str(path), start=0.0, end=4.0)]
    results = {r.key: r for r in Scorer(model, device="cpu").score(clips)}
    a, b, c = (results[k.key] for k in clips)
    assert a.scores["MI"] == pytest.approx(b.scores["MI"], abs=1e-6)  # MI hears the audio only
    assert a.scores["TA"] != pytest.approx(b.scores["TA"], abs=1e-6)  # TA also reads the prompt
    assert c.scores["TA"] is None and "no prompt: TA not scored" in c.flags

    folder = save_model(model, tmp_path / "ckpt")
    assert (folder / "model.safetensors").stat().st_size < 10_000_000  # the frozen CLAP is referenced, not copied
    saved = json.loads((folder / "config.json").read_text())["backbone"]["source"]
    assert saved["path"] == str(tiny.config.source.path) and len(saved["sha256"]) == 64
    again = load_model(folder)
    [r] = Scorer(again, device="cpu").score([clips[0]])
    assert r.scores == pytest.approx(a.scores, abs=1e-6)
