# %% [markdown]
# # The entropy model
#
# > An autoregressive Transformer over the tokens of one frame

# %%
#| default_exp entropy

# %%
#| export
from __future__ import annotations
import math
from dataclasses import dataclass, asdict
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import numba
from eib.core import EibError

# %%
import operator
from fastcore.test import test, test_eq, test_fail, test_close
torch.set_num_threads(1)  # the tests' tiny models run faster on one thread on a shared machine
from eib.rvq import RVQConfig, GroupedRVQ, fit_rvq

# %% [markdown]
# ## Configuration
#
# A frame is `positions = groups * layers` tokens in group-major order (position `p = g * layers + m`).
# The model predicts each token from the earlier tokens of the same frame: it outputs a distribution
# over `vocab = K + 1` symbols (K codes and SKIP) and reads `vocab + 1` input symbols, the extra one being
# BOS, which starts every frame. Two presets: `paper` (the thesis's size) and `cpu`, smaller, chosen by
# measurement on this project's 2-core machines (see *Choosing the cpu preset* in the ECVQ chapter, where the model is
# trained). `MODEL_SIZES` holds the two sizes; what a preset spends on training (frames, steps) is `eib.train.PRESETS`.

# %%
#| export
CONTEXTS = {  # what the entropy model sees besides the frame's earlier tokens
    "none": "the frame's earlier tokens only (the thesis's model)",
    "frame": "also the previous frame's token at each position (a learned embedding per position and token)",
}

MODEL_SIZES = {
    "paper": dict(d_model=256, n_layers=6, n_heads=8, d_ff=1024),
    "cpu": dict(d_model=64, n_layers=1, n_heads=4, d_ff=128, dropout=0.0),  # tiny and trained on sampled frames: no dropout
}

