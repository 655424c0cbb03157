"""Forged streams (fields edited and the checksum recomputed, as anyone without the codec can: with the original
tokens) against the committed synthetic codec: the decoder's work is bounded by its payload. Declared frames beyond
what the payload holds, chunks beyond what the codec ever codes, and extra payload are refused with an EibError,
quickly, by the check that sees them (the checksum comes last, after decoding); no forged stream decodes, and nothing
escapes (no traceback, no hang). The test prints the table of cases, outcomes and the check that refused each."""
import subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch

from eib.core import EibError, repo_root
from eib.codec import load_codec
from eib.features import load_store
from eib.bitstream import compress_with_result, decompress, pack_stream, stream_info, mutate

ROOT = repo_root()
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def setup():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    codec = load_codec(ROOT / "checkpoints" / "synth_cpu")
    store = load_store(ROOT / "data_subset" / "synth")
    yield codec, store
    torch.set_num_threads(n)


REASONS = {"checksum mismatch": "checksum", "payload ends before": "payload ran out", "holds more than": "payload left over",
           "not the one the coder writes": "not the coder's payload", "does not decode": "undecodable payload",
           "ever codes together": "chunk too large", "dims, the checkpoint": "dims", "implausible header": "implausible header",
           "wrong checkpoint": "fingerprint", "truncated": "length", "the header announces": "length",
           "unsupported stream format version": "version", "not an eib stream": "magic", "malformed": "header number"}


def outcome(codec, data, tokens, limit: float = 10.0) -> str:
    """exact | wrong | EibError (<the check that refused it>); anything else (a traceback) is raised; a decode over
    `limit` seconds fails the test."""
    t0 = time.time()
    try: t, _ = decompress(codec, data)
    except EibError as e: kind = "EibError (" + next((r for m, r in REASONS.items() if m in str(e)), str(e)) + ")"
    else: kind = "exact" if t.shape == tokens.shape and torch.equal(t, tokens) else "wrong"
    assert time.time() - t0 < limit, ("slow decode", time.time() - t0)
    return kind


def test_declared_frames_beyond_the_payload_are_refused(setup, tmp_path):
    codec, store = setup
    x = store.frames(store.ids()[0])
    data, res = compress_with_result(codec, x, 0.05)
    s = stream_info(data)
    for frames, chunk, payload in ((1_080_000, 1, b""), (2000, 1, b""), (2000, 2000, b""),
                                   (s.frames * 50, s.chunk, data[s.header_len:s.header_len + s.payload_len])):
        forged = pack_stream(s.fingerprint, frames, s.dim, chunk, s.lam, payload, res.tokens)
        assert outcome(codec, forged, res.tokens, limit=10.0) == "EibError (payload ran out)", (frames, chunk, len(payload))
    (tmp_path / "f.eib").write_bytes(pack_stream(s.fingerprint, 1_080_000, s.dim, 1, s.lam, b"", res.tokens))
    t0 = time.time()
    r = subprocess.run([BIN / "eib-decompress", tmp_path / "f.eib", tmp_path / "y.npy", "--checkpoint", ROOT / "checkpoints" / "synth_cpu"],
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout, len(r.stderr.strip().splitlines())) == (2, "", 1), r.stderr
    assert "payload ends before" in r.stderr and time.time() - t0 < 60 and not (tmp_path / "y.npy").exists()


def test_chunks_beyond_the_codec_are_refused_before_decoding(setup):
    codec, store = setup
    x = store.frames(store.ids()[0])
    data, res = compress_with_result(codec, x, 0.05)
    s = stream_info(data)
    forged = pack_stream(s.fingerprint, 1_000_000, s.dim, 1_000_000, s.lam, data[s.header_len:s.header_len + s.payload_len], res.tokens)
    t0 = time.time()
    with pytest.raises(EibError, match="more than this codec ever codes together"): decompress(codec, forged)
    assert time.time() - t0 < 2


def test_forged_and_accidental_streams_table(setup):
    "≥ 2000 forged and ≥ 2000 accidental mutations, seeded: forged → EibError, accidental → exact or EibError; no hang."
    codec, store = setup
    rng = np.random.default_rng(0)
    table, ids = {}, store.ids()
    count = lambda acc: sum(c for (a, _), c in table.items() if (a == "accidental") == acc)
    while count(False) < 2000 or count(True) < 2000:
        x = store.frames(ids[int(rng.integers(len(ids)))])[: int(rng.integers(5, 40))]
        data, res = compress_with_result(codec, x, float(rng.choice([0.0, 0.02, 0.2, 2.0])))
        s = stream_info(data)
        pay = data[s.header_len:s.header_len + s.payload_len]
        j = int(rng.integers(max(len(pay), 1)))
        t = res.tokens  # a forger without the codec knows at best the tokens the stream held
        cases = [("payload shortened", pack_stream(s.fingerprint, s.frames, s.dim, s.chunk, s.lam, pay[:-int(rng.integers(1, len(pay) + 1))] if pay else b"", t)),
                 ("frames raised", pack_stream(s.fingerprint, s.frames + int(rng.integers(1, 1000)), s.dim, s.chunk, s.lam, pay, t)),
                 ("frames lowered", pack_stream(s.fingerprint, max(1, s.frames - int(rng.integers(1, s.frames + 1))), s.dim, 1, s.lam, pay, t)),
                 ("chunk edited", pack_stream(s.fingerprint, s.frames, s.dim, int(rng.integers(1, s.frames + 1)), s.lam, pay, t)),
                 ("dims edited", pack_stream(s.fingerprint, s.frames, s.dim + int(rng.integers(1, 5)), s.chunk, s.lam, pay, t)),
                 ("payload byte forged", pack_stream(s.fingerprint, s.frames, s.dim, s.chunk, s.lam,
                                                     pay[:j] + bytes([pay[j] ^ 0xFF]) + pay[j + 1:] if pay else b"\x01", t))]
        for kind, forged in cases + [("accidental", mutate(data, rng)) for _ in range(6)]:
            if forged == data: continue  # an "edit" that changed nothing (a chunk drawn equal to the real one)
            k = outcome(codec, forged, res.tokens)
            table[kind, k] = table.get((kind, k), 0) + 1
    print("\n".join(f"{a:22s} {b:36s} {c}" for (a, b), c in sorted(table.items())))
    # A forged stream never decodes (a cut or edited payload that is the coder's own for other tokens is caught by the
    # checksum over the decoded tokens: 2 of about 700 at seed 0, which decoded before format 2); accidental damage
    # decodes exactly or is refused.
    assert {k: c for k, c in table.items() if not k[1].startswith("EibError") and (k[0] != "accidental" or k[1] == "wrong")} == {}
