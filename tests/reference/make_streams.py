"""Write the reference streams that tests/test_reference_streams.py compares against, byte for byte.

Made once, in format version 1, before the codec/bitstream restructuring of issue 15 (with that commit's API; this file now calls the
current one), with the committed synthetic codec
(checkpoints/synth_cpu and its layer-sweep codec) on committed synthetic features (data_subset/synth): every way
eib writes a stream (compress at λ, compress at a target BPF, the rate controller's streams, the sweep's
streams of given tokens) must keep writing these bytes, in format 2 with its version byte and its checksum over the
tokens (see the test). `cases()` is what the test calls; running this file would overwrite the committed version-1
streams with today's version-2 ones, which the test refuses:
    .venv/bin/python tests/reference/make_streams.py
"""
import hashlib, json, sys
from pathlib import Path

import numpy as np

from eib.core import repo_root
from eib.features import load_store
from eib.codec import load_codec
from eib.bitstream import compress, compress_tokens
from eib.rate import compress_at_bpf, RateController
from eib.sweep import layer_tokens

ROOT = repo_root()
OUT = ROOT / "tests" / "reference"
UTTS = ["en-029-f1_angry_s04", "en-029-f1_angry_s06", "en-029-f1_angry_s17"]


def cases():
    "(name, bytes) of every reference stream."
    codec = load_codec(ROOT / "checkpoints" / "synth_cpu")
    layers = load_codec(ROOT / "checkpoints" / "synth_cpu_layers")
    store = load_store(ROOT / "data_subset" / "synth")
    x = [store.frames(u) for u in UTTS]
    for u, f in zip(UTTS, x):
        for lam in (0.0, 0.05, 0.5, 5.0):
            yield f"{u}.lam{lam:g}", compress(codec, f, lam)
        for bpf in (20.0, 60.0):
            yield f"{u}.bpf{bpf:g}", compress_at_bpf(codec, f, bpf)[1]
    rc = RateController(codec, x, ids=UTTS)
    r = rc.solve(40.0)
    for i, u in enumerate(UTTS): yield f"{u}.controller40", rc.stream(i)
    toks = [layer_tokens(codec.rvq, f, 7) for f in x]
    for u, s in zip(UTTS, compress_tokens(layers, toks)): yield f"{u}.layers7", s
    for u, s in zip(UTTS, compress_tokens(codec, [t.astype(np.int64) for t in r.tokens])): yield f"{u}.tokens40", s


def write(streams, out: Path = OUT):
    "Write each `(name, bytes)` of `streams` to `out/<name>.eib`, and their sizes and SHA-256 to `out/index.json`."
    index = {}
    for name, data in streams:
        (out / f"{name}.eib").write_bytes(data)
        index[name] = dict(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        print(name, len(data), file=sys.stderr)
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    write(cases())
