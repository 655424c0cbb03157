"""Write the reference streams of the codec with inter-frame context that tests/test_reference_streams.py compares against.

The committed twin of the synthetic codec (checkpoints/synth_cpu_context_frame: synth_cpu's codebooks, an entropy model that
also sees the previous frame's tokens) codes three committed synthetic utterances (data_subset/synth) at three λ, through
the rate controller at 40 BPF and from the controller's tokens: each frame of a stream is coded given the frame before,
one frame per chunk. Made on 2026-12-07 in format version 2; a later change to that coding must keep these bytes:
    .venv/bin/python tests/reference/context/make_streams.py
"""
import sys
from pathlib import Path

import numpy as np

from eib.core import repo_root
from eib.features import load_store
from eib.codec import load_codec
from eib.bitstream import compress, compress_tokens
from eib.rate import RateController

ROOT = repo_root()
OUT = Path(__file__).resolve().parent
UTTS = ["en-029-f1_angry_s04", "en-029-f1_angry_s06", "en-029-f1_angry_s17"]


def cases():
    "(name, bytes) of every reference stream of the context codec."
    codec = load_codec(ROOT / "checkpoints" / "synth_cpu_context_frame")
    store = load_store(ROOT / "data_subset" / "synth")
    x = [store.frames(u) for u in UTTS]
    for u, f in zip(UTTS, x):
        for lam in (0.0, 0.05, 0.5):
            yield f"{u}.lam{lam:g}", compress(codec, f, lam)
    rc = RateController(codec, x, ids=UTTS)
    r = rc.solve(40.0)
    for i, u in enumerate(UTTS): yield f"{u}.controller40", rc.stream(i)
    for u, s in zip(UTTS, compress_tokens(codec, [t.astype(np.int64) for t in r.tokens])): yield f"{u}.tokens40", s


if __name__ == "__main__":
    sys.path.insert(0, str(OUT.parent))
    from make_streams import write  # the reference streams' writer: the .eib files and index.json
    write(cases(), OUT)
