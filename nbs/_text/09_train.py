# %% [markdown]
# # Training a codec
#
# > Training the codec (grouped RVQ + entropy model) from a feature store, and its checkpoints.

# %%
#| default_exp train

# %%
#| export
from __future__ import annotations
import argparse, json, math, platform, sys, time
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np
import pandas as pd
import torch
from eib.core import EibError, add_job_args, call, check_output, jobs_from_args, run_cli, run_jobs
from eib.rvq import RVQConfig, GroupedRVQ, fit_rvq, rvq_report, lloyd_update
from eib.ecvq import ecvq_encode, ecvq_encode_utterances, has_context, lambda_grid, train_entropy_model
from eib.codec import Codec, load_codec, save_codec
from eib.entropy import CONTEXTS
from eib.features import load_store

# %%
import tempfile
from eib.codec import load_codec
from eib.core import atomic_write_json
import operator
from fastcore.test import test, test_eq, test_fail, test_close


# %% [markdown]
# ## Training data
#
# `train_codec` reads a feature store (`eib.features.load_store`) or, for quick experiments and tests, an
# in-memory dict `{utterance id: (T, D) array}` (all of it training data, no speakers). It uses the TRAIN
# split only (utterances whose extraction failed are left out) and holds out a validation part for early
# stopping: whole speakers (about `val_frac` of them, at least one) when there are at least three training
# speakers, otherwise whole utterances. The choice is seeded.

# %%
#| export
def open_features(features):
    "-> (manifest DataFrame with id/speaker/split, frames(id) function, meta dict, description)."
    if isinstance(features, dict):
        if not features: raise EibError("no utterances in the features dict")
        ids = list(features)
        man = pd.DataFrame({"id": ids, "speaker": [None] * len(ids), "split": ["train"] * len(ids)})
        dims = {np.asarray(v).shape[-1] for v in features.values()}
        if len(dims) != 1 or any(np.asarray(v).ndim != 2 for v in features.values()):
            raise EibError(f"every utterance must be a (T, D) array with one D; got D in {sorted(dims)}")
        return man, lambda i: np.asarray(features[i], np.float32), {"dim": dims.pop(), "encoder": "in-memory"}, {"source": "in-memory dict"}
    if isinstance(features, (str, Path)):
        p = Path(features)
        if not p.exists():
            raise EibError(f"no feature store at {p}; make one with `eib-prepare` (e.g. data_subset/synth)")
        store = load_store(p); desc = {"source": str(p)}
    else: store, desc = features, {"source": type(features).__name__}
    man = store.manifest.copy()
    for col in ("id", "split"):
        if col not in man: raise EibError(f"feature store manifest lacks column {col!r}")
    if "error" in man: man = man[man["error"].isna() | (man["error"].astype(str).str.strip() == "")]
    if "speaker" not in man: man["speaker"] = None
    return man, store.frames, dict(store.meta), desc

def split_train_val(manifest: pd.DataFrame, val_frac: float = 0.1, seed: int = 0) -> tuple[list, list, str]:
    "Train-split ids -> (train ids, validation ids, how): whole speakers if >= 3 speakers, else utterances."
    tr = manifest[manifest["split"].astype(str) == "train"]
    if len(tr) < 2:
        raise EibError(f"need at least 2 training utterances, found {len(tr)} (splits: {sorted(manifest['split'].astype(str).unique())})")
    rng = np.random.default_rng(seed)
    tr = tr.assign(speaker=tr["speaker"].where(tr["speaker"].astype(str).str.strip() != "", None))
    spk = sorted(tr["speaker"].dropna().astype(str).unique())
    if len(spk) >= 3 and tr["speaker"].notna().all():
        val_spk = set(rng.permutation(spk)[:max(1, round(val_frac * len(spk)))].tolist())
        isv = tr["speaker"].astype(str).isin(val_spk)
        return tr.loc[~isv, "id"].tolist(), tr.loc[isv, "id"].tolist(), f"speakers {sorted(val_spk)}"
    ids = tr["id"].tolist()
    nv = max(1, round(val_frac * len(ids)))
    perm = rng.permutation(len(ids))
    return [ids[i] for i in sorted(perm[nv:])], [ids[i] for i in sorted(perm[:nv])], f"{nv} utterances"


