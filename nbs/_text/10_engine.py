# %% [markdown]
# # The rate-control engine
#
# > The batched, cached ECVQ engine of rate control: every utterance coded at its own λ, and the exact size of its real stream

# %%
#| default_exp engine

# %%
#| export
from __future__ import annotations
import math
from dataclasses import dataclass
import numpy as np
import torch
import numba
from eib.core import EibError
from eib.ecvq import ecvq_encode, ecvq_encode_utterances, distortion_scale, has_context
from eib.codec import as_codec
from eib.bitstream import IntervalRecorder, check_features, chunk_size, encode_payload, pack_stream, stream_len

# %%
import operator
from fastcore.test import test, test_eq, test_fail
torch.set_num_threads(1)  # the tests' tiny models run faster on one thread on a shared machine

# %% [markdown]
# ## What is counted
#
# A rate here is always the size of a real, decodable stream made by `eib.bitstream`, divided by the number of
# frames. By default (`count="stream"`) everything is counted: the container header (magic, version, model
# fingerprint, lengths, λ), the range coder's payload with its termination bits, and the CRC32 — a fixed cost of
# 28 bytes plus 0–4 bytes of coder termination, i.e. about 1.1–1.7 BPF on a 3–4 s clip. `count="payload"` counts the range-coder
# payload only (termination included, container excluded).
#
# The stream of an utterance depends only on its tokens and on the entropy model's integer frequencies of those
# tokens. The range coder's state after a symbol depends only on that symbol's interval (left cumulative frequency,
# frequency), so the engine keeps those two integers per token and codes them with `eib.bitstream.encode_payload`, the function
# every stream of the project is written with: the size it counts is the size of the stream `eib.bitstream.compress`
# writes (tested below).

# %% [markdown]
# ## The batched engine
#
# One *pass* encodes, with `eib.ecvq.ecvq_encode` and the deterministic `CodingModel`, every frame of every
# utterance that needs it, each at its utterance's λ (λ is a per-row tensor), and then range-codes each utterance.
#
# Most frames need no re-encoding between nearby λ: at every position, the chosen token stays the argmin of
# `distortion + λ·bits` over an interval of λ that follows from the candidates' distortions and bits, and as long
# as all earlier tokens of the frame are unchanged the frame's tokens stay the same for every λ inside the
# intersection of its positions' intervals. The engine keeps, for each utterance, the tokens, the coder intervals, the
# bits and the λ interval of every token at the best λ found so far (with a safety margin of 10⁻⁶ relative), and
# re-encodes only the frames with a token whose interval does not contain the new λ, each from its first such token
# on: the tokens before it are still the choice, so `ecvq_encode` resumes there (`resume=`), the model's state for
# those positions filled in one teacher-forced pass. The intervals come from `ecvq_encode`'s own candidate tables
# (distortions and bits, handed to its `on_step` hook, a compiled loop), so they are computed from exactly the costs it
# compared. Frames that resume alike share batches (sorted by their first position); with a coding model that keeps no
# # per-frame caches (one block, read from its table: every cpu-preset codec) a batch holds up to `eib.ecvq.WORK_MAX` frames
# # and each frame joins it at its own first position (`ecvq_encode`'s `resume`), so no position before it is searched again.

# %%
#| export
LAM_INF = 1e12  # stands for λ → ∞: the fewest-bits path (SKIP wherever SKIP is the likeliest symbol)

def check_utterances(utterances, dim: int) -> list[np.ndarray]:
    "Utterances (a list, a dict or one (T, dim) array) as a list of float32 (T, dim) arrays, checked."
    if isinstance(utterances, np.ndarray) and utterances.ndim == 2: utterances = [utterances]
    if isinstance(utterances, dict): utterances = list(utterances.values())
    try: utts = list(utterances)
    except TypeError: raise EibError(f"utterances must be a list of (T, {dim}) arrays, got {type(utterances).__name__}") from None
    if not utts: raise EibError("no utterances given")
    out = []
    for i, u in enumerate(utts):
        try: out.append(np.ascontiguousarray(check_features(u, dim)))
        except EibError as e: raise EibError(f"utterance {i}: {e}") from None
    return out


# %% [markdown]
# A state is one utterance encoded at one λ; the hook runs inside `ecvq_encode` at every position.

# %%
#| export
@dataclass
class CodedState:
    "One utterance encoded at one λ: per token its coder interval, λ-validity interval and ideal bits; per frame the distortion."
    lam: float
    tokens: np.ndarray  # (T, L) uint8
    ck: np.ndarray  # (T, L) int32 left cumulative frequency of each token
    fk: np.ndarray  # (T, L) int32 frequency of each token
    lo: np.ndarray  # (T, L) float64: each token stays the choice for λ in (lo, hi) while the tokens before it stay
    hi: np.ndarray
    ideal: np.ndarray  # (T, L) float64 -log2 q of each token
    dist: np.ndarray  # (T,) float32 squared error (normalised space)
    payload_len: int = 0
    stream_len: int = 0
    reencoded: int = 0
    lam2: float = float("nan")  # a mixed state: its first `split` frames were coded at lam2
    split: int = 0


