# %% [markdown]
# # The bitstream
#
# > A real, decodable byte stream

# %%
#| default_exp bitstream

# %%
#| export
from __future__ import annotations
import math, struct, zlib
from dataclasses import dataclass
import numpy as np
import torch
import constriction
import numba
from eib.core import EibError
from eib.entropy import freqs_to_bits, previous_frames
from eib.ecvq import ecvq_encode, ecvq_encode_utterances, has_context, auto_batch, ECVQResult
from eib.codec import as_codec

# %%
import operator
from fastcore.test import test, test_eq, test_fail, test_close
torch.set_num_threads(1)  # the tests' tiny models run faster on one thread on a shared machine
from eib.codec import Codec

# %% [markdown]
# ## Container
#
# A stream is a short header, the range coder's payload and a CRC32 (little-endian throughout):
#
# | field | bytes | |
# |---|---|---|
# | magic | 3 | `EIB` |
# | version | 1 | format version, now 2 (version 1 is still read) |
# | model fingerprint | 4 | first 4 bytes of the codec's fingerprint (`eib.codec.codec_fingerprint`): a stream decodes only with its own checkpoint |
# | frames T | varint | |
# | dims D | varint | |
# | chunk | varint | frames coded together (the coding order is chunk, position, frame) |
# | λ | 8 | float64, for the record |
# | payload length | varint | bytes |
# | payload | | constriction range-coder words, trailing zero bytes of the last word dropped |
# | CRC32 | 4 | of everything before it, then of the tokens the payload decodes to (version 1: of everything before it) |
#
# The header and checksum take about 25 bytes; the coder's termination adds up to a word. Both are a
# fixed cost per stream, counted by `stream_bpf` (the rate every result of this project reports) and
# left out by `payload_bpf` (coder termination included).
#
# Version 2 differs from version 1 only in what the CRC32 covers: the container *and the decoded tokens* (as a
# (T, L) array of little-endian uint32, row by row; `stream_checksum`), as FLAC's header carries an MD5 of the decoded
# audio. Both versions have the same length, so every rate measured with version 1 holds for version 2. A checksum
# of the container alone can be recomputed by anyone who edits a field; this one cannot be made to agree with an
# edited payload without decoding it with the codec, so a forged header or a cut payload is refused even when it
# happens to decode to other tokens. The price: a version-2 stream is checked once decoded, not before (the decoder's
# work is bounded by its payload, below), and a damaged fingerprint reads as another checkpoint's stream.

# %%
#| export
MAGIC = b"EIB"
VERSION = 2
VERSIONS = (1, 2)  # the formats this eib reads
MAX_FRAMES = 50 * 3600 * 6  # six hours at 50 frames/s: a bound that keeps a forged header from exhausting memory

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

def header_len(frames: int, dim: int, chunk: int, payload_len: int) -> int:
    "Bytes before the payload in a stream of `frames` frames of `dim` dims, coded `chunk` frames at a time."
    return len(MAGIC) + 1 + 4 + len(_varint(frames)) + len(_varint(dim)) + len(_varint(chunk)) + 8 + len(_varint(payload_len))