# %%
man = pd.DataFrame({"id": [f"u{i}" for i in range(12)], "speaker": [f"s{i % 4}" for i in range(12)],
                    "split": ["train"] * 10 + ["test"] * 2})
tr, va, how = split_train_val(man, 0.25, seed=0)
test_eq(len(tr) + len(va), 10)
test_eq(set(man.set_index("id").loc[tr, "speaker"]) & set(man.set_index("id").loc[va, "speaker"]), set())  # speaker-disjoint
test_eq(split_train_val(man, 0.25, seed=0), (tr, va, how))  # seeded
test_eq(split_train_val(man.assign(speaker=None), 0.2)[2], "2 utterances")
test_fail(lambda: split_train_val(man.assign(split="test")), contains="at least 2 training")

# %% [markdown]
# ## Presets and training
#
# Presets fix the RVQ shape (128 codes per layer; the number of layers per group derived from the group width by
# `RVQConfig.for_dim`) and the training **budget**; the entropy model's size for each preset lives in
# `eib.entropy`. Frames at 50 Hz are highly redundant, so training samples rather than enumerates: the `cpu`
# preset fits on at most `max_frames` training frames drawn at random (seeded) and validates on at most
# `max_val_frames`, and the entropy model gets at most `entropy_steps` optimiser steps per round. The `paper`
# preset uses every frame and stops on validation only. `budget` (`eib-train --budget 4`) multiplies the
# preset's sampled frames and steps, which makes the trade between time and quality explicit. Training:
#
# 1. fit the grouped RVQ on the (sampled) training frames (`fit_rvq`, SKIP-aware);
# 2. train the entropy model on ECVQ tokens of those frames, each at a λ drawn from the grid, re-encoding
#    with the current model for `rounds` rounds and stopping early on the validation loss
#    (`eib.ecvq.train_entropy_model`);
# 3. optionally (`refine=True`) move every code to the mean of the residuals ECVQ assigns it at the middle
#    λ (`lloyd_update`) and retrain the entropy model on the new tokens — kept only if it lowers the
#    validation distortion at no higher rate;
# 4. save and report: RVQ report, validation bits per frame and MSE per λ, time taken per phase.

# %%
#| export
PRESETS = {  # layers None: derived from the group width (RVQConfig.for_dim); max_frames None: every frame
    "cpu": dict(layers=None, codes=128, rvq_iters=12, skip_prob=0.25, max_frames=60000, max_val_frames=8000, entropy_steps=1200),
    "paper": dict(layers=None, codes=128, rvq_iters=20, skip_prob=0.25, max_frames=None, max_val_frames=None, entropy_steps=None),
}

def sample_frames(x: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    "At most `n` rows of `x`, drawn without replacement (seeded), in their original order."
    if n is None or len(x) <= n: return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), int(n), replace=False))]

def sample_utterances(ids, frames_of, n: int | None, seed: int) -> list:
    """Whole utterances (their frames in order) of `ids`, in a seeded random order, until they hold at least `n` frames
    (None: all of them, in the order given): what an entropy model with inter-frame context trains and validates on."""
    order = range(len(ids)) if n is None else np.random.default_rng(seed).permutation(len(ids))
    out, got = [], 0
    for i in order:
        if n is not None and got >= n: break
        u = np.asarray(frames_of(ids[i]), np.float32)
        if u.ndim == 2 and len(u): out.append(u); got += len(u)
    if not out: raise EibError("no frames in the selected utterances")
    return out

def _check_preset(preset: str) -> dict:
    if preset not in PRESETS: raise EibError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    return PRESETS[preset]

def stack_frames(ids, frames_of) -> np.ndarray:
    arrs = [np.asarray(frames_of(i), np.float32) for i in ids]
    arrs = [a for a in arrs if a.ndim == 2 and len(a)]
    if not arrs: raise EibError("no frames in the selected utterances")
    return np.concatenate(arrs, 0)

def _report_summary(rep: dict) -> dict:
    pos = rep["positions"]
    return {k: rep[k] for k in ("frames", "mse", "mse_normalised", "cosine", "mse_normalised_by_layers")} | {
        "perplexity_mean": float(pos.perplexity.mean()), "perplexity_min": float(pos.perplexity.min()),
        "utilisation_mean": float(pos.utilisation.mean()), "utilisation_min": float(pos.utilisation.min())}