@numba.njit(cache=True, nogil=True)
def _choice_intervals(f, k, dist, b, ck, fk, lo, hi, bk) -> int:
    """Per frame i of one position: the chosen token k[i]'s coder interval (`ck`: frequencies below it, `fk`: its own),
    its bits `bk`, and the λ interval (lo, hi) over which k[i] stays the argmin of dist + λ·b: k stays best while
    λ·(b_j - b_k) >= dist_k - dist_j for every candidate j. A cheaper candidate with the same bits means inconsistent
    tables: the interval is emptied (never reused), and the count of such frames returned."""
    n, V = f.shape
    bad = 0
    for i in range(n):
        kk = k[i]
        c = 0
        for j in range(kk): c += f[i, j]
        ck[i], fk[i], bk[i] = c, f[i, kk], b[i, kk]
        l, h, odd = -np.inf, np.inf, False
        for j in range(V):
            db, dd = b[i, j] - b[i, kk], dist[i, kk] - dist[i, j]
            if db > 0: l = max(l, dd / db)
            elif db < 0: h = min(h, dd / db)
            elif dd > 0: odd = True
        if odd: l, h = np.inf, -np.inf; bad += 1
        lo[i], hi[i] = l, h
    return bad


class _Hook(IntervalRecorder):
    "`on_step` hook: records each chosen token's coder interval, its bits and the λ interval over which it stays the argmin."
    wants_costs = True  # ecvq_encode hands over its own (dist, bits) tables: the costs are exactly the ones it compared

    def __init__(self, N: int, L: int):
        super().__init__(N, L)
        self.lo, self.hi = torch.full((N, L), -math.inf, dtype=torch.float64), torch.full((N, L), math.inf, dtype=torch.float64)
        self.bits = torch.zeros(N, L, dtype=torch.float64)
        self.mismatch = 0

    def __call__(self, rows, p, f, k, dist, b):
        fields = (self.ck, self.fk, self.lo, self.hi, self.bits)
        if isinstance(rows, slice): cols = [a.numpy()[rows, p] for a in fields]  # views: the kernel writes in place
        else: cols = [np.empty(len(rows), a.numpy().dtype) for a in fields]  # frames by index: written back below
        self.mismatch += _choice_intervals(f.numpy(), k.numpy(), dist.numpy(), b.numpy(), *cols)
        if not isinstance(rows, slice):
            for a, c in zip(fields, cols): a.numpy()[np.asarray(rows), p] = c