@dataclass(frozen=True)
class EntropyConfig:
    "Shape of the entropy model for `positions = groups * layers` tokens over `vocab` coded symbols."
    vocab: int  # coded symbols: K codes + SKIP (= K)
    positions: int  # L = G * M
    groups: int
    layers: int
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 8
    d_ff: int = 1024
    dropout: float = 0.1
    context: str = "none"  # a key of CONTEXTS

    def __post_init__(self):
        for k in ("vocab", "positions", "groups", "layers", "d_model", "n_layers", "n_heads", "d_ff"):
            v = getattr(self, k)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise EibError(f"EntropyConfig.{k} must be a positive integer, got {v!r}")
        if self.vocab < 2: raise EibError(f"EntropyConfig.vocab must be at least 2, got {self.vocab}")
        if self.positions != self.groups * self.layers:
            raise EibError(f"EntropyConfig: positions {self.positions} != groups {self.groups} x layers {self.layers}")
        if self.d_model % self.n_heads:
            raise EibError(f"EntropyConfig: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if not 0 <= self.dropout < 1: raise EibError(f"EntropyConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.context not in CONTEXTS:
            raise EibError(f"unknown entropy-model context {self.context!r}; known: {', '.join(CONTEXTS)}")

    @property
    def codes(self) -> int: return self.vocab - 1
    @property
    def skip(self) -> int: return self.vocab - 1
    @property
    def bos(self) -> int: return self.vocab
    @property
    def n_inputs(self) -> int: return self.vocab + 1
    @property
    def head_dim(self) -> int: return self.d_model // self.n_heads

    @classmethod
    def for_rvq(cls, rvq_cfg, preset: str = "cpu", **overrides) -> "EntropyConfig":
        "The config for an `RVQConfig`'s token layout with the sizes of `preset`, changed by `overrides`."
        if preset not in MODEL_SIZES: raise EibError(f"unknown entropy-model preset {preset!r}; known: {', '.join(MODEL_SIZES)}")
        kw = {**MODEL_SIZES[preset], **overrides}
        return cls(vocab=rvq_cfg.vocab, positions=rvq_cfg.positions, groups=rvq_cfg.groups, layers=rvq_cfg.layers, **kw)

    def to_dict(self) -> dict:
        "The fields as a dict; `context` only where it is not \"none\" (so an intra-frame codec's fingerprint is what it was)."
        d = asdict(self)
        if d["context"] == "none": del d["context"]
        return d
    @classmethod
    def from_dict(cls, d: dict) -> "EntropyConfig":
        names = ("vocab", "positions", "groups", "layers", "d_model", "n_layers", "n_heads", "d_ff")
        try: return cls(**{k: int(d[k]) for k in names}, dropout=float(d.get("dropout", 0.1)), context=str(d.get("context", "none")))
        except KeyError as e: raise EibError(f"entropy-model config lacks {e}; it needs {', '.join(names)}") from None


# %%
c = EntropyConfig.for_rvq(RVQConfig.for_dim(768, layers=3), "paper")
test_eq((c.vocab, c.positions, c.bos, c.n_inputs, c.head_dim), (129, 36, 129, 130, 32))
test_eq(EntropyConfig.from_dict(c.to_dict()), c)
test_fail(lambda: EntropyConfig.for_rvq(RVQConfig(16, 2, 2, 8), "huge"), contains="known: paper, cpu")
test_fail(lambda: EntropyConfig(9, 5, 2, 2), contains="positions 5")
test_eq("context" in c.to_dict(), False)  # an intra-frame config reads as before (its codec's fingerprint is unchanged)
cf = EntropyConfig.for_rvq(RVQConfig.for_dim(768, layers=3), "cpu", context="frame")
test_eq((cf.to_dict()["context"], EntropyConfig.from_dict(cf.to_dict())), ("frame", cf))
test_fail(lambda: EntropyConfig(9, 4, 2, 2, context="video"), contains="known: none, frame")


# %% [markdown]
# ## The model
#
# A pre-LayerNorm causal Transformer written out by hand (no fused `nn.TransformerEncoder` paths), so
# that the full teacher-forced pass and the incremental pass with a key/value cache compute the same
# thing. The input at position `p` is the token at `p - 1` (BOS at 0) plus embeddings of the position,
# its group and its layer. The FFN uses ReLU (exact in fixed point, see the coding model below).

# %%
#| export
class _Block(nn.Module):
    "One pre-LN Transformer block: causal self-attention and a ReLU feed-forward layer."
    def __init__(self, c: EntropyConfig):
        super().__init__()
        self.h, self.dh = c.n_heads, c.head_dim
        self.ln1, self.ln2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.qkv, self.proj = nn.Linear(c.d_model, 3 * c.d_model), nn.Linear(c.d_model, c.d_model)
        self.fc1, self.fc2 = nn.Linear(c.d_model, c.d_ff), nn.Linear(c.d_ff, c.d_model)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x):
        """Full causal pass: x (N, L, d). One fused attention call (no dropout on the attention weights: drawing that
        (N, H, L, L) mask took a third of a training step at 80 positions); dropout stays on the residual branches."""
        N, L, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(N, L, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.drop(self.proj(o.transpose(1, 2).reshape(N, L, d)))
        return x + self.drop(self.fc2(self.drop(F.relu(self.fc1(self.ln2(x))))))

    def step(self, x, kc, vc, p: int):
        "Incremental pass at position `p`: x (N, d); kc, vc (N, H, L, dh) caches, filled in place."
        N, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(N, 3, self.h, self.dh).unbind(1)
        kc[:, :, p], vc[:, :, p] = k, v
        o = F.scaled_dot_product_attention(q.unsqueeze(2), kc[:, :, :p + 1], vc[:, :, :p + 1])  # one query row
        x = x + self.proj(o.reshape(N, d))
        return x + self.fc2(F.relu(self.fc1(self.ln2(x))))


def check_context(prev, cfg: EntropyConfig, n: int | None = None) -> torch.Tensor:
    """Previous-frame tokens (n, L) for a context model as a LongTensor: coded symbols, or BOS (`cfg.bos`) where there is
    no previous frame; None: BOS everywhere (`n` frames). For a model without context (`cfg.context` "none"): None, and an
    EibError if `prev` is given."""
    if cfg.context == "none":
        if prev is not None: raise EibError("this entropy model has no inter-frame context (EntropyConfig.context 'none'); pass no previous frame")
        return None
    if prev is None:
        if n is None: raise EibError("a context model needs the previous frames' tokens (or their number)")
        return torch.full((n, cfg.positions), cfg.bos, dtype=torch.long)
    t = torch.as_tensor(prev)
    if t.ndim != 2 or t.shape[1] != cfg.positions or t.is_floating_point() or (n is not None and len(t) != n):
        raise EibError(f"previous-frame tokens must be integers of shape ({'N' if n is None else n}, {cfg.positions}), got {tuple(t.shape)} {t.dtype}")
    t = t.long().cpu()
    if t.numel() and (t.min() < 0 or t.max() > cfg.bos):
        raise EibError(f"previous-frame tokens must lie in 0..{cfg.bos} (BOS: no previous frame); got {int(t.min())}..{int(t.max())}")
    return t

def previous_frames(tokens, bos: int) -> torch.Tensor:
    "Each frame's previous frame in one utterance's tokens (T, L): a BOS row, then frames 0..T-2."
    t = torch.as_tensor(tokens).long()
    return torch.cat([torch.full_like(t[:1], bos), t[:-1]]) if len(t) else t.clone()


class EntropyModel(nn.Module):
    "Causal Transformer over one frame's tokens: logits of q(token_p | tokens_<p) for every position p."
    def __init__(self, cfg: EntropyConfig):
        super().__init__()
        self.cfg = c = cfg
        self.tok = nn.Embedding(c.n_inputs, c.d_model)
        self.pos, self.grp, self.lay = nn.Embedding(c.positions, c.d_model), nn.Embedding(c.groups, c.d_model), nn.Embedding(c.layers, c.d_model)
        self.blocks = nn.ModuleList(_Block(c) for _ in range(c.n_layers))
        self.ln_f, self.head = nn.LayerNorm(c.d_model), nn.Linear(c.d_model, c.vocab)
        self.drop = nn.Dropout(c.dropout)
        # context "frame": the previous frame's token at position p, one embedding row per (position, token; BOS: none)
        self.ctx = nn.Embedding(c.positions * c.n_inputs, c.d_model) if c.context == "frame" else None
        p = torch.arange(c.positions)
        self.register_buffer("_g", p // c.layers, persistent=False)
        self.register_buffer("_m", p % c.layers, persistent=False)
        self.register_buffer("_ctx_row", p * c.n_inputs, persistent=False)
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)): nn.init.normal_(mod.weight, std=0.02)
            if isinstance(mod, nn.Linear): nn.init.zeros_(mod.bias)

    def position_table(self) -> torch.Tensor:
        "(L, d) sum of position, group and layer embeddings."
        return self.pos.weight + self.grp.weight[self._g] + self.lay.weight[self._m]

    def check_tokens(self, tokens) -> torch.Tensor:
        "`tokens` as a LongTensor (N, L) of coded symbols, or an EibError."
        t = torch.as_tensor(tokens)
        c = self.cfg
        if t.ndim != 2 or t.shape[1] != c.positions or t.is_floating_point():
            raise EibError(f"expected integer tokens of shape (N, {c.positions}), got {tuple(t.shape)} {t.dtype}")
        t = t.long()
        if t.numel() and (t.min() < 0 or t.max() >= c.vocab):
            raise EibError(f"tokens must lie in 0..{c.vocab - 1}; got {int(t.min())}..{int(t.max())}")
        return t

    def input_table(self, prev=None, n: int | None = None) -> torch.Tensor:
        """What position p adds to its input token's embedding: `position_table()` (L, d); for a context model also the
        embedding of the previous frame's token there, (N, L, d) for `prev` (N, L) (`check_context`; None: no previous frame)."""
        pt, pv = self.position_table(), check_context(prev, self.cfg, n)
        return pt if pv is None else pt + self.ctx(pv.to(pt.device) + self._ctx_row)

    def forward(self, tokens, prev=None) -> torch.Tensor:
        """Teacher forcing: tokens (N, L) -> logits (N, L, vocab); the input is [BOS, t_0 .. t_{L-2}]. `prev` (N, L): the
        previous frame's tokens of each frame (a context model only; None or BOS rows: an utterance's first frame)."""
        t = self.check_tokens(tokens).to(self.pos.weight.device)
        inp = torch.cat([torch.full_like(t[:, :1], self.cfg.bos), t[:, :-1]], 1)
        x = self.drop(self.tok(inp) + self.input_table(prev, len(t)))
        for b in self.blocks: x = b(x)
        return self.head(self.ln_f(x))

    def bits(self, tokens, prev=None) -> torch.Tensor:
        "Ideal code length -log2 q of every token (N, L), from the float model (`prev`: as in `forward`)."
        t = self.check_tokens(tokens)
        lp = self(t, prev).log_softmax(-1)
        return -lp.gather(-1, t.to(lp.device).unsqueeze(-1)).squeeze(-1) / math.log(2)

    @torch.no_grad()
    def start(self, n: int, prev=None) -> dict:
        "Empty key/value caches for `n` frames (`prev` (n, L): their previous frames' tokens, for a context model)."
        c, w = self.cfg, self.pos.weight
        z = lambda: w.new_zeros(n, c.n_heads, c.positions, c.head_dim)
        return dict(p=0, k=[z() for _ in self.blocks], v=[z() for _ in self.blocks], pos=self.input_table(prev, n))

    @torch.no_grad()
    def step(self, state: dict, tok_in) -> torch.Tensor:
        "Feed the previous token (BOS at the start) of `n` frames; returns logits (n, vocab) for the next position."
        p = state["p"]
        if p >= self.cfg.positions: raise EibError(f"all {self.cfg.positions} positions of the frame were already stepped")
        x = self.tok(torch.as_tensor(tok_in, device=self.pos.weight.device).long()) + state["pos"][..., p, :]
        for b, kc, vc in zip(self.blocks, state["k"], state["v"]): x = b.step(x, kc, vc, p)
        state["p"] = p + 1
        return self.head(self.ln_f(x))

    @classmethod
    def from_state(cls, cfg: dict | EntropyConfig, state_dict: dict) -> "EntropyModel":
        "Rebuild a model from its config and weights (for checkpoint loading)."
        m = cls(cfg if isinstance(cfg, EntropyConfig) else EntropyConfig.from_dict(cfg))
        try: m.load_state_dict(state_dict)
        except RuntimeError as e: raise EibError(f"entropy-model weights do not fit the config: {str(e)[:300]}") from None
        return m.eval()