# %%
_s = sample_frames(np.arange(10.0)[:, None], 4, seed=0)
test_eq(_s.shape, (4, 1)); test_eq(np.sort(_s[:, 0]), _s[:, 0])  # a seeded sample, in the original order
test_eq(sample_frames(np.arange(3.0), None, 0), np.arange(3.0))  # None: every frame


# %%
#| export
def train_codec(features, preset: str = "cpu", out: str | Path | None = None, seed: int = 0, lams=None,
                rounds: int | None = None, val_frac: float = 0.1, device: str = "cpu", refine: bool = False,
                progress: bool = True, entropy_kw: dict | None = None, command: str | None = None,
                max_frames: int | None = -1, max_val_frames: int | None = -1, budget: float = 1.0, context: str = "none",
                codebooks=None, **rvq_kw) -> Codec:
    """Train RVQ + entropy model on the TRAIN split of `features` (store path, store, or dict of arrays); save to
    `out`. `rvq_kw` overrides the preset's `layers`, `codes` or any `fit_rvq` argument (`iters`, `skip_prob`, ...);
    `entropy_kw` goes to `eib.ecvq.train_entropy_model` (`epochs`, `max_steps`, `config`, ...).
    `max_frames`, `max_val_frames`: the budget (-1: the preset's; None: every frame); `budget` multiplies the preset's
    training frames and entropy-model steps (4: a 4x longer run of the same recipe). `context` (`eib.entropy.CONTEXTS`):
    "frame" trains an entropy model that also sees the previous frame, on whole utterances (`sample_utterances`, as many
    frames as the budget's) coded in order; the codebooks are fitted exactly as for "none". `codebooks` (a checkpoint
    folder or `Codec`): keep its grouped RVQ and its entropy model's size, and train only the entropy model: a twin of
    that codec (with `context="frame"`: the same codec with inter-frame context)."""
    p = _check_preset(preset)
    cfg_ctx = ((entropy_kw or {}).get("config") or {}).get("context")
    if cfg_ctx is not None and context not in ("none", cfg_ctx):
        raise EibError(f"context {context!r} but entropy_kw's config says {cfg_ctx!r}; give it once")
    context = cfg_ctx or context
    if context not in CONTEXTS: raise EibError(f"unknown entropy-model context {context!r}; known: {', '.join(CONTEXTS)}")
    if context != "none" and refine: raise EibError("refine (Lloyd-updated codebooks) is not available with inter-frame context yet")
    if not (isinstance(budget, (int, float)) and not isinstance(budget, bool) and math.isfinite(budget) and budget > 0):
        raise EibError(f"budget must be a positive number, got {budget!r}")
    scaled = lambda n: None if n is None else max(1, round(n * budget))
    t0 = time.time()
    man, frames_of, meta, desc = open_features(features)
    tr_ids, va_ids, how = split_train_val(man, val_frac, seed)
    xtr, xva = stack_frames(tr_ids, frames_of), stack_frames(va_ids, frames_of)
    n_tr, n_va = len(xtr), len(xva)
    max_frames = scaled(p["max_frames"]) if max_frames == -1 else max_frames
    max_val_frames = p["max_val_frames"] if max_val_frames == -1 else max_val_frames
    xtr, xva = sample_frames(xtr, max_frames, seed), sample_frames(xva, max_val_frames, seed + 1)
    dim = int(meta.get("dim", xtr.shape[1]))
    if xtr.shape[1] != dim: raise EibError(f"store metadata says dim {dim} but frames have {xtr.shape[1]} dims")
    base = None if codebooks is None else load_codec(codebooks) if isinstance(codebooks, (str, Path)) else codebooks
    if base is not None and base.cfg.dim != dim:
        raise EibError(f"the codebooks of {codebooks} code {base.cfg.dim}-dim frames, the features have {dim}")
    cfg = base.cfg if base is not None else RVQConfig.for_dim(dim, layers=rvq_kw.pop("layers", p["layers"]), codes=rvq_kw.pop("codes", p["codes"]))
    if progress: print(f"eib-train: {cfg.groups} groups x {cfg.layers} layers x {cfg.codes} codes on {len(xtr)} of {n_tr} "
                       f"training frames (validation {len(xva)} of {n_va})", file=sys.stderr)
    torch.manual_seed(seed)
    kw = dict(iters=p["rvq_iters"], skip_prob=p["skip_prob"]) | rvq_kw
    if base is not None: kw = {"kept_from": str(codebooks) if isinstance(codebooks, (str, Path)) else "a Codec", "fingerprint": base.fingerprint}
    rvq = base.rvq if base is not None else fit_rvq(xtr, cfg, seed=seed, device=device, progress=progress, **kw)
    t_rvq = time.time() - t0
    rep_va = _report_summary(rvq_report(rvq, xva))
    data = desc | {"encoder": meta.get("encoder"), "dim": dim, "grouping": f"{cfg.groups} groups of {cfg.group_dim}",
                   "train_utterances": len(tr_ids), "val_utterances": len(va_ids), "validation": how,
                   "train_frames": len(xtr), "val_frames": len(xva), "train_frames_available": n_tr, "val_frames_available": n_va}
    info = {"command": command, "preset": preset, "seed": seed, "data": data, "rvq_fit": kw,
            "metrics": {"rvq_val": rep_va, "rvq_fit_s": round(t_rvq, 1)}}
    lams = [float(l) for l in (lambda_grid(rvq, xtr) if lams is None else lams)]
    ekw = dict(preset=preset, lams=lams, seed=seed, device=device, progress=progress) | ({} if rounds is None else {"rounds": rounds}) \
        | ({} if p["entropy_steps"] is None else {"max_steps": scaled(p["entropy_steps"])}) | (entropy_kw or {})
    etr, eva = xtr, xva  # frames drawn apart; with context: whole utterances, as many frames
    if base is not None and base.model is not None:  # the twin's entropy model has the base's size
        size = {k: v for k, v in base.model.cfg.to_dict().items() if k in ("d_model", "n_layers", "n_heads", "d_ff", "dropout")}
        ekw["config"] = size | (ekw.get("config") or {})
    if context != "none":
        ekw["config"] = dict(ekw.get("config") or {}, context=context)
        etr, eva = sample_utterances(tr_ids, frames_of, len(xtr), seed), sample_utterances(va_ids, frames_of, len(xva), seed + 1)
        data |= {"entropy_model_utterances": dict(train=len(etr), val=len(eva), train_frames=sum(map(len, etr)), val_frames=sum(map(len, eva)))}
    model, history = train_entropy_model(rvq, etr, eva, **ekw)
    t_eval = time.time()
    rd = evaluate_codec(Codec(rvq, model), eva, lams)
    info |= {"lams": lams, "entropy_train": {k: v for k, v in ekw.items() if k not in ("lams", "progress")}, "history": history}
    info["metrics"] |= {"val_rd": rd.to_dict(orient="list"), "val_bits_per_token": _best_val_bits(history),
                        "entropy_train_s": round(time.time() - t0 - t_rvq, 1), "phases_s": _phases(t_rvq, history, time.time() - t_eval)}
    info["budget"] = budget
    if refine:
        rvq, model, history, info = _refine(rvq, model, rd, info, xtr, xva, lams, ekw, seed, progress)
    info["metrics"]["train_s"] = round(time.time() - t0, 1)
    if progress: print("eib-train: " + ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in info["metrics"]["phases_s"].items())
                       + f"; {info['metrics']['train_s']:.0f} s in all", file=sys.stderr)
    info["versions"] = {"torch": torch.__version__, "python": platform.python_version()}
    codec = Codec(rvq, model, info)
    if out is not None: save_codec(codec, out)
    return codec

