# %% [markdown]
# # Entropy-constrained VQ
#
# > Entropy-constrained VQ: each token minimises distortion + λ·bits

# %%
#| default_exp ecvq

# %%
#| export
from __future__ import annotations
import copy, math, time
from dataclasses import dataclass
import numpy as np
import torch
import torch.nn.functional as F
from eib.core import EibError
from eib.entropy import EntropyConfig, EntropyModel, CodingModel, UnigramModel, freqs_to_bits, previous_frames

# %%
import operator
from fastcore.test import test, test_eq, test_fail, test_close
torch.set_num_threads(1)  # the tests' tiny models run faster on one thread on a shared machine
from eib.rvq import RVQConfig, fit_rvq, toy_frames
from eib.entropy import EntropyConfig, MODEL_SIZES


# %% [markdown]
# ## The encoder
#
# At position `(g, m)` (position `p = g * M + m`), every frame picks, among the K codes of codebook `(g, m)`
# and SKIP, the symbol minimising `||r - c_k||^2 + λ · (-log2 q(k | earlier tokens))`, where `r` is the
# group's current residual in normalised space and SKIP adds nothing (the residual stays; later layers still
# run). All frames advance together, position by position, and the entropy model costs one incremental,
# cached step per position. λ may differ per frame, so a rate controller can advance many λ searches in
# one batched pass.
#
# The probabilities are, by default (`exact=True`), the integer frequencies of the `CodingModel`, the very
# numbers the range coder uses, so the ideal bits reported here are what the coder spends (up to its
# termination and the container). `exact=False` uses the float model instead (a little faster since the exact model's steps are compiled: 3.8
# against 5.1 µs per frame and position on 2,048 RAVDESS test frames, one thread; meant for training rounds, not for streams).

# %%
#| export
@dataclass
class ECVQResult:
    "ECVQ output for N frames."
    tokens: torch.Tensor  # (N, L) int64, SKIP = K
    bits: torch.Tensor  # (N,) ideal -log2 q of the chosen tokens (of positions `start` on, when resumed)
    recon: torch.Tensor  # (N, D) reconstruction in the original feature space
    distortion: torch.Tensor  # (N,) squared error in normalised space, summed over the D dims

    @property
    def skip_rate(self) -> float:
        "Fraction of SKIP tokens."
        return float((self.tokens == self.skip_id).double().mean()) if self.tokens.numel() else 0.0

    skip_id: int = -1  # the SKIP token (set by ecvq_encode)
    start: torch.Tensor | None = None  # (N,) with `resume`: the first position each frame was coded at (earlier ones were given)


class _FloatBits:
    "Bits from the float `EntropyModel` (fast path)."
    joins = False  # every frame of a resumed batch starts at the batch's smallest first position
    def __init__(self, model): self.model = model.eval(); self.device = model.pos.weight.device
    def start(self, n, prev=None): return self.model.start(n, prev)
    def step(self, st, tok):
        return (-self.model.step(st, tok.to(self.device)).double().log_softmax(-1) / math.log(2)).cpu(), None
    def prefill(self, st, tok_in, at=None):  # teacher forcing, position by position (`at`: never, it does not join)
        for p in range(tok_in.shape[1]): self.model.step(st, tok_in[:, p].to(self.device))


class _ExactBits:
    "Bits from integer frequencies (`CodingModel`, `UnigramModel`)."
    def __init__(self, model):
        self.model = model
        self.joins = _cache_free(model)  # a resumed frame may join its batch at its own first position (`prefill(at=)`)
    def start(self, n, prev=None): return self.model.start(n) if prev is None else self.model.start(n, prev)
    def step(self, st, tok):
        f = self.model.step(st, tok)
        return freqs_to_bits(f), f
    def prefill(self, st, tok_in, at=None):
        if at is not None: self.model.prefill(st, tok_in, at=at)  # `joins` only
        elif hasattr(self.model, "prefill"): self.model.prefill(st, tok_in)  # one teacher-forced pass
        else:
            for p in range(tok_in.shape[1]): self.model.step(st, tok_in[:, p])


def _provider(rvq, model, exact: bool):
    "Wrap `model` (EntropyModel, CodingModel, UnigramModel or None = uniform) as a bits provider."
    c = rvq.cfg
    if model is None: model = UnigramModel(torch.ones(c.positions, c.vocab))
    if isinstance(model, torch.nn.Module) and hasattr(model, "cfg"):  # an EntropyModel
        mc = model.cfg
        if (mc.vocab, mc.positions, mc.groups, mc.layers) != (c.vocab, c.positions, c.groups, c.layers):
            raise EibError(f"entropy model (vocab {mc.vocab}, {mc.groups}x{mc.layers} positions) does not fit the RVQ "
                           f"(vocab {c.vocab}, {c.groups}x{c.layers}); load the checkpoint they were trained together in")
        return _ExactBits(CodingModel(model)) if exact else _FloatBits(model)
    if all(hasattr(model, a) for a in ("start", "step", "vocab", "positions")):  # a CodingModel or UnigramModel
        if (model.vocab, model.positions) != (c.vocab, c.positions):
            raise EibError(f"coding model (vocab {model.vocab}, {model.positions} positions) does not fit the RVQ "
                           f"(vocab {c.vocab}, {c.positions} positions)")
        return _ExactBits(model)
    raise EibError(f"model must be an EntropyModel, CodingModel, UnigramModel or None, got {type(model).__name__}")


