# %% [markdown]
# # bitstream
#
# > A real, decodable byte stream

# %%
#| default_exp bitstream

# %%
#| export
from __future__ import annotations
import argparse, hashlib, json, math, struct, sys, zlib
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import torch
import constriction
from eib.core import EibError, fingerprint, atomic_write_bytes, atomic_save_npy
from eib.entropy import CodingModel
from eib.ecvq import ecvq_encode, auto_batch, ECVQResult

# %%
from fastcore.test import test_eq, test_fail, test_close
torch.set_num_threads(1)  # the tests' tiny models run faster on one thread on a shared machine

# %% [markdown]
# ## Container
#
# A stream is a short header, the range coder's payload and a CRC32 (little-endian throughout):
#
# | field | bytes | |
# |---|---|---|
# | magic | 3 | `EIB` |
# | version | 1 | format version, now 1 |
# | model fingerprint | 4 | first 4 bytes of `model_fingerprint(rvq, model)`: a stream decodes only with its own checkpoint |
# | frames T | varint | |
# | dims D | varint | |
# | chunk | varint | frames coded together (the coding order is chunk, position, frame) |
# | λ | 8 | float64, for the record |
# | payload length | varint | bytes |
# | payload | | constriction range-coder words, trailing zero bytes of the last word dropped |
# | CRC32 | 4 | of everything before it |
#
# The header and checksum take about 25 bytes; the coder's termination adds up to a word. Both are a
# fixed cost per stream, counted by `stream_bpf` (the rate every result of this project reports) and
# left out by `payload_bpf` (coder termination included).

# %%
#| export
MAGIC = b"EIB"
VERSION = 1
MAX_FRAMES = 50 * 3600 * 6  # six hours at 50 frames/s: a bound that keeps a forged header from exhausting memory

def model_fingerprint(rvq, model) -> str:
    "16-hex-digit fingerprint of the RVQ and entropy-model configs and weights."
    h = hashlib.sha256(json.dumps(dict(rvq=rvq.cfg.to_dict(), model=model.cfg.to_dict()), sort_keys=True).encode())
    for tag, sd in (("rvq", rvq.state_dict()), ("model", model.state_dict())):
        for k in sorted(sd):
            h.update(f"{tag}.{k}{tuple(sd[k].shape)}".encode()); h.update(sd[k].detach().float().cpu().contiguous().numpy().tobytes())
    return fingerprint(h.digest())

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n: return bytes(out)

def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if i >= len(data): raise EibError("truncated stream: the header ends early")
        if shift > 56: raise EibError("corrupted stream: a header number is malformed")
        b = data[i]; i += 1
        n |= (b & 0x7F) << shift; shift += 7
        if not b & 0x80: return n, i

@dataclass
class StreamInfo:
    "What a stream's header says."
    version: int
    fingerprint: str  # 8 hex digits
    frames: int
    dim: int
    chunk: int
    lam: float
    payload_len: int
    header_len: int