def _phases(t_rvq: float, history: list, t_eval: float) -> dict:
    "Seconds per training phase: the RVQ fit, each round's ECVQ tokens and model fit, the validation R-D points."
    out = {"rvq_fit": round(t_rvq, 1)}
    for r in sorted({h["round"] for h in history}):
        rows = [h for h in history if h["round"] == r]
        out |= {f"round_{r + 1}_tokens": rows[0].get("encode_s", 0.0), f"round_{r + 1}_model": max(h["seconds"] for h in rows)}
    return out | {"validation_rd": round(t_eval, 1)}

def _best_val_bits(history) -> float | None:
    "Validation bits per token of the kept model: the best epoch of the last round."
    if not history: return None
    last = max(h["round"] for h in history)
    return float(min(h["val_bits"] for h in history if h["round"] == last))

@torch.no_grad()
def evaluate_codec(codec: Codec, frames, lams, max_frames: int = 4096, seed: int = 0) -> pd.DataFrame:
    """Rate and distortion of ECVQ with the codec's float entropy model on `frames` (at most `max_frames`,
    a seeded sample) at each λ: ideal bits per frame, normalised MSE per dimension, SKIP rate. `frames` may be a list
    of whole utterances: then the first ones up to `max_frames` frames, each coded in order (`ecvq_encode_utterances`)."""
    if isinstance(frames, (list, tuple)):
        utts, n = [], 0
        for u in frames:
            if n >= max_frames: break
            utts.append(np.asarray(u, np.float32)); n += len(utts[-1])
    else:
        if has_context(codec.model): raise EibError("this codec's entropy model sees the previous frame: pass whole utterances (a list of (T, D) arrays)")
        x = np.asarray(frames, np.float32)
        if len(x) > max_frames: x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_frames, replace=False))]
        utts = [x]  # frames apart from their utterances: one block (a model without context codes them alike)
    rows = []
    for lam in lams:
        res = ecvq_encode_utterances(codec.rvq, codec.model, utts, float(lam), exact=False)
        tok, bits, dist = (torch.cat([getattr(r, k) for r in res]) for k in ("tokens", "bits", "distortion"))
        rows.append(dict(lam=float(lam), bpf=float(bits.mean()), mse=float(dist.mean()) / codec.cfg.dim,
                         skip_rate=float((tok == codec.cfg.skip).double().mean())))
    return pd.DataFrame(rows)

