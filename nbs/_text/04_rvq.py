# %% [markdown]
# # Grouped residual VQ
#
# > Grouped residual VQ with a SKIP token: normalisation, codebooks, nearest-code encoding, decoding.

# %%
#| default_exp rvq

# %%
#| export
from __future__ import annotations
import math
from dataclasses import dataclass, asdict
import numpy as np
import pandas as pd
import torch
from eib.core import EibError

# %%
import operator
from fastcore.test import test, test_eq, test_ne, test_fail, test_close


# %% [markdown]
# ## Configuration
#
# A frame of `dim` features is cut into `groups` consecutive slices of `group_dim = dim // groups` dimensions.
# Each slice is quantised by `layers` residual codebooks of `codes` vectors. A frame becomes
# `positions = groups * layers` tokens in group-major order, position `p = g * layers + m`. Token `codes`
# is SKIP (the layer adds nothing); token `codes + 1` is BOS, an input of the entropy model only, never
# a coded symbol, so the coded alphabet (`vocab`) has `codes + 1` symbols.
#
# **How deep.** Plain RVQ needs depth to come near the unquantised features. On RAVDESS's Whisper-base layer-3
# frames (512 dims, 8 groups of 64; codebooks fitted on 60 000 training frames), plain RVQ with 128 codes per layer
# leaves a normalised MSE of 0.30 after 3 layers per group (168 bits a frame), 0.17 after 8 (448 bits) and 0.14 after
# 10 (560 bits), and the fixed linear probe's weighted F1 on the test split climbs from 0.59 to 0.70 and 0.71
# (unquantised: 0.74, 95% interval 0.69 to 0.79; `benchmarks/whisper_layer.py` and the sweep protocol). Only the
# deepest of these lies inside the interval, and a curve that is to say where loss begins must start where nothing
# is lost. So `for_dim` gives one layer per 6 dimensions of a group, at least 10: 64-dim groups get 10 layers
# (512 dims: 80 tokens a frame), and the 13-dim groups of ComParE get 10 too (130 dims: 100 tokens a frame).
#
# Why at least 10. On RAVDESS's ComParE frames (130 dims, 10 groups of 13), plain RVQ leaves a normalised MSE of
# 0.074 after 3 layers per group (the depth this rule gave until 2026-12-04), 0.022 after 6, 0.011 after 8 and 0.0066
# after 10. The fixed probe's weighted F1 on the test split is 0.40 to 0.43 after 3 layers, 0.49 to 0.50 after 6 and
# 0.50 to 0.54 after 8, over two codebook fits, and 0.53 after 10 (unquantised: 0.556, 95% interval 0.50 to 0.61).
# Eight layers put the probe at the interval's edge, within the spread between two fits of the codebooks: the rate
# sweep with a 10 × 8 codec ended at 0.484 at its top (299 BPF, normalised MSE 0.0113), just outside. Ten layers leave
# room: the 10 × 10 sweep (2026-12-06) ends at 445 BPF with the fixed probe at 0.552, inside the interval at
# every measured point from 110 BPF up (`evaluation_results/rate_sweep_RAVDESS.json`); on EmoDB's ComParE frames the
# 10 × 10 sweep (2026-12-07) ends at 530 BPF with 0.736, inside the interval (0.647 to 0.836) from 110 BPF up. These numbers use
# the probe of chapter 13, whose scale floor they need. They come from codebooks fitted on 60 000 training frames with
# 12 Lloyd iterations, and nearest-code encoding of the 360-utterance test subset
# (`benchmarks/probe_floor.py --features data_subset/ravdess --layers 16`, and a second fit of 8 layers).

# %%
#| export
def _group_dim_for(dim: int) -> int:
    "Group width for `dim` features (rule in `RVQConfig.for_dim`)."
    if dim % 64 == 0: return 64
    return next((d for d in range(12, dim + 1) if dim % d == 0), dim)

