"""Forged streams (fields edited and the CRC32 recomputed, as anyone can) against the committed synthetic codec: the
decoder's work is bounded by its payload. Declared frames beyond what the payload holds, chunks beyond what the codec
ever codes, and extra payload are refused with an EibError, quickly; nothing else escapes (no traceback, no hang).
The test prints the table of forged cases and outcomes."""
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


def outcome(codec, data, tokens, limit: float = 10.0) -> str:
    "exact | wrong | EibError; anything else (a traceback) is raised; a decode over `limit` seconds fails the test."
    t0 = time.time()
    try: t, _ = decompress(codec, data)
    except EibError: kind = "EibError"
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
        forged = pack_stream(s.fingerprint, frames, s.dim, chunk, s.lam, payload)
        assert outcome(codec, forged, res.tokens, limit=10.0) == "EibError", (frames, chunk, len(payload))
    (tmp_path / "f.eib").write_bytes(pack_stream(s.fingerprint, 1_080_000, s.dim, 1, s.lam, b""))
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
    forged = pack_stream(s.fingerprint, 1_000_000, s.dim, 1_000_000, s.lam, data[s.header_len:s.header_len + s.payload_len])
    t0 = time.time()
    with pytest.raises(EibError, match="more than this codec ever codes together"): decompress(codec, forged)
    assert time.time() - t0 < 2


def test_forged_and_accidental_streams_table(setup):
    "≥ 2000 forged and ≥ 2000 accidental mutations, seeded: only exact decodes, wrong decodes or EibError; no hang."
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
        cases = [("payload shortened", pack_stream(s.fingerprint, s.frames, s.dim, s.chunk, s.lam, pay[:-int(rng.integers(1, len(pay) + 1))] if pay else b"")),
                 ("frames raised", pack_stream(s.fingerprint, s.frames + int(rng.integers(1, 1000)), s.dim, s.chunk, s.lam, pay)),
                 ("frames lowered", pack_stream(s.fingerprint, max(1, s.frames - int(rng.integers(1, s.frames + 1))), s.dim, 1, s.lam, pay)),
                 ("chunk edited", pack_stream(s.fingerprint, s.frames, s.dim, int(rng.integers(1, s.frames + 1)), s.lam, pay)),
                 ("dims edited", pack_stream(s.fingerprint, s.frames, s.dim + int(rng.integers(1, 5)), s.chunk, s.lam, pay)),
                 ("payload byte forged", pack_stream(s.fingerprint, s.frames, s.dim, s.chunk, s.lam,
                                                     pay[:j] + bytes([pay[j] ^ 0xFF]) + pay[j + 1:] if pay else b"\x01"))]
        for kind, forged in cases + [("accidental", mutate(data, rng)) for _ in range(6)]:
            if forged == data: continue  # an "edit" that changed nothing (a chunk drawn equal to the real one)
            k = outcome(codec, forged, res.tokens)
            table[kind, k] = table.get((kind, k), 0) + 1
    print("\n".join(f"{a:22s} {b:9s} {c}" for (a, b), c in sorted(table.items())))
    # Accidental damage never decodes to other tokens (the CRC); a forged header is always refused. A forged payload is
    # refused unless it happens to be the coder's own payload for other tokens (the decoder re-encodes what it read and
    # compares): rare (2 of about 700 measured at seed 0, against 28 before that check), and only a checksum of the tokens
    # inside the format could rule it out (see eib.bitstream).
    assert {k: c for k, c in table.items() if k[1] != "EibError" and (k[0] != "accidental" or k[1] == "wrong")
            and not (k[0] in ("payload shortened", "payload byte forged") and k[1] == "wrong")} == {}
    payload = sum(c for (a, _), c in table.items() if a.startswith("payload"))
    assert sum(c for (a, b), c in table.items() if a.startswith("payload") and b != "EibError") <= 0.005 * payload, table