def mse_at_rate(ref: pd.DataFrame, new: pd.DataFrame) -> float:
    """Mean log2 ratio of `new`'s MSE to `ref`'s at the same rate (`ref` interpolated linearly in bpf and log MSE),
    over `new`'s points inside `ref`'s rate range; negative = `new` is better."""
    r = ref.sort_values("bpf")
    inside = new[(new.bpf >= r.bpf.min()) & (new.bpf <= r.bpf.max())]
    if inside.empty: return float("nan")
    ref_mse = 2 ** np.interp(inside.bpf, r.bpf, np.log2(r.mse))
    return float(np.mean(np.log2(inside.mse) - np.log2(ref_mse)))

def _refine(rvq, model, rd, info, xtr, xva, lams, ekw, seed, progress):
    """Lloyd-update the codebooks on ECVQ tokens of the training frames (each frame at a λ drawn from the grid),
    retrain the entropy model on the new codebooks, keep the result if validation MSE at equal rate drops."""
    t0 = time.time()
    g = np.random.default_rng(seed + 1)
    lt = np.asarray(lams)[g.integers(len(lams), size=len(xtr))]
    tok = ecvq_encode(rvq, model, xtr, lt, exact=False, progress=progress).tokens
    rvq2 = lloyd_update(rvq, xtr, tok)
    same_model = mse_at_rate(rd, evaluate_codec(Codec(rvq2, model), xva, lams))
    model2, hist2 = train_entropy_model(rvq2, xtr, xva, **ekw)
    rd2 = evaluate_codec(Codec(rvq2, model2), xva, lams)
    gain = mse_at_rate(rd, rd2)
    keep = bool(np.isfinite(gain) and gain < 0)
    info["refine"] = {"log2_mse_ratio_at_equal_rate": gain, "log2_mse_ratio_old_entropy_model": same_model,
                      "kept": keep, "val_rd_refined": rd2.to_dict(orient="list"), "seconds": round(time.time() - t0, 1)}
    if not keep: return rvq, model, info["history"], info
    info["history"] = hist2
    info["metrics"] |= {"val_rd": rd2.to_dict(orient="list"), "val_bits_per_token": _best_val_bits(hist2)}
    info["metrics"]["rvq_val"] = _report_summary(rvq_report(rvq2, xva))
    return rvq2, model2, hist2, info


# %% [markdown]
# A quick run on a small random store (RVQ part; the entropy model is trained too when `eib.entropy`
# exists), saved and loaded back.

