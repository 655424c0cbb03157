# %% [markdown]
# # Rate control on real streams
#
# > Rate control on actual bits: find the λ that makes the real byte stream hit a target bits-per-frame, for every utterance at once.

# %%
#| default_exp rate

# %%
#| export
from __future__ import annotations
import argparse, dataclasses, math, sys, time
from pathlib import Path
from dataclasses import dataclass, field
import numpy as np
import pandas as pd
import torch
from eib.core import EibError, FRAME_RATE, atomic_write_bytes, atomic_save_npy, check_output, die_with_parent, run_cli
from eib.codec import as_codec, load_codec
from eib.bitstream import check_features, compress, decompress, stream_bpf, stream_info
from eib.engine import LAM_INF, CodedState, RateEngine, check_utterances
from eib.search import LambdaSearch, LN_LAMBDA_SPAN, MIX_AFTER

# %%
import operator
from fastcore.test import test, test_eq, test_fail, test_close
torch.set_num_threads(1)  # the tests' tiny models run faster on one thread on a shared machine


# %% [markdown]
# ## Results

# %%
#| export
@dataclass
class RateResult:
    "One target's answer: per utterance λ, counted bits of the real stream, status, and the tokens at the answer."
    target: np.ndarray  # (U,) target BPF of each utterance
    lam: np.ndarray  # (U,) λ of the answer (0 = the λ → 0 end, LAM_INF = the λ → ∞ end)
    bits: np.ndarray  # (U,) counted bits of each utterance's stream (see `count`)
    frames: np.ndarray  # (U,)
    ideal_bits: np.ndarray  # (U,) -log2 q of the tokens under the coding model
    distortion: np.ndarray  # (U,) mean squared error per frame, normalised space, summed over dims
    status: np.ndarray  # (U,) 'ok' | 'mixed' | 'step' | 'max_iter' | 'clamped_max' | 'clamped_min'
    evals: np.ndarray  # (U,) evaluations of this utterance's λ for this target
    passes: int  # batched encoder passes for this target (the controller's one calibration pass not included)
    mode: str
    count: str
    tol: float
    seconds: float = 0.0
    frames_encoded: int = 0  # frames actually re-encoded (the rest came from the cache)
    tokens: list = field(default_factory=list, repr=False)  # (U,) uint8 (T, L) token arrays at the answer
    ids: list | None = None
    lam2: np.ndarray | None = None  # (U,) status 'mixed': the λ of the first `split` frames (NaN otherwise)
    split: np.ndarray | None = None  # (U,) frames coded at lam2 (0 unless mixed)

    @property
    def bpf(self) -> np.ndarray: return self.bits / self.frames
    @property
    def error(self) -> np.ndarray: return self.bpf - self.target
    @property
    def clamped(self) -> np.ndarray: return np.array([s.startswith("clamped") for s in self.status])
    @property
    def converged(self) -> np.ndarray: return np.isin(self.status, ("ok", "mixed"))
    @property
    def set_bpf(self) -> float: return float(self.bits.sum() / self.frames.sum())
    @property
    def set_target(self) -> float: return float((self.target * self.frames).sum() / self.frames.sum())
    @property
    def set_error(self) -> float: return self.set_bpf - self.set_target

    def table(self) -> pd.DataFrame:
        "One row per utterance."
        return pd.DataFrame(dict(id=self.ids if self.ids is not None else range(len(self.lam)), target=self.target,
                                 lam=self.lam, bpf=self.bpf, error=self.error, frames=self.frames, bits=self.bits,
                                 ideal_bpf=self.ideal_bits / self.frames, distortion=self.distortion, status=self.status,
                                 evals=self.evals, lam2=self.lam2, split=self.split))

    def summary(self) -> dict:
        "Set-level numbers: aggregate rate and error, error spread, statuses, passes."
        e, inr = np.abs(self.error), ~self.clamped
        return dict(target=self.set_target, set_bpf=self.set_bpf, set_error=self.set_error, passes=self.passes,
                    utterances=len(e), ok=int(self.converged.sum()), clamped=int(self.clamped.sum()),
                    within_1=float((e[inr] <= 1).mean()) if inr.any() else float("nan"),
                    median_abs_error=float(np.median(e[inr])) if inr.any() else float("nan"),
                    max_abs_error=float(e[inr].max()) if inr.any() else float("nan"),
                    frames_encoded=self.frames_encoded, seconds=self.seconds)

    def recon(self, rvq) -> list[np.ndarray]:
        "Decoded frames (T, D) of every utterance at the answer."
        return [rvq.decode(torch.from_numpy(t.astype(np.int64))).numpy() for t in self.tokens]

    def subset(self, idx) -> "RateResult":
        """The answer for the utterances `idx` only (per-utterance fields indexed; `passes`, `seconds` and
        `frames_encoded` stay those of the whole search). Per-utterance control answers each utterance on its own,
        so one search over two lists gives each list the answer a search of it alone would give."""
        idx = np.asarray(idx, dtype=np.int64)
        pick = lambda a: None if a is None else np.asarray(a)[idx]
        return dataclasses.replace(self, target=pick(self.target), lam=pick(self.lam), bits=pick(self.bits),
                                   frames=pick(self.frames), ideal_bits=pick(self.ideal_bits), distortion=pick(self.distortion),
                                   status=pick(self.status), evals=pick(self.evals), tokens=[self.tokens[i] for i in idx],
                                   ids=None if self.ids is None else [self.ids[i] for i in idx], lam2=pick(self.lam2),
                                   split=pick(self.split))


# %% [markdown]
# ## The controller
#
# `RateController` holds one codec and one list of utterances; every `solve` shares its engine (and cache) and the
# history of every λ measured, so a list of targets solved in order starts each search from the previous answers.
#
# **Out-of-range targets.** The achievable range of an utterance (or of the set) runs from the rate at λ → ∞ (every
# position takes its likeliest symbol, mostly SKIP, plus the container) to the rate at λ = 0 (nearest codes). A
# target more than `tol` outside it either raises an `EibError` that states the range (`clamp=False`, the default of
# `solve`/`solve_lambda`/`eib-compress --bpf`), or is answered with the nearest end and flagged `clamped_max` /
# `clamped_min` (`clamp=True`, the default of `solve_many`, i.e. of rate sweeps). The ends are only measured when a
# search runs into them; `achievable_range` measures them all (two passes).