# %% [markdown]
# The cached incremental pass gives the same logits as the full pass:

# %%
tc = EntropyConfig(vocab=9, positions=4, groups=2, layers=2, d_model=32, n_layers=2, n_heads=4, d_ff=64)
torch.manual_seed(0)
m = EntropyModel(tc).eval()
for w in m.parameters(): w.data.normal_(0, 0.3)  # larger weights than at init, so the test has teeth
tok = torch.randint(0, 9, (5, 4))
full = m(tok)
st, inp, steps = m.start(5), torch.full((5,), tc.bos), []
for p in range(4): steps.append(m.step(st, inp)); inp = tok[:, p]
test_close(torch.stack(steps, 1), full, eps=1e-5)
test(float(full.std()), 0.3, operator.gt, ">")
test_fail(lambda: m.step(st, inp), contains="already stepped")
test_fail(lambda: m(torch.full((2, 4), 9)), contains="0..8")
test_close(m.bits(tok), -full.log_softmax(-1).gather(-1, tok[..., None])[..., 0] / math.log(2), eps=1e-5)

# %% [markdown]
# ### Inter-frame context
#
# At 50 frames/s consecutive frames of a speech representation are strongly correlated, yet the thesis's model (like
# EnCodec's or DAC's per-frame codes) predicts a frame's tokens from that frame's earlier tokens only. With
# `EntropyConfig.context = "frame"` position p's input also gets a learned embedding of the **previous frame's token at
# p** (one row per position and token; BOS for an utterance's first frame). Nothing else changes: the key/value cache,
# the exact coding twin below, ECVQ. What does change is the order of work. ECVQ codes the frames of one utterance in
# order, each given the tokens it chose for the frame before (closed loop: what the decoder will have), and batches
# across utterances (`eib.ecvq.ecvq_encode_utterances`). A stream is coded one frame per chunk (`eib.bitstream`), and
# the rate search codes whole utterances at each λ (`eib.engine`: no resuming from cached intervals, no mixing of two λ).
#
# Does it pay? `benchmarks/context_rd.py` trains both models the same way (the cpu preset's size and steps, two rounds,
# the second on tokens from each model's own closed-loop ECVQ) on the same plain RVQ codebooks and compares their test
# curves at equal normalised MSE. On RAVDESS's Whisper-base features (the book's primary encoder; 327 training
# utterances, the 360 test utterances), the context model needed, at the MSE of the intra model's points in the 30–120
# BPF middle, 65.0 bits for 98.1 (−33.8%), 39.6 for 64.0 (−38.2%), 25.7 for 43.6 (−41.0%) and 18.5 for 33.0 (−43.8%);
# 27% fewer at 147 BPF, 8% fewer at 374 BPF, where almost every token is a code. These are the float models' ideal bits
# (on the exact path a stream's bits are within a fraction of a percent of them, see `eib.bitstream`). An embedding shared
# over positions saved less (35% against 42% at 49 BPF). On EmoDB's Whisper-base features (388 training utterances, the
# 92 test utterances), with both models trained by the library's `train_entropy_model` on whole utterances, the saving in
# the middle was 27.2–29.1% (122, 74, 50 and 37 BPF needed 90.7, 54.0, 36.2 and 26.5 with context); an earlier version of
# the benchmark, with a training loop of its own, measured 24.7–29.7% there, and 19.7–24.3% on the synthetic set's
# features (RAVDESS's numbers above are that version's too). The goal of a quarter fewer bits holds on RAVDESS and EmoDB,
# not on the synthetic speech. Swept per utterance with real streams on RAVDESS, against a codec on the same codebooks
# without context, the context codec needed 33–45% fewer bits at 30–100 BPF for the same distortion, and the matched
# probe scored higher on its decoded features from 30 to 75 BPF (see Findings, which reads the results files).
#
# The price is speed. A stream of one utterance is coded frame after frame, one frame per batch, so every position pays
# the coding model's per-call overhead: on EmoDB (40 test utterances, one thread) `compress` ran at 58 frames/s and
# `decompress` at 84, against 1878 and 2359 for the intra-frame codec (0.03× and 0.04×), with every round trip exact. Across utterances
# the frames at one index share a batch: closed-loop float ECVQ over 40 RAVDESS utterances ran at 0.53× the intra
# model's frames per second.
#
# To use it: `eib-train --context frame` fits the same codebooks as without it and trains the context model on whole
# utterances, each coded at one λ of the grid with its frames in order (`eib.ecvq.train_entropy_model`); with
# `--codebooks CHECKPOINT` it keeps that codec's codebooks and model size and trains only the entropy model, a twin with
# context (`checkpoints/synth_cpu_context_frame` is `synth_cpu`'s); `papermill
# nbs/sweep.ipynb ... -p context frame` sweeps such a codec (files named `..._context_frame`); the λ explorer switches
# between a codec and its context twin; and the results chapter sets the two sweeps side by side.

# %%
# a context model: position p also sees the previous frame's token there; its steps agree with its full pass too
mf = EntropyModel(EntropyConfig(**{**tc.to_dict(), "context": "frame"})).eval()
for w in mf.parameters(): w.data.normal_(0, 0.3)
prev = torch.cat([torch.full((1, 4), tc.bos), tok[:-1]])  # frame i's previous frame: frame i-1 (BOS: none)
full_f = mf(tok, prev)
st, inp, steps = mf.start(5, prev), torch.full((5,), tc.bos), []
for p in range(4): steps.append(mf.step(st, inp)); inp = tok[:, p]
test_close(torch.stack(steps, 1), full_f, eps=1e-5)
test_eq(torch.equal(previous_frames(tok, tc.bos), prev), True)
test(float((full_f - mf(tok, torch.full_like(tok, tc.bos))).abs().max()), 0.1, operator.gt, ">")  # the context matters
test_fail(lambda: m(tok, prev), contains="no inter-frame context")
test_fail(lambda: mf(tok, prev[:3]), contains="shape (5, 4)")
test_fail(lambda: mf(tok, prev + 9), contains="0..9")

# %% [markdown]
# ## Exact coding probabilities
#
# An arithmetic decoder must compute bit for bit the probabilities the encoder used. Float results change
# with the batch size, the thread count and the machine (different reduction orders and kernels), so the
# coder does not use the float model. `CodingModel` is its fixed-point twin, run in float64 so that every
# result is exact or correctly rounded:
#
# * activations live on a grid of 2^-12 and are clamped to ±256; weight matrices are rounded to 16
#   significant bits on a power-of-two grid. Every product then is an integer multiple of a fixed power of
#   two, and every matrix-product sum stays below 2^53, so float64 matmuls are **exact in any summation order**
#   (any BLAS kernel, any batch size, any thread count, any machine);
# * LayerNorm uses exact sums, the mean rounded to the grid, and `sqrt`/division, which IEEE 754 rounds
#   correctly everywhere;
# * `exp` (softmax) comes from a table built by float64 multiplications from one hex constant, with values
#   rounded to a 2^-40 grid: the same table everywhere; attention weights are rounded to 2^-20;
# * the head's logits become integer frequencies `f >= 1` summing to 2^24 (`logits_to_freqs`), the exact
#   model of the range coder (constriction's lazy categorical model with 24-bit precision reproduces them
#   exactly, see `eib.bitstream`).
#
# The ideal code length of a symbol is then `24 - log2 f`, and ECVQ decides with these very numbers.