# %%
g = np.random.default_rng(0)
W = g.normal(size=(6, 26)).astype(np.float32)
toy = {f"u{i}": (g.normal(size=(80, 6)) @ W + g.normal(size=(80, 26)) * 0.1).astype(np.float32) for i in range(12)}
tiny = dict(epochs=3, config=dict(d_model=32, n_layers=1, n_heads=2, d_ff=64))
with tempfile.TemporaryDirectory() as d:
    cd = train_codec(toy, out=Path(d) / "ck", progress=False, codes=16, iters=4, lams=[0.01, 0.1, 1.0], rounds=1, entropy_kw=tiny)
    test_eq((cd.cfg.groups, cd.cfg.group_dim, cd.cfg.codes), (2, 13, 16))
    test_eq((cd.meta["data"]["train_utterances"], cd.meta["data"]["val_utterances"]), (11, 1))
    test(cd.meta["metrics"]["rvq_val"]["cosine"], 0.9, operator.gt, ">")
    rd = pd.DataFrame(cd.meta["metrics"]["val_rd"])
    assert rd.bpf.is_monotonic_decreasing and rd.mse.is_monotonic_increasing, rd[["bpf", "mse"]].to_dict("list")  # larger λ: fewer bits, more error
    cl = load_codec(Path(d) / "ck")
    test_eq(cl.fingerprint, cd.fingerprint)
    tk = cd.rvq.encode_nearest(toy["u0"])
    test_eq(cl.model.bits(tk).detach(), cd.model.eval().bits(tk).detach())  # the same entropy model comes back
    spec = json.loads((Path(d) / "ck" / "config.json").read_text())
    spec["entropy"]["config"]["d_model"] = 64; atomic_write_json(Path(d) / "ck" / "config.json", spec)
    test_fail(lambda: load_codec(Path(d) / "ck"), contains="does not fit the entropy model")
cr = train_codec(toy, progress=False, codes=16, iters=4, lams=[0.01, 0.1, 1.0], rounds=1, entropy_kw=tiny, refine=True)
rf = cr.meta["refine"]
assert np.isfinite(rf["log2_mse_ratio_at_equal_rate"]), rf; test_eq(rf["kept"], rf["log2_mse_ratio_at_equal_rate"] < 0)
test_eq(cr.meta["metrics"]["val_rd"], rf["val_rd_refined"] if rf["kept"] else cd.meta["metrics"]["val_rd"])
cx = train_codec(toy, progress=False, codes=16, iters=4, lams=[0.01, 0.1, 1.0], rounds=1, entropy_kw=tiny, context="frame")
test_eq((cx.model.cfg.context, cx.meta["data"]["entropy_model_utterances"]["train"]), ("frame", 11))  # whole utterances
test_eq([torch.equal(a, b) for a, b in zip(cx.rvq.state_dict().values(), cd.rvq.state_dict().values())], [True] * len(cd.rvq.state_dict()))  # the same codebooks
test(cx.fingerprint, cd.fingerprint, operator.ne, "!=")
rdx = pd.DataFrame(cx.meta["metrics"]["val_rd"])
assert rdx.bpf.is_monotonic_decreasing and rdx.mse.is_monotonic_increasing, rdx[["bpf", "mse"]].to_dict("list")
test_fail(lambda: evaluate_codec(cx, toy["u0"], [0.1]), contains="whole utterances")
test_fail(lambda: train_codec(toy, context="frame", refine=True), contains="not available with inter-frame context")
test_fail(lambda: train_codec(toy, context="word"), contains="known: none, frame")
tw = train_codec(toy, progress=False, lams=[0.01, 0.1, 1.0], rounds=1, entropy_kw=dict(epochs=2), context="frame", codebooks=cd)  # a twin of cd
test_eq((tw.rvq is cd.rvq, tw.model.cfg.context, tw.model.cfg.d_model, tw.meta["rvq_fit"]["fingerprint"]), (True, "frame", 32, cd.fingerprint))
test_fail(lambda: train_codec({k: v[:, :20] for k, v in toy.items()}, codebooks=cd), contains="26-dim")
test_fail(lambda: train_codec(toy, preset="huge"), contains="known: cpu, paper")
test_fail(lambda: train_codec("/nonexistent/store"), contains="eib-prepare")


# %% [markdown]
# ## Command line
#
# `eib-train --features data_subset/synth --preset cpu --out checkpoints/synth_cpu` trains and saves a
# codec, showing progress; a user error prints one line and exits with status 2.