def _lams(lam, n: int) -> torch.Tensor:
    "λ as a float64 tensor (n,), checked."
    l = torch.as_tensor(np.asarray(lam, dtype=np.float64) if not torch.is_tensor(lam) else lam).double().cpu()
    if l.ndim == 0: l = l.expand(n)
    if l.shape != (n,): raise EibError(f"lam must be a number or one value per frame ({n}), got shape {tuple(l.shape)}")
    if not torch.isfinite(l).all() or (l < 0).any(): raise EibError("lam must be finite and non-negative")
    return l.contiguous()


def auto_batch(model, budget_mib: float = 384.0) -> int:
    "Frames per batch whose key/value caches (float64) fit in `budget_mib`."
    c = getattr(model, "cfg", None)
    if c is None or not hasattr(c, "n_layers"): return 65536
    per = 2 * c.n_layers * c.positions * c.d_model * 8 + 16 * max(c.d_ff, 3 * c.d_model)
    return max(1, int(budget_mib * 2 ** 20 // per))

WORK_MIB = 24.0  # ecvq_encode's default batch: key/value caches that stay in a CPU's cache (attention re-reads them at every position)
WORK_MAX = 2048  # ... and for a coding model that keeps no caches: larger batches share each position's fixed cost

def _cache_free(model) -> bool:
    "Whether `model` is a `CodingModel` that keeps no per-frame caches (one block, read from its table)."
    return isinstance(model, CodingModel) and model.cached_blocks == 0

def work_batch(model) -> int:
    """`ecvq_encode`'s default frames per batch: caches of about `WORK_MIB`, at least 64 frames (within `auto_batch`'s
    budget); `WORK_MAX` for a `CodingModel` with no per-frame caches (one block, read from its table)."""
    if _cache_free(model): return WORK_MAX
    return max(min(64, auto_batch(model)), auto_batch(model, WORK_MIB))

def _resume(resume, N: int, L: int):
    "`resume` checked: (tokens (N, L) int64, first (N,) int64 in 0..L)."
    try: t, f = (torch.as_tensor(np.asarray(a)).long() for a in resume)
    except (TypeError, ValueError): raise EibError("resume must be a pair (tokens (N, L), first (N,))") from None
    if t.shape != (N, L) or f.shape != (N,) or (f < 0).any() or (f > L).any():
        raise EibError(f"resume needs tokens of shape ({N}, {L}) and first positions (N,) in 0..{L}; got {tuple(t.shape)}, {tuple(f.shape)}")
    return t, f


@torch.no_grad()
def ecvq_encode(rvq, model, x, lam, batch_size: int | None = None, exact: bool = True, on_step=None,
                progress: bool = False, resume=None, context=None) -> ECVQResult:
    """Entropy-constrained VQ of frames `x` (N, D, original space) at `lam` (a number or one per frame).
    `model`: an `EntropyModel`, a `CodingModel`, a `UnigramModel` or None (uniform). `on_step(rows, p, freqs, chosen)`
    is called at every coded position of every batch (frames `rows`, a slice), in coding order (used by the range
    coder); a hook with a true `wants_costs` attribute also gets the position's `(dist, bits)` candidate tables.
    `resume=(tokens, first)`: the caller knows that frame i's first `first[i]` tokens are `tokens[i, :first[i]]` at
    this λ; a batch then starts at its smallest `first`, the model's state before it filled in one teacher-forced
    pass (`prefill`), and `bits` count the positions from `start` on. `context` (N, L): each frame's previous frame's
    tokens, for a model with inter-frame context (None: BOS, as an utterance's first frame; `ecvq_encode_utterances`
    codes whole utterances in order)."""
    from tqdm.auto import tqdm
    c = rvq.cfg
    z = rvq.normalise(x)
    N, G, M, K, d = len(z), c.groups, c.layers, c.codes, c.group_dim
    lam = _lams(lam, N)
    prov = _provider(rvq, model, exact)
    bs = int(batch_size or work_batch(getattr(prov, "model", model)))  # the model that codes (a CodingModel when exact)
    if bs < 1: raise EibError(f"batch_size must be positive, got {batch_size}")
    cb = rvq.codebooks.detach().float().cpu()  # (G, M, K, d)
    cbz = torch.cat([cb, cb.new_zeros(G, M, 1, d)], 2)  # SKIP adds zero
    cb2 = (cb * cb).sum(-1)  # (G, M, K)
    cbm2 = (-2.0 * cb).transpose(-1, -2).contiguous()  # (G, M, d, K): rg @ cbm2 = -2·(rg·c) exactly (a power of two)
    tokens = torch.empty(N, c.positions, dtype=torch.long)
    bits = torch.zeros(N, dtype=torch.float64)
    start = None if resume is None else torch.zeros(N, dtype=torch.long)
    if resume is not None: known, first = _resume(resume, N, c.positions)
    if context is not None:
        context = torch.as_tensor(np.asarray(context)).long()
        if context.shape != (N, c.positions): raise EibError(f"context must be previous-frame tokens ({N}, {c.positions}), got {tuple(context.shape)}")
    costs = bool(getattr(on_step, "wants_costs", False))
    for s in tqdm(range(0, N, bs), desc="ecvq", disable=not progress):
        r = z[s:s + bs].reshape(-1, G, d).clone()
        n, lb, rows = len(r), lam[s:s + bs, None], slice(s, s + bs)
        st, inp = prov.start(n, None if context is None else context[rows]), torch.full((n,), c.bos, dtype=torch.long)
        fr = None if resume is None else first[rows]
        # where the model keeps no per-frame caches and the batch's frames come in order of their first positions, each
        # frame joins at its own (`own`); else all at the batch's smallest
        own = fr is not None and prov.joins and bool((fr[1:] >= fr[:-1]).all())
        p0 = 0 if fr is None else int(fr.min())
        jn = None if fr is None else fr if own else torch.full_like(fr, p0)  # the position each frame joins at
        p1 = 0 if fr is None else int(jn.max())  # positions given for some frame of the batch
        if p1:  # the known first positions: tokens, residuals and the model's state, without a search
            tokens[rows, :p1] = kn = known[rows, :p1]
            kk = torch.where(torch.arange(p1) < jn[:, None], kn, K)  # each frame's own given tokens (SKIP adds zero)
            for p in range(p1): r[:, p // M] -= cbz[p // M, p % M][kk[:, p]]
            tin = torch.cat([inp[:, None], kn], 1)  # the input token of every position 0..p1 (BOS first)
            prov.prefill(st, tin[:, :p1], at=p0 if own else None)
            inp = tin[torch.arange(n), jn]  # each frame's input at the position it joins
        if start is not None: start[rows] = jn
        ar = torch.arange(n)
        dist = torch.empty(n, K + 1, dtype=torch.float64)  # reused at every position: hooks must not keep it
        na = n
        for p in range(p0, c.positions):
            if own: na = int((fr <= p).sum())  # the frames whose first position has come (a prefix: they are in order)
            g, m = divmod(p, M)
            b, f = prov.step(st, inp[:na])
            rg = r[:na, g]
            r2 = (rg * rg).sum(-1, keepdim=True)
            dist[:na, :K] = (rg @ cbm2[g, m]).add_(r2).add_(cb2[g, m])  # |r|² - 2 r·c + |c|² in float32, then float64
            dist[:na, K] = r2[:, 0]  # SKIP leaves the residual as it is
            k = (dist[:na] + lb[:na] * b).argmin(-1)
            r[:na, g] -= cbz[g, m][k]
            tokens[s:s + na, p] = k
            bits[s:s + na] += b[ar[:na], k]
            if costs: on_step(slice(s, s + na), p, f, k, dist[:na], b)
            elif on_step is not None: on_step(slice(s, s + na), p, f, k)
            inp[:na] = k
    zr = rvq.decode_normalised(tokens)
    res = ECVQResult(tokens, bits, rvq.denormalise(zr), ((z - zr) ** 2).sum(1))
    res.skip_id, res.start = c.skip, start
    return res


# %%
# a coding model whose one block reads its table keeps no per-frame caches: it codes `WORK_MAX` frames at a time (the
# same frequencies at any batch); the float model, and a coding model with a second block, keep caches of about `WORK_MIB`
wc = EntropyConfig(vocab=9, positions=4, groups=2, layers=2, d_model=16, n_layers=1, n_heads=2, d_ff=32)
m1, m2 = EntropyModel(wc), EntropyModel(EntropyConfig(**{**wc.to_dict(), "n_layers": 2}))
test_eq((CodingModel(m1).cached_blocks, CodingModel(m2).cached_blocks), (0, 1))
test_eq((work_batch(CodingModel(m1)), work_batch(m1), work_batch(CodingModel(m2))), (WORK_MAX, auto_batch(m1, WORK_MIB), auto_batch(m2, WORK_MIB)))


# %% [markdown]
# ## Whole utterances, in order
#
# With inter-frame context (`EntropyConfig.context` "frame") a frame's probabilities depend on the tokens ECVQ chose for
# the frame before it, so the frames of one utterance are coded in order, each with its previous frame's chosen tokens:
# exactly what the decoder will have. Utterances are independent, so `ecvq_encode_utterances` batches the frames at one
# index of all utterances (the batch is the number of utterances still running at that index). Without context it is one
# `ecvq_encode` over all frames.

# %%
#| export
def has_context(model) -> bool:
    "Whether `model` (an `EntropyModel`, `CodingModel` or any other) conditions on the previous frame."
    return getattr(getattr(model, "cfg", None), "context", "none") != "none"

class _Rows:
    "An `on_step` hook seen through a map from a batch's rows to frame indices (`wants_costs` passed on)."
    def __init__(self, hook, index): self.hook, self.index = hook, index
    @property
    def wants_costs(self): return bool(getattr(self.hook, "wants_costs", False))
    def __call__(self, rows, p, *a): self.hook(self.index[rows], p, *a)

@torch.no_grad()
def ecvq_encode_utterances(rvq, model, utts, lam, exact: bool = True, on_step=None) -> list[ECVQResult]:
    """ECVQ of whole utterances `utts` (a list of (T, D) frame arrays) at `lam` (a number or one per utterance): one
    `ECVQResult` per utterance. A context model codes each utterance's frames in order, each given the tokens chosen for
    the frame before (BOS for the first), the frames at one index of all utterances in one batch. `on_step` (as in
    `ecvq_encode`) gets the frames' indices in the utterances concatenated."""
    xs = [np.asarray(u, np.float32) for u in utts]
    lens = np.array([len(u) for u in xs], dtype=np.int64)
    lam = _lams(lam, len(xs)).numpy()
    if not len(xs): return []
    cut = np.concatenate([[0], np.cumsum(lens)])
    if not has_context(model):
        r = ecvq_encode(rvq, model, np.concatenate(xs), np.repeat(lam, lens), exact=exact, on_step=on_step)
        return [ECVQResult(r.tokens[a:b], r.bits[a:b], r.recon[a:b], r.distortion[a:b], skip_id=r.skip_id) for a, b in zip(cut[:-1], cut[1:])]
    if exact and isinstance(model, EntropyModel): model = CodingModel(model)  # built once, not once per frame index
    c = rvq.cfg
    order = np.argsort(-lens, kind="stable")
    tok = [torch.empty(n, c.positions, dtype=torch.long) for n in lens]
    bits = [torch.zeros(n, dtype=torch.float64) for n in lens]
    recon = [torch.empty(n, c.dim) for n in lens]
    dist = [torch.empty(n) for n in lens]
    prev = torch.full((len(xs), c.positions), c.bos, dtype=torch.long)
    for t in range(int(lens.max())):
        rows = order[:int((lens > t).sum())]
        hook = None if on_step is None else _Rows(on_step, torch.as_tensor(cut[rows] + t))
        r = ecvq_encode(rvq, model, np.stack([xs[i][t] for i in rows]), lam[rows], batch_size=len(rows), exact=exact,
                        on_step=hook, context=prev[rows])
        prev[rows] = r.tokens
        for j, i in enumerate(rows): tok[i][t], bits[i][t], recon[i][t], dist[i][t] = r.tokens[j], r.bits[j], r.recon[j], r.distortion[j]
    return [ECVQResult(*a, skip_id=c.skip) for a in zip(tok, bits, recon, dist)]


# %%
# closed loop: every frame's tokens are what ECVQ picks for it given the tokens picked for the frame before it
from eib.entropy import previous_frames
urvq = fit_rvq(toy_frames(600), RVQConfig(16, 2, 2, 8), iters=3, progress=False)
torch.manual_seed(0)
cmod = EntropyModel(EntropyConfig.for_rvq(urvq.cfg, "cpu", d_model=32, n_heads=4, d_ff=64, context="frame")).eval()
for w in cmod.parameters(): w.data.normal_(0, 0.3)
utts = [toy_frames(n, seed=10 + n) for n in (7, 3, 5)]
ul = [0.05, 0.3, 1.0]
for exact in (True, False):
    res = ecvq_encode_utterances(urvq, cmod, utts, ul, exact=exact)
    test_eq([len(r.tokens) for r in res], [7, 3, 5])
    for u, r, l in zip(utts, res, ul):
        alone = ecvq_encode(urvq, cmod, u, l, exact=exact, context=previous_frames(r.tokens, urvq.cfg.bos), batch_size=1)
        test_eq(torch.equal(alone.tokens, r.tokens), True); test_close(alone.bits, r.bits, eps=1e-9 if exact else 1e-4)  # the float model's sums depend on the batch
cm_ = CodingModel(cmod)
test_eq([torch.equal(a.tokens, b.tokens) for a, b in zip(ecvq_encode_utterances(urvq, cm_, utts, ul), ecvq_encode_utterances(urvq, cmod, utts, ul))],
        [True] * 3)  # exact: the coding model, given or built from the float model
# the context is used: every frame coded as a first frame (BOS) costs other bits than after its predecessor
solo = ecvq_encode(urvq, cmod, utts[0], 1.0, context=torch.full((7, urvq.cfg.positions), urvq.cfg.bos))
test(float((solo.bits - ecvq_encode_utterances(urvq, cmod, [utts[0]], 1.0)[0].bits)[1:].abs().min()), 0.0, operator.gt, ">")
# without context: one batched pass over all frames, the same as `ecvq_encode`
imod = EntropyModel(EntropyConfig.for_rvq(urvq.cfg, "cpu", d_model=32, n_heads=4, d_ff=64)).eval()
test_eq(torch.equal(torch.cat([r.tokens for r in ecvq_encode_utterances(urvq, imod, utts, 0.3)]),
                    ecvq_encode(urvq, imod, np.concatenate(utts), 0.3).tokens), True)
test_eq((has_context(cmod), has_context(cm_), has_context(imod), has_context(None)), (True, True, False, False))
test_fail(lambda: ecvq_encode(urvq, imod, utts[0], 0.3, context=torch.zeros(7, 4, dtype=torch.long)), contains="no inter-frame context")
test_fail(lambda: ecvq_encode(urvq, cmod, utts[0], 0.3, context=torch.zeros(6, 4, dtype=torch.long)), contains="(7, 4)")

# %% [markdown]
# ## Training
#
# The entropy model is trained on the tokens made by the same ECVQ it will serve, and that depends on the
# model: round 0 encodes with a unigram prior (SKIP at 1 bit, codes uniform, then refitted once to the
# tokens it made), trains; each further round re-encodes the training and validation frames with the model
# just trained and trains again (warm start). Each frame gets one λ drawn from the grid, so one batched
# ECVQ pass covers the whole grid (per-row λ). Early stopping on the validation split's bits per token
# keeps the best weights; SKIP is not down-weighted.
#
# **The λ grid.** λ is in units of normalised squared error (summed over the D dims) per bit. A token is
# worth coding when the distortion it removes exceeds λ times its extra bits over SKIP. `lambda_grid`
# measures the distortion scale of the data: `s` = median, over frames and positions, of the squared-error
# reduction that plain RVQ's nearest code brings, divided by `log2 K` (the cost of a code under a uniform
# model). The grid is `s * logspace(-2, 1.5, n)`: at the low end nearly every token beats SKIP, at the
# high end only the largest reductions do (see the measurement below).

# %%
#| export
LAMBDA_SPAN = (-2.0, 1.5)  # log10 of the grid's ends, relative to the distortion scale

@torch.no_grad()
def distortion_scale(rvq, frames, max_frames: int = 4096, seed: int = 0) -> float:
    "Median squared-error reduction per position of plain RVQ, per bit of a uniform code (normalised units)."
    x = torch.as_tensor(np.asarray(frames, dtype=np.float32))
    if len(x) > max_frames: x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_frames]]
    c = rvq.cfg
    z = rvq.normalise(x)
    err = [((z - rvq.decode_normalised(rvq.encode_nearest(x, l))) ** 2).view(-1, c.groups, c.group_dim).sum(-1) for l in range(c.layers + 1)]
    gain = torch.stack([err[l] - err[l + 1] for l in range(c.layers)], -1).flatten()
    return float(gain.median()) / math.log2(c.codes)

def lambda_grid(rvq, frames, n: int = 9, span: tuple = LAMBDA_SPAN) -> np.ndarray:
    "`n` log-spaced λ values from almost no SKIP to mostly SKIP for these frames."
    return distortion_scale(rvq, frames) * np.logspace(span[0], span[1], n)


# %%
#| export
def token_pairs(tokens) -> tuple:
    "Training tokens as `(tokens (N, L), previous-frame tokens (N, L) or None)`: a tensor alone has no previous frames."
    return tuple(tokens) if isinstance(tokens, (tuple, list)) else (tokens, None)

def _token_bits(model, tokens, batch: int = 1024) -> float:
    "Mean ideal bits per token of the float model on `tokens` (a tensor, or `(tokens, previous frames)`; eval mode, no grad)."
    t, pv = token_pairs(tokens)
    was = model.training; model.eval()
    with torch.no_grad():
        s = sum(float(model.bits(t[i:i + batch], None if pv is None else pv[i:i + batch]).sum()) for i in range(0, len(t), batch))
    model.train(was)
    return s / max(1, t.numel())

def fit_entropy_model(model, tr, va, epochs: int = 30, max_steps: int | None = None, batch_size: int = 256,
                      lr: float = 1e-3, patience: int = 3, generator=None, device: str = "cpu", bar=None, round_index: int = 0):
    """Train `model` on tokens `tr` (N, L), early-stopping on the validation tokens `va`; returns the best model and
    its per-epoch history (`round_index` labels the rows; `bar`: a tqdm bar advanced once per epoch). For a model with
    inter-frame context, `tr` and `va` are `(tokens, previous-frame tokens)` pairs (`token_pairs`)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    rnd = round_index
    tr_tok, tr_prev = token_pairs(tr)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    best, best_sd, bad, step, hist = _token_bits(model, va), copy.deepcopy(model.state_dict()), 0, 0, []
    hist.append(dict(round=rnd, epoch=0, steps=0, train_bits=float("nan"), val_bits=best, seconds=0.0))
    t0 = time.time()
    for ep in range(1, epochs + 1):
        model.train(); tot, cnt = 0.0, 0
        for idx in torch.randperm(len(tr_tok), generator=gen).split(batch_size):
            if max_steps is not None and step >= max_steps: break
            t, p = tr_tok[idx].to(device), None if tr_prev is None else tr_prev[idx].to(device)
            for gp in opt.param_groups: gp["lr"] = lr * min(1.0, (step + 1) / 100)
            loss = F.cross_entropy(model(t, p).flatten(0, 1), t.flatten())
            opt.zero_grad(set_to_none=True); loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
            tot += loss.item() * t.numel(); cnt += t.numel(); step += 1
        vb = _token_bits(model, va)
        hist.append(dict(round=rnd, epoch=ep, steps=step, train_bits=tot / max(cnt, 1) / math.log(2), val_bits=vb,
                         seconds=round(time.time() - t0, 2)))
        if bar is not None: bar.update(1); bar.set_postfix(round=rnd, val_bits=f"{vb:.3f}")
        if vb < best - 1e-4: best, best_sd, bad = vb, copy.deepcopy(model.state_dict()), 0
        else: bad += 1
        if bad >= patience or (max_steps is not None and step >= max_steps): break
    model.load_state_dict(best_sd)
    return model.eval(), hist


def train_entropy_model(rvq, train_frames, val_frames, preset: str = "cpu", lams=None, rounds: int = 2,
                        epochs: int = 30, max_steps: int | None = None, batch_size: int = 256, lr: float | None = None,
                        patience: int = 3, seed: int = 0, device: str = "cpu", exact: bool = False,
                        config: dict | None = None, progress: bool = True):
    """Train an `EntropyModel` for `rvq` on ECVQ tokens of `train_frames` at the λ grid `lams` (default `lambda_grid`),
    re-encoding `rounds - 1` times with the model just trained; `val_frames` drive early stopping. The frames are either
    (N, D) arrays, each frame coded at a λ drawn from the grid, or lists of whole utterances ((T, D) arrays), each coded at
    one λ of the grid, its frames in order (`ecvq_encode_utterances`): what a model with inter-frame context
    (`config=dict(context="frame")`) needs. `exact`: re-encode with the `CodingModel` (slower) instead of the float model.
    Returns `(model, history)`; history has one row per round and epoch (epoch 0 = before training)."""
    from tqdm.auto import tqdm
    if rounds < 1: raise EibError(f"rounds must be at least 1, got {rounds}")
    whole = isinstance(train_frames, (list, tuple))
    if whole != isinstance(val_frames, (list, tuple)):
        raise EibError("train_frames and val_frames must both be (N, D) frame arrays or both lists of utterances")
    if whole:
        ut, uv = ([u for u in (np.asarray(u, dtype=np.float32) for u in us) if u.ndim == 2 and len(u)] for us in (train_frames, val_frames))
        if not ut or not uv: raise EibError("train_entropy_model needs at least one training and one validation utterance with frames")
        xt, xv = np.concatenate(ut), np.concatenate(uv)
    else: (xt, xv), ut, uv = (np.asarray(a, dtype=np.float32) for a in (train_frames, val_frames)), None, None
    if len(xt) < 1 or len(xv) < 1: raise EibError("train_entropy_model needs at least one training and one validation frame")
    lams = np.asarray(lambda_grid(rvq, xt) if lams is None else lams, dtype=np.float64)
    if lams.ndim != 1 or len(lams) < 1 or not np.isfinite(lams).all() or (lams < 0).any():
        raise EibError("lams must be a non-empty 1-d list of finite, non-negative λ values")
    c = rvq.cfg
    cfg = EntropyConfig.for_rvq(c, preset, **(config or {}))
    if cfg.context != "none" and not whole:
        raise EibError(f"a model with inter-frame context ({cfg.context!r}) learns from each frame's predecessor: pass whole "
                       f"utterances (lists of (T, D) arrays), not frames drawn apart from them")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    grid = torch.as_tensor(lams)
    if whole:  # one λ per utterance, and that λ for each of its frames
        lu, lvu = grid[torch.randint(len(lams), (len(ut),), generator=gen)], grid[torch.arange(len(uv)) % len(lams)]
        lt, lv = (torch.repeat_interleave(l, torch.tensor([len(u) for u in us])) for l, us in ((lu, ut), (lvu, uv)))
    else:
        lt = grid[torch.randint(len(lams), (len(xt),), generator=gen)]
        lv = grid[torch.arange(len(xv)) % len(lams)]
        lu = lvu = None
    lr = lr or (1e-3 if cfg.d_model <= 128 else 5e-4)
    prior = UnigramModel.with_skip(c.positions, c.vocab)
    sub = slice(None, None, max(1, len(xt) // 20000))  # per-position symbol counts: 20 000 frames are plenty
    prior = UnigramModel.fit(ecvq_encode(rvq, prior, xt[sub], lt[sub]).tokens, c.vocab)
    def enc(mdl, x, l, us, ul):
        if not whole: return ecvq_encode(rvq, mdl, x, l, exact=exact).tokens
        res = ecvq_encode_utterances(rvq, mdl, us, ul, exact=exact)
        tok = torch.cat([r.tokens for r in res])
        return tok if cfg.context == "none" else (tok, torch.cat([previous_frames(r.tokens, c.bos) for r in res]))
    model = EntropyModel(cfg).to(device)
    history = []
    bar = tqdm(total=rounds * epochs, desc="train entropy model", disable=not progress)
    for r in range(rounds):
        t0 = time.time()
        src = prior if r == 0 else model.cpu()
        tr, va = enc(src, xt, lt, ut, lu), enc(src, xv, lv, uv, lvu)
        t_enc = round(time.time() - t0, 2)
        model.to(device)
        model, h = fit_entropy_model(model, tr, va, epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr,
                                     patience=patience, generator=gen, device=device, bar=bar, round_index=r)
        skip = float((token_pairs(va)[0] == c.skip).double().mean())
        for row in h: row.update(val_skip=skip, lams=len(lams), encode_s=t_enc)
        history += h
        if progress: bar.write(f"round {r + 1} of {rounds}: ECVQ tokens of {len(xt) + len(xv)} frames {t_enc:.0f} s, "
                               f"{h[-1]['steps']} steps {h[-1]['seconds']:.0f} s, best validation {min(x['val_bits'] for x in h):.4f} bits/token")
    bar.close()
    return model.cpu().eval(), history



# %% [markdown]
# A tiny end-to-end run: the validation bits per token fall below the unigram-prior tokens' level and the
# second round (tokens re-encoded with the trained model) is recorded.

# %%
trn, val = toy_frames(1500), toy_frames(300, seed=1)
rvq = fit_rvq(trn, RVQConfig(16, 2, 2, 8), iters=5, progress=False)
lams = lambda_grid(rvq, trn, n=5)
model, hist = train_entropy_model(rvq, trn, val, lams=lams, rounds=2, epochs=4, config=dict(d_model=32, n_heads=4, d_ff=64), progress=False)
test_eq(sorted({h["round"] for h in hist}), [0, 1])
test_fail(lambda: train_entropy_model(rvq, trn, val, lams=lams, config=dict(context="frame"), progress=False), contains="pass whole utterances")
r0 = [h for h in hist if h["round"] == 0]
test(min(h["val_bits"] for h in r0[1:]), r0[0]["val_bits"], operator.lt, "<")  # training lowers validation bits
test_eq((type(model).__name__, model.training), ("EntropyModel", False))


# %% [markdown]
# With inter-frame context the model trains on whole utterances: each coded at one λ of the grid, its frames in order, every
# frame's token paired with its predecessor's. On utterances whose frames change slowly (segments of one repeated frame, a
# little noise) the context model learns what the previous frame says: trained alike on the same utterances and codebooks,
# it needs fewer validation bits per token than the intra-frame model.

# %%
def slow_utterances(n: int, seed: int) -> list:
    "Utterances of 4 to 8 segments, each one frame of `toy_frames` repeated 3 to 9 times with a little noise."
    g, out = np.random.default_rng(seed), []
    for i in range(n):
        seg = toy_frames(int(g.integers(4, 9)), seed=seed * 1000 + i)
        u = np.repeat(seg, g.integers(3, 10, len(seg)), axis=0)
        out.append((u + 0.05 * g.normal(size=u.shape)).astype(np.float32))
    return out
utr, uva = slow_utterances(60, 0), slow_utterances(12, 1)
small = dict(d_model=32, n_heads=4, d_ff=64)
urvq2 = fit_rvq(np.concatenate(utr), RVQConfig(16, 2, 2, 8), iters=5, progress=False)
ulams = lambda_grid(urvq2, np.concatenate(utr), n=5)
best = {}
for ctx in ("none", "frame"):
    m, h = train_entropy_model(urvq2, utr, uva, lams=ulams, rounds=2, epochs=6, config=small | dict(context=ctx), progress=False)
    test_eq((m.cfg.context, sorted({r["round"] for r in h})), (ctx, [0, 1]))
    best[ctx] = min(r["val_bits"] for r in h if r["round"] == 1)
test(best["frame"], 0.8 * best["none"], operator.lt, "<")  # the previous frame says much: at least 20% fewer bits per token
test_fail(lambda: train_entropy_model(urvq2, utr, np.concatenate(uva), lams=ulams, progress=False), contains="both")

# %% [markdown]
# ## Choosing the cpu preset
#
# The cell below (slow; `nbdev_test --flags slow`) trains a few sizes for the same number of steps on real
# features (the ComParE store of RAVDESS when `data_subset/ravdess` exists, else synthetic frames) and
# measures ECVQ throughput on this 2-core machine, with the exact coding model (what streams use) and the
# float model. Measured on 2026-11-25 (ComParE 130 dims: 10 groups x 3 layers x 128 codes, 6000 training
# frames, 150 steps of 128 frames, the machine shared with other jobs, so throughputs are noisy):
#
# | size | params | val bits/token (150 steps) | ECVQ exact frames/s | ECVQ float frames/s |
# |---|---|---|---|---|
# | d64, 2 layers, FFN 128 | 87 k | 3.882 | 90.7 | 262.0 |
# | **d128, 2 layers, FFN 256 (`cpu`)** | 304 k | **3.652** | 17.2 | 22.3 |
# | d128, 4 layers, FFN 512 | 832 k | 3.682 | 5.0 | 49.3 |
# | d256, 6 layers, FFN 1024 (`paper`, untrained) | 4.8 M | not trained (too slow here) | 4.7 | 16.9 |
#
# (load average 5.7-6.3 on 2 cores during the run, so the throughputs are only rough: the float column is not
# even monotone in size.) At equal training steps the d128/2-layer model codes 0.23 bits per token
# (about 7 bits per frame at 30 tokens) less than d64 and no worse than the 4-layer one, at a fraction of the
# paper preset's cost: that is the `cpu` preset.

# %% tags=["parameters"]
preset_store = "data_subset/ravdess"  # a feature store; synthetic frames if it does not exist
preset_steps = 150

# %%
#| slow
from pathlib import Path
from eib.core import repo_root
import pandas as pd
sp = repo_root() / preset_store
if (sp / "meta.json").exists():
    from eib.features import load_store
    st_ = load_store(sp); ids = list(np.random.default_rng(0).permutation(st_.ids("train")))
    trn8 = np.concatenate([st_.frames(u) for u in ids[:40]])[:6000]; val8 = np.concatenate([st_.frames(u) for u in ids[40:52]])[:1500]
else:
    g8 = torch.Generator().manual_seed(0); b8 = torch.randn(48, 768, generator=g8)
    trn8, val8 = [(torch.randn(n, 48, generator=g8) @ b8 + 0.5 * torch.randn(n, 768, generator=g8)).numpy() for n in (6000, 1500)]
rvq8 = fit_rvq(trn8, RVQConfig.for_dim(trn8.shape[1], layers=3), iters=8, progress=False)
grid8 = lambda_grid(rvq8, trn8)
rows = []
for name, cfg in {"d64 L2 ffn128": dict(d_model=64, n_layers=2, n_heads=4, d_ff=128), "d128 L2 ffn256": MODEL_SIZES["cpu"],
                  "d128 L4 ffn512": dict(d_model=128, n_layers=4, n_heads=4, d_ff=512)}.items():
    mdl, h = train_entropy_model(rvq8, trn8, val8, lams=grid8, rounds=1, epochs=50, max_steps=preset_steps, batch_size=128, config=cfg, progress=False)
    x = val8[:384]; t0 = time.perf_counter(); ecvq_encode(rvq8, mdl, x, float(grid8[4])); dt = time.perf_counter() - t0
    rows.append(dict(size=name, params=sum(p.numel() for p in mdl.parameters()), ecvq_exact_fps=round(len(x) / dt, 1),
                     val_bits_per_token=round(min(r["val_bits"] for r in h), 4)))
pd.DataFrame(rows)

# %% [markdown]
# **Does `lambda_grid` span the range?** Measured on the ComParE store of RAVDESS (130 dims, 10 groups x 3 layers
# x 128 codes, RVQ fitted on 6000 training frames, 500 validation frames, ECVQ under the round-0 prior with SKIP
# at 1 bit): the grid runs from λ = 3e-4 to 0.80; the SKIP rate is 11.5 % at its low end,
# 41 % in the middle and 90 % at its high end, at 216, 154 and
# 51 ideal bits per frame. The toy codec below shows the same shape.
#
# A tiny codec to test with (D=16, 2 groups x 2 layers of 8 codes, an untrained small model):

# %%
trn = toy_frames(2000)
rvq = fit_rvq(trn, RVQConfig(16, 2, 2, 8), iters=5, progress=False)
torch.manual_seed(0)
model = train_entropy_model(rvq, trn[:1500], trn[1500:], rounds=1, epochs=5, config=dict(d_model=32, n_heads=4, d_ff=64), progress=False)[0]
x = toy_frames(300, seed=5)
grid = lambda_grid(rvq, trn, n=9)
res = [ecvq_encode(rvq, model, x, l) for l in grid]
skips = [r.skip_rate for r in res]; bpf = [float(r.bits.mean()) for r in res]; dist = [float(r.distortion.mean()) for r in res]
print("λ    ", np.round(grid, 4)); print("skip ", np.round(skips, 3)); print("bits ", np.round(bpf, 2)); print("dist ", np.round(dist, 3))

# %%
floor = ecvq_encode(rvq, None, x, 0.0).skip_rate  # λ = 0: SKIP only where no code lowers the distortion
assert floor < 0.15 and skips[0] - floor < 0.02, (floor, skips[0])  # tiny λ: almost no SKIP beyond that floor
test(skips[-1], 0.8, operator.gt, ">")  # huge λ: mostly SKIP
assert np.mean(np.diff(bpf)) < 0 and bpf[0] > bpf[-1], bpf  # bits fall as λ rises (on average)
assert np.mean(np.diff(dist)) > 0 and dist[-1] > dist[0], dist  # distortion rises
r = res[4]
test_eq(r.tokens.shape, (300, 4)); test_eq(r.recon.shape, (300, 16))
test_close(r.distortion, ((rvq.normalise(x) - rvq.normalise(r.recon)) ** 2).sum(1), eps=1e-3)
test_close(r.bits, CodingModel(model).bits(r.tokens).sum(1), eps=1e-6)  # ideal bits = exact code length of the tokens

# %% [markdown]
# Per-row λ gives the same tokens as one λ at a time; batching does not change the tokens; the float path
# agrees closely with the exact one; a uniform model (no entropy model) never prefers SKIP much; bad input fails clearly.

# %%
lam = torch.as_tensor(grid)[torch.arange(300) % 9]
mixed = ecvq_encode(rvq, model, x, lam)
test_eq(mixed.tokens[::9], res[0].tokens[::9]); test_eq(mixed.tokens[4::9], res[4].tokens[4::9])
test_eq(ecvq_encode(rvq, model, x, lam, batch_size=7).tokens, mixed.tokens)
fl = ecvq_encode(rvq, model, x, lam, exact=False)
test(float((fl.tokens == mixed.tokens).double().mean()), 0.97, operator.gt, ">")
test_close(fl.bits.mean(), mixed.bits.mean(), eps=0.05 * float(mixed.bits.mean()))
test_close(ecvq_encode(rvq, None, x, 0.0).bits, torch.full((300,), 4 * (24 - math.log2((2 ** 24 - 9) // 9 + 1))), eps=1e-3)
test_fail(lambda: ecvq_encode(rvq, model, x, -1.0), contains="non-negative")
test_fail(lambda: ecvq_encode(rvq, model, x, torch.ones(5)), contains="one value per frame")
test_fail(lambda: ecvq_encode(rvq, model, x[:, :8], 1.0), contains="(N, 16)")
xn = x.copy(); xn[3, 2] = np.nan
test_fail(lambda: ecvq_encode(rvq, model, xn, 1.0), contains="NaN")
wrong = EntropyModel(EntropyConfig(vocab=9, positions=6, groups=3, layers=2, d_model=16, n_layers=1, n_heads=2, d_ff=16))
test_fail(lambda: ecvq_encode(rvq, wrong, x, 1.0), contains="does not fit")

# %%
# resuming from known first tokens (here: those of the same λ) gives the same tokens; bits count the coded positions
first = torch.arange(300) * 5 // 300  # 0..4 of the 4 positions (4: nothing left to code)
rs = ecvq_encode(rvq, model, x, lam, batch_size=16, resume=(mixed.tokens, first))
test_eq(rs.tokens, mixed.tokens)
test_eq(bool((rs.start <= first).all()), True); test_eq(int(rs.start.max()), 4)
pb = CodingModel(model).bits(mixed.tokens)  # exact bits of every position
test_close(rs.bits, (pb * (torch.arange(4) >= rs.start[:, None])).sum(1), eps=1e-9)
test_eq(ecvq_encode(rvq, model, x, lam, exact=False, batch_size=16, resume=(fl.tokens, first)).tokens, fl.tokens)
test_fail(lambda: ecvq_encode(rvq, model, x, lam, resume=(mixed.tokens, first + 1)), contains="first positions")
# this coding model keeps no per-frame caches: a frame joins its batch at its own first position where the batch's frames come
# in order of it (the rate engine sorts them so), else the batch starts at its smallest; the same tokens and bits either way
test_eq(CodingModel(model).cached_blocks, 0); test_eq(rs.start, first)
shuf = first[torch.randperm(300, generator=torch.Generator().manual_seed(0))]
rs2 = ecvq_encode(rvq, model, x, lam, batch_size=16, resume=(mixed.tokens, shuf))
test_eq(rs2.tokens, mixed.tokens); test_eq((bool((rs2.start <= shuf).all()), bool((rs2.start < shuf).any())), (True, True))
test_close(rs2.bits, (pb * (torch.arange(4) >= rs2.start[:, None])).sum(1), eps=1e-9)