@dataclass(frozen=True)
class RVQConfig:
    "Shape of a grouped residual VQ: `groups` slices of `dim`, `layers` codebooks of `codes` vectors each."
    dim: int
    groups: int
    layers: int = 3
    codes: int = 128

    def __post_init__(self):
        for k in ("dim", "groups", "layers", "codes"):
            v = getattr(self, k)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise EibError(f"RVQConfig.{k} must be a positive integer, got {v!r}")
        if self.dim % self.groups:
            raise EibError(f"RVQConfig: dim {self.dim} is not divisible by groups {self.groups}; "
                           f"use RVQConfig.for_dim({self.dim}) to derive a valid grouping")

    @property
    def group_dim(self) -> int: return self.dim // self.groups
    @property
    def positions(self) -> int: return self.groups * self.layers
    @property
    def skip(self) -> int: return self.codes
    @property
    def bos(self) -> int: return self.codes + 1
    @property
    def vocab(self) -> int: return self.codes + 1

    @classmethod
    def for_dim(cls, dim: int, layers: int | None = None, codes: int = 128) -> "RVQConfig":
        """Derive the grouping from `dim`: groups of 64 dims when 64 divides `dim` (768 -> 12 x 64,
        1024 -> 16 x 64); otherwise the smallest divisor of `dim` that is at least 12 (130 -> 10 x 13,
        88 -> 4 x 22); a prime `dim` (or one below 12) is a single group. `layers` (None): one per 6 dims
        of a group, at least 10 (64-dim and 13-dim groups: 10 layers)."""
        if not isinstance(dim, (int, np.integer)) or dim < 1: raise EibError(f"dim must be a positive integer, got {dim!r}")
        gd = _group_dim_for(int(dim))
        return cls(int(dim), int(dim) // gd, max(10, gd // 6) if layers is None else layers, codes)

    def to_dict(self) -> dict: return asdict(self)
    @classmethod
    def from_dict(cls, d: dict) -> "RVQConfig":
        try: return cls(**{k: int(d[k]) for k in ("dim", "groups", "layers", "codes")})
        except KeyError as e: raise EibError(f"RVQ config lacks {e}; it needs dim, groups, layers, codes") from None


# %%
test_eq([(c.groups, c.layers) for c in map(RVQConfig.for_dim, (512, 130, 768))], [(8, 10), (10, 10), (12, 10)])
c = RVQConfig.for_dim(768, layers=3)
test_eq((c.groups, c.group_dim, c.positions, c.skip, c.bos, c.vocab), (12, 64, 36, 128, 129, 129))
test_eq((RVQConfig.for_dim(1024).groups, RVQConfig.for_dim(1024).group_dim), (16, 64))
test_eq((RVQConfig.for_dim(130).groups, RVQConfig.for_dim(130).group_dim), (10, 13))
test_eq(RVQConfig.for_dim(131).groups, 1)
test_eq(RVQConfig.from_dict(c.to_dict()), c)
test_fail(lambda: RVQConfig(130, 12), contains="not divisible")
test_fail(lambda: RVQConfig(130, 10, codes=0), contains="positive integer")


# %% [markdown]
# ## Spreading layers over groups
#
# The "layer sweep" baseline uses plain RVQ with `n` layers in all, spread over the `G` groups as evenly
# as possible (earlier groups get the extra layer).

# %%
#| export
def spread_layers(n: int, groups: int, layers: int) -> list[int]:
    "Layers per group for `n` layers in all over `groups` groups of at most `layers` each."
    if not 0 <= n <= groups * layers:
        raise EibError(f"cannot spread {n} layers over {groups} groups of at most {layers}: choose 0..{groups * layers}")
    b, extra = divmod(n, groups)
    return [b + (g < extra) for g in range(groups)]


# %%
test_eq(spread_layers(14, 12, 3), [2, 2] + [1] * 10)
test_eq(spread_layers(36, 12, 3), [3] * 12)
test_eq(sum(spread_layers(25, 12, 3)), 25)
test_fail(lambda: spread_layers(37, 12, 3), contains="0..36")

# %% [markdown]
# ## The quantiser
#
# `GroupedRVQ` holds the per-dimension mean and standard deviation of the training split and the
# codebooks `(G, M, K, d)` in normalised space. Decoding pads each codebook with a zero vector at index
# `K`, so SKIP adds nothing. Encoding and decoding work in chunks of frames so that large stores fit in memory.

# %%
#| export
_CHUNK = 16384

def _as_tensor(x, dim: int | None = None) -> torch.Tensor:
    "`x` as a float32 (N, D) tensor, checking its shape."
    t = torch.as_tensor(np.asarray(x, dtype=np.float32) if not torch.is_tensor(x) else x).float()
    if t.ndim != 2 or (dim is not None and t.shape[1] != dim):
        raise EibError(f"expected frames of shape (N, {dim if dim is not None else 'D'}), got {tuple(t.shape)}")
    if not torch.isfinite(t).all(): raise EibError("frames contain NaN or infinite values")
    return t

def _nearest(r: torch.Tensor, cb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    "Nearest code per group: r (G, n, d), cb (G, K, d) -> indices (G, n), squared distances (G, n)."
    s = torch.baddbmm((cb * cb).sum(-1).unsqueeze(1), r, cb.transpose(1, 2), alpha=-2)  # ||c||^2 - 2 r.c
    v, i = s.min(-1)
    return i, (v + (r * r).sum(-1)).clamp_min(0)

class GroupedRVQ(torch.nn.Module):
    "Grouped residual VQ: training-split normalisation plus `(G, M, K, d)` codebooks; token `K` is SKIP."
    def __init__(self, cfg: RVQConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(cfg.dim))
        self.register_buffer("std", torch.ones(cfg.dim))
        self.register_buffer("codebooks", torch.zeros(cfg.groups, cfg.layers, cfg.codes, cfg.group_dim))

    def extra_repr(self): return f"{self.cfg}"

    def normalise(self, x) -> torch.Tensor:
        "Per-dimension standardisation with the training split's statistics."
        return (_as_tensor(x, self.cfg.dim) - self.mean) / self.std

    def denormalise(self, z) -> torch.Tensor:
        "Back to the original feature space."
        return _as_tensor(z, self.cfg.dim) * self.std + self.mean

    def check_tokens(self, tokens) -> torch.Tensor:
        "`tokens` as a LongTensor (N, G*M) of symbols 0..K (K = SKIP), or an EibError."
        t = torch.as_tensor(tokens)
        if t.ndim != 2 or t.shape[1] != self.cfg.positions:
            raise EibError(f"expected tokens of shape (N, {self.cfg.positions}), got {tuple(t.shape)}")
        if t.is_floating_point(): raise EibError("tokens must be integers")
        t = t.long()
        if t.numel() and (t.min() < 0 or t.max() > self.cfg.skip):
            raise EibError(f"tokens must lie in 0..{self.cfg.skip} (SKIP = {self.cfg.skip}); got {int(t.min())}..{int(t.max())}")
        return t

    def decode_normalised(self, tokens) -> torch.Tensor:
        "Tokens (N, G*M) -> frames (N, D) in normalised space; SKIP adds zero."
        c = self.cfg
        t = self.check_tokens(tokens).view(-1, c.groups, c.layers)
        cb = torch.cat([self.codebooks, self.codebooks.new_zeros(c.groups, c.layers, 1, c.group_dim)], 2)
        g = torch.arange(c.groups).view(1, -1, 1); m = torch.arange(c.layers).view(1, 1, -1)
        return cb[g, m, t].sum(2).reshape(-1, c.dim)

    def decode(self, tokens) -> torch.Tensor:
        "Tokens (N, G*M) -> frames (N, D) in the original feature space."
        return self.denormalise(self.decode_normalised(tokens))

    def _layers_per_group(self, lpg) -> torch.Tensor:
        "`layers_per_group` (an int or G ints in 0..M) as a LongTensor (G,), or an EibError."
        c = self.cfg
        if isinstance(lpg, (int, np.integer)): lpg = [int(lpg)] * c.groups
        t = torch.as_tensor(list(lpg))
        if t.numel() != c.groups or t.min() < 0 or t.max() > c.layers:
            raise EibError(f"layers_per_group must be an int or {c.groups} ints in 0..{c.layers}, got {lpg!r}")
        return t

    def keep_layers(self, tokens, layers_per_group) -> torch.Tensor:
        """Tokens (N, G*M) with each group's layers from its `layers_per_group` on set to SKIP. A layer of plain RVQ
        never looks ahead, so `keep_layers(encode_nearest(x), n)` is `encode_nearest(x, n)`: a layer sweep encodes once."""
        c = self.cfg
        lpg = self._layers_per_group(layers_per_group)
        t = self.check_tokens(tokens).clone().view(-1, c.groups, c.layers)
        t.masked_fill_(torch.arange(c.layers).view(1, -1) >= lpg.view(-1, 1), c.skip)
        return t.view(-1, c.positions)

    @torch.no_grad()
    def encode_nearest(self, x, layers_per_group=None, skip_mask=None) -> torch.Tensor:
        """Plain RVQ: at each layer the nearest code, no SKIP; with `layers_per_group` (an int or a list of G
        ints) layers from that index on are SKIP (`keep_layers`); `skip_mask` (bool, (N, G*M)) forces SKIP where True.
        Frames (N, D) in original space -> tokens (N, G*M)."""
        c = self.cfg
        if layers_per_group is not None: self._layers_per_group(layers_per_group)  # checked before the work
        z = self.normalise(x)
        if skip_mask is not None:
            skip_mask = torch.as_tensor(skip_mask, dtype=torch.bool)
            if skip_mask.shape != (len(z), c.positions):
                raise EibError(f"skip_mask must have shape ({len(z)}, {c.positions}), got {tuple(skip_mask.shape)}")
            skip_mask = skip_mask.view(-1, c.groups, c.layers)
        out = torch.full((len(z), c.groups, c.layers), c.skip, dtype=torch.long)
        for s in range(0, len(z), _CHUNK):
            r = z[s:s + _CHUNK].view(-1, c.groups, c.group_dim).transpose(0, 1).contiguous()  # (G, n, d)
            for m in range(c.layers):
                idx, _ = _nearest(r, self.codebooks[:, m])
                if skip_mask is not None: idx = idx.masked_fill(skip_mask[s:s + _CHUNK, :, m].T, c.skip)
                r = r - torch.where((idx < c.skip).unsqueeze(-1), torch.gather(self.codebooks[:, m], 1, idx.clamp_max(c.codes - 1).unsqueeze(-1).expand(-1, -1, c.group_dim)), 0.)
                out[s:s + _CHUNK, :, m] = idx.T
        out = out.view(len(z), c.positions)
        return out if layers_per_group is None else self.keep_layers(out, layers_per_group)



# %%
torch.manual_seed(0)
q = GroupedRVQ(RVQConfig(6, 2, layers=2, codes=4))
q.codebooks.normal_(); q.mean.fill_(1.0); q.std.fill_(2.0)
x = torch.randn(5, 6)
test_close(q.denormalise(q.normalise(x)), x, eps=1e-5)
tok = q.encode_nearest(x)
test_eq(tok.shape, (5, 4)); test_eq(tok[tok >= 4].tolist(), [])  # no SKIP in plain RVQ
# decode is the sum of the chosen codes per group, group-major positions p = g*M + m
z = q.decode_normalised(tok)
test_close(z[:, :3], q.codebooks[0, 0][tok[:, 0]] + q.codebooks[0, 1][tok[:, 1]], eps=1e-6)
test_close(z[:, 3:], q.codebooks[1, 0][tok[:, 2]] + q.codebooks[1, 1][tok[:, 3]], eps=1e-6)

# %%
t1 = q.encode_nearest(x, layers_per_group=[1, 2])
test_eq(t1[:, 1].tolist(), [4] * 5)  # group 0, layer 1 is SKIP
test_eq(t1[:, [0, 2, 3]], tok[:, [0, 2, 3]])
test_eq(q.keep_layers(tok, [1, 2]).tolist(), t1.tolist())  # one encoding serves every depth: greedy layers do not look ahead
test_eq(q.keep_layers(tok, 0).tolist(), [[4] * 4] * 5)
test_close(q.decode_normalised(torch.full((1, 4), 4)), torch.zeros(1, 6))  # all SKIP -> the mean in original space
test_close(q.decode(torch.full((1, 4), 4)), torch.ones(1, 6))
test_fail(lambda: q.decode(torch.full((1, 4), 5)), contains="0..4")  # BOS is never a coded symbol
test_fail(lambda: q.decode(torch.zeros(1, 3, dtype=torch.long)), contains="(N, 4)")
test_fail(lambda: q.encode_nearest(torch.zeros(2, 5)), contains="(N, 6)")
test_fail(lambda: q.encode_nearest(x, layers_per_group=[3, 1]), contains="0..2")
test_fail(lambda: q.keep_layers(tok, [1]), contains="2 ints")


# %% [markdown]
# ## Fitting the codebooks
#
# `fit_rvq` trains on the training split only:
#
# 1. per-dimension mean and standard deviation (std floored at 1e-6) from `frames`;
# 2. layer by layer, a k-means++ initialisation on a subsample of the residuals that layer meets, then
#    `iters` Lloyd iterations over all frames, re-seeding every code used by fewer than `min_count` frames
#    with a random residual (dead-code replacement);
# 3. **SKIP-aware residuals**: at test time ECVQ may skip layer m, so layer m+1 meets the residual *before*
#    layer m. While training, each (frame, group) skips each layer with probability `skip_prob`, drawn once
#    (fixed masks); the next layer is trained on the mixture of reduced and un-reduced residuals;
# 4. `refine` passes that re-run Lloyd on every layer with the residuals of the current codebooks, since
#    later layers change once earlier ones move.
#
# All groups are handled in one batched tensor. Everything is drawn from one `torch.Generator(seed)`,
# so a seed gives the same codebooks on every run (on the same device and thread count).

# %%
#| export
def _kmeanspp(r: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    "k-means++ seeds per group: r (G, n, d) -> (G, k, d)."
    G, n, d = r.shape
    gi = torch.arange(G)
    first = torch.randint(n, (G,), generator=gen)
    cents = [r[gi, first]]
    d2 = ((r - cents[0].unsqueeze(1)) ** 2).sum(-1)
    for _ in range(1, k):
        p = d2 + 1e-12
        nxt = torch.multinomial(p / p.sum(1, keepdim=True), 1, generator=gen).squeeze(1)
        c = r[gi, nxt]; cents.append(c)
        d2 = torch.minimum(d2, ((r - c.unsqueeze(1)) ** 2).sum(-1))
    return torch.stack(cents, 1)

def _assign(r: torch.Tensor, cb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    "Nearest code for all n residuals, in chunks: r (G, n, d), cb (G, K, d) -> (G, n) indices and sq. errors."
    out = [_nearest(r[:, s:s + _CHUNK], cb) for s in range(0, r.shape[1], _CHUNK)]
    return torch.cat([o[0] for o in out], 1), torch.cat([o[1] for o in out], 1)

def _lloyd(r: torch.Tensor, cb: torch.Tensor, iters: int, min_count: int, gen: torch.Generator) -> torch.Tensor:
    "`iters` Lloyd steps with dead-code replacement; r (G, n, d), cb (G, K, d) -> new cb."
    G, n, d = r.shape; K = cb.shape[1]
    for it in range(iters):
        idx, _ = _assign(r, cb)
        sums = torch.zeros(G, K, d).scatter_add_(1, idx.unsqueeze(-1).expand(-1, -1, d), r)
        cnt = torch.zeros(G, K).scatter_add_(1, idx, torch.ones(G, n))
        cb = torch.where(cnt.unsqueeze(-1) > 0, sums / cnt.clamp_min(1).unsqueeze(-1), cb)
        if it < iters - 1:
            dead = cnt < min_count
            if dead.any():
                pick = torch.randint(n, (G, K), generator=gen)
                cb = torch.where(dead.unsqueeze(-1), r[torch.arange(G).unsqueeze(1), pick], cb)
    return cb

@torch.no_grad()
def fit_rvq(frames, cfg: RVQConfig, seed: int = 0, iters: int = 15, skip_prob: float = 0.25, refine: int = 1,
            min_count: int = 2, init_sample: int = 10000, device: str = "cpu", progress: bool = True) -> GroupedRVQ:
    "Fit a `GroupedRVQ` to training-split `frames` (N, D): normalisation, SKIP-aware residual k-means."
    from tqdm.auto import tqdm
    x = _as_tensor(frames, cfg.dim)
    if len(x) < cfg.codes: raise EibError(f"need at least {cfg.codes} training frames to fit {cfg.codes} codes, got {len(x)}")
    if not 0 <= skip_prob < 1: raise EibError(f"skip_prob must be in [0, 1), got {skip_prob}")
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    rvq = GroupedRVQ(cfg)
    rvq.mean.copy_(x.mean(0)); rvq.std.copy_(x.std(0).clamp_min(1e-6))
    G, M, K, d = cfg.groups, cfg.layers, cfg.codes, cfg.group_dim
    z = rvq.normalise(x).view(-1, G, d).transpose(0, 1).contiguous().to(dev)  # (G, N, d)
    N = z.shape[1]
    keep = (torch.rand(M, G, N, generator=gen) >= skip_prob).to(dev)  # keep[m]: layer m is applied
    keep[M - 1] = True  # the last layer's skip never reaches another layer
    cbs = torch.zeros(G, M, K, d, device=dev)
    bar = tqdm(total=M * (1 + refine), desc="fit_rvq", disable=not progress)
    for p in range(1 + refine):
        r = z.clone()
        for m in range(M):
            if p == 0:
                sub = torch.randperm(N, generator=gen)[:init_sample].to(dev)
                cbs[:, m] = _kmeanspp(r[:, sub].cpu(), K, gen).to(dev)
            cbs[:, m] = _lloyd(r, cbs[:, m], iters if p == 0 else max(2, iters // 3), min_count, gen)
            idx, _ = _assign(r, cbs[:, m])
            q = torch.gather(cbs[:, m], 1, idx.unsqueeze(-1).expand(-1, -1, d))
            r = r - torch.where(keep[m].unsqueeze(-1), q, 0.)
            bar.update(1)
    bar.close()
    rvq.codebooks.copy_(cbs.cpu())
    return rvq


# %%
def _toy(n=3000, seed=0):
    "Correlated 12-dim frames of one fixed distribution; `seed` draws the sample."
    W = torch.randn(8, 12, generator=torch.Generator().manual_seed(0))
    base = torch.randn(n, 8, generator=torch.Generator().manual_seed(100 + seed)) @ W
    return (base * torch.linspace(0.5, 4, 12) + 3).numpy()
X = _toy()
cfg = RVQConfig(12, 3, layers=3, codes=16)
a = fit_rvq(X, cfg, seed=1, iters=6, progress=False)
test_eq(a.codebooks, fit_rvq(X, cfg, seed=1, iters=6, progress=False).codebooks)  # deterministic
test_close(a.mean, torch.tensor(X.mean(0)), eps=1e-4)
errs = [((a.decode(a.encode_nearest(X, l)) - torch.tensor(X)) ** 2).mean().item() for l in (0, 1, 2, 3)]
test_eq(errs, sorted(errs, reverse=True)); assert errs[3] < 0.25 * errs[0], errs  # each layer lowers the error
test_fail(lambda: fit_rvq(X[:10], cfg, progress=False), contains="at least 16")

# %% [markdown]
# Why SKIP-aware: when layers are skipped at test time (here at random, half of the first two layers'
# positions), codebooks trained with `skip_prob=0.25` reconstruct better than ones trained without SKIP.
# (On a 30k x 130 synthetic set: normalised MSE 0.216 -> 0.187 at a skip rate of 0.25, 0.344 -> 0.269 at
# 0.5, for 0.114 -> 0.126 with no skips.)

# %%
Xt = _toy(2000, seed=1)
mask = torch.rand(len(Xt), 9, generator=torch.Generator().manual_seed(2)) < 0.5
mask[:, 2::3] = False  # the last layer of each group always runs
a0 = fit_rvq(X, cfg, seed=1, iters=6, skip_prob=0.0, progress=False)
err = lambda q: ((q.decode(q.encode_nearest(Xt, skip_mask=mask)) - torch.tensor(Xt)) ** 2).mean().item()
test(err(a), err(a0), operator.lt, "<")
test_eq(set(a.encode_nearest(Xt, skip_mask=mask)[mask].tolist()) - {cfg.skip}, set())


# %% [markdown]
# ## Lloyd update on given tokens
#
# Once an entropy model exists, ECVQ picks tokens that are not the nearest codes (cheaper ones, and SKIP).
# `lloyd_update` moves every used code to the mean of its target given fixed tokens: for code `k` at
# `(g, m)`, the target is the frame minus the codes of the group's other layers. Going layer by layer, each
# step minimises the squared error for those tokens, so the error never rises.

# %%
#| export
@torch.no_grad()
def lloyd_update(rvq: GroupedRVQ, frames, tokens, min_count: int = 1) -> GroupedRVQ:
    "A copy of `rvq` with each code used >= `min_count` times moved to the mean of its targets under `tokens`."
    c = rvq.cfg; G, M, K, d = c.groups, c.layers, c.codes, c.group_dim
    z = rvq.normalise(frames).view(-1, G, d)
    t = rvq.check_tokens(tokens).view(-1, G, M)
    if len(t) != len(z): raise EibError(f"{len(z)} frames but {len(t)} token rows")
    new = GroupedRVQ(c); new.load_state_dict(rvq.state_dict())
    cb = torch.cat([new.codebooks, new.codebooks.new_zeros(G, M, 1, d)], 2)  # (G, M, K+1, d)
    gi = torch.arange(G).view(1, -1)
    for m in range(M):
        parts = torch.stack([cb[gi, mm, t[:, :, mm]] for mm in range(M)], 2)  # (N, G, M, d)
        target = z - parts.sum(2) + parts[:, :, m]
        tm = t[:, :, m]
        sums = torch.zeros(G, K + 1, d).index_put_((gi.expand_as(tm), tm), target, accumulate=True)
        cnt = torch.zeros(G, K + 1).index_put_((gi.expand_as(tm), tm), torch.ones(tm.shape), accumulate=True)
        upd = (cnt >= min_count)[:, :K]
        cb[:, m, :K] = torch.where(upd.unsqueeze(-1), sums[:, :K] / cnt[:, :K].clamp_min(1).unsqueeze(-1), cb[:, m, :K])
    new.codebooks.copy_(cb[:, :, :K])
    return new


# %%
tok = a.encode_nearest(X, [2, 1, 3])  # tokens with SKIPs, not made by this codebook's own fit
b = lloyd_update(a, X, tok)
mse = lambda q, t: ((q.decode(t) - torch.tensor(X)) ** 2).mean().item()
test(mse(b, tok), mse(a, tok) + 1e-6, operator.le, "<=")
test_eq(b.codebooks[0, 2], a.codebooks[0, 2])  # codes never used keep their place
test_fail(lambda: lloyd_update(a, X[:5], tok), contains="token rows")


# %% [markdown]
# ## Report
#
# Per position: the perplexity of the code distribution (2^entropy in bits; K would mean uniform use) and
# utilisation (the fraction of the K codes used at least once); overall: reconstruction error with all
# layers and no SKIP, in the original space and in normalised space, and the mean cosine similarity of
# original and decoded frames.

# %%
#| export
@torch.no_grad()
def rvq_report(rvq: GroupedRVQ, frames) -> dict:
    "Code use per position and reconstruction quality of plain RVQ (all layers, no SKIP) on `frames`."
    c = rvq.cfg
    x = _as_tensor(frames, c.dim)
    tok = rvq.encode_nearest(x)
    rows = []
    for p in range(c.positions):
        cnt = torch.bincount(tok[:, p], minlength=c.codes)[:c.codes].double()
        pr = cnt[cnt > 0] / cnt.sum()
        rows.append(dict(position=p, group=p // c.layers, layer=p % c.layers,
                         perplexity=float(2 ** -(pr * pr.log2()).sum()), utilisation=float((cnt > 0).double().mean())))
    y = rvq.decode(tok)
    z, zy = rvq.normalise(x), rvq.normalise(y)
    by_layer = [float(((rvq.decode_normalised(rvq.encode_nearest(x, l)) - z) ** 2).mean()) for l in range(c.layers + 1)]
    return dict(frames=len(x), mse=float(((y - x) ** 2).mean()), mse_normalised=float(((zy - z) ** 2).mean()),
                cosine=float(torch.nn.functional.cosine_similarity(y, x, dim=1).mean()),
                mse_normalised_by_layers=by_layer, positions=pd.DataFrame(rows))


# %%
rep = rvq_report(a, X)
test_eq(list(rep["positions"].columns), ["position", "group", "layer", "perplexity", "utilisation"])
test_eq(len(rep["positions"]), 9)
_pp = rep["positions"].perplexity; test_eq(_pp[~((_pp > 1) & (_pp <= 16))].tolist(), [])
test_close(rep["mse_normalised_by_layers"][0], 1.0, eps=0.01)  # no layer: error = variance of normalised data
assert 0.95 < rep["cosine"] <= 1, rep["cosine"]
rep["positions"].head(3)


# %% [markdown]
# ## Toy frames
#
# One small source of correlated frames for the examples and tests of this and later chapters (ECVQ, the
# bitstream): a rank-4 signal (a fixed random basis) plus independent noise.

# %%
#| export
def toy_frames(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    "`n` correlated toy frames (n, dim) float32: a low-rank signal (a fixed basis) plus noise, seeded."
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(4, dim, generator=torch.Generator().manual_seed(123))
    return (torch.randn(n, 4, generator=g) @ basis + 0.3 * torch.randn(n, dim, generator=g)).numpy()


# %%
test_eq(toy_frames(5).shape, (5, 16)); test_eq(toy_frames(5), toy_frames(5)); test_ne(toy_frames(5), toy_frames(5, seed=1))
_ev = np.linalg.eigvalsh(np.cov(toy_frames(4000).T))
assert _ev[-4:].min() > 10 * _ev[:-4].max(), _ev  # four strong directions over the noise floor