def stream_info(data: bytes) -> StreamInfo:
    "Parse and check a stream's container (magic, version, lengths, CRC32); EibError if anything is wrong."
    if not isinstance(data, (bytes, bytearray, memoryview)): raise EibError(f"a stream is bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(MAGIC[:len(data)]) or len(data) == 0:
        raise EibError("not an eib stream (bad magic bytes): was it written by eib-compress?")
    if len(data) < len(MAGIC) + 1: raise EibError(f"truncated stream: only {len(data)} bytes")
    v = data[len(MAGIC)]
    if v != VERSION: raise EibError(f"unsupported stream format version {v}; this eib reads version {VERSION}")
    i = len(MAGIC) + 1
    if len(data) < i + 4: raise EibError("truncated stream: the header ends early")
    fp = data[i:i + 4].hex(); i += 4
    frames, i = _read_varint(data, i)
    dim, i = _read_varint(data, i)
    chunk, i = _read_varint(data, i)
    if len(data) < i + 8: raise EibError("truncated stream: the header ends early")
    lam = struct.unpack_from("<d", data, i)[0]; i += 8
    plen, i = _read_varint(data, i)
    if len(data) < i + plen + 4:
        raise EibError(f"truncated stream: {len(data)} bytes, the header announces {i + plen + 4}")
    if len(data) > i + plen + 4:
        raise EibError(f"corrupted stream: {len(data)} bytes, the header announces {i + plen + 4}")
    if zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise EibError("corrupted stream: checksum mismatch (the file was damaged or altered)")
    if not (1 <= frames <= MAX_FRAMES and dim >= 1 and 1 <= chunk <= frames and math.isfinite(lam) and lam >= 0):
        raise EibError(f"corrupted stream: implausible header (frames {frames}, dim {dim}, chunk {chunk}, λ {lam})")
    return StreamInfo(v, fp, frames, dim, chunk, lam, plen, i)

def stream_bpf(data: bytes, frames: int | None = None) -> float:
    "Bits per frame of the whole stream: header, payload, coder termination and checksum all counted."
    return len(data) * 8 / (frames or stream_info(data).frames)

def payload_bpf(data: bytes) -> float:
    "Bits per frame of the range-coder payload only (coder termination counted, container not)."
    s = stream_info(data)
    return s.payload_len * 8 / s.frames


# %%
test_eq([_read_varint(_varint(n), 0)[0] for n in (0, 1, 127, 128, 300, 2 ** 40)], [0, 1, 127, 128, 300, 2 ** 40])
test_fail(lambda: stream_info(b"RIFF1234"), contains="not an eib stream")
test_fail(lambda: stream_info(b"EIB\x07" + bytes(30)), contains="version 7")
test_fail(lambda: stream_info(b"EI"), contains="truncated")


# %% [markdown]
# ## Coding
#
# The frequencies come from `CodingModel` (integers >= 1 summing to 2^24, identical on every machine).
# constriction's lazy categorical model with `perfect=False` turns unnormalised weights `w` into the cumulative
# `floor(cumsum(w) * (2^24 - V) / sum(w)) + index`; with `w = f - 1`, whose sum is exactly `2^24 - V`, the
# scale is exactly 1 and the coder uses exactly the frequencies `f`. ECVQ encodes with these frequencies
# and hands each position's symbols straight to the range encoder (`on_step`), so compressing is one pass.
# The decoder runs the same `CodingModel` position by position for all frames of a chunk at once.

# %%
#| export
def _family(): return constriction.stream.model.Categorical(perfect=False)

def _check_features(features, dim: int) -> np.ndarray:
    x = np.asarray(features)
    if x.dtype == object or not np.issubdtype(x.dtype, np.number): raise EibError(f"features must be numeric, got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[1] != dim: raise EibError(f"features must have shape (T, {dim}), got {x.shape}")
    if len(x) == 0: raise EibError("features are empty (0 frames): nothing to compress")
    if len(x) > MAX_FRAMES: raise EibError(f"{len(x)} frames exceed the stream limit of {MAX_FRAMES}; split the input")
    if not np.isfinite(x).all(): raise EibError("features contain NaN or infinite values")
    return x.astype(np.float32)

def _check_lam(lam) -> float:
    try: lam = float(lam)
    except (TypeError, ValueError): raise EibError(f"λ must be a number, got {lam!r}") from None
    if not math.isfinite(lam) or lam < 0: raise EibError(f"λ must be finite and non-negative, got {lam}")
    return lam

def pack_stream(fp: str, frames: int, dim: int, chunk: int, lam: float, payload: bytes) -> bytes:
    "The container around a coder `payload`: magic, version, fingerprint `fp` (hex), sizes, λ, length, CRC32."
    body = (MAGIC + bytes([VERSION]) + bytes.fromhex(fp[:8]) + _varint(frames) + _varint(dim) + _varint(chunk)
            + struct.pack("<d", lam) + _varint(len(payload)) + payload)
    return body + struct.pack("<I", zlib.crc32(body))

def compress_with_result(rvq, model, features, lam: float, batch_size: int | None = None) -> tuple[bytes, ECVQResult]:
    "Compress frames (T, D) at λ into a stream; also returns the ECVQ result (tokens, ideal bits, reconstruction)."
    x = _check_features(features, rvq.cfg.dim)
    lam = _check_lam(lam)
    chunk = min(len(x), int(batch_size or auto_batch(model)))
    enc, fam = constriction.stream.queue.RangeEncoder(), _family()
    def on_step(p, f, k): enc.encode(k.numpy().astype(np.int32), fam, (f - 1).numpy().astype(np.float64))
    res = ecvq_encode(rvq, CodingModel(model), x, lam, batch_size=chunk, on_step=on_step)
    payload = enc.get_compressed().astype("<u4").tobytes()
    cut = 0
    while cut < 3 and cut < len(payload) and payload[-1 - cut] == 0: cut += 1
    payload = payload[:len(payload) - cut]
    return pack_stream(model_fingerprint(rvq, model), len(x), rvq.cfg.dim, chunk, lam, payload), res

def compress(rvq, model, features, lam: float, batch_size: int | None = None) -> bytes:
    "Compress frames (T, D) in the original feature space at λ into a self-checking byte stream."
    return compress_with_result(rvq, model, features, lam, batch_size)[0]

def decompress(rvq, model, data: bytes) -> tuple[torch.Tensor, np.ndarray]:
    "Decode a stream made by `compress` with the same checkpoint: returns tokens (T, L) and frames (T, D) float32."
    s = stream_info(data)
    fp = model_fingerprint(rvq, model)
    if s.fingerprint != fp[:8]:
        raise EibError(f"wrong checkpoint: the stream was made with model {s.fingerprint}, this checkpoint is {fp[:8]}; "
                       "decode with the checkpoint that compressed it")
    c = rvq.cfg
    if s.dim != c.dim: raise EibError(f"corrupted stream: it has {s.dim} dims, the checkpoint {c.dim}")
    payload = bytes(data[s.header_len:s.header_len + s.payload_len])
    payload += bytes(-len(payload) % 4)
    dec, fam, cm = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").copy()), _family(), CodingModel(model)
    tokens = torch.empty(s.frames, c.positions, dtype=torch.long)
    try:
        for a in range(0, s.frames, s.chunk):
            n = min(s.chunk, s.frames - a)
            st, inp = cm.start(n), torch.full((n,), c.bos, dtype=torch.long)
            for p in range(c.positions):
                f = cm.step(st, inp)
                inp = torch.from_numpy(np.asarray(dec.decode(fam, (f - 1).numpy().astype(np.float64)), dtype=np.int64))
                tokens[a:a + n, p] = inp
    except EibError: raise
    except Exception as e:  # the coder met data it cannot decode (only possible if the checksum was forged)
        raise EibError(f"corrupted stream: the payload does not decode ({type(e).__name__}: {e})") from None
    return tokens, rvq.decode(tokens).numpy()


# %% [markdown]
# A tiny codec to test with:

# %%
from eib.rvq import RVQConfig, fit_rvq
from eib.entropy import EntropyModel, lambda_grid, train_entropy_model
def toy_frames(n, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(4, dim, generator=torch.Generator().manual_seed(123))
    return (torch.randn(n, 4, generator=g) @ basis + 0.3 * torch.randn(n, dim, generator=g)).numpy()
trn = toy_frames(2000)
rvq = fit_rvq(trn, RVQConfig(16, 2, 2, 8), iters=5, progress=False)
torch.manual_seed(0)
model = train_entropy_model(rvq, trn[:1000], trn[1500:], rounds=1, epochs=3, config=dict(d_model=32, n_heads=4, d_ff=64), progress=False)[0]
x = toy_frames(400, seed=9)
lam = float(lambda_grid(rvq, trn)[4])

# %% [markdown]
# Round trips are exact (identical tokens and reconstruction), whether the encoder codes one frame per
# chunk or all at once, and whether encoder and decoder use 1 or 2 threads; the actual payload is within a
# fraction of a percent of the ideal code length.

# %%
data, res = compress_with_result(rvq, model, x, lam)
tok, y = decompress(rvq, model, data)
test_eq(tok, res.tokens); test_eq(y, res.recon.numpy())
test_eq(stream_info(data).chunk, 400)
ideal = float(res.bits.sum())
print(f"ideal {ideal:.0f} bits, payload {stream_info(data).payload_len * 8} bits, stream {len(data) * 8} bits "
      f"({stream_bpf(data):.2f} BPF, payload {payload_bpf(data):.2f} BPF)")
test_eq(ideal <= stream_info(data).payload_len * 8 <= ideal * 1.005 + 64, True)
one = compress(rvq, model, x[:30], lam, batch_size=1)
test_eq(stream_info(one).chunk, 1)
test_eq(decompress(rvq, model, one)[0], res.tokens[:30])
for threads in (1, 2):
    torch.set_num_threads(threads)
    d2 = compress(rvq, model, x[:45], lam, batch_size=13)
    t2, y2 = decompress(rvq, model, d2)
    test_eq(t2, res.tokens[:45]); test_eq(y2, res.recon[:45].numpy())
    torch.set_num_threads(3 - threads)
    test_eq(decompress(rvq, model, d2)[0], t2)  # decoded with another thread count
torch.set_num_threads(1)

# %% [markdown]
# Errors: every damaged, foreign or mismatched input raises an `EibError` that says what is wrong.

# %%
other = EntropyModel(model.cfg); other.load_state_dict(model.state_dict())
with torch.no_grad(): other.head.bias[0] += 1e-3
test_fail(lambda: decompress(rvq, other, data), contains="wrong checkpoint")
test_fail(lambda: decompress(rvq, model, data[:-1]), contains="truncated")
test_fail(lambda: decompress(rvq, model, data[:20]), contains="truncated")
bad = bytearray(data); bad[40] ^= 0x10
test_fail(lambda: decompress(rvq, model, bytes(bad)), contains="checksum")
test_fail(lambda: decompress(rvq, model, b"\x89PNG\r\n" + bytes(100)), contains="not an eib stream")
test_fail(lambda: decompress(rvq, model, data[:3] + b"\x02" + data[4:]), contains="unsupported stream format version 2")
test_fail(lambda: decompress(rvq, model, data + b"\x00"), contains="corrupted")
test_fail(lambda: compress(rvq, model, x[:0], lam), contains="empty")
test_fail(lambda: compress(rvq, model, x[:, :5], lam), contains="shape (T, 16)")
xn = x.copy(); xn[1, 1] = np.inf
test_fail(lambda: compress(rvq, model, xn, lam), contains="NaN or infinite")
test_fail(lambda: compress(rvq, model, x, float("nan")), contains="finite")


# %% [markdown]
# A short fuzz test (the long one is `tests/test_bitstream_fuzz.py`): mutated streams either decode to
# exactly the original or raise `EibError`.

# %%
#| export
def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    "A randomly damaged copy of `data`: bit flips, truncation, random bytes, header edits, insertions or deletions."
    b = bytearray(data)
    kind = rng.integers(6)
    if kind == 0:
        for _ in range(rng.integers(1, 4)): i = rng.integers(len(b)); b[i] ^= 1 << int(rng.integers(8))
    elif kind == 1: b = b[:rng.integers(len(b))]
    elif kind == 2: b = bytearray(rng.integers(0, 256, rng.integers(0, 2 * len(b) + 1), dtype=np.uint8).tobytes())
    elif kind == 3: i = rng.integers(min(len(b), 24)); b[i] = int(rng.integers(256))
    elif kind == 4: i = rng.integers(len(b) + 1); b[i:i] = rng.integers(0, 256, rng.integers(1, 5), dtype=np.uint8).tobytes()
    else: i = rng.integers(len(b)); del b[i:i + int(rng.integers(1, 5))]
    return bytes(b)

def fuzz(rvq, model, data: bytes, tokens, n: int = 1000, seed: int = 0) -> dict:
    "Decode `n` mutated copies of `data`; count outcomes. Anything but an exact decode or an EibError is raised."
    rng, out = np.random.default_rng(seed), dict(exact=0, eib_error=0)
    for _ in range(n):
        m = mutate(data, rng)
        try: t, _ = decompress(rvq, model, m)
        except EibError: out["eib_error"] += 1; continue
        if not torch.equal(t, tokens): raise AssertionError(f"a mutated stream decoded to different tokens: {m.hex()}")
        out["exact"] += 1
    return out


# %%
import time
small = compress(rvq, model, x[:50], lam)
t0 = time.time(); out = fuzz(rvq, model, small, res.tokens[:50], n=300)
print(out, f"{time.time() - t0:.1f} s")
test_eq(out["exact"] + out["eib_error"], 300); test_eq(out["eib_error"] > 250, True)


# %% [markdown]
# ## Command line
#
# `eib-compress FEATURES.npy OUT.eib --checkpoint DIR (--lam X | --bpf Y)` and
# `eib-decompress IN.eib OUT.npy --checkpoint DIR`. Both exit with code 2 and a one-line message on a user
# error. `--bpf` asks the project's rate controller (`eib.rate.compress_at_bpf`) for the λ whose whole stream
# (container included) lands within 0.25 BPF of the target, measured on actual stream bytes; a target outside the
# utterance's achievable range is refused with the range in the message.

# %%
#| export
def _load(path_ckpt):
    try: from eib.train import load_codec
    except ImportError as e: raise EibError(f"eib.train is not available to load checkpoints ({e})") from None
    return load_codec(path_ckpt)

def _load_features(path) -> np.ndarray:
    p = Path(path)
    if not p.is_file(): raise EibError(f"no such features file: {p}")
    try: return np.load(p, allow_pickle=False)
    except Exception as e: raise EibError(f"cannot read {p} as a .npy array ({type(e).__name__}: {e})") from None

def compress_cli(argv=None) -> int:
    "eib-compress FEATURES.npy OUT.eib --checkpoint DIR (--lam X | --bpf Y)"
    ap = argparse.ArgumentParser(prog="eib-compress", description="Compress a (T, D) feature array into an .eib stream.")
    ap.add_argument("features"); ap.add_argument("out")
    ap.add_argument("--checkpoint", required=True, help="codec folder written by eib-train")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--lam", type=float, help="rate-distortion multiplier λ")
    g.add_argument("--bpf", type=float, help="target bits per frame of the whole stream (container counted), met within 0.25 by eib.rate")
    a = ap.parse_args(argv)
    try:
        codec = _load(a.checkpoint)
        x = _check_features(_load_features(a.features), codec.rvq.cfg.dim)
        if a.bpf is not None:
            from eib.rate import compress_at_bpf  # here, not at the top: eib.rate imports eib.bitstream
            lam, data = compress_at_bpf(codec.rvq, codec.model, x, a.bpf)
        else: lam = a.lam; data = compress(codec.rvq, codec.model, x, lam)
        atomic_write_bytes(a.out, data)
    except EibError as e:
        print(f"eib-compress: error: {e}", file=sys.stderr); return 2
    print(f"{a.out}: {len(x)} frames, {len(data)} bytes, {stream_bpf(data):.3f} BPF "
          f"({stream_bpf(data) * 50:.0f} bit/s, container included), λ={lam:.6g}"
          + (f" (target {a.bpf:g} BPF)" if a.bpf is not None else ""))
    if a.bpf is not None and abs(stream_bpf(data) - a.bpf) > 0.25:  # rate(λ) jumps over the target and no frame split fits
        print(f"eib-compress: note: the nearest achievable rate is {stream_bpf(data):.3f} BPF, "
              f"{stream_bpf(data) - a.bpf:+.3f} from the target", file=sys.stderr)
    return 0

def decompress_cli(argv=None) -> int:
    "eib-decompress IN.eib OUT.npy --checkpoint DIR"
    ap = argparse.ArgumentParser(prog="eib-decompress", description="Decode an .eib stream into a (T, D) float32 .npy array.")
    ap.add_argument("stream"); ap.add_argument("out")
    ap.add_argument("--checkpoint", required=True, help="the codec folder the stream was compressed with")
    a = ap.parse_args(argv)
    try:
        p = Path(a.stream)
        if not p.is_file(): raise EibError(f"no such stream file: {p}")
        codec = _load(a.checkpoint)
        _, y = decompress(codec.rvq, codec.model, p.read_bytes())
        atomic_save_npy(a.out, y)
    except EibError as e:
        print(f"eib-decompress: error: {e}", file=sys.stderr); return 2
    print(f"{a.out}: {y.shape[0]} frames x {y.shape[1]} dims")
    return 0


# %%
import tempfile, contextlib, io
from eib.train import Codec, save_codec
from eib.rate import achievable_range
rng_s = achievable_range((rvq, model), [x[:100]])
mid = float(rng_s.min_bpf[0] + rng_s.max_bpf[0]) / 2  # a target inside the achievable range of x[:100]
with tempfile.TemporaryDirectory() as d:
    d = Path(d); save_codec(Codec(rvq, model), d / "ckpt"); np.save(d / "x.npy", x); np.save(d / "s.npy", x[:100])
    with contextlib.redirect_stdout(io.StringIO()) as so:
        test_eq(compress_cli([str(d / "x.npy"), str(d / "x.eib"), "--checkpoint", str(d / "ckpt"), "--lam", str(lam)]), 0)
        test_eq(decompress_cli([str(d / "x.eib"), str(d / "y.npy"), "--checkpoint", str(d / "ckpt")]), 0)
        test_eq(compress_cli([str(d / "s.npy"), str(d / "b.eib"), "--checkpoint", str(d / "ckpt"), "--bpf", f"{mid:.3f}"]), 0)
    print(so.getvalue())
    test_eq((d / "x.eib").read_bytes(), data)
    test_eq(np.load(d / "y.npy"), res.recon.numpy())
    b_eib = (d / "b.eib").read_bytes()
    test_close(stream_bpf(b_eib), mid, eps=0.25)  # the rate controller's tolerance, on the whole stream
    test_eq(f"{stream_bpf(b_eib):.3f} BPF" in so.getvalue().splitlines()[-1], True)
    test_eq(len(decompress(rvq, model, b_eib)[0]), 100)
    np.save(d / "bad.npy", x[:, :3]); (d / "junk.eib").write_bytes(b"hello")
    with contextlib.redirect_stderr(io.StringIO()) as se:
        test_eq(compress_cli([str(d / "bad.npy"), str(d / "o.eib"), "--checkpoint", str(d / "ckpt"), "--lam", "1"]), 2)
        test_eq(decompress_cli([str(d / "junk.eib"), str(d / "o.npy"), "--checkpoint", str(d / "ckpt")]), 2)
        test_eq(decompress_cli([str(d / "x.eib"), str(d / "o.npy"), "--checkpoint", str(d / "nowhere")]), 2)
        test_eq(compress_cli([str(d / "s.npy"), str(d / "o.eib"), "--checkpoint", str(d / "ckpt"),
                              "--bpf", f"{float(rng_s.max_bpf[0]) + 5:.3f}"]), 2)
    errs = se.getvalue().strip().splitlines()
    print("\n".join(errs))
    test_eq(len(errs), 4)
    test_eq("shape (T, 16)" in errs[0] and "not an eib stream" in errs[1] and "no codec checkpoint" in errs[2], True)
    test_eq("outside the achievable range" in errs[3], True)
    test_eq(sorted(f.name for f in d.iterdir()), ["b.eib", "bad.npy", "ckpt", "junk.eib", "s.npy", "x.eib", "x.npy", "y.npy"])
