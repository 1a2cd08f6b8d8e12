"""Load the real published LAION-CLAP and AudioBox-Aesthetics weights through drasp's own code path
and score one clip with each. Needs a connected machine (the Hugging Face Hub); the offline tests
cover the same code on random weights saved in the official formats.

    python scripts/load_published_weights.py [AUDIO_FILE]

Without AUDIO_FILE a 12-second synthetic chord is scored.
"""

from __future__ import annotations

import sys
import time

import numpy as np


def main() -> None:
    from drasp_cli.data import ClipInput
    from drasp_cli.model import MosModel, from_aes_release, preset
    from drasp_cli.scoring import Scorer

    if len(sys.argv) > 1:
        clip = ClipInput(sys.argv[1], prompt="a piece of music")
    else:
        sr = 48_000
        t = np.arange(12 * sr) / sr
        chord = sum(0.15 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
        clip = ClipInput("<synthetic chord>", prompt="a sustained major chord", samples=chord.astype(np.float32), sample_rate=sr)

    started = time.perf_counter()
    aes = from_aes_release()  # facebook/audiobox-aesthetics checkpoint.pt, average pooling: Meta's own scores
    [result] = Scorer(aes, device="auto").score([clip])
    print(f"AudioBox-Aesthetics (released weights, {time.perf_counter() - started:.1f} s):", result.scores)

    started = time.perf_counter()
    clap = MosModel(preset("clap"))  # lukewys/laion_clap music_audioset_epoch_15_esc_90.14.pt (HTSAT-base)
    clap.backbone.load()
    text = clap.backbone.text_embedding([clip.prompt or "music"])
    print(f"LAION-CLAP HTSAT-base loaded ({time.perf_counter() - started:.1f} s); text embedding {tuple(text.shape)}")
    print("Its MI/TA heads are untrained here: train them with `drasp train --backbone clap` on MusicEval.")


if __name__ == "__main__":
    main()