# %%
#| export
class RateController:
    "λ searches on real stream sizes for a fixed list of utterances and one codec (a `Codec` or an `(rvq, model)` pair)."
    def __init__(self, codec, utterances, count: str = "stream", batch_size: int | None = None, ids=None,
                 calibrate: bool = True, cache: bool = True, engine=None):
        if count not in ("stream", "payload"): raise EibError(f"count must be 'stream' or 'payload', got {count!r}")
        if engine is None:  # `engine`: any object with RateEngine's methods (the search is tested on a stand-in)
            codec = as_codec(codec)
            engine = RateEngine(codec, check_utterances(utterances, codec.rvq.cfg.dim), batch_size, cache)
        self.engine, self.count, self.use_cal = engine, count, calibrate
        self.T = np.asarray(engine.T)
        self.ids = None if ids is None else list(ids)
        if self.ids is not None and len(self.ids) != len(self.T):
            raise EibError(f"{len(self.ids)} ids for {len(self.T)} utterances")
        c = math.log(engine.scale())
        self.X0, self.X1 = c - LN_LAMBDA_SPAN, c + LN_LAMBDA_SPAN
        self.hist: dict = {}  # unit key (utterance index or 'set') -> [(ln λ, rate)]
        self._cal = None
        self.calibration_passes = 0

    # -- λ <-> x
    def lam(self, x: float) -> float:
        "λ evaluated for ln λ = `x` (the ends stand for 0 and ∞)."
        return 0.0 if x <= self.X0 else LAM_INF if x >= self.X1 else math.exp(x)

    def x_of(self, lam: float) -> float:
        return self.X0 if lam <= 0 else self.X1 if lam >= LAM_INF else float(np.clip(math.log(lam), self.X0, self.X1))

    def stream(self, u: int) -> bytes:
        "The `eib.bitstream` stream of utterance `u` at its current answer (the last `solve`)."
        return self.engine.stream_bytes(u, self.engine.cache[u])

    def _bits(self, st) -> int: return 8 * (st.stream_len if self.count == "stream" else st.payload_len)

    # -- calibration: a set-level rate curve for cold starts and slopes
    def calibration(self):
        "(ln λ grid, mean BPF) measured once on a frame sample (ideal bits plus the average container cost)."
        if self._cal is None:
            xs = math.log(self.engine.scale()) + np.linspace(-7.0, 11.0, 14)
            n = int(min(self.T.sum(), max(32, self.T.sum() // 4), 768))
            r = np.asarray(self.engine.calibrate(np.exp(xs), n), dtype=np.float64)
            mid = float(np.median(r))
            ovh = np.mean([self.engine.overhead_bits(u, mid) / self.T[u] for u in range(len(self.T))]) if self.count == "stream" \
                else float(np.mean(16.0 / self.T))
            self._cal = (xs, np.minimum.accumulate(r + ovh))
            self.calibration_passes += 1
        return self._cal

    def _x_guess(self, t: float) -> float:
        if not self.use_cal: return math.log(self.engine.scale())
        xs, r = self.calibration()
        return float(np.interp(t, r[::-1], xs[::-1]))

    def _slope_cal(self, r: float) -> float:
        if not self.use_cal: return -10.0
        xs, rr = self.calibration()
        s = np.diff(rr) / np.diff(xs)
        i = int(np.clip(np.searchsorted(-rr, -r) - 1, 0, len(s) - 1))
        return float(min(s[i], -1e-3))

    def _predict(self, x: float, r: float, t: float) -> float:
        "ln λ at which a unit measured at (x, r) reaches `t`, if its rate curve is the calibration curve times r / curve(x)."
        if not self.use_cal: return x + (t - r) / -10.0
        xs, rr = self.calibration()
        tc = t * max(float(np.interp(x, xs, rr)), 1e-9) / r
        if rr.min() < tc < rr.max():
            xp = self._x_guess(tc)
            if (xp - x) * (t - r) < 0: return xp  # the right direction (rate falls as λ grows)
        return x + (t - r) / self._slope_cal(tc)  # beyond the curve, or against it: follow the curve's slope

    # -- the ends of the range
    def _end_rates(self, units, members, keys, which: str) -> list[float]:
        "Rate of each unit at the λ = 0 ('max') or λ = ∞ ('min') end, from history or one extra pass."
        x = self.X0 if which == "max" else self.X1
        out, todo = [], []
        for k in units:
            h = [r for px, r in self.hist.get(keys[k], []) if px == x]
            out.append(h[-1] if h else None)
            if not h: todo.append(k)
        if todo:
            us = [u for k in todo for u in members[k]]
            sts = self.engine.evaluate(us, [self.lam(x)] * len(us))
            i = 0
            for k in todo:
                m = members[k]; bits = sum(self._bits(s) for s in sts[i:i + len(m)]); i += len(m)
                for u, s in zip(m, sts[i - len(m):i]): self.hist.setdefault(u, []).append((x, self._bits(s) / self.T[u]))
                r = bits / self.T[m].sum()
                self.hist.setdefault(keys[k], []).append((x, r))
                out[units.index(k)] = r
        return out

    def achievable_range(self) -> pd.DataFrame:
        "Smallest (λ → ∞) and largest (λ = 0) rate of every utterance, counted as `count`; the set's in `.attrs`."
        U = len(self.T)
        members, keys = [[u] for u in range(U)], list(range(U))
        lo = self._end_rates(list(range(U)), members, keys, "min")
        hi = self._end_rates(list(range(U)), members, keys, "max")
        df = pd.DataFrame(dict(id=self.ids if self.ids is not None else range(U), frames=self.T, min_bpf=lo, max_bpf=hi))
        df.attrs.update(set_min=float((df.min_bpf * df.frames).sum() / df.frames.sum()),
                        set_max=float((df.max_bpf * df.frames).sum() / df.frames.sum()), count=self.count)
        return df

    def _out_of_range(self, bad, units, members, keys, mode, targets):
        "The EibError for targets outside the achievable range (clamp=False)."
        lo = self._end_rates(bad, members, keys, "min")
        hi = self._end_rates(bad, members, keys, "max")
        k = bad[0]
        rng = f"{lo[0]:.2f}..{hi[0]:.2f} BPF"
        if mode == "set": where = f"the set's achievable range {rng}"
        elif len(units) == 1: where = f"the achievable range {rng} of this utterance"
        else: where = (f"the achievable range of {len(bad)} of {len(units)} utterances (e.g. utterance "
                       f"{self.ids[k] if self.ids is not None else k!r}: {rng})")
        what = "the whole stream" if self.count == "stream" else "the payload"
        return EibError(f"target {targets[k]:g} BPF is outside {where}, counting {what}; choose a target inside the range "
                        "(from Python, clamp=True answers with the nearest end, flagged in the result)")

    # -- the search
    def solve(self, target_bpf, mode: str = "utterance", tol: float | None = None, max_iter: int = 12,
              clamp: bool = False, warm_start=None, mix: bool = True) -> RateResult:
        """Find λ per utterance (`mode="utterance"`) or one λ for the set (`mode="set"`) whose real stream rate is
        within `tol` BPF of `target_bpf` (a number, or one per utterance in utterance mode)."""
        t0, E = time.time(), self.engine
        mix = mix and not E.context  # with inter-frame context a frame depends on the one before: one λ per utterance
        U = len(self.T)
        if mode not in ("utterance", "set"): raise EibError(f"mode must be 'utterance' or 'set', got {mode!r}")
        tol = (0.25 if mode == "utterance" else 0.1) if tol is None else float(tol)
        if not tol > 0: raise EibError(f"tol must be positive, got {tol}")
        if not isinstance(max_iter, (int, np.integer)) or max_iter < 1: raise EibError(f"max_iter must be a positive integer, got {max_iter!r}")
        try: tg = np.asarray(target_bpf, dtype=np.float64)
        except (TypeError, ValueError): raise EibError(f"target_bpf must be a number or a list of numbers, got {target_bpf!r}") from None
        if mode == "set" and tg.ndim != 0: raise EibError("mode='set' takes one target for the whole set")
        if tg.ndim == 0: tg = np.full(U, float(tg))
        if tg.shape != (U,): raise EibError(f"target_bpf must be a number or one value per utterance ({U}), got shape {tg.shape}")
        if not (np.isfinite(tg).all() and (tg > 0).all()): raise EibError("target BPF values must be finite and positive")
        members = [[u] for u in range(U)] if mode == "utterance" else [list(range(U))]
        keys = list(range(U)) if mode == "utterance" else ["set"]
        units = [LambdaSearch(float(tg[m[0]]), tol) for m in members]
        self._warm(warm_start, units, members, keys, mode)
        for k, un in enumerate(units):
            un.seed(self.hist.get(keys[k], []))
            if un.first_guess is None: un.first_guess = self._history_answer(un, keys[k])
        if self.use_cal: self.calibration()  # once per controller, counted in `calibration_passes`
        p0, f0 = E.passes, E.frames_encoded
        sides = {}  # (unit, sign of rate - target) -> the states of the unit's latest evaluation on that side
        while True:
            act = [k for k, un in enumerate(units) if not un.status]
            if not act: break
            xs = {k: units[k].propose(self._predict, self._x_guess, self.X0, self.X1) for k in act}
            us = [u for k in act for u in members[k]]
            sts = E.evaluate(us, [self.lam(xs[k]) for k in act for _ in members[k]])
            i = 0
            for k in act:
                m = members[k]; ss = sts[i:i + len(m)]; i += len(m)
                bits = np.array([self._bits(s) for s in ss], dtype=np.float64)
                rate = float(bits.sum() / self.T[m].sum())
                self.hist.setdefault(keys[k], []).append((xs[k], rate))
                if mode == "set":
                    for u, b in zip(m, bits): self.hist.setdefault(u, []).append((xs[k], b / self.T[u]))
                before = units[k].best
                sides[k, rate > units[k].target] = ss
                units[k].update(xs[k], rate, self.X0, self.X1, max_iter)
                if units[k].best is not before:
                    for u, s in zip(m, ss): E.commit(u, s)
            if mix and mode == "utterance":
                ready = [k for k in act if units[k].status in ("step", "max_iter") or (not units[k].status and units[k].evals >= MIX_AFTER)]
                self._fill_sides(ready, units, members, sides)
                for k in ready:
                    if (k, True) in sides and (k, False) in sides and self._mix(members[k][0], units[k], sides[k, True][0], sides[k, False][0]):
                        units[k].status = "mixed"
            bad = [k for k in act if units[k].status in ("above_max", "below_min")]
            if bad and not clamp: raise self._out_of_range(bad, list(range(len(units))), members, keys, mode, tg)
        status = np.empty(U, dtype=object); evals = np.zeros(U, int)
        for k, un in enumerate(units):
            s = {"above_max": "clamped_max", "below_min": "clamped_min"}.get(un.status, un.status)
            for u in members[k]: status[u], evals[u] = s, un.evals
        sts = [E.cache[u] for u in range(U)]
        return RateResult(target=tg, lam=np.array([s.lam for s in sts]), bits=np.array([self._bits(s) for s in sts], dtype=np.float64),
                          frames=self.T.copy(), ideal_bits=np.array([float(s.ideal.sum()) for s in sts]),
                          distortion=np.array([float(s.dist.mean()) for s in sts]), status=status.astype(str), evals=evals,
                          passes=E.passes - p0, mode=mode, count=self.count, tol=tol, seconds=time.time() - t0,
                          frames_encoded=E.frames_encoded - f0, tokens=[s.tokens for s in sts], ids=self.ids,
                          lam2=np.array([s.lam2 for s in sts]), split=np.array([s.split for s in sts]))

    def _fill_sides(self, ready, units, members, sides):
        """States for the bracket ends of units `ready` that this search has not coded (an end known from history, such
        as `achievable_range`'s λ = ∞ when the jump lies beyond the search's span): one batched pass, no search step."""
        need = [(k, up, p[0]) for k in ready for up, p in ((True, units[k].above), (False, units[k].below))
                if p is not None and (k, up) not in sides]
        if not need: return
        sts = self.engine.evaluate([members[k][0] for k, _, _ in need], [self.lam(x) for _, _, x in need])
        for (k, up, _), st in zip(need, sts): sides[k, up] = [st]

    def _mix(self, u: int, un: LambdaSearch, A: CodedState, B: CodedState) -> bool:
        """Where rate(λ) jumps over the target (`step`), code the first k frames at the λ above the target (state `A`)
        and the rest at the λ below (`B`); k by bisection on the real stream size. Commits and returns True if it
        lands within tolerance."""
        T, E = int(self.T[u]), self.engine
        rate = lambda st: self._bits(st) / T
        lo, hi = 0, T  # rate(mix(lo)) < target <= rate(mix(hi)), roughly: frames differ one by one
        cache = {}
        get = lambda k: cache.setdefault(k, E.mix(u, A, B, k))
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if rate(get(mid)) < un.target: lo = mid
            else: hi = mid
        st = min((get(lo), get(hi)), key=lambda s: abs(rate(s) - un.target))
        if abs(rate(st) - un.target) > un.tol or abs(rate(st) - un.target) >= abs(un.best[1]): return False
        E.commit(u, st); un.best = (un.best[0], rate(st) - un.target)
        return True

    def _history_answer(self, un: LambdaSearch, key):
        "A known ln λ already within tolerance of the target, or an end the target lies beyond; else None."
        h = self.hist.get(key, [])
        if not h: return None
        x, r = min(h, key=lambda p: abs(p[1] - un.target))
        if abs(r - un.target) <= un.tol: return x
        for px, pr in h:
            if px <= self.X0 and pr < un.target - un.tol: return px
            if px >= self.X1 and pr > un.target + un.tol: return px
        return None

    def _warm(self, warm_start, units, members, keys, mode):
        "Seed the searches from a previous `RateResult` (its points join the history) or from λ values (first guesses)."
        if warm_start is None: return
        if isinstance(warm_start, RateResult):
            if len(warm_start.lam) != len(self.T) or warm_start.count != self.count:
                raise EibError("warm_start is a RateResult for other utterances or another count; pass λ values instead")
            for u in range(len(self.T)): self.hist.setdefault(u, []).append((self.x_of(warm_start.lam[u]), float(warm_start.bpf[u])))
            if mode == "set" and warm_start.mode == "set": self.hist.setdefault("set", []).append((self.x_of(warm_start.lam[0]), warm_start.set_bpf))
            return
        lam = np.asarray(warm_start, dtype=np.float64)
        if lam.ndim == 0: lam = np.full(len(units), float(lam))
        if lam.shape != (len(units),) or not np.isfinite(lam).all() or (lam < 0).any():
            raise EibError(f"warm_start must be a RateResult, one λ, or one λ per {'utterance' if mode == 'utterance' else 'set'} "
                           f"({len(units)}), all finite and >= 0")
        for un, l in zip(units, lam): un.first_guess = self.x_of(float(l))

    def solve_many(self, targets, mode: str = "utterance", tol: float | None = None, max_iter: int = 12,
                   clamp: bool = True, progress: bool = False, mix: bool = True) -> list[RateResult]:
        "Solve a list of targets in the given order (ascending or descending is best), each starting from the last."
        from tqdm.auto import tqdm
        out = []
        for t in tqdm(list(targets), desc="rate targets", disable=not progress):
            out.append(self.solve(t, mode=mode, tol=tol, max_iter=max_iter, clamp=clamp, mix=mix))
        return out


# %% [markdown]
# ### The search on a known, step-wise, locally non-monotonic rate function
#
# A stand-in engine with a rate function we choose lets us test the search alone: whole bytes (so rate(λ) is a
# staircase), a wiggle that makes it locally non-monotonic, and utterances of very different lengths and levels.

# %%
class FakeEngine:
    "Stand-in for `RateEngine` with a given `bits(u, λ)` (to test the search alone); streams are whole bytes."
    def __init__(self, frames, bits_fn, scale: float = 1.0):
        self.T, self.bits_fn, self._scale = np.asarray(frames), bits_fn, scale
        self.cache, self.passes, self.frames_encoded, self.mismatch, self.context = [None] * len(self.T), 0, 0, 0, False
    def scale(self): return self._scale
    def calibrate(self, lams, max_frames):
        self.passes += 1
        return np.array([np.mean([self.bits_fn(u, l) / self.T[u] for u in range(len(self.T))]) for l in lams])
    def overhead_bits(self, u, bpf): return 0.0
    def evaluate(self, us, lams):
        self.passes += 1
        out = []
        for u, l in zip(us, lams):
            T = int(self.T[u]); nbytes = int(math.ceil(self.bits_fn(u, l) / 8))
            self.frames_encoded += T
            out.append(CodedState(float(l), np.zeros((T, 0), np.uint8), None, None, None, None, np.zeros(T), np.zeros(T, np.float32),
                              payload_len=nbytes, stream_len=nbytes))
        return out
    def mix(self, u, A, B, k):  # frames [0, k) at A's rate, the rest at B's, in whole bytes
        T = int(self.T[u]); nbytes = int(math.ceil((A.stream_len * k + B.stream_len * (T - k)) / T))
        return CodedState(B.lam, A.tokens, None, None, None, None, A.ideal, A.dist, payload_len=nbytes, stream_len=nbytes, lam2=A.lam, split=k)
    def commit(self, u, st): self.cache[u] = st


# %%
def fake_bits(u, lam, T=None, lev=None):
    "A staircase rate: 2 .. 230 BPF, smooth in ln λ, plus a wiggle (locally non-monotonic)."
    x = math.log(lam) if lam > 0 else -50.0
    bpf = 2 + 228 / (1 + math.exp(0.8 * (x - lev[u]))) + 0.6 * math.sin(9 * x)
    return max(bpf, 2) * T[u]

_g = np.random.default_rng(1)
T_f, lev_f = _g.integers(40, 400, 50), _g.normal(0, 1, 50)
bits_f = lambda u, l: fake_bits(u, l, T_f, lev_f)
rc = RateController(None, None, engine=FakeEngine(T_f, bits_f))
res = rc.solve_many([10, 15, 50, 100, 150, 200])
for r in res:
    test_eq(r.status[~r.converged].tolist(), [])
    assert np.abs(r.error).max() <= 0.25 and abs(r.set_error) <= 0.25, r.summary()
print("passes per target:", [r.passes for r in res], "calibration passes:", rc.calibration_passes)
assert np.median([r.passes for r in res]) <= 6, [r.passes for r in res]

# %% [markdown]
# Set mode (one λ, aggregate rate), per-utterance targets, and a step too tall to land inside `tol` (the answer is
# the best side of the jump, flagged `step`):

# %%
r = rc.solve(80, mode="set")
test_eq(r.status[0], "ok"); assert abs(r.set_error) <= 0.1, r.summary(); test_eq(len(set(r.lam)), 1)
r = rc.solve(np.linspace(20, 120, 50))
test_eq(r.status[~r.converged].tolist(), []); assert np.abs(r.error).max() <= 0.25, r.summary()
r2 = RateController(None, None, engine=FakeEngine(T_f, bits_f)).solve(np.linspace(20, 120, 50), warm_start=r.lam)
test_eq(r2.passes, 1); test_eq(r2.lam, r.lam)  # warm-started at known answers: one pass re-measures them

jump = lambda u, l: (60 if l < 1.0 else 40) * 100  # rate jumps from 60 to 40 BPF at λ = 1
r = RateController(None, None, engine=FakeEngine([100], jump)).solve(50, max_iter=40, mix=False)
test_eq(r.status[0], "step"); test_eq(abs(r.error[0]), 10)
r = RateController(None, None, engine=FakeEngine([100], jump)).solve(50, max_iter=40)  # frames split between the two λ
test_eq((r.status[0], r.error[0], r.split[0]), ("mixed", 0.0, 50))
far = lambda u, l: (60 if l < 1e9 else 40) * 100  # a jump beyond the search's span: only its λ = ∞ end is below 50
_rc = RateController(None, None, engine=FakeEngine([100], far)); _rc.achievable_range()  # that end is now known from history
r = _rc.solve(50, max_iter=40)  # the ∞ end's state is coded once more for the split
test_eq((r.status[0], r.error[0], r.split[0], r.lam[0]), ("mixed", 0.0, 50, LAM_INF))

# %% [markdown]
# Targets outside the range: an error that states the range, or the nearest end, flagged:

# %%
rc2 = RateController(None, None, engine=FakeEngine(T_f[:5], bits_f))
test_fail(lambda: rc2.solve(300), contains="outside the achievable range")
test_fail(lambda: rc2.solve(1), contains="outside the achievable range")
r = rc2.solve(300, clamp=True)
test_eq(list(r.status), ["clamped_max"] * 5); test_eq(r.status[~r.clamped].tolist(), []); test_eq(r.lam, np.zeros(5))
r = rc2.solve(1, clamp=True)
test_eq(list(r.status), ["clamped_min"] * 5); test_eq(r.lam, np.full(5, LAM_INF))
rg = rc2.achievable_range()
test_eq(rg.min_bpf[~(rg.min_bpf < 3)].tolist(), []); test_eq(rg.max_bpf[~(rg.max_bpf > 225)].tolist(), [])
test(rg.attrs["set_min"], rg.attrs["set_max"], operator.lt, "<")
test_fail(lambda: rc2.solve(50, mode="other"), contains="mode must be")
test_fail(lambda: rc2.solve([1, 2]), contains="one value per utterance")
test_fail(lambda: rc2.solve(float("nan")), contains="finite and positive")


# %% [markdown]
# ## Functions
#
# `solve_lambda` and `solve_many` wrap a `RateController`; `compress_at_bpf` is the one-utterance form behind
# `eib-compress FEATURES.npy OUT.eib --checkpoint DIR --bpf Y`: it returns `(λ, stream)`, the stream being exactly
# what `eib.bitstream.compress` writes at that λ, and raises an `EibError` stating the achievable range when `Y` is
# outside it.

# %%
#| export
def solve_lambda(codec, utterances, target_bpf, mode: str = "utterance", count: str = "stream", tol: float | None = None,
                 max_iter: int = 12, warm_start=None, clamp: bool = False, batch_size: int | None = None, ids=None,
                 mix: bool = True) -> RateResult:
    """λ for `target_bpf` (one number, or one per utterance) on the real streams of `utterances` (list of (T, D) arrays):
    per utterance (`mode="utterance"`) or one λ for the set (`mode="set"`, total bits / total frames). `count="stream"`
    counts the whole container, `"payload"` the range-coder payload only. Out-of-range targets: EibError, or the
    nearest end flagged `clamped_*` with `clamp=True`."""
    rc = RateController(codec, utterances, count=count, batch_size=batch_size, ids=ids)
    return rc.solve(target_bpf, mode=mode, tol=tol, max_iter=max_iter, clamp=clamp, warm_start=warm_start, mix=mix)

def solve_many(codec, utterances, targets, mode: str = "utterance", count: str = "stream", tol: float | None = None,
               max_iter: int = 12, clamp: bool = True, batch_size: int | None = None, ids=None,
               progress: bool = False, mix: bool = True) -> list[RateResult]:
    "`solve_lambda` for each of `targets` in order, each search warm-started from the answers before it."
    rc = RateController(codec, utterances, count=count, batch_size=batch_size, ids=ids)
    return rc.solve_many(targets, mode=mode, tol=tol, max_iter=max_iter, clamp=clamp, progress=progress, mix=mix)

def achievable_range(codec, utterances, count: str = "stream", ids=None) -> pd.DataFrame:
    "Per utterance: the smallest (λ → ∞) and largest (λ = 0) real stream rate in BPF; the set's in `.attrs`."
    return RateController(codec, utterances, count=count, ids=ids, calibrate=False).achievable_range()

def compress_at_bpf(codec, features, bpf: float, tol: float = 0.25, progress: bool = False) -> tuple[float, bytes]:
    """(λ, stream): the `eib.bitstream` stream of one utterance `features` (T, D) whose whole size is within `tol`
    of `bpf` bits per frame: byte-for-byte what `eib.bitstream.compress(codec, features, λ)` writes, unless
    rate(λ) jumps over the target (then some frames use a second λ, see `RateResult.lam2`; the stream decodes the same way)."""
    rc = RateController(codec, [features])
    rc.engine.progress = progress  # a bar per encoder pass (long inputs)
    r = rc.solve(bpf, tol=tol, clamp=False)
    return float(r.lam[0]), rc.stream(0)

def lambda_for_bpf(codec, features, bpf: float, tol: float = 0.25) -> float:
    "λ at which `eib.bitstream.compress(codec, features, λ)` gives `bpf` ± `tol` bits per frame (whole stream)."
    return compress_at_bpf(codec, features, bpf, tol)[0]


# %% [markdown]
# ## Several processes
#
# Per-utterance searches are independent, so `solve_sharded` splits the utterances over `workers` processes of the
# standard library's process pool (`multiprocessing.Pool`, spawned; one torch thread each, utterances balanced by
# frames; each shard's answers come back through a manager queue as they are found, and leaving the pool
# terminates its workers, so an interrupted sweep leaves no process behind) and yields each target's merged `RateResult` as soon as
# every shard has solved it. On 2 cores two single-threaded processes beat one two-threaded process, whose
# small per-position matrix products do not split well. `passes` of a merged result is the largest over the
# shards (they run side by side), `frames_encoded` the sum.

# %%
#| export
def _shard_run(q, k, codec, utts, ids, targets, count, tol, max_iter, mix):
    "Worker: one controller over a shard of utterances; puts (k, what, payload) on `q`."
    try:
        torch.set_num_threads(1)
        rc = RateController(codec, utts, count=count, ids=ids)
        q.put((k, "range", rc.achievable_range()))
        for t in targets: q.put((k, float(t), rc.solve(t, mode="utterance", tol=tol, max_iter=max_iter, clamp=True, mix=mix)))
        q.put((k, "done", rc.engine.passes))
    except BaseException as e:  # report, never hang the parent
        q.put((k, "error", f"{type(e).__name__}: {e}"))

def _merge(parts, order, ids) -> RateResult:
    "One RateResult from shard results `parts` (in shard order); `order[k]` = original indices of shard k."
    idx = np.concatenate(order); inv = np.empty_like(idx); inv[idx] = np.arange(len(idx))
    cat = lambda f: np.concatenate([getattr(p, f) for p in parts])[inv]
    toks = [t for p in parts for t in p.tokens]
    p0 = parts[0]
    return RateResult(target=cat("target"), lam=cat("lam"), bits=cat("bits"), frames=cat("frames"), ideal_bits=cat("ideal_bits"),
                      distortion=cat("distortion"), status=cat("status"), evals=cat("evals"), passes=max(p.passes for p in parts),
                      mode=p0.mode, count=p0.count, tol=p0.tol, seconds=max(p.seconds for p in parts),
                      frames_encoded=sum(p.frames_encoded for p in parts), tokens=[toks[i] for i in inv], ids=ids,
                      lam2=cat("lam2"), split=cat("split"))

def _shards(T: np.ndarray, workers: int) -> list[np.ndarray]:
    "Utterance indices split into `workers` shards of about equal frames (longest first, greedy), each sorted."
    load, out = np.zeros(workers), [[] for _ in range(workers)]
    for u in np.argsort(-T, kind="stable"):
        k = int(np.argmin(load)); out[k].append(int(u)); load[k] += T[u]
    return [np.array(sorted(o), dtype=int) for o in out if o]

def solve_sharded(codec, utterances, targets, workers: int = 2, ids=None, count: str = "stream", tol: float | None = None,
                  max_iter: int = 12, mix: bool = True, on_range=None, timeout: float = 3600.0):
    """Per-utterance rate control of `targets` (in order; clamped targets flagged) with the utterances split over
    `workers` processes; yields `(target, RateResult)` per target. `on_range(df)` gets the achievable-range table."""
    import multiprocessing as mp, queue as _queue
    codec = as_codec(codec)
    utts = check_utterances(utterances, codec.rvq.cfg.dim)
    ids = list(ids) if ids is not None else None
    targets = [float(t) for t in targets]
    if not targets: return
    T = np.array([len(u) for u in utts])
    order = _shards(T, max(1, min(int(workers), len(utts))))
    ctx = mp.get_context("spawn")
    from multiprocessing.managers import SyncManager
    manager = SyncManager(ctx=ctx)
    manager.start(die_with_parent)  # the queue's server and the workers stop when this process dies, even by kill -9
    with manager, ctx.Pool(len(order), initializer=die_with_parent) as pool:  # the standard library's process pool
        q = manager.Queue()
        for k, o in enumerate(order):
            pool.apply_async(_shard_run, (q, k, codec, [utts[i] for i in o], None if ids is None else [ids[i] for i in o],
                                          targets, count, tol, max_iter, mix))
        got, ranges, nxt = {}, {}, 0
        while nxt < len(targets):
            try: k, what, payload = q.get(timeout=timeout)
            except _queue.Empty: raise EibError(f"rate-control workers sent nothing for {timeout:.0f} s") from None
            if what == "error": raise EibError(f"rate-control worker {k} failed: {payload}")
            if what == "done": continue
            if what == "range":
                ranges[k] = payload
                if len(ranges) == len(order) and on_range is not None:
                    df = pd.concat([ranges[j] for j in range(len(order))], ignore_index=True)
                    df = df.iloc[np.argsort(np.concatenate(order), kind="stable")].reset_index(drop=True)
                    df.attrs.update(set_min=float((df.min_bpf * df.frames).sum() / df.frames.sum()),
                                    set_max=float((df.max_bpf * df.frames).sum() / df.frames.sum()), count=count)
                    on_range(df)
                continue
            got.setdefault(what, {})[k] = payload
            while nxt < len(targets) and len(got.get(targets[nxt], {})) == len(order):
                parts = got.pop(targets[nxt])
                yield targets[nxt], _merge([parts[j] for j in range(len(order))], order, ids)
                nxt += 1
    # leaving the `with` (finished, failed, interrupted or abandoned) terminates the pool's workers


# %% [markdown]
# ## On a real codec
#
# A tiny codec trained here on the synthetic store (committed with the repository): 10 groups × 2 layers × 16 codes,
# a one-layer entropy model. Every answer is checked against `eib.bitstream`: the stream at the answer's λ has
# exactly the counted size and decodes to the returned tokens.

# %%
from eib.features import load_store
from eib.rvq import RVQConfig, fit_rvq
from eib.ecvq import train_entropy_model
from eib.bitstream import stream_bpf, payload_bpf
from eib.core import repo_root
_st = load_store(repo_root() / "data_subset" / "synth")
_ids = list(_st.manifest.id[:48])
_x = [_st.frames(i) for i in _ids]
torch.manual_seed(0)
rvq_t = fit_rvq(np.concatenate(_x[8:]), RVQConfig.for_dim(130, layers=2, codes=16), iters=4, progress=False)
model_t, _ = train_entropy_model(rvq_t, np.concatenate(_x[8:44]), np.concatenate(_x[44:]), rounds=1, epochs=8, max_steps=100,
                                 config=dict(d_model=32, n_layers=1, n_heads=2, d_ff=64), progress=False)
utt = _x[:8]
rng_t = achievable_range((rvq_t, model_t), utt)
rng_t.round(2)

# %%
rc_t = RateController((rvq_t, model_t), utt, ids=_ids[:8])
lo_t, hi_t = rng_t.min_bpf.max(), rng_t.max_bpf.min()  # targets every utterance can reach
for tgt in np.linspace(lo_t + 3, hi_t - 3, 3).round(1):
    r = rc_t.solve(tgt)
    # a 51-frame stream moves in whole bytes (0.16 BPF) and, when frames are split between two λ, in whole frames:
    # where no split lands within 0.25 the answer is the nearest one, flagged `step`
    test_eq(set(r.status[~r.converged]) - {"step"}, set())
    assert np.abs(r.error[r.converged]).max() <= 0.25 and np.abs(r.error).max() <= 0.5 and abs(r.set_error) <= 0.25, r.summary()
    for i in (0, 5):
        data = compress((rvq_t, model_t), utt[i], r.lam[i])
        test_eq(len(data) * 8, r.bits[i]); test_close(stream_bpf(data), r.bpf[i], eps=1e-9)
        test_eq(decompress((rvq_t, model_t), data)[0].numpy(), r.tokens[i].astype(np.int64))
    print(tgt, r.summary()["set_bpf"], "passes", r.passes)
test_eq(rc_t.engine.mismatch, 0)

# %%
# a codec with inter-frame context: the same search on whole utterances coded in order (one λ per utterance, no split)
from eib.entropy import EntropyConfig, EntropyModel
cm_t = EntropyModel(EntropyConfig(**{**model_t.cfg.to_dict(), "context": "frame"})).eval()
cm_t.load_state_dict(model_t.state_dict(), strict=False)
with torch.no_grad(): cm_t.ctx.weight.normal_(0, 0.05)
rc_c = RateController((rvq_t, cm_t), utt[:4])
rg_c = rc_c.achievable_range()
tgt = float(np.round((rg_c.min_bpf.max() + rg_c.max_bpf.min()) / 2, 1))
rx = rc_c.solve(tgt)
test_eq(set(rx.status[~rx.converged]) - {"step"}, set()); test_eq(set(rx.status) & {"mixed"}, set())
assert np.abs(rx.error[rx.converged]).max() <= 0.25 and abs(rx.set_error) <= 0.25, rx.summary()
for i in (0, 3):
    data = compress((rvq_t, cm_t), utt[i], rx.lam[i])
    test_eq(len(data) * 8, rx.bits[i]); test_eq(decompress((rvq_t, cm_t), data)[0].numpy(), rx.tokens[i].astype(np.int64))
print("context frame:", tgt, rx.summary()["set_bpf"], "passes", rx.passes)

# %% [markdown]
# `subset` keeps the answers of some utterances. Per-utterance control answers each utterance on its own, so they are
# the answers of a search over those utterances alone, up to near-ties of the float distortion that another batch
# size may break the other way (the sweep searches the test and training subsets at once).

# %%
_sub = r.subset([5, 0, 2])
_alone = RateController((rvq_t, model_t), [utt[i] for i in (5, 0, 2)]).solve(float(r.target[0]))
test_eq((_sub.ids, _sub.frames.tolist(), list(_sub.status)), ([_ids[i] for i in (5, 0, 2)], _alone.frames.tolist(), list(_alone.status)))
assert np.abs(_sub.bpf - _alone.bpf).max() <= 0.5, (_sub.bpf, _alone.bpf)  # both within the search's tolerance of the target
_agree = np.mean([(a == b).mean() for a, b in zip(_sub.tokens, _alone.tokens)])
assert _agree > 0.97, _agree  # near-ties of the float distortion may fall the other way in another batch

# %% [markdown]
# One λ for the set, payload-only counting, out-of-range targets, and the one-utterance helper behind
# `eib-compress --bpf`:

# %%
r = rc_t.solve((lo_t + hi_t) / 2, mode="set")
test_eq(len(set(r.lam)), 1); assert abs(r.set_error) <= 0.1, r.summary()
rp = RateController((rvq_t, model_t), utt[:3], count="payload").solve((lo_t + hi_t) / 2)
test_eq(rp.status[~rp.converged].tolist(), [])
for i in range(3):
    data = compress((rvq_t, model_t), utt[i], rp.lam[i])
    test_close(payload_bpf(data), rp.bpf[i], eps=1e-9); test(stream_bpf(data), rp.bpf[i], operator.gt, ">")
test_fail(lambda: rc_t.solve(rng_t.max_bpf.max() + 5), contains="outside the achievable range")
r = rc_t.solve(rng_t.max_bpf.max() + 5, clamp=True)
test_eq(set(r.status), {"clamped_max"}); test_close(r.bpf, rng_t.max_bpf.values, eps=1e-9)
_mid = float(rng_t.min_bpf[1] + rng_t.max_bpf[1]) / 2
lam, data = compress_at_bpf((rvq_t, model_t), utt[1], _mid)
test_eq(data, compress((rvq_t, model_t), utt[1], lam)); assert abs(stream_bpf(data) - _mid) <= 0.25, (stream_bpf(data), _mid)
test_fail(lambda: lambda_for_bpf((rvq_t, model_t), utt[1], 1.0), contains="outside the achievable range")

# a mixed answer is a valid stream: frames [0, k) from one λ, the rest from another
A, B = rc_t.engine.evaluate([2, 2], [0.05, 5.0])
M = rc_t.engine.mix(2, A, B, 20)
data = rc_t.engine.stream_bytes(2, M)
test_eq(len(data), M.stream_len); assert B.stream_len < M.stream_len < A.stream_len, (B.stream_len, M.stream_len, A.stream_len)
test_eq(decompress((rvq_t, model_t), data)[0].numpy(), np.concatenate([A.tokens[:20], B.tokens[20:]]).astype(np.int64))

# %% [markdown]
# Two processes give the same kind of answer as one controller (each shard calibrates on its own frames, so the
# λ values may differ within the tolerance), in the original order:

# %%
import multiprocessing as _mp
from eib.rate import solve_sharded as _sharded  # the exported function: spawned workers import it from eib.rate
_rngs = []
_tg = [float(np.round(lo_t + 4, 1)), float(np.round((lo_t + hi_t) / 2, 1))]
_out = list(_sharded((rvq_t, model_t), utt, _tg, workers=2, ids=_ids[:8], on_range=_rngs.append))
test_eq([t for t, _ in _out], _tg); test_eq(_out[0][1].ids, _ids[:8])
test_close(_rngs[0].max_bpf.values, rng_t.max_bpf.values, eps=1e-9)
for t, r in _out:  # as above: the 51-frame utterance may be left at a step
    assert np.abs(r.error[r.converged]).max() <= 0.25 and np.abs(r.error).max() <= 0.5, r.summary()
    test_eq(r.frames, np.array([len(u) for u in utt]))
    data = compress((rvq_t, model_t), utt[3], r.lam[3]) if r.status[3] == "ok" else None
    if data is not None: test_eq(decompress((rvq_t, model_t), data)[0].numpy(), r.tokens[3].astype(np.int64))
_gen = _sharded((rvq_t, model_t), utt, _tg, workers=2)
test_eq(next(_gen)[0], _tg[0]); _gen.close()  # a consumer that stops early (an interrupted sweep) ...
test_eq(_mp.active_children(), [])  # ... leaves no worker behind

# %% [markdown]
# ## Measured
#
# `.venv/bin/python benchmarks/bench_rate.py` (defaults: the whole RAVDESS test split, 360 utterances, 67 517
# frames, ComParE features; the cpu-preset codec `checkpoints/ravdess_cpu` made by `eib-train` and never committed;
# `solve_sharded` over 2 processes × 1 torch thread; per-utterance control of the whole stream at every target
# 10, 15, ..., 200, 220, 240 BPF), on the idle two-core machine:
#
# | | measured | bar |
# |---|---|---|
# | achievable range | set 9.88–127.02 BPF; utterance minima 9.49–10.25, maxima 100.4–153.9 | |
# | targets inside every utterance's range | 19 of 41 (10–100); above, the utterances past their maximum are clamped and flagged | |
# | worst set error at those targets | 0.076 BPF | ≤ 0.25 |
# | utterances within 1 BPF | 100% at every target (8594 unclamped pairs: 99.95% within 0.25, max 0.458) | ≥ 98% |
# | batched passes per target | median 6, max 7 (+1 calibration, +2 for the range) | median ≤ 6 |
# | time for the whole list | 860 s wall (14.3 min), 1692 CPU-s, range and calibration included | < 15 min |
# | thesis scheme (linear bisection in [1e-4, 32], 1 BPF, ≤ 50 iterations) | 3.68 s per utterance-target on 4 utterances × 3 targets; 4 of 12 outside 1 BPF (target 180 is above those utterances' maxima) | |
#
# Per frame-target ours is 61.8× faster than the thesis scheme. The time goes into re-encoding the frames whose
# tokens change at the new λ: about one test set's worth of frames per target (0.6 in the first pass, the rest in
# the later, smaller passes), with the exact coding model at about 1100 frames per second per core. The same run
# one commit earlier (before `ecvq_encode` reused its distortion buffer) took 902 s.
# #
# # **The current recipe's codec reaches far higher rates, and costs more.** A codec trained on 2026-12-08 by
# # `eib-train --features data_subset/ravdess --preset cpu` (796 s on that day's machine) spans 30.2–447 BPF on the test split
# # (utterance minima 29.9–30.6, maxima 354–531): 36 of the 41 targets lie inside every utterance's range (10–30 are
# # clamped at the λ → ∞ end), against 19 above, and each re-encodes about 1.2 test sets' worth of frames. Where the time
# # went (`benchmarks/bench_rate.py --limit 40 --thesis-utts 0 --profile 40`, one process, all 41 targets, cProfile):
# # the first block's attention over its table (`_attend_table`) 28%, the fixed-point linear layers (`torch.addmm`) 18%,
# # `ecvq_encode`'s own loop 9%, `_freqs_rows` 7%, `CodingModel.step`'s own code 4%, `log2` of the frequencies 3%; 113 361
# # coding steps of 215 frames each on average — the batches of `WORK_MIB`, sized for key/value caches that this
# # one-block model does not keep. Two changes followed, each keeping every token and byte: such a model codes
# # `WORK_MAX` = 2048 frames per batch, and a resumed frame joins its batch at its own first position. The same profile
# # on 6 targets after them: 6295 steps of 958 frames, `_attend_table` 29%, `addmm` 23%, the loop 7%. Side by side in
# # one run (`--limit 60 --thesis-utts 0 --against e044af2`, 60 test utterances, all 41 targets, 2 processes): 281 s
# # against 423 s (1.51×), the same set rate and passes at every target; set error ≤ 0.040 BPF, every utterance within
# # 1 BPF at every target, median 5 passes. Projected to the whole split, 27.7 min: the 5-minute bar of issue 14 is not
# # met with this codec on this machine; what is left is the arithmetic of the coding model itself (attention and
# # linear layers, half of the time).

# %% [markdown]
# ## Command line
#
# The console scripts live here, with rate control, which `--bpf` needs.
#
# `eib-compress FEATURES.npy OUT.eib --checkpoint DIR (--lam X | --bpf Y)` and
# `eib-decompress IN.eib OUT.npy --checkpoint DIR`. Both exit with code 2 and a one-line message on a user
# error. `--bpf` asks the project's rate controller (`eib.rate.compress_at_bpf`) for the λ whose whole stream
# (container included) lands within 0.25 BPF of the target, measured on actual stream bytes; a target outside the
# utterance's achievable range is refused with the range in the message.

# %%
#| export
LONG_INPUT = 30000  # frames (10 minutes at 50 Hz): from here on the console scripts show progress

def _load_features(path) -> np.ndarray:
    p = Path(path)
    if not p.is_file(): raise EibError(f"no such features file: {p}")
    with open(p, "rb") as f:
        if f.read(6) != b"\x93NUMPY": raise EibError(f"{p} is not a .npy file (it lacks NumPy's header); save features with numpy.save")
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
    ap.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    a = ap.parse_args(argv)
    return run_cli("eib-compress", lambda: _compress(a), a.debug)

def _compress(a) -> int:
    out = check_output(a.out, a.features, a.checkpoint)
    codec = load_codec(a.checkpoint)
    x = check_features(_load_features(a.features), codec.rvq.cfg.dim)
    long = len(x) >= LONG_INPUT
    if long: print(f"eib-compress: {len(x)} frames ({len(x) / FRAME_RATE / 60:.1f} min of features): progress below", file=sys.stderr)
    if a.bpf is not None:
        lam, data = compress_at_bpf(codec, x, a.bpf, progress=long)
    else: lam = a.lam; data = compress(codec, x, lam, progress=long)
    atomic_write_bytes(out, data)
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
    ap.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    a = ap.parse_args(argv)
    return run_cli("eib-decompress", lambda: _decompress(a), a.debug)

def _decompress(a) -> int:
    p = Path(a.stream)
    if not p.is_file(): raise EibError(f"no such stream file: {p}")
    out = check_output(a.out, a.stream, a.checkpoint)
    codec = load_codec(a.checkpoint)
    data = p.read_bytes()
    _, y = decompress(codec, data, progress=stream_info(data).frames >= LONG_INPUT)
    atomic_save_npy(out, y)
    print(f"{a.out}: {y.shape[0]} frames x {y.shape[1]} dims")
    return 0


# %%
import tempfile, contextlib, io
from pathlib import Path
from eib.codec import Codec, save_codec
from eib.bitstream import compress_with_result
_c, _xs = Codec(rvq_t, model_t), utt[1]
_data, _res = compress_with_result(_c, _xs, 0.05)
with tempfile.TemporaryDirectory() as d:
    d = Path(d); save_codec(_c, d / "ckpt"); np.save(d / "x.npy", _xs)
    with contextlib.redirect_stdout(io.StringIO()) as so:
        test_eq(compress_cli([str(d / "x.npy"), str(d / "x.eib"), "--checkpoint", str(d / "ckpt"), "--lam", "0.05"]), 0)
        test_eq(decompress_cli([str(d / "x.eib"), str(d / "y.npy"), "--checkpoint", str(d / "ckpt")]), 0)
        test_eq(compress_cli([str(d / "x.npy"), str(d / "b.eib"), "--checkpoint", str(d / "ckpt"), "--bpf", f"{_mid:.3f}"]), 0)
    print(so.getvalue())
    test_eq((d / "x.eib").read_bytes(), _data)
    test_eq(np.load(d / "y.npy"), _res.recon.numpy())
    b_eib = (d / "b.eib").read_bytes()
    test_close(stream_bpf(b_eib), _mid, eps=0.25)  # the rate controller's tolerance, on the whole stream
    _last = so.getvalue().splitlines()[-1]; assert f"{stream_bpf(b_eib):.3f} BPF" in _last, (stream_bpf(b_eib), _last)
    test_eq(len(decompress(_c, b_eib)[0]), len(_xs))
    np.save(d / "bad.npy", _xs[:, :3]); (d / "junk.eib").write_bytes(b"hello")
    with contextlib.redirect_stderr(io.StringIO()) as se:
        test_eq(compress_cli([str(d / "bad.npy"), str(d / "o.eib"), "--checkpoint", str(d / "ckpt"), "--lam", "1"]), 2)
        test_eq(decompress_cli([str(d / "junk.eib"), str(d / "o.npy"), "--checkpoint", str(d / "ckpt")]), 2)
        test_eq(decompress_cli([str(d / "x.eib"), str(d / "o.npy"), "--checkpoint", str(d / "nowhere")]), 2)
        test_eq(compress_cli([str(d / "x.npy"), str(d / "o.eib"), "--checkpoint", str(d / "ckpt"),
                              "--bpf", f"{float(rng_t.max_bpf[1]) + 5:.3f}"]), 2)
        (d / "dir.eib").mkdir()
        test_eq(compress_cli([str(d / "x.npy"), str(d / "dir.eib"), "--checkpoint", str(d / "ckpt"), "--lam", "1"]), 2)
        test_eq(compress_cli([str(d / "x.npy"), str(d / "x.npy"), "--checkpoint", str(d / "ckpt"), "--lam", "1"]), 2)
        test_eq(decompress_cli([str(d / "x.eib"), str(d / "x.npy" / "y.npy"), "--checkpoint", str(d / "ckpt")]), 2)
        (d / "text.npy").write_text("1 2 3")
        test_eq(compress_cli([str(d / "text.npy"), str(d / "o.eib"), "--checkpoint", str(d / "ckpt"), "--lam", "1"]), 2)
    errs = se.getvalue().strip().splitlines()
    print("\n".join(errs))
    test_eq(len(errs), 8)
    test_eq([(p, e) for p, e in zip(["existing folder", "also an input", "is a file", "not a .npy file"], errs[4:]) if p not in e], [])
    test_eq([(p, e) for p, e in zip(["shape (T, 130)", "not an eib stream", "no codec checkpoint", "outside the achievable range"], errs)
             if p not in e], [])
    test_eq(sorted(f.name for f in d.iterdir()), ["b.eib", "bad.npy", "ckpt", "dir.eib", "junk.eib", "text.npy", "x.eib", "x.npy", "y.npy"])

# %% [markdown]
# ## Rate control in pictures
#
# Two pictures of the tiny codec above, drawn with altair as inline SVG (vl-convert: no script from a CDN). This
# chapter comes before the figures chapter, so it draws them itself; for a sweep's results, the book's figure of
# the same kind is `eib.figures.fig_rate_control`.
#
# **Rate against λ.** The rate of the whole stream (container included) of four utterances over a log-spaced
# grid of λ around the data's λ scale (`RateEngine.scale`). It falls as λ grows, from the λ = 0 end of the
# achievable range to the λ → ∞ end, flat near both and in small steps in between (whole bytes; tokens switching
# to SKIP): this is the curve the controller searches, in ln λ, one per utterance.

# %%
import altair as alt
import xml.etree.ElementTree as ET
alt.renderers.enable("svg")  # vl-convert draws each chart as an inline SVG, the same in JupyterLab and on the website
_us = np.repeat([0, 1, 2, 3], 33)
_lams = np.tile(rc_t.engine.scale() * np.exp(np.linspace(-7, 9, 33)), 4)
lam_curve = pd.DataFrame(dict(id=[_ids[u] for u in _us], lam=_lams,
                              bpf=[8 * s.stream_len / rc_t.T[u] for u, s in zip(_us, rc_t.engine.evaluate(_us, _lams))]))
test_close(stream_bpf(compress((rvq_t, model_t), utt[2], float(_lams[80]))), lam_curve.bpf[80], eps=1e-9)  # real streams
_ends = lam_curve.groupby("id", sort=False).bpf.agg(["first", "last"])
test_close(_ends["first"].to_numpy(), rng_t.max_bpf[:4].to_numpy(), eps=0.5)   # smallest λ: the top of the range
test_close(_ends["last"].to_numpy(), rng_t.min_bpf[:4].to_numpy(), eps=0.5)    # largest λ: the bottom
fig_lam = alt.Chart(lam_curve).mark_line(point=alt.OverlayMarkDef(size=14)).encode(
    alt.X("lam:Q", title="λ (log scale)", scale=alt.Scale(type="log"), axis=alt.Axis(format="~g", labelOverlap=True)),
    alt.Y("bpf:Q", title="rate of the whole stream (BPF)", scale=alt.Scale(zero=False)),
    alt.Color("id:N", title="utterance", legend=alt.Legend(orient="bottom")),
    tooltip=["id:N", alt.Tooltip("lam:Q", format=".3g"), alt.Tooltip("bpf:Q", format=".2f")]).properties(
    width=560, height=260, title=alt.TitleParams("Rate against λ, per utterance (tiny codec, synthetic speech)",
                                                 subtitle="each point: the size of a real stream, in bits per frame"))
_w = float(ET.fromstring(fig_lam._repr_mimebundle_()["image/svg+xml"]).get("width"))
assert _w <= 640, _w  # fits the website's text column (eib.figures.PAGE_WIDTH)
fig_lam

# %% [markdown]
# **Achieved against target.** The controller's answers for eight targets across the range, per utterance:
# above, the achieved rate against the line y = x; below, the error (achieved − target) of the utterances that
# could reach their target. Up to the top of the smallest utterance range every utterance lands on its target:
# within the 0.25 BPF tolerance, or, flagged `step`, at the nearest rate its stream can take. The last target lies
# above some utterances' λ = 0 rate: answered with `clamp=True`, those stay at their largest rate, below the line,
# flagged `clamped_max`, while the others still reach it.

# %%
_targets = np.append(np.linspace(lo_t + 1, hi_t - 1, 7), rng_t.max_bpf.median()).round(1)
achieved = pd.concat([rc_t.solve(float(t), clamp=True).table().assign(target=float(t)) for t in _targets], ignore_index=True)
test_eq(len(achieved), 8 * len(utt))
_free = achieved[~achieved.status.str.startswith("clamped")]
assert _free.error.abs().max() <= 0.5 and (_free.error.abs() <= 0.25).mean() >= 0.9, _free.error.describe()
_cl = achieved[achieved.status == "clamped_max"]
assert 0 < len(_cl) < len(utt) and (_cl.target == _targets[-1]).all(), _cl               # only at the last target, not all
test_close(_cl.bpf.to_numpy(), rng_t.max_bpf.to_numpy()[[_ids.index(i) for i in _cl.id]], eps=1e-9)  # at the λ = 0 end
_diag = alt.Chart(pd.DataFrame(dict(target=[_targets[0], _targets[-1]], bpf=[_targets[0], _targets[-1]]))).mark_line(
    color="grey", strokeDash=[4, 3]).encode(alt.X("target:Q"), alt.Y("bpf:Q"))
_x_t = alt.X("target:Q", title="target rate (BPF)", scale=alt.Scale(zero=False), axis=alt.Axis(tickCount=8, labelOverlap=True))
_enc = dict(color=alt.Color("status:N", title="status", legend=alt.Legend(orient="bottom")),
            tooltip=["id:N", "target:Q", alt.Tooltip("bpf:Q", format=".2f"), alt.Tooltip("error:Q", format="+.3f"), "status:N",
                     alt.Tooltip("lam:Q", format=".3g")])
_top = alt.layer(_diag, alt.Chart(achieved).mark_point(filled=True, size=30, opacity=0.7).encode(
    _x_t, alt.Y("bpf:Q", title="achieved rate (BPF)"), **_enc)).properties(
    width=560, height=240, title="Achieved against target rate, per utterance (dashed: y = x)")
_bottom = alt.layer(alt.Chart(pd.DataFrame(dict(error=[0.0]))).mark_rule(color="grey").encode(alt.Y("error:Q")),
                    alt.Chart(_free).mark_point(filled=True, size=30, opacity=0.7).encode(
                        _x_t, alt.Y("error:Q", title="achieved − target (BPF)"), **_enc)).properties(
    width=560, height=140, title="Error of the utterances that reach their target")
fig_ach = alt.vconcat(_top, _bottom).properties(title=alt.TitleParams(
    "Rate control on the tiny codec", subtitle="eight utterances of synthetic speech, the whole stream counted"))
_w = float(ET.fromstring(fig_ach._repr_mimebundle_()["image/svg+xml"]).get("width"))
assert _w <= 640, _w
fig_ach