# %%
#| export
def _inside(lam: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    "Tokens (any shape of intervals) certainly still the ECVQ choice at `lam`, if the tokens before them are."
    with np.errstate(invalid="ignore"):
        ok_lo = np.isneginf(lo) | (lam > lo + 1e-6 * np.abs(lo) + 1e-12)
        ok_hi = np.isposinf(hi) | (lam < hi - 1e-6 * np.abs(hi) - 1e-12)
    return ok_lo & ok_hi


_PER_TOKEN = ("tokens", "ck", "fk", "lo", "hi", "ideal")  # the (T, L) fields of a CodedState, in its order

class RateEngine:
    "Batched ECVQ + exact stream sizes for a fixed list of utterances, with a per-utterance cache at the best λ."
    def __init__(self, codec, utterances: list[np.ndarray], batch_size: int | None = None, cache: bool = True):
        self.codec = codec = as_codec(codec)
        self.rvq, self.model, self.cm = codec.rvq, codec.model, codec.coding_model
        self.utts = utterances
        self.T = np.array([len(u) for u in utterances])
        self.off = np.concatenate([[0], np.cumsum(self.T)])
        self.X = torch.from_numpy(np.concatenate(utterances, 0))
        self.D, self.L = self.rvq.cfg.dim, self.rvq.cfg.positions
        self.chunk = np.array([chunk_size(t, self.model) for t in self.T])  # eib.bitstream.compress's chunk
        self.batch = batch_size  # None: ecvq_encode's default
        self.use_cache = cache
        self.cache: list[CodedState | None] = [None] * len(utterances)
        self.passes = self.frames_encoded = self.positions_coded = self.mismatch = 0
        self._scale = None
        self.progress = False  # True: a bar over each pass's batches on stderr (long inputs)
        # inter-frame context: a frame's tokens depend on the frame before, so an utterance is coded whole, in order
        # (no resuming from cached λ intervals, no mixing of two λ)
        self.context = has_context(self.cm)

    def scale(self) -> float:
        "λ scale of this data (eib.ecvq.distortion_scale on a sample)."
        if self._scale is None:
            self._scale = float(distortion_scale(self.rvq, self.X.numpy(), max_frames=2048)) or 1.0
        return self._scale

    def _encode(self, idx: np.ndarray, lam: np.ndarray, known: np.ndarray, first: np.ndarray):
        """ECVQ of frames `idx` at per-frame λ, each resumed at position `first` from its `known` tokens, in that
        order (sorted by `first`, frames that resume alike share batches); returns (ECVQResult, hook)."""
        hook = _Hook(len(idx), self.L)
        res = ecvq_encode(self.rvq, self.cm, self.X[torch.as_tensor(idx)], torch.as_tensor(lam, dtype=torch.float64),
                          batch_size=self.batch, on_step=hook, progress=self.progress,
                          resume=(torch.as_tensor(known.astype(np.int64)), torch.as_tensor(first)))
        self.frames_encoded += len(idx); self.mismatch += hook.mismatch
        self.positions_coded += int((self.L - res.start).sum())
        return res, hook

    def calibrate(self, lams: np.ndarray, max_frames: int) -> np.ndarray:
        "Mean ideal bits per frame at each λ on a frame sample (one pass, all λ together)."
        N = len(self.X)
        idx = np.linspace(0, N - 1, min(N, max_frames)).round().astype(int)
        rows = self.X[idx].repeat(len(lams), 1)
        lam = torch.as_tensor(np.repeat(lams, len(idx)), dtype=torch.float64)
        res = ecvq_encode(self.rvq, self.cm, rows, lam, batch_size=self.batch, progress=self.progress)
        self.frames_encoded += len(rows); self.passes += 1
        return res.bits.numpy().reshape(len(lams), len(idx)).mean(1)

    def overhead_bits(self, u: int, bpf: float) -> float:
        "Container + CRC + average termination, in bits, for utterance `u` at about `bpf` payload bits per frame."
        plen = max(1, int(self.T[u] * bpf / 8))
        return 8 * (stream_len(int(self.T[u]), self.D, int(self.chunk[u]), plen) - plen + 2)

    def evaluate(self, us, lams) -> list[CodedState]:
        "One batched pass: utterance `us[i]` at λ `lams[i]`; returns a state per request (cache untouched)."
        us, lams = np.asarray(us, int), np.asarray(lams, np.float64)
        cached = [self.cache[u] if self.use_cache and not self.context else None for u in us]
        need, first = [], []  # per request: the frames to code, and the position each resumes at
        for u, lam, c in zip(us, lams, cached):
            if c is None: need.append(np.arange(self.T[u])); first.append(np.zeros(self.T[u], np.int64)); continue
            moved = ~_inside(lam, c.lo, c.hi)  # (T, L): tokens that may change at lam
            rows = np.flatnonzero(moved.any(1))
            need.append(rows); first.append(moved[rows].argmax(1))
        n = [len(x) for x in need]
        if self.context:
            hook = _Hook(sum(n), self.L)
            res = ecvq_encode_utterances(self.rvq, self.cm, [self.utts[u] for u in us], lams, on_step=hook)
            self.frames_encoded += sum(n); self.mismatch += hook.mismatch; self.positions_coded += sum(n) * self.L
            new = dict(tokens=torch.cat([r.tokens for r in res]).numpy().astype(np.uint8), ck=hook.ck.numpy(), fk=hook.fk.numpy(),
                       lo=hook.lo.numpy(), hi=hook.hi.numpy(), ideal=hook.bits.numpy())
            start, dist = np.zeros(sum(n), np.int64), torch.cat([r.distortion for r in res]).numpy()
        elif sum(n):
            fst = np.concatenate(first)
            known = np.concatenate([np.zeros((k, self.L), np.uint8) if c is None else c.tokens[x] for c, x, k in zip(cached, need, n)])
            order = np.argsort(fst, kind="stable")
            res, hook = self._encode(np.concatenate([self.off[u] + x for u, x in zip(us, need)])[order],
                                     np.repeat(lams, n)[order], known[order], fst[order])
            inv = np.argsort(order)
            new = dict(tokens=res.tokens.numpy()[inv].astype(np.uint8), ck=hook.ck.numpy()[inv], fk=hook.fk.numpy()[inv],
                       lo=hook.lo.numpy()[inv], hi=hook.hi.numpy()[inv], ideal=hook.bits.numpy()[inv])
            start, dist = res.start.numpy()[inv], res.distortion.numpy()[inv]
        self.passes += 1
        out, a = [], 0
        for u, lam, rows, c in zip(us, lams, need, cached):
            b = a + len(rows)
            if c is None: st = CodedState(float(lam), *(new[f][a:b] for f in _PER_TOKEN), dist[a:b])
            else:
                st = CodedState(float(lam), *(getattr(c, f).copy() for f in _PER_TOKEN), c.dist.copy())
                if len(rows):
                    coded = np.arange(self.L) >= start[a:b, None]  # positions before a frame's start keep the cache's values
                    for f in _PER_TOKEN: getattr(st, f)[rows] = np.where(coded, new[f][a:b], getattr(c, f)[rows])
                    st.dist[rows] = dist[a:b]
            a = b
            st.reencoded = len(rows)
            out.append(self._size(u, st))
        return out

    def _size(self, u: int, st: CodedState) -> CodedState:
        "Fill in the payload and stream lengths of `st` by running the range coder."
        T, ch = int(self.T[u]), int(self.chunk[u])
        st.payload_len = len(encode_payload(st.ck, st.fk, ch))
        st.stream_len = stream_len(T, self.D, ch, st.payload_len)
        return st

    def mix(self, u: int, A: CodedState, B: CodedState, k: int) -> CodedState:
        "Frames [0, k) from state `A`, the rest from `B` (ECVQ with a per-frame λ: frames are coded independently)."
        if self.context: raise EibError("a codec with inter-frame context codes a frame given the one before: its states cannot be mixed")
        cat = lambda f: np.concatenate([getattr(A, f)[:k], getattr(B, f)[k:]])
        st = CodedState(B.lam, *(cat(f) for f in _PER_TOKEN + ("dist",)), lam2=A.lam, split=k)
        return self._size(u, st)

    def commit(self, u: int, st: CodedState):
        "Make `st` the cached state of utterance `u`."
        self.cache[u] = st

    def stream_bytes(self, u: int, st: CodedState) -> bytes:
        "The exact eib.bitstream container of utterance `u` at state `st`."
        T, ch = int(self.T[u]), int(self.chunk[u])
        return pack_stream(self.codec.fingerprint, T, self.D, ch, st.lam, encode_payload(st.ck, st.fk, ch), st.tokens)


# %% [markdown]
# The engine's streams are byte-for-byte those of `eib.bitstream.compress` at the same λ, also when most frames
# come from the cache (a tiny codec with a random entropy model; the trained case is in the benchmark):

# %%
from eib.rvq import RVQConfig, fit_rvq
from eib.entropy import EntropyConfig, EntropyModel
from eib.bitstream import compress, decompress
torch.manual_seed(0)
_g = np.random.default_rng(0)
_W = _g.normal(size=(6, 26)).astype(np.float32)
utts = [(_g.normal(size=(int(T), 6)) @ _W + 0.3 * _g.normal(size=(int(T), 26))).astype(np.float32) for T in _g.integers(20, 60, 6)]
rvq = fit_rvq(np.concatenate(utts), RVQConfig.for_dim(26, layers=2, codes=16), iters=3, progress=False)
model = EntropyModel(EntropyConfig.for_rvq(rvq.cfg, "cpu", d_model=32, n_layers=1, n_heads=2, d_ff=64)).eval()
E = RateEngine((rvq, model), utts)
for u, st in enumerate(E.evaluate(range(6), [0.3] * 6)): E.commit(u, st)
for lam in (0.0, 0.3, 0.32, 1.0, LAM_INF):
    for u, st in enumerate(E.evaluate(range(6), [lam] * 6)):
        data = E.stream_bytes(u, st)
        test_eq(data, compress((rvq, model), utts[u], lam))
        test_eq(len(data), st.stream_len)
test_eq(decompress((rvq, model), data)[0].numpy().astype(np.uint8), st.tokens)
test_eq(E.mismatch, 0)
test(E.positions_coded, E.frames_encoded * E.L, operator.lt, "<")  # re-encoded frames resumed after their unchanged tokens

# %%
# a codec with inter-frame context: every evaluation codes whole utterances in order, and its sizes are the streams'
cmodel = EntropyModel(EntropyConfig.for_rvq(rvq.cfg, "cpu", d_model=32, n_layers=1, n_heads=2, d_ff=64, context="frame")).eval()
with torch.no_grad(): cmodel.ctx.weight.normal_(0, 0.5)
EC = RateEngine((rvq, cmodel), utts)
for u, st in enumerate(EC.evaluate(range(6), [0.3] * 6)): EC.commit(u, st)
for lam in (0.0, 0.3, 1.0):
    sts = EC.evaluate(range(6), [lam] * 6)
    test_eq([EC.stream_bytes(u, st) == compress((rvq, cmodel), utts[u], lam) for u, st in enumerate(sts)], [True] * 6)
    test_eq([len(EC.stream_bytes(u, st)) for u, st in enumerate(sts)], [st.stream_len for st in sts])
test_eq((EC.context, EC.mismatch, EC.positions_coded), (True, 0, EC.frames_encoded * EC.L))  # nothing resumed
test_fail(lambda: EC.mix(0, sts[0], sts[0], 3), contains="cannot be mixed")