def stream_len(frames: int, dim: int, chunk: int, payload_len: int) -> int:
    "Bytes of the whole stream: header, payload and CRC32."
    return header_len(frames, dim, chunk, payload_len) + payload_len + 4

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
    """Parse and check a stream's container (magic, version, lengths; the CRC32 of a version-1 stream); EibError if anything
    is wrong. A version-2 stream's CRC32 also covers the tokens: `decompress` checks it."""
    if not isinstance(data, (bytes, bytearray, memoryview)): raise EibError(f"a stream is bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(MAGIC[:len(data)]) or len(data) == 0:
        raise EibError("not an eib stream (bad magic bytes): was it written by eib-compress?")
    if len(data) < len(MAGIC) + 1: raise EibError(f"truncated stream: only {len(data)} bytes")
    v = data[len(MAGIC)]
    if v not in VERSIONS:
        raise EibError(f"unsupported stream format version {v}; this eib reads versions {', '.join(map(str, VERSIONS))}")
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
    if v == 1 and zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise EibError("corrupted stream: checksum mismatch (the file was damaged or altered)")
    if not (1 <= frames <= MAX_FRAMES and dim >= 1 and 1 <= chunk <= frames and math.isfinite(lam) and lam >= 0):
        raise EibError(f"corrupted stream: implausible header (frames {frames}, dim {dim}, chunk {chunk}, λ {lam})")
    return StreamInfo(v, fp, frames, dim, chunk, lam, plen, i)

def stream_checksum(body: bytes, tokens) -> int:
    "A version-2 stream's CRC32: of the container `body` before it, then of the (T, L) `tokens` as little-endian uint32."
    return zlib.crc32(np.ascontiguousarray(np.asarray(tokens), dtype="<u4").tobytes(), zlib.crc32(body))

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
test_fail(lambda: stream_info(b"EIB\x07" + bytes(30)), contains="reads versions 1, 2")
test_fail(lambda: stream_info(b"EI"), contains="truncated")

# %% [markdown]
# ## Coding
#
# The frequencies come from the codec's `CodingModel` (integers >= 1 summing to 2^24, identical on every machine).
# ECVQ encodes with these frequencies; `IntervalRecorder`, its `on_step` hook, keeps each chosen token's coder
# interval: the cumulative frequency `ck` below it and its frequency `fk`. `encode_payload` then codes the
# intervals chunk by chunk, position-major inside a chunk (the order the decoder needs), with constriction's range
# coder: each token is a three-symbol categorical (below, the token, above) with weights `ck - 1`, `fk - 1`,
# `2^24 - ck - fk - 1` (two symbols at either end). constriction's lazy categorical model with `perfect=False`
# turns weights `w` summing to `2^24 - V` into the cumulative `floor(cumsum(w)) + index`, so the coder sees
# exactly the interval `[ck, ck + fk)`, as it would with the full table of `V` frequencies: the bytes are the
# ones a coder fed the whole table writes, and the decoder does use the whole table. Trailing zero bytes of the
# last 32-bit word are dropped (`trim_payload`). The same functions size streams for rate control
# (`eib.rate`) and code given tokens (`compress_tokens`, for the layer-sweep baseline), so every stream of the
# project comes from this one place. The decoder runs the `CodingModel` position by position for all frames of a
# chunk at once. The decoder's work is bounded by its payload: a chunk larger than the codec ever
# codes is refused before decoding (its key/value caches would not fit), decoding stops with an error as soon as the
# symbols decoded after the range decoder may have read its last word are worth more than `TAIL_BITS` (its state
# holds at most 64 bits: the header declared more frames than the payload holds), and after the last frame the
# decoder must have reached the end of the payload. Then the decoder re-encodes the tokens it read and compares: the
# coder writes exactly one payload for given tokens, so a payload that is not that one was shortened, edited or forged
# (one vectorised range-coder pass, no model evaluation). Last, the CRC32 over the container and the decoded tokens
# (version 2): a cut or edited payload that happens to be the coder's own payload for *other* tokens (about 1 in 350 of
# the forged payloads of `tests/test_hostile_streams.py`) is refused there, at no cost in bits. What no checksum
# without a key can stop is a forger who holds the codec: decoding, editing the tokens and coding them again makes a
# valid stream, as compressing does.

# %%
#| export
_TOT = 1 << 24  # the coding model's frequencies sum to 2^24 (eib.entropy)
TAIL_BITS = 96.0  # once the range decoder may have read its last word, its 64-bit state holds what is left: symbols
                  # worth more bits than this past that point are decoded from nothing (a payload shorter than declared)

def _family(): return constriction.stream.model.Categorical(perfect=False)

def check_features(features, dim: int) -> np.ndarray:
    "`features` as a float32 (T, `dim`) array with 1 to `MAX_FRAMES` finite frames, or an EibError saying what is wrong."
    if features is None: raise EibError(f"features must be a (T, {dim}) array, got None")
    if torch.is_tensor(features): features = features.detach().cpu().numpy()
    try: x = np.asarray(features)
    except ValueError as e: raise EibError(f"features must be a (T, {dim}) array, not ragged rows ({e})") from None
    if x.dtype == object or not np.issubdtype(x.dtype, np.number): raise EibError(f"features must be numeric, got dtype {x.dtype}")
    if np.iscomplexobj(x): raise EibError(f"features must be real numbers, got dtype {x.dtype}")
    if x.ndim != 2 or x.shape[1] != dim: raise EibError(f"features must have shape (T, {dim}), got {x.shape}")
    if len(x) == 0: raise EibError("features are empty (0 frames): nothing to compress")
    if len(x) > MAX_FRAMES: raise EibError(f"{len(x)} frames exceed the stream limit of {MAX_FRAMES}; split the input")
    if not np.isfinite(x).all(): raise EibError("features contain NaN or infinite values")
    return x.astype(np.float32)

def _check_lam(lam) -> float:
    if isinstance(lam, (bool, np.bool_)): raise EibError(f"λ must be a number, got {lam!r}")
    try: lam = float(lam)
    except (TypeError, ValueError): raise EibError(f"λ must be a number, got {lam!r}") from None
    if not math.isfinite(lam) or lam < 0: raise EibError(f"λ must be finite and non-negative, got {lam}")
    return lam

def chunk_size(frames: int, model, batch_size: int | None = None) -> int:
    """Frames coded together in a stream of `frames` frames: all of them, up to `batch_size` and never more than
    `auto_batch(model)`, the most whose key/value caches the decoder holds in its memory budget. With inter-frame context
    one: a frame is decoded after the frame before it."""
    most = int(auto_batch(model))
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise EibError(f"batch_size must be a positive whole number or None (automatic), got {batch_size!r}")
    if has_context(model): return 1
    return int(min(int(frames), int(batch_size or most), most))

@numba.njit(cache=True, nogil=True)
def _interval_rows(f, k, ck, fk):
    "Per row i: the frequencies below token k[i] into `ck`, its own into `fk` (only the sum up to k, not a cumsum over all)."
    for i in range(k.shape[0]):
        c = 0
        for j in range(k[i]): c += f[i, j]
        ck[i], fk[i] = c, f[i, k[i]]

def coder_intervals(freqs: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    "(cumulative frequency below, frequency) of each token under integer frequencies `freqs` (..., vocab)."
    f = torch.as_tensor(freqs).long().contiguous()
    V = f.shape[-1]
    k = torch.as_tensor(tokens).long().expand(f.shape[:-1]).contiguous()
    if k.numel() and (int(k.min()) < 0 or int(k.max()) >= V): raise EibError(f"tokens must lie in 0..{V - 1}")
    ck, fk = torch.empty(k.shape, dtype=torch.long), torch.empty(k.shape, dtype=torch.long)
    _interval_rows(f.view(-1, V).numpy(), k.view(-1).numpy(), ck.view(-1).numpy(), fk.view(-1).numpy())
    return ck, fk

class IntervalRecorder:
    "`ecvq_encode` hook keeping the coder interval of every chosen token: `ck`, `fk` (N, L) int32, in frame order."
    def __init__(self, N: int, L: int):
        self.ck, self.fk = torch.zeros(N, L, dtype=torch.int32), torch.zeros(N, L, dtype=torch.int32)

    def __call__(self, rows, p, f, k, *costs):
        ck, fk = coder_intervals(f, k)
        self.ck[rows, p], self.fk[rows, p] = ck.int(), fk.int()

def token_intervals(coding_model, tokens, batch: int = 32, workers: int = 1, prefix=None, prev=None) -> tuple[np.ndarray, np.ndarray]:
    """Coder intervals (`ck`, `fk`, each (N, L)) of given tokens (N, L) under `coding_model`, teacher-forced
    (`CodingModel.teacher`, `batch` frames at a time; no (N, L, vocab) table of frequencies is kept). `workers` > 1:
    that many threads, each on its share of the frames, with one torch thread each (the compiled kernels and torch's
    matrix products release the GIL); the same intervals. `prefix`: the intervals (`ck`, `fk`, each (N, s)) of the first
    s positions, known from tokens equal to these there (an interval depends only on the tokens up to its own):
    positions s.. alone are coded. `prev` (N, L): each frame's previous frame, for a model with inter-frame context."""
    from concurrent.futures import ThreadPoolExecutor
    t = torch.as_tensor(tokens).long()
    prev = None if prev is None else torch.as_tensor(prev).long()
    coding_model.teacher(t[:0], prev=None if prev is None else prev[:0])  # the shapes are checked here, before any thread starts
    if prev is not None and prev.shape != t.shape: raise EibError(f"prev must be previous-frame tokens of shape {tuple(t.shape)}, got {tuple(prev.shape)}")
    ck, fk = np.empty(t.shape, np.int64), np.empty(t.shape, np.int64)
    s = 0 if prefix is None else np.shape(prefix[0])[1]
    if prefix is not None:
        if any(np.shape(a) != (len(t), s) for a in prefix) or s > t.shape[1]:
            raise EibError(f"prefix must be two ({len(t)}, s) interval arrays with s <= {t.shape[1]}, got {[np.shape(a) for a in prefix]}")
        ck[:, :s], fk[:, :s] = prefix
        if s == t.shape[1]: return ck, fk
    def run(a0, a1):
        for a, f in coding_model.teacher(t[a0:a1], batch, start=s, prev=None if prev is None else prev[a0:a1]):
            r = slice(a0 + a, a0 + a + len(f))
            ck[r, s:], fk[r, s:] = (v.numpy() for v in coder_intervals(f, t[r, s:]))
    cuts = np.linspace(0, len(t), max(1, min(int(workers), -(-len(t) // batch))) + 1).astype(int)
    if len(cuts) == 2: run(0, len(t)); return ck, fk
    nt = torch.get_num_threads(); torch.set_num_threads(1)  # tiny products: a second torch thread per worker only competes
    try:
        with ThreadPoolExecutor(len(cuts) - 1) as ex: list(ex.map(run, cuts[:-1], cuts[1:]))
    finally: torch.set_num_threads(nt)
    return ck, fk

def trim_payload(words: np.ndarray) -> bytes:
    "The range coder's 32-bit words as little-endian bytes, without the trailing zero bytes of the last word."
    payload = np.asarray(words).astype("<u4").tobytes()
    cut = 0
    while cut < 3 and cut < len(payload) and payload[-1 - cut] == 0: cut += 1
    return payload[:len(payload) - cut]

def encode_payload(ck: np.ndarray, fk: np.ndarray, chunk: int) -> bytes:
    "Range-coder payload of a (T, L) token array with coder intervals `ck`, `fk`: chunk by chunk, position-major inside a chunk."
    ck, fk = np.asarray(ck, np.int64), np.asarray(fk, np.int64)
    T = len(ck)
    order = lambda a: np.concatenate([a[s:s + chunk].T.ravel() for s in range(0, T, chunk)]) if T else a.ravel()
    ck, fk = order(ck), order(fk)
    P = np.stack([ck - 1, fk - 1, _TOT - ck - fk - 1], 1).astype(np.float64)
    s = np.ones(len(ck), np.int32)
    first, last = ck == 0, ck + fk == _TOT
    P[first] = np.stack([fk[first] - 1, _TOT - fk[first] - 2, np.zeros(first.sum())], 1); s[first] = 0
    P[last] = np.stack([ck[last] - 2, np.zeros(last.sum()), fk[last] - 1], 1); s[last] = 2
    enc = constriction.stream.queue.RangeEncoder()
    if len(s): enc.encode(s, _family(), P)
    return trim_payload(enc.get_compressed())

def pack_stream(fp: str, frames: int, dim: int, chunk: int, lam: float, payload: bytes, tokens) -> bytes:
    """The container around a coder `payload` of the (T, L) `tokens`: magic, version, fingerprint `fp` (hex), sizes, λ,
    length, and the CRC32 of all that and of the tokens (`stream_checksum`)."""
    body = (MAGIC + bytes([VERSION]) + bytes.fromhex(fp[:8]) + _varint(frames) + _varint(dim) + _varint(chunk)
            + struct.pack("<d", lam) + _varint(len(payload)) + payload)
    return body + struct.pack("<I", stream_checksum(body, tokens))

def compress_with_result(codec, features, lam: float, batch_size: int | None = None, progress: bool = False) -> tuple[bytes, ECVQResult]:
    """Compress frames (T, D) at λ into a stream with `codec` (a `Codec` or an `(rvq, model)` pair); also returns the ECVQ
    result. `progress`: a bar over the chunks on stderr (for long inputs)."""
    codec = as_codec(codec)
    c = codec.rvq.cfg
    x = check_features(features, c.dim)
    lam = _check_lam(lam)
    chunk = chunk_size(len(x), codec.model, batch_size)
    rec = IntervalRecorder(len(x), c.positions)
    if has_context(codec.model): res = ecvq_encode_utterances(codec.rvq, codec.coding_model, [x], lam, on_step=rec)[0]  # frame after frame
    else: res = ecvq_encode(codec.rvq, codec.coding_model, x, lam, on_step=rec, progress=progress)  # any batch: the payload's order is the chunk's
    payload = encode_payload(rec.ck.numpy(), rec.fk.numpy(), chunk)
    return pack_stream(codec.fingerprint, len(x), c.dim, chunk, lam, payload, res.tokens), res

def compress(codec, features, lam: float, batch_size: int | None = None, progress: bool = False) -> bytes:
    "Compress frames (T, D) in the original feature space at λ into a self-checking byte stream."
    return compress_with_result(codec, features, lam, batch_size, progress)[0]

def token_streams(codec, toks, ck, fk, lam: float = 0.0) -> list[bytes]:
    """The streams of checked token arrays `toks` (each (T, L)) from their coder intervals `ck`, `fk` (`token_intervals`'s
    of the arrays in order, concatenated): `compress_tokens`'s, for a caller that keeps the intervals."""
    codec = as_codec(codec)
    out, a = [], 0
    for t in toks:
        T, b = len(t), a + len(t)
        chunk = chunk_size(T, codec.model)
        out.append(pack_stream(codec.fingerprint, T, codec.rvq.cfg.dim, chunk, lam, encode_payload(ck[a:b], fk[a:b], chunk), t))
        a = b
    return out

def compress_tokens(codec, tokens_list, lam: float = 0.0, workers: int = 1) -> list[bytes]:
    """The stream of each (T, L) token array of `tokens_list` (λ field `lam`, for the record): byte for byte what
    `decompress` reads back to those tokens (the layer-sweep baseline codes plain-RVQ tokens this way); `workers`: threads
    of `token_intervals`."""
    codec = as_codec(codec)
    toks = [codec.rvq.check_tokens(t) for t in tokens_list]
    if not toks: return []
    prev = torch.cat([previous_frames(t, codec.cfg.bos) for t in toks]) if has_context(codec.model) else None
    return token_streams(codec, toks, *token_intervals(codec.coding_model, torch.cat(toks), workers=workers, prev=prev), lam)

def decompress(codec, data: bytes, progress: bool = False) -> tuple[torch.Tensor, np.ndarray]:
    """Decode a stream made by `compress` with the same codec: returns tokens (T, L) and frames (T, D) float32.
    `progress`: a bar over the frames on stderr (for long streams)."""
    from tqdm.auto import tqdm
    codec = as_codec(codec)
    s = stream_info(data)
    fp = codec.fingerprint
    if s.fingerprint != fp[:8]:
        raise EibError(f"wrong checkpoint: the stream was made with model {s.fingerprint}, this checkpoint is {fp[:8]}; "
                       "decode with the checkpoint that compressed it" + (" (or the stream is damaged)" if s.version > 1 else ""))
    c = codec.rvq.cfg
    if s.dim != c.dim: raise EibError(f"corrupted stream: it has {s.dim} dims, the checkpoint {c.dim}")
    if s.chunk > chunk_size(s.frames, codec.model):
        raise EibError(f"corrupted stream: it declares chunks of {s.chunk} frames, more than this codec ever codes together "
                       f"({chunk_size(s.frames, codec.model)})")
    given = bytes(data[s.header_len:s.header_len + s.payload_len])
    payload = given + bytes(-len(given) % 4)
    dec, fam, cm = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").copy()), _family(), codec.coding_model
    tokens = torch.empty(s.frames, c.positions, dtype=torch.long)
    ck, fk = np.zeros((s.frames, c.positions), np.int64), np.zeros((s.frames, c.positions), np.int64)  # for the re-encoding
    tail = None  # bits decoded since the decoder may have read all of the payload
    bar = tqdm(total=s.frames, desc="decode", unit="frame", disable=not progress, delay=2)  # shown once work takes a while:
    # a forged header declaring a long stream is refused first, in one line
    try:
        for a in range(0, s.frames, s.chunk):
            n = min(s.chunk, s.frames - a)
            # with inter-frame context (chunks of one frame) the frame before is known by now
            st = cm.start(n, tokens[a - 1:a] if a and has_context(cm) else None)
            inp = torch.full((n,), c.bos, dtype=torch.long)
            for p in range(c.positions):
                f = cm.step(st, inp)
                inp = torch.from_numpy(np.asarray(dec.decode(fam, (f - 1).numpy().astype(np.float64)), dtype=np.int64))
                tokens[a:a + n, p] = inp
                ck[a:a + n, p], fk[a:a + n, p] = (v.numpy() for v in coder_intervals(f, inp))
                if tail is not None:
                    tail += float(freqs_to_bits(f).gather(1, inp[:, None]).sum())
                    if tail > TAIL_BITS:
                        raise EibError(f"corrupted stream: its payload ends before the {s.frames} frames its header declares "
                                       f"are decoded (it ran out at frame {a})")
                elif dec.maybe_exhausted(): tail = 0.0
            bar.update(n)
    except EibError: raise
    except Exception as e:  # the coder met data it cannot decode (a damaged or forged payload)
        raise EibError(f"corrupted stream: the payload does not decode ({type(e).__name__}: {e})") from None
    finally: bar.close()
    if not dec.maybe_exhausted():
        raise EibError(f"corrupted stream: its payload holds more than the {s.frames} frames its header declares")
    if encode_payload(ck, fk, s.chunk) != given:  # the coder writes one payload for given tokens: any other is damaged
        raise EibError("corrupted stream: its payload is not the one the coder writes for the frames it decodes to "
                       "(shortened, edited or forged)")
    if s.version > 1 and stream_checksum(data[:-4], tokens) != struct.unpack("<I", data[-4:])[0]:
        raise EibError("corrupted stream: checksum mismatch (the file was damaged or altered)")
    return tokens, codec.rvq.decode(tokens).numpy()


# %% [markdown]
# The three-symbol coding gives exactly the bytes of a coder fed the whole table (the coding model's frequencies are integers, so the
# coder's own quantisation of `f - 1` gives back `f`):

# %%
def _full(f, sym):
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(sym.astype(np.int32), constriction.stream.model.Categorical(perfect=False), (f - 1).astype(np.float64))
    return trim_payload(enc.get_compressed())

from eib.entropy import logits_to_freqs
_g = np.random.default_rng(0)
for _ in range(20):
    n = int(_g.integers(1, 200))
    f = logits_to_freqs(torch.round(torch.from_numpy(_g.normal(size=(n, 129)) * _g.uniform(0.5, 8)) * 4096) / 4096).numpy()
    sym = np.array([_g.choice(129, p=r / r.sum()) for r in f]); sym[0], sym[-1] = 0, 128  # first and last symbol too
    ck, fk = (np.cumsum(f, 1) - f)[np.arange(n), sym], f[np.arange(n), sym]
    test_eq(encode_payload(ck[:, None], fk[:, None], n), _full(f, sym))

# %% [markdown]
# A tiny codec to test with:

# %%
from eib.rvq import RVQConfig, fit_rvq, toy_frames
from eib.entropy import EntropyModel
from eib.ecvq import lambda_grid, train_entropy_model
trn = toy_frames(2000)
rvq = fit_rvq(trn, RVQConfig(16, 2, 2, 8), iters=5, progress=False)
torch.manual_seed(0)
model = train_entropy_model(rvq, trn[:1000], trn[1500:], rounds=1, epochs=3, config=dict(d_model=32, n_heads=4, d_ff=64), progress=False)[0]
x = toy_frames(400, seed=9)
lam = float(lambda_grid(rvq, trn)[4])
codec = Codec(rvq, model)

# %%
# coder intervals: the frequencies below each token and its own, as the cumulative table gives them; teacher-forced for given tokens
_t = rvq.encode_nearest(x[:50])
_f = codec.coding_model.freqs(_t)
_ck, _fk = coder_intervals(_f, _t)
test_eq((torch.equal(_ck, (_f.cumsum(-1) - _f).gather(-1, _t[..., None])[..., 0]), torch.equal(_fk, _f.gather(-1, _t[..., None])[..., 0])), (True, True))
test_eq([np.array_equal(a, b.numpy()) for a, b in zip(token_intervals(codec.coding_model, _t, batch=7), (_ck, _fk))], [True, True])
test_eq([np.array_equal(a, b.numpy()) for a, b in zip(token_intervals(codec.coding_model, _t, batch=7, workers=3), (_ck, _fk))], [True, True])
test_fail(lambda: coder_intervals(_f[0], torch.full((4,), 200)), contains="tokens must lie in")
# tokens equal on their first 3 positions (group 1 loses its last layer) share those intervals: only the rest is coded
_t2 = rvq.encode_nearest(x[:50], [2, 1])
_ck2, _fk2 = (a.numpy() for a in coder_intervals(codec.coding_model.freqs(_t2), _t2))
test_eq([np.array_equal(a, b) for a, b in zip(token_intervals(codec.coding_model, _t2, prefix=(_ck[:, :3], _fk[:, :3])), (_ck2, _fk2))], [True, True])
test_eq(np.array_equal(_ck2[:, 3], _ck[:, 3].numpy()), False)  # the last position did change
test_fail(lambda: token_intervals(codec.coding_model, _t2, prefix=(_ck[:4, :3], _fk[:4, :3])), contains="prefix must be")

# %% [markdown]
# Round trips are exact (identical tokens and reconstruction), whether the encoder codes one frame per
# chunk or all at once, and whether encoder and decoder use 1 or 2 threads; the actual payload is within a
# fraction of a percent of the ideal code length.

# %%
data, res = compress_with_result(codec, x, lam)
tok, y = decompress(codec, data)
test_eq(tok, res.tokens); test_eq(y, res.recon.numpy())
test_eq(stream_info(data).chunk, 400)
test_eq((len(data), stream_info(data).header_len), (stream_len(400, 16, 400, stream_info(data).payload_len), header_len(400, 16, 400, stream_info(data).payload_len)))
ideal = float(res.bits.sum())
print(f"ideal {ideal:.0f} bits, payload {stream_info(data).payload_len * 8} bits, stream {len(data) * 8} bits "
      f"({stream_bpf(data):.2f} BPF, payload {payload_bpf(data):.2f} BPF)")
_pl = stream_info(data).payload_len * 8; assert ideal <= _pl <= ideal * 1.005 + 64, (ideal, _pl)
test_eq(compress_tokens(codec, [res.tokens], lam)[0], data)  # the same bytes from the tokens alone
one = compress(codec, x[:30], lam, batch_size=1)
test_eq(stream_info(one).chunk, 1)
test_eq(decompress(codec, one)[0], res.tokens[:30])
for threads in (1, 2):
    torch.set_num_threads(threads)
    d2 = compress(codec, x[:45], lam, batch_size=13)
    t2, y2 = decompress(codec, d2)
    test_eq(t2, res.tokens[:45]); test_eq(y2, res.recon[:45].numpy())
    torch.set_num_threads(3 - threads)
    test_eq(decompress(codec, d2)[0], t2)  # decoded with another thread count
torch.set_num_threads(1)

# %% [markdown]
# A codec with inter-frame context (`EntropyConfig.context` "frame") writes chunks of one frame, coded in order: its
# decoder knows frame t-1's tokens before it decodes frame t. Its round trips are exact too, on any thread count, and the
# tokens alone give the same bytes:

# %%
from eib.entropy import EntropyConfig
torch.manual_seed(0)
cmodel = EntropyModel(EntropyConfig.for_rvq(rvq.cfg, "cpu", d_model=32, n_heads=4, d_ff=64, context="frame")).eval()
cmodel.load_state_dict(model.state_dict(), strict=False)  # the intra model's weights, and a context embedding
with torch.no_grad(): cmodel.ctx.weight.normal_(0, 0.5)
ccodec = Codec(rvq, cmodel)
test_eq(chunk_size(100, cmodel, 50), 1)
cdata, cres = compress_with_result(ccodec, x[:60], lam)
test_eq(stream_info(cdata).chunk, 1)
for threads in (1, 2):
    torch.set_num_threads(threads)
    ct, cy = decompress(ccodec, cdata)
    test_eq(ct, cres.tokens); test_eq(cy, cres.recon.numpy())
    test_eq(compress(ccodec, x[:60], lam), cdata)
torch.set_num_threads(1)
test_eq(compress_tokens(ccodec, [cres.tokens], lam)[0], cdata)
_pl = stream_info(cdata).payload_len * 8; _ideal = float(cres.bits.sum()); assert _ideal <= _pl <= _ideal * 1.005 + 64, (_ideal, _pl)
test_eq(torch.equal(cres.tokens, compress_with_result(codec, x[:60], lam)[1].tokens), False)  # the context changed choices
test_fail(lambda: decompress(codec, cdata), contains="wrong checkpoint")

# %% [markdown]
# Errors: every damaged, foreign or mismatched input raises an `EibError` that says what is wrong.

# %%
other = EntropyModel(model.cfg); other.load_state_dict(model.state_dict())
with torch.no_grad(): other.head.bias[0] += 1e-3
test_fail(lambda: decompress(Codec(rvq, other), data), contains="wrong checkpoint")
test_fail(lambda: decompress(codec, data[:-1]), contains="truncated")
test_fail(lambda: decompress(codec, data[:20]), contains="truncated")
bad = bytearray(data); bad[40] ^= 0x10
test_fail(lambda: decompress(codec, bytes(bad)), contains="corrupted stream")
bad = bytearray(data); bad[-1] ^= 0x10
test_fail(lambda: decompress(codec, bytes(bad)), contains="checksum")
test_fail(lambda: decompress(codec, b"\x89PNG\r\n" + bytes(100)), contains="not an eib stream")
test_fail(lambda: decompress(codec, data[:3] + b"\x03" + data[4:]), contains="unsupported stream format version 3")
test_fail(lambda: decompress(codec, data + b"\x00"), contains="corrupted")
test_fail(lambda: compress(codec, x[:0], lam), contains="empty")
test_fail(lambda: compress(codec, x[:, :5], lam), contains="shape (T, 16)")
xn = x.copy(); xn[1, 1] = np.inf
test_fail(lambda: compress(codec, xn, lam), contains="NaN or infinite")
test_fail(lambda: compress(codec, x, float("nan")), contains="finite")
test_fail(lambda: compress(codec, x, True), contains="must be a number")
for bs in (0, "a", 2.5): test_fail(lambda: compress(codec, x, lam, batch_size=bs), contains="batch_size must be")
test_fail(lambda: compress(codec, [x[0], x[1][:3]], lam), contains="ragged")
test_fail(lambda: compress(codec, x.astype(np.complex64), lam), contains="real numbers")
test_fail(lambda: compress(None, x, lam), contains="expected a Codec")
test_eq(compress(codec, torch.from_numpy(x[:20]).requires_grad_(), lam), compress(codec, x[:20], lam))

# %% [markdown]
# A payload that is the coder's own for *other* tokens (here: the same frames coded at another λ) in a container
# whose checksum was made for the original tokens is refused by the version-2 checksum; a version-1 stream, whose
# CRC32 covers the container only, is still read, and checked before decoding:

# %%
alt = compress(codec, x, lam * 4); so = stream_info(alt)
forged = pack_stream(so.fingerprint, so.frames, so.dim, so.chunk, lam, alt[so.header_len:so.header_len + so.payload_len], res.tokens)
test_fail(lambda: decompress(codec, forged), contains="checksum mismatch")
test_eq(decompress(codec, forged[:-4] + struct.pack("<I", stream_checksum(forged[:-4], decompress(codec, alt)[0])))[0],
        decompress(codec, alt)[0])  # with the checksum of the tokens it holds, it is a valid stream of those
body1 = data[:3] + b"\x01" + data[4:-4]; v1 = body1 + struct.pack("<I", zlib.crc32(body1))
test_eq((stream_info(v1).version, len(v1)), (1, len(data)))
test_eq(decompress(codec, v1)[0], res.tokens)
bad1 = bytearray(v1); bad1[40] ^= 0x10
test_fail(lambda: stream_info(bytes(bad1)), contains="checksum mismatch")


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

def fuzz(codec, data: bytes, tokens, n: int = 1000, seed: int = 0) -> dict:
    "Decode `n` mutated copies of `data`; count outcomes. Anything but an exact decode or an EibError is raised."
    codec = as_codec(codec)
    rng, out = np.random.default_rng(seed), dict(exact=0, eib_error=0)
    for _ in range(n):
        m = mutate(data, rng)
        try: t, _ = decompress(codec, m)
        except EibError: out["eib_error"] += 1; continue
        if not torch.equal(t, tokens): raise AssertionError(f"a mutated stream decoded to different tokens: {m.hex()}")
        out["exact"] += 1
    return out


# %%
import time
small = compress(codec, x[:50], lam)
t0 = time.time(); out = fuzz(codec, small, res.tokens[:50], n=300)
print(out, f"{time.time() - t0:.1f} s")
test_eq(out["exact"] + out["eib_error"], 300); test(out["eib_error"], 250, operator.gt, ">")