# %%
#| export
def train_cli(argv=None) -> int:
    "Console script `eib-train`."
    ap = argparse.ArgumentParser(prog="eib-train", description="Train a grouped-RVQ + entropy-model codec on a feature store.")
    ap.add_argument("--features", required=True, help="feature store folder, e.g. data_subset/synth")
    ap.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    ap.add_argument("--out", required=True, help="checkpoint folder to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--lams", type=float, nargs="+", default=None, help="λ grid (default: the preset's)")
    ap.add_argument("--rounds", type=int, default=None, help="ECVQ re-encode rounds (default: the preset's)")
    ap.add_argument("--epochs", type=int, default=None, help="most entropy-model epochs per round (default: eib.entropy's)")
    ap.add_argument("--max-steps", type=int, default=None, help="most entropy-model optimiser steps per round")
    ap.add_argument("--max-frames", type=int, default=-1, help="training frames sampled (default: the preset's; 0: every frame)")
    ap.add_argument("--budget", type=float, default=1.0, help="multiply the preset's sampled frames and entropy-model steps (default 1)")
    ap.add_argument("--refine", action="store_true", help="Lloyd-refine the codebooks on ECVQ tokens once")
    ap.add_argument("--codebooks", default=None, help="a checkpoint whose codebooks and entropy-model size are kept: only "
                    "the entropy model is trained (with --context frame: that codec's twin with inter-frame context)")
    ap.add_argument("--context", default="none", choices=list(CONTEXTS), help="what the entropy model sees besides the "
                    "frame's earlier tokens: none, or frame (also the previous frame's tokens; trained on whole utterances)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    add_job_args(ap)
    a = ap.parse_args(argv)
    rc = run_cli("eib-train", lambda: _train(a, argv), a.debug, interrupted="interrupted; no checkpoint was written" if a.executor == "none"
                 else f"interrupted; a submitted job may still run and write the checkpoint (its log is in {a.jobs_dir})")
    if argv is None: sys.exit(rc)
    return rc

def _train(a, argv) -> int:
    if a.device == "cuda" and a.executor != "slurm" and not torch.cuda.is_available():  # a SLURM job finds its GPU there
        raise EibError("--device cuda but no CUDA device is available")
    check_output(a.out, a.features, folder=True)
    ekw = {k: v for k, v in (("epochs", a.epochs), ("max_steps", a.max_steps)) if v is not None}
    kw = dict(features=a.features, preset=a.preset, out=a.out, seed=a.seed, lams=a.lams, rounds=a.rounds,
              device=a.device, refine=a.refine, progress=not a.quiet, entropy_kw=ekw,
              max_frames=None if a.max_frames == 0 else a.max_frames, budget=a.budget, context=a.context, codebooks=a.codebooks,
              command=" ".join(["eib-train", *(sys.argv[1:] if argv is None else argv)]))
    c = run_jobs(call, [partial(train_codec, **kw)], jobs_from_args(a), name="eib-train")[0]  # executor none: here
    m = c.meta["metrics"]
    print(f"saved {a.out} (fingerprint {c.fingerprint}); RVQ val cosine {m['rvq_val']['cosine']:.4f}; {m['train_s']} s")
    return 0


# %%
test_eq(train_cli(["--features", "/nonexistent/store", "--out", "/tmp/never", "--quiet"]), 2)

# %% [markdown]
# ## The codec of the synthetic store
#
# The embedded default: the codec trained on the project's own synthetic corpus
# (`eib-train --features data_subset/synth --preset cpu --out checkpoints/synth_cpu`). This section loads
# that checkpoint (or trains it when it is missing, which takes minutes) and shows the RVQ report on the
# store's test split and the validation rate–distortion points. Run it with `nbdev_test --flags slow`, or
# with papermill, setting the parameters below.

# %% tags=["parameters"]
features = "../data_subset/synth"
checkpoint = "../checkpoints/synth_cpu"
preset = "cpu"

# %%
#| slow
from eib.features import load_store
ck = Path(checkpoint)
codec = load_codec(ck) if (ck / "config.json").exists() else train_codec(features, preset=preset, out=ck)
store = load_store(features)
rep = rvq_report(codec.rvq, store.stack("test"))
print({k: rep[k] for k in ("frames", "mse", "mse_normalised", "cosine")})
test(rep["cosine"], 0.8, operator.gt, ">")
rep["positions"].groupby("layer")[["perplexity", "utilisation"]].mean()

# %%
#| slow
pd.DataFrame(codec.meta["metrics"]["val_rd"]).round(4)