# %%
#| export
_A = 4096.0  # activation grid: multiples of 2^-12
_LIM = 256.0  # activations are clamped to [-_LIM, _LIM]
_WBITS = 16  # significant bits of a quantised weight
_PREC = 24  # frequencies sum to 2^_PREC (constriction's default range-coder precision)
_EXP_STEP = float.fromhex("0x1.ffe000fffaaacp-1")  # exp(-1/4096) as exact bits
_EXP_N = 32 * 4096 + 1
_EXP_TABLE = None

def exp_table() -> torch.Tensor:
    "exp(-j/4096), j = 0.._EXP_N-1, rounded to a 2^-40 grid; built from IEEE multiplications only."
    global _EXP_TABLE
    if _EXP_TABLE is None:
        small = [1.0]
        for _ in range(4095): small.append(small[-1] * _EXP_STEP)
        big = [1.0]; b = small[-1] * _EXP_STEP  # exp(-1)
        for _ in range(_EXP_N // 4096): big.append(big[-1] * b)
        t = np.multiply.outer(np.array(big), np.array(small)).ravel()[:_EXP_N]
        _EXP_TABLE = torch.from_numpy(np.round(t * 2.0 ** 40) / 2.0 ** 40)
    return _EXP_TABLE

def _q(x: torch.Tensor) -> torch.Tensor:
    "Round to the activation grid (exact scaling by a power of two, then round-half-even)."
    return torch.round(x * _A) / _A

def _q_(x: torch.Tensor) -> torch.Tensor:
    "`_q` in place (the same values: scaling by 2^12 and 2^-12 is exact)."
    return x.mul_(_A).round_().mul_(1.0 / _A)

def _exp_neg_(d: torch.Tensor) -> torch.Tensor:
    "exp(-d) from the table, for d >= 0 on the activation grid (inf -> the table's last entry); overwrites `d`."
    return exp_table()[d.mul_(_A).round_().clamp_(max=_EXP_N - 1).long()]

_FM = {"reassoc", "contract"}  # for sums of exact products only: any order, or a fused multiply-add, gives the same value

@numba.njit(fastmath=_FM, inline="always")
def _dot(x, y):
    acc = 0.0
    for d in range(x.shape[0]): acc += x[d] * y[d]
    return acc

@numba.njit(fastmath=_FM, inline="always")
def _axpy(a, x, y):
    for d in range(x.shape[0]): y[d] += a * x[d]

@numba.njit(inline="always")
def _grid(x): return np.rint(x * 4096.0) * (1.0 / 4096.0)  # `_q` of one number

@numba.njit(inline="always")
def _exp_from_max_(s, tab) -> float:
    "s (1-d grid values) <- exp(s - max s) from the table, in place; returns their sum (exact: values on a 2^-40 grid)."
    last = tab.shape[0] - 1
    m = -np.inf
    for j in range(s.shape[0]): m = max(m, s[j])
    tot = 0.0
    for j in range(s.shape[0]):
        k = np.rint((m - s[j]) * 4096.0)
        s[j] = tab[last if k > last else int(k)]; tot += s[j]
    return tot

@numba.njit(inline="always")
def _softmax_(s, tab):
    "Softmax of grid scores `s` (1-d), in place: exp(s - max s) from the table, weights rounded to a 2^-20 grid."
    tot = _exp_from_max_(s, tab)
    for j in range(s.shape[0]): s[j] = np.rint(s[j] / tot * 1048576.0) * (1.0 / 1048576.0)

@numba.njit(cache=True, nogil=True)
def _weights_(s, tab):
    "Exact dot products `s` (1-d) -> grid scores -> `_softmax_` weights, in place; compiled without `_FM` (roundings)."
    for j in range(s.shape[0]): s[j] = _grid(s[j])
    _softmax_(s, tab)

@numba.njit(cache=True, nogil=True)
def _grid_into_(acc, out):
    "`out` (H*dh) <- `acc` (H, dh) rounded to the grid; compiled without `_FM`."
    H, dh = acc.shape
    for h in range(H):
        for d in range(dh): out[h * dh + d] = _grid(acc[h, d])

@numba.njit(cache=True, nogil=True, fastmath=_FM)
def _attend(q, kt, v, p, tab, out):
    """One query row per frame and head against cached keys `kt` (n, H, dh, L), transposed, and values `v` (n, H, L, dh)
    at positions 0..p: grid scores, table softmax rounded to 2^-20, output rounded to the grid into `out` (n, H*dh).
    These are the two matrix products of attention fused per frame and head. Only sums of exact products are compiled
    here, with `_FM` (vectorised: any order gives the same sums); every rounding is in `_weights_` and `_grid_into_`,
    compiled without it."""
    n, H, dh, L = kt.shape
    s, acc = np.empty(p + 1), np.empty((H, dh))
    for i in range(n):
        for h in range(H):
            s[:] = 0.0
            for d in range(dh):
                qd, kr = q[i, h, d], kt[i, h, d]
                for j in range(p + 1): s[j] += qd * kr[j]
            _weights_(s, tab)
            acc[h] = 0.0
            for j in range(p + 1): _axpy(s[j], v[i, h, j], acc[h])
        _grid_into_(acc, out[i])

@numba.njit(cache=True, nogil=True, fastmath=_FM)
def _attend_table(q, kt, vt, tin, p, tab, out):
    """`_attend` for the first block, whose keys and values are functions of (input token, position): read from the
    tables `kt`, `vt` (V+1, L, H, dh) at each frame's input tokens `tin` (n, L) instead of from per-frame caches (frames
    share the tables' rows, SKIP's above all, so they stay in the CPU's cache). Like `_attend`, only exact sums here."""
    n, H, dh = q.shape
    s, acc = np.empty((H, p + 1)), np.empty((H, dh))
    for i in range(n):
        for j in range(p + 1):
            kr = kt[tin[i, j], j]
            for h in range(H): s[h, j] = _dot(q[i, h], kr[h])
        for h in range(H): _weights_(s[h], tab)
        acc[:] = 0.0
        for j in range(p + 1):
            vr = vt[tin[i, j], j]
            for h in range(H): _axpy(s[h, j], vr[h], acc[h])
        _grid_into_(acc, out[i])

@numba.njit(cache=True, nogil=True, fastmath=_FM)
def _attend_frames(q, k, v, tab, out):
    """Causal attention over whole frames (teacher forcing): queries `q` (n, H, Pq, dh) of the last Pq of the P positions
    whose keys and values are `k`, `v` (n, H, P, dh); each query row as `_attend` computes it at its step (grid scores,
    table softmax, grid output), into `out` (n, Pq, H*dh). Per frame and head the keys and values are transposed once, so
    that a query's scores and each of its outputs are contiguous (vectorised) loops over positions; like `_attend`, only
    exact sums are compiled here."""
    n, H, Pq, dh = q.shape
    P = k.shape[2]
    kt, vt, s, acc = np.empty((dh, P)), np.empty((dh, P)), np.empty(P), np.empty((Pq, H, dh))
    for i in range(n):
        for h in range(H):
            for j in range(P):
                for d in range(dh): kt[d, j], vt[d, j] = k[i, h, j, d], v[i, h, j, d]
            for p in range(Pq):
                m = P - Pq + p + 1  # this query sees positions 0..m-1
                sp = s[:m]
                sp[:] = 0.0
                for d in range(dh):
                    qd, kr = q[i, h, p, d], kt[d]
                    for j in range(m): sp[j] += qd * kr[j]
                _weights_(sp, tab)
                for d in range(dh):
                    vr, a = vt[d], 0.0
                    for j in range(m): a += sp[j] * vr[j]
                    acc[p, h, d] = a
        for p in range(Pq): _grid_into_(acc[p], out[i, p])

@numba.njit(cache=True, nogil=True)
def _freqs_rows(l, tab, free, out):
    "`logits_to_freqs` on rows `l` (n, V) into `out` (n, V) int64: table exp, floor of the scaled share, remainder to the first maximum."
    n, V = l.shape
    e = np.empty(V)
    for i in range(n):
        e[:] = l[i]
        tot, best = _exp_from_max_(e, tab), 0
        for j in range(V):
            if e[j] > e[best]: best = j
        gs = 0.0
        for j in range(V):
            g = np.floor(e[j] * free / tot)
            out[i, j] = int(g) + 1; gs += g
        out[i, best] += int(free - gs)

def logits_to_freqs(logits: torch.Tensor) -> torch.Tensor:
    """Grid logits (..., V) -> int64 frequencies >= 1 summing to 2^24; a deterministic function of each row:
    f = 1 + floor(e·free / Σe) with e = exp(l - max l) from the table and free = 2^24 - V, the remainder added at the
    first maximum."""
    l = logits.detach().double().cpu().contiguous()
    V = l.shape[-1]
    out = torch.empty(l.shape, dtype=torch.int64)
    _freqs_rows(l.view(-1, V).numpy(), exp_table().numpy(), float((1 << _PREC) - V), out.view(-1, V).numpy())
    return out

def freqs_to_bits(f: torch.Tensor) -> torch.Tensor:
    "Code length in bits of each symbol under integer frequencies summing to 2^24."
    return _PREC - torch.log2(f.double())


# %%
test_close(exp_table()[4096].item(), math.exp(-1), eps=1e-11)
test_close(exp_table()[:4096 * 28:997].numpy(), np.exp(-np.arange(0, 4096 * 28, 997) / 4096), eps=2e-12)
l = _q(torch.randn(1000, 129, dtype=torch.float64) * 4)
f = logits_to_freqs(l)
def freqs_torch(l):  # the same formula in whole-tensor operations
    V = l.shape[-1]; e = _exp_neg_(l.max(-1, keepdim=True).values - l); free = float((1 << _PREC) - V)
    g = (e * free).div_(e.sum(-1, keepdim=True)).floor_()
    g.scatter_add_(-1, e.argmax(-1, keepdim=True), free - g.sum(-1, keepdim=True))
    return g.long().add_(1)
test_eq(torch.equal(f, freqs_torch(l)), True)
test_eq(logits_to_freqs(l.view(10, 100, 129)).shape, (10, 100, 129))
test_eq(f.sum(-1).unique().tolist(), [2 ** 24]); test(int(f.min()), 1, operator.ge, ">=")
l = _q(torch.tensor([[0.0, math.log(3.0), -40.0]], dtype=torch.float64))
test_close((logits_to_freqs(l)[0] / 2 ** 24).tolist(), [0.25, 0.75, 0], eps=1e-4)
test_close(freqs_to_bits(logits_to_freqs(l))[0, :2].tolist(), [2.0, math.log2(4 / 3)], eps=1e-4)


# %%
#| export
def _qw(W: torch.Tensor) -> torch.Tensor:
    "nn.Linear weight (out, in) -> (in, out) float64 rounded to `_WBITS` significant bits on a power-of-two grid."
    W = W.detach().double().cpu().t().contiguous()
    mx = float(W.abs().max())
    s = 2.0 ** (_WBITS - (math.frexp(mx)[1] if mx > 0 else 0))
    return torch.round(W * s) / s

def _lw(W: torch.Tensor, b: torch.Tensor) -> tuple:
    "A linear layer's (weight, bias) for `_lin`: quantised, then scaled by the grid's 2^12 (exact: a power of two)."
    return _qw(W) * _A, _q(b.double()) * _A

def _lin(x, WA, bA):
    """Exact fixed-point linear layer on `_lw` weights: grid input -> grid output, clamped. Every product and partial
    sum is an integer multiple of one power of two below 2^53, so any summation order (any BLAS) gives the same sum."""
    y = torch.addmm(bA, x.reshape(-1, x.shape[-1]), WA).round_().mul_(1.0 / _A).clamp_(-_LIM, _LIM)
    return y.view(*x.shape[:-1], WA.shape[1])

@numba.njit(cache=True, nogil=True)
def _ln_rows(x, w, b, eps, out):
    "`_ln` on rows `x` (n, d) into `out`."
    n, d = x.shape
    e2 = eps * 4096.0 * 4096.0
    for i in range(n):
        s = 0.0
        for j in range(d): s += x[i, j] * 4096.0  # integers: exact
        mu = np.rint(s / d)
        ss = 0.0
        for j in range(d): ss += (x[i, j] * 4096.0 - mu) * (x[i, j] * 4096.0 - mu)  # exact below 2^53
        sd = np.sqrt(ss / d + e2)
        for j in range(d): out[i, j] = min(max(np.rint(((x[i, j] * 4096.0 - mu) / sd * w[j] + b[j]) * 4096.0) * (1.0 / 4096.0), -256.0), 256.0)

def _ln(x, w, b, eps):
    """Fixed-point LayerNorm, row by row: with a = 2^12 x (integers), a - round(mean a) divided by sqrt(mean of its
    squares + eps·2^24) (exact sums, correctly rounded sqrt and division), times w plus b, rounded to the grid, clamped."""
    d = x.shape[-1]
    out = torch.empty(x.shape, dtype=torch.float64)
    _ln_rows(x.reshape(-1, d).double().contiguous().numpy(), w.numpy(), b.numpy(), float(eps), out.view(-1, d).numpy())
    return out


QKV_TABLE_MIB = 128  # the largest table of the first block's queries, keys and values that CodingModel keeps

class CodingModel:
    "Fixed-point float64 twin of an `EntropyModel` whose frequencies are identical on every batch size, thread count and machine."
    def __init__(self, model: EntropyModel):
        c = self.cfg = model.cfg
        if max(c.d_model, c.d_ff) > 1024: raise EibError("CodingModel supports d_model and d_ff up to 1024 (exactness bound)")
        self.vocab, self.positions = c.vocab, c.positions
        sd = {k: v.detach().double().cpu() for k, v in model.state_dict().items()}
        self.tok = _q(sd["tok.weight"])
        g, m = torch.arange(c.positions) // c.layers, torch.arange(c.positions) % c.layers
        self.pos = _q(sd["pos.weight"] + sd["grp.weight"][g] + sd["lay.weight"][m])
        self.ctx = _q(sd["ctx.weight"]).view(c.positions, c.n_inputs, c.d_model) if c.context == "frame" else None
        sc = torch.ones(3 * c.d_model, dtype=torch.float64); sc[:c.d_model] = c.head_dim ** -0.5  # fold the score scale into W_q
        self.blocks = []
        for i, blk in enumerate(model.blocks):
            P = lambda n: sd[f"blocks.{i}.{n}"]
            self.blocks.append(dict(
                ln1=(P("ln1.weight"), P("ln1.bias"), blk.ln1.eps), ln2=(P("ln2.weight"), P("ln2.bias"), blk.ln2.eps),
                qkv=_lw(P("qkv.weight") * sc[:, None], P("qkv.bias") * sc),
                proj=_lw(P("proj.weight"), P("proj.bias")),
                fc1=_lw(P("fc1.weight"), P("fc1.bias")), fc2=_lw(P("fc2.weight"), P("fc2.bias"))))
        self.ln_f = (sd["ln_f.weight"], sd["ln_f.bias"], model.ln_f.eps)
        self.head = _lw(sd["head.weight"], sd["head.bias"])
        # the first block's queries, keys and values depend only on (input token, position): a table, where it is small
        # (with inter-frame context they also depend on the previous frame: no table)
        self.qkv0 = self.kv0 = None
        if self.ctx is None and c.n_inputs * c.positions * 3 * c.d_model * 8 <= QKV_TABLE_MIB * 2 ** 20:
            self.qkv0 = self._qkv_rows(self._embed(torch.arange(c.n_inputs)[:, None].expand(-1, c.positions)), self.blocks[0])
            kv = self.qkv0.view(c.n_inputs, c.positions, 3, c.n_heads, c.head_dim)[:, :, 1:].float()  # exact in float32
            self.kv0 = (kv[:, :, 0].contiguous(), kv[:, :, 1].contiguous())  # (V+1, L, H, dh) each

    def _ffn(self, x, B):
        return x.add_(_lin(_lin(_ln(x, *B["ln2"]), *B["fc1"]).relu_(), *B["fc2"])).clamp_(-_LIM, _LIM)

    @property
    def cached_blocks(self) -> int:
        "Blocks that keep keys and values per frame while coding (the first block reads its table instead, where it exists)."
        return len(self.blocks) - (self.kv0 is not None)

    def start(self, n: int, prev=None) -> dict:
        """Empty caches for `n` frames: the input tokens `tin` (n, L), and per block keys transposed (n, H, dh, L) and values
        (n, H, L, dh); float32 holds them exactly (grid values below 2^8 with 12 fractional bits) in half the memory that
        the attention reads at every step. The first block needs none where its table exists (None). A context model
        keeps the previous frames' tokens `prev` (n, L) (None: BOS, no previous frame) as `ctx`."""
        c = self.cfg
        z = lambda *s: torch.zeros(n, c.n_heads, *s, dtype=torch.float32)
        own = [i >= len(self.blocks) - self.cached_blocks for i in range(len(self.blocks))]
        st = dict(p=0, tin=torch.zeros(n, c.positions, dtype=torch.long),
                  k=[z(c.head_dim, c.positions) if o else None for o in own], v=[z(c.positions, c.head_dim) if o else None for o in own])
        ctx = check_context(prev, c, n)
        if ctx is not None: st["ctx"] = ctx
        return st

    def step(self, state: dict, tok_in) -> torch.Tensor:
        """Feed the previous token of `n` frames (BOS first); returns int64 frequencies (n, vocab) for the next position.
        A model with no per-frame caches (`cached_blocks` 0) may step only the first `n` of the frames it started (the
        others join at a later position: `prefill(..., at=)`)."""
        c, p = self.cfg, state["p"]
        if p >= c.positions: raise EibError(f"all {c.positions} positions of the frame were already stepped")
        tok_in = torch.as_tensor(tok_in).long().cpu()
        n = len(tok_in)
        if n != len(state["tin"]) and (self.cached_blocks or n > len(state["tin"])):
            raise EibError(f"step got {n} frames of the {len(state['tin'])} started (fewer only for a model with no per-frame caches)")
        x = self.tok[tok_in] + self.pos[p]
        if self.ctx is not None: x += self.ctx[p][state["ctx"][:, p]]
        x.clamp_(-_LIM, _LIM)
        state["tin"][:n, p] = tok_in
        o, tab = torch.empty(n, c.d_model, dtype=torch.float64), exp_table().numpy()
        for i, (B, kc, vc) in enumerate(zip(self.blocks, state["k"], state["v"])):
            q, k, v = self._qkv_rows(x, B, tok_in if i == 0 else None, p).view(n, 3, c.n_heads, c.head_dim).unbind(1)
            if kc is None:  # the first block: keys and values from its tables (fused, the same values)
                _attend_table(q.contiguous().numpy(), self.kv0[0].numpy(), self.kv0[1].numpy(), state["tin"].numpy(), p, tab, o.numpy())
            else:
                kc[..., p], vc[:, :, p] = k, v
                _attend(q.contiguous().numpy(), kc.numpy(), vc.numpy(), p, tab, o.numpy())  # fused, the same values
            x = self._ffn(x.add_(_lin(o, *B["proj"])).clamp_(-_LIM, _LIM), B)
        state["p"] = p + 1
        return logits_to_freqs(_lin(_ln(x, *self.ln_f), *self.head))

    def _embed(self, tok_in, prev=None):
        "Input tokens (N, P) of positions 0..P-1 (and a context model's previous-frame tokens `prev` (N, >= P)) -> the first block's input (N, P, d)."
        P = tok_in.shape[1]
        x = self.tok[tok_in] + self.pos[:P]
        if self.ctx is not None: x += self.ctx[torch.arange(P), prev[:, :P]]
        return x.clamp_(-_LIM, _LIM)

    def _qkv_rows(self, x, B, tok=None, pos=None):
        """Queries, keys and values (..., 3d) of block `B`'s input x (..., d); for the first block (`tok`, the input
        tokens, given) looked up by (token, position) where the table exists: the same values."""
        if tok is not None and self.qkv0 is not None: return self.qkv0[tok, pos]
        return _lin(_ln(x, *B["ln1"]), *B["qkv"])

    def _qkv(self, x, B, tok=None):
        "Queries, keys and values (N, H, P, dh) of a block's input x (N, P, d) (`tok`: input tokens (N, P) of the first block)."
        c, P = self.cfg, x.shape[1]
        qkv = self._qkv_rows(x, B, tok, None if tok is None else torch.arange(P))
        return qkv.view(*x.shape[:2], 3, c.n_heads, c.head_dim).permute(2, 0, 3, 1, 4)

    def _block(self, x, q, k, v, B):
        """The rest of a block on whole frames: causal attention (fused per frame, `_attend_frames`), projection, feed-forward
        layer; `x` (N, Pq, d) holds the inputs of the queries' positions, the last Pq of the keys'."""
        o = torch.empty(*x.shape[:2], self.cfg.d_model, dtype=torch.float64)
        _attend_frames(q.contiguous().numpy(), k.contiguous().numpy(), v.contiguous().numpy(), exp_table().numpy(), o.numpy())
        return self._ffn(x.add_(_lin(o, *B["proj"])).clamp_(-_LIM, _LIM), B)

    def prefill(self, state: dict, tok_in, at: int | None = None) -> dict:
        """Teacher forcing in one pass: the state that `step` reaches after the input tokens (n, P) (BOS first) of a fresh
        `start(n)`: keys and values of positions 0..P-1 (the last block's attention and feed-forward layer are not needed).
        `at` (a model with no per-frame caches only, whose state is its input tokens): the next `step` codes position
        `at` <= P instead, for the first frames; each other frame keeps its given inputs until `step` reaches it."""
        t = torch.as_tensor(tok_in).long().cpu()
        if state["p"] != 0 or t.ndim != 2 or t.shape[1] > self.positions:
            raise EibError(f"prefill needs a fresh state and input tokens (n, P <= {self.positions}), got {tuple(t.shape)}")
        P = t.shape[1]
        state["tin"][:, :P] = t
        if at is not None:
            if self.cached_blocks or not 0 <= at <= P: raise EibError(f"prefill(at={at}) needs a model with no per-frame caches and 0 <= at <= {P}")
            state["p"] = int(at)
            return state
        x = self._embed(t, state.get("ctx")) if self.cached_blocks else None
        for i, (B, kc, vc) in enumerate(zip(self.blocks, state["k"], state["v"])):
            if not self.cached_blocks: break  # the first block's table is all it needs
            q, k, v = self._qkv(x, B, t if i == 0 else None)
            if kc is not None: kc[..., :P], vc[:, :, :P] = k.transpose(-1, -2), v
            if i + 1 < len(self.blocks): x = self._block(x, q, k, v, B)
        state["p"] = P
        return state

    def teacher(self, tokens, batch: int = 32, start: int = 0, prev=None):
        """Teacher forcing in whole-frame passes (every block's causal attention fused per frame, `_attend_frames`): yields
        `(a, f)`, the frequencies `f` (n, L - start, vocab) of positions start..L-1 of frames a..a+n-1 of `tokens` (N, L)
        given their earlier tokens (and, for a context model, their previous frames' tokens `prev` (N, L)), `batch` frames
        at a time: what `step` gives at those positions."""
        t = torch.as_tensor(tokens).long().cpu()
        if t.ndim != 2 or t.shape[1] != self.positions: raise EibError(f"expected tokens (N, {self.positions}), got {tuple(t.shape)}")
        if not 0 <= start < self.positions: raise EibError(f"start must be in 0..{self.positions - 1}, got {start}")
        prev = check_context(prev, self.cfg, len(t))
        def passes():
            for a in range(0, len(t), batch):
                tb = t[a:a + batch]
                inp = torch.cat([torch.full((len(tb), 1), self.cfg.bos), tb[:, :-1]], 1)
                x = self._embed(inp, None if prev is None else prev[a:a + batch])
                for i, B in enumerate(self.blocks):
                    q, k, v = self._qkv(x, B, inp if i == 0 else None)
                    if i + 1 == len(self.blocks): x, q = x[:, start:], q[:, :, start:]  # the last block: the wanted queries only
                    x = self._block(x, q, k, v, B)
                yield a, logits_to_freqs(_lin(_ln(x, *self.ln_f), *self.head))
        return passes()

    def freqs(self, tokens, batch: int = 32, prev=None) -> torch.Tensor:
        "Teacher forcing: tokens (N, L) -> frequencies (N, L, vocab) (`teacher`'s, gathered; `prev`: as there)."
        out = torch.empty(len(tokens), self.positions, self.vocab, dtype=torch.long)
        for a, f in self.teacher(tokens, batch, prev=prev): out[a:a + len(f)] = f
        return out

    def bits(self, tokens, prev=None) -> torch.Tensor:
        "Exact code length in bits of every token (N, L) (`prev`: as in `teacher`)."
        t = torch.as_tensor(tokens).long()
        return freqs_to_bits(self.freqs(t, prev=prev).gather(-1, t.unsqueeze(-1)).squeeze(-1))


# %%
# the LayerNorm kernel equals the formula in whole-tensor operations
def ln_torch(x, w, b, eps):
    n = x.shape[-1]; d = x * _A
    d.sub_(torch.round(d.sum(-1, keepdim=True) / n))
    d.div_(torch.sqrt((d * d).sum(-1, keepdim=True) / n + eps * _A * _A))
    return _q_(d.mul_(w).add_(b)).clamp_(-_LIM, _LIM)
xs = _q(torch.randn(500, 64, dtype=torch.float64) * 30)
w, b = torch.randn(64, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
test_eq(torch.equal(_ln(xs, w, b, 1e-5), ln_torch(xs, w, b, 1e-5)), True)

# %% [markdown]
# The step fuses each head's attention into one compiled loop per frame (`_attend`; the first block's reads its
# tables, `_attend_table`): the same operations in the same roundings as whole-tensor matrix products. Teacher forcing
# (`teacher`, `freqs`; `prefill`, which fills a frame's first positions from known tokens so that ECVQ can resume a frame
# in the middle) runs whole frames at once: every position's linear layers in one product, and each frame's causal
# attention fused per head (`_attend_frames`, keys and values transposed once per frame). On RAVDESS layer-sweep tokens
# (20,000 frames, one thread; `benchmarks/bench_teacher.py`, best of three interleaved rounds) that took 8.6 s against
# 9.2 s for the compiled steps, with the same intervals.
#
# The frequencies agree bit for bit whatever the batch size and thread count, and the fixed-point probabilities are
# close to the float model's:

# %%
cm = CodingModel(m)
def stepped(cm, tok):
    st, inp, out = cm.start(len(tok)), torch.full((len(tok),), cm.cfg.bos), []
    for p in range(tok.shape[1]): out.append(cm.step(st, inp)); inp = tok[:, p]
    return torch.stack(out, 1)
tok = torch.randint(0, 9, (64, 4))
ref = cm.freqs(tok)
test_eq(torch.cat([f for _, f in cm.teacher(tok, batch=7)]), ref)  # `freqs` gathers `teacher`'s whole-frame passes
test_eq(stepped(cm, tok), ref); test_eq(cm.freqs(tok, batch=5), ref)
test_eq(torch.cat([stepped(cm, tok[i:i + 1]) for i in range(0, 64, 7)]), ref[::7])
nt = torch.get_num_threads(); torch.set_num_threads(1)
try: test_eq(cm.freqs(tok[:5]), ref[:5]); test_eq(stepped(cm, tok[:33]), ref[:33])
finally: torch.set_num_threads(nt)
test_close(cm.bits(tok), m.bits(tok), eps=0.02)
# the first block's table holds what the block computes; without it (over QKV_TABLE_MIB), the same frequencies
test_eq(cm.qkv0.shape, (cm.cfg.n_inputs, cm.cfg.positions, 3 * cm.cfg.d_model))
x2 = cm._embed(torch.stack([tok[:, 1]] * 3, 1))[:, 2]  # token tok[:, 1] fed at position 2
test_eq(torch.equal(cm.qkv0[tok[:, 1], 2], _lin(_ln(x2, *cm.blocks[0]["ln1"]), *cm.blocks[0]["qkv"])), True)
keep, QKV_TABLE_MIB = QKV_TABLE_MIB, 0
try: plain = CodingModel(m)
finally: QKV_TABLE_MIB = keep
test_eq(plain.qkv0, None); test_eq(stepped(plain, tok), ref); test_eq(plain.freqs(tok), ref)
# a model with no per-frame caches (one block, read from its table) steps the first frames alone while the others wait for
# their first position (`prefill(at=)`): the same frequencies; a model with caches refuses both
c1 = CodingModel(EntropyModel(EntropyConfig(**{**m.cfg.to_dict(), "n_layers": 1})).eval())
test_eq((c1.cached_blocks, cm.cached_blocks, plain.cached_blocks), (0, 1, 2))
ref1, inputs = c1.freqs(tok), torch.cat([torch.full((64, 1), c1.cfg.bos), tok[:, :-1]], 1)  # the input token of every position
st = c1.prefill(c1.start(64), inputs[:, :3], at=1)  # frames 0..9 join at position 1, the others at 2
test_eq(c1.step(st, inputs[:10, 1]), ref1[:10, 1]); test_eq(c1.step(st, inputs[:, 2]), ref1[:, 2])
test_fail(lambda: cm.prefill(cm.start(64), inputs[:, :3], at=1), contains="no per-frame caches")
test_fail(lambda: cm.step(cm.start(64), inputs[:10, 0]), contains="fewer only")

# %%
# `prefill` reaches in one teacher-forced pass the state that stepping reaches, also through two blocks
torch.manual_seed(1)
m2 = EntropyModel(EntropyConfig(**{**m.cfg.to_dict(), "n_layers": 2})).eval()
for cmx in (cm, CodingModel(m2)):
    inp = torch.cat([torch.full((64, 1), cmx.cfg.bos), tok[:, :2]], 1)  # BOS and the first two tokens
    a, b = cmx.start(64), cmx.start(64)
    for p in range(3): cmx.step(a, inp[:, p])
    cmx.prefill(b, inp)
    test_eq([x is None and y is None or torch.equal(x, y) for x, y in zip(a["k"] + a["v"] + [a["tin"]], b["k"] + b["v"] + [b["tin"]])],
            [True] * (2 * len(cmx.blocks) + 1))
    test_eq(cmx.step(b, tok[:, 2]), cmx.freqs(tok)[:, 3])
    # `teacher(start=s)` resumes at position s (a layer sweep recodes only what a deeper frame changes)
    test_eq([(a, tuple(f.shape)) for a, f in cmx.teacher(tok, batch=40, start=2)], [(0, (40, 2, cmx.vocab)), (40, (24, 2, cmx.vocab))])
    test_eq(torch.cat([f for _, f in cmx.teacher(tok, batch=20, start=2)]), stepped(cmx, tok)[:, 2:])  # the steps' frequencies
test_fail(lambda: cm.prefill(a, inp), contains="fresh state")
test_fail(lambda: cm.teacher(tok, start=4), contains="0..3")


# %%
# the context model's coding twin: whole-frame passes, steps and prefill agree bit for bit on every batch size and
# thread count, given each frame's previous frame; without the (input, position) table, which the context would break
cmf = CodingModel(mf)
test_eq(cmf.qkv0, None)
tok = torch.randint(0, 9, (64, 4))
prev = previous_frames(tok, tc.bos)
def stepped_ctx(cmx, tok, prev):
    st, inp, out = cmx.start(len(tok), prev), torch.full((len(tok),), cmx.cfg.bos), []
    for p in range(tok.shape[1]): out.append(cmx.step(st, inp)); inp = tok[:, p]
    return torch.stack(out, 1)
ref = cmf.freqs(tok, prev=prev)
test_eq(stepped_ctx(cmf, tok, prev), ref); test_eq(cmf.freqs(tok, batch=5, prev=prev), ref)
test_eq(torch.cat([stepped_ctx(cmf, tok[i:i + 3], prev[i:i + 3]) for i in range(0, 63, 3)]), ref[:63])
nt = torch.get_num_threads(); torch.set_num_threads(1)
try: test_eq(stepped_ctx(cmf, tok[:9], prev[:9]), ref[:9])
finally: torch.set_num_threads(nt)
test_close(cmf.bits(tok, prev), mf.bits(tok, prev), eps=0.02)
a = cmf.prefill(cmf.start(64, prev), torch.cat([torch.full((64, 1), tc.bos), tok[:, :2]], 1))
test_eq(cmf.step(a, tok[:, 2]), ref[:, 3])
test_eq(torch.cat([f for _, f in cmf.teacher(tok, batch=20, start=2, prev=prev)]), ref[:, 2:])
test_eq(torch.equal(cmf.freqs(tok, prev=torch.full_like(tok, tc.bos)), ref), False)  # the context is used
test_fail(lambda: cm.start(3, prev[:3]), contains="no inter-frame context")
test_fail(lambda: cmf.teacher(tok, prev=prev[:5]), contains="shape (64, 4)")


# %% [markdown]
# ## Unigram priors
#
# Before any Transformer is trained, ECVQ needs some model to trade bits against distortion. `UnigramModel`
# gives each position a fixed distribution (no context); it has the same `start`/`step` interface as
# `CodingModel`, so ECVQ runs with either.

# %%
#| export
class UnigramModel:
    "Context-free per-position distributions with the `CodingModel` interface (start/step -> frequencies)."
    def __init__(self, probs):
        p = torch.as_tensor(probs, dtype=torch.float64)
        if p.ndim != 2 or p.shape[1] < 2 or not torch.isfinite(p).all() or (p <= 0).any():
            raise EibError("UnigramModel needs positive, finite probabilities of shape (positions, vocab)")
        self.positions, self.vocab = p.shape
        self.f = logits_to_freqs(_q(p.log().clamp(min=-30.0)))

    @classmethod
    def with_skip(cls, positions: int, vocab: int, p_skip: float = 0.5) -> "UnigramModel":
        "SKIP (the last symbol) with probability `p_skip`, the codes uniform."
        p = torch.full((positions, vocab), (1 - p_skip) / (vocab - 1), dtype=torch.float64); p[:, -1] = p_skip
        return cls(p)

    @classmethod
    def fit(cls, tokens, vocab: int, alpha: float = 1.0) -> "UnigramModel":
        "Per-position symbol frequencies of `tokens` (N, L), with add-`alpha` smoothing."
        t = torch.as_tensor(tokens).long()
        cnt = torch.stack([torch.bincount(t[:, p], minlength=vocab)[:vocab] for p in range(t.shape[1])]).double()
        return cls(cnt + alpha)

    def start(self, n: int) -> dict: return dict(p=0, n=n)
    def prefill(self, state: dict, tok_in) -> dict: state["p"] = int(torch.as_tensor(tok_in).shape[1]); return state

    def step(self, state: dict, tok_in) -> torch.Tensor:
        p = state["p"]
        if p >= self.positions: raise EibError(f"all {self.positions} positions of the frame were already stepped")
        state["p"] = p + 1
        return self.f[p].expand(len(tok_in), -1)


# %%
u = UnigramModel.fit(torch.tensor([[0, 2], [0, 2], [1, 2]]), vocab=3, alpha=0.5)
test_close(u.f[0].double() / 2 ** 24, torch.tensor([2.5, 1.5, 0.5]) / 4.5, eps=1e-3)
test_close(freqs_to_bits(UnigramModel.with_skip(2, 5, 0.5).step(dict(p=0), torch.zeros(1)))[0].tolist(), [3, 3, 3, 3, 1], eps=1e-3)
test_fail(lambda: UnigramModel(torch.zeros(2, 3)), contains="positive")
