# %% [markdown]
# # Rate and layer sweeps
#
# > Rate and layer sweeps: emotion recognition on decoded features across the rate axis

# %%
#| default_exp sweep

# %%
#| export
from __future__ import annotations
import json, math, platform, shlex, shutil, sys, time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
import numpy as np
import pandas as pd
import torch
from eib.core import EibError, Jobs, atomic_write_json, call, fingerprint, repo_root, run_jobs
from eib.bitstream import compress_tokens, decompress, token_intervals, token_streams
from eib.evaluate import (QUICK_RATES_BPF, SCALE_FLOOR, THESIS_RATES_BPF, evaluate_predictions, fit_probe, PlusHead, gaussian_rd_bound,
                          majority_baseline, store_split)
from eib.records import new_results, start_results, validate_results, write_results

# %%
from fastcore.test import test_eq, test_fail, test_close
from eib.codec import Codec

# %% [markdown]
# One sweep = one dataset, one encoder, one codec. `run_sweep` does seven steps in order, each a function of its own
# that reads and fills a `Sweep` (the store, the codec, the coded subsets, the results files):
#
# 1. **features** (`sweep_features`): the feature store `data_subset/<dataset>[_<encoder>]` (built with `eib.features.build_store` if
#    missing); `dataset="manifest"` takes any folder with a `manifest.csv` (`data_root`) under the name `name`;
# 2. **codec** (`sweep_codec`): `checkpoints/<dataset>_<preset>` loaded, or trained with `eib.train.train_codec` if missing;
# 3. **subsets** (`sweep_subsets`): the TEST subset (`select_subset`, `samples_per_emotion` per class,
#    seeded) and, for the matched probe, a training subset (`matched_per_emotion` per class);
# 4. **classifiers** (`sweep_classifiers`): the *fixed* linear probe, fitted on the unquantised TRAIN split (speaker-grouped CV; folds over
#    utterances when the corpus has a single training speaker, and the file says so), labels by the dataset's
#    protocol; and the *matched* probe, the same recipe fitted at every point on the **decoded** training subset
#    (`matched_per_emotion` training utterances per class, seeded), coded by the same codec with the same
#    per-utterance λ search as the test set (both subsets go through one search; per-utterance control answers each
#    utterance on its own);
# 5. **baselines and results files** (`sweep_results`): unquantised features and the majority class; the **Gaussian RD bound** on the test frames in
#    the codec's *normalised* space (per-dimension MSE after the codec's training-split standardisation, the
#    same space and unit as the codec's MSE);
# 6. **rate points** (`sweep_rate_points`): for each target BPF, `eib.rate` finds λ on the real stream size (whole container counted),
#    per utterance or per set; targets above an utterance's λ = 0 rate are capped there and flagged; the tokens
#    are decoded, the classifiers score the decoded frames; one stream per point is decoded from its bytes with
#    `eib.bitstream.decompress` to check it round-trips;
# 7. **layer sweep** (`sweep_layer_points`): plain RVQ, n = G..G·M layers spread over the groups (`spread_layers`; at most `layer_points`
#    depths, evenly spaced, when a deep codec has more), nearest code, no SKIP choice; its tokens are coded by a second entropy model of the codec's own shape trained on layer-sweep
#    tokens of the training split (n drawn per frame), and the rate is the size of the real range-coded stream.
#    The frames are encoded once at full depth (a depth's tokens are `GroupedRVQ.keep_layers` of them), and the depths
#    run in ascending order so that each codes only the positions from the first one where its tokens differ from the
#    last depth's (`token_intervals(prefix=...)`; an interval depends only on the tokens up to its own).
#
# The results files `rate_sweep_<DATASET>[_<encoder>].json` (fixed probe) and `..._matched.json` (matched probe)
# (`eib.records.RESULTS_SCHEMA`) are rewritten atomically after every point; a rerun skips the points already there. Seeds: `seed` drives the
# subsets, the classifiers and the bootstrap intervals; `codec_seed` (default 0, the committed checkpoints' seed) the
# training of a codec or layer-sweep model that is missing.
#
# With emotion2vec_plus features (`encoder="emotion2vec_plus_base"` or `_large`) and that model's weights present,
# the model's **own 9-class head** (`eib.evaluate.PlusHead`) scores the same decoded frames as a second classifier,
# into its own file `rate_sweep_<DATASET>_<encoder>_head.json`: features and head from the one model, checked by
# the weights' hash recorded in the store.

# %%
#| export
SPAN_RATES_BPF = (10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 250.0, 300.0, 350.0, 400.0, 450.0, 500.0, 600.0)
RATE_LISTS = {"quick": QUICK_RATES_BPF, "full": THESIS_RATES_BPF, "span": SPAN_RATES_BPF}

def resolve_rates(rates) -> list[float]:
    """`quick`, `full` (the thesis's 44 points, 10 to 300 BPF), `span` (15 points from 10 to 600 BPF, for deep codecs
    whose top rate lies far above 300) or a list of positive numbers -> sorted unique target BPFs."""
    if isinstance(rates, str):
        if rates not in RATE_LISTS:
            try: rates = json.loads(rates)
            except json.JSONDecodeError: raise EibError(f"unknown rate list {rates!r}; known: {', '.join(RATE_LISTS)}, or a list of numbers") from None
        else: return [float(r) for r in RATE_LISTS[rates]]
    try: r = sorted({float(x) for x in np.atleast_1d(np.asarray(rates, dtype=np.float64))})
    except (TypeError, ValueError): raise EibError(f"rates must be 'quick', 'full' or a list of numbers, got {rates!r}") from None
    if not r or not all(math.isfinite(x) and x > 0 for x in r): raise EibError(f"rates must be finite and positive, got {rates!r}")
    return r


# %%
test_eq(resolve_rates("quick"), [10.0, 100.0, 200.0, 300.0]); test_eq(len(resolve_rates("full")), 44)
test_eq((len(resolve_rates("span")), max(resolve_rates("span"))), (15, 600.0))
test_eq(resolve_rates([20, 10, 10]), [10.0, 20.0]); test_eq(resolve_rates("[5, 7.5]"), [5.0, 7.5])
test_fail(lambda: resolve_rates("fast"), contains="known: quick, full"); test_fail(lambda: resolve_rates([0]), contains="positive")


# %% [markdown]
# Paths. The notebook runs in `nbs/`, the console in the repository root: a relative `data_root` that does not
# exist from the working directory is tried against the repository root, so the same command line works from both.

# %%
#| export
def resolve_data_root(dataset: str, data_root=None) -> Path | None:
    "`data_root` as an existing folder (relative: to the working directory, else to the repository root); None stays None."
    if data_root is None or str(data_root) == "": return None
    p = Path(data_root).expanduser()
    cands = [p] if p.is_absolute() else [Path.cwd() / p, repo_root() / p]
    for c in cands:
        if c.is_dir(): return c.resolve()
    from eib.data import HOWTO
    raise EibError(f"{dataset}: no data at {' or '.join(str(c) for c in cands)}. To get it: "
                   f"{HOWTO.get(dataset, 'see eib.data')}; or pass data_root=<folder>.")

def _in_repo(p) -> Path:
    "A relative path of the repository (features, checkpoints) made absolute against the repository root."
    p = Path(p).expanduser()
    return p if p.is_absolute() else repo_root() / p

CLASSIFIER_SUFFIX = {"linear_probe": "", "matched_linear_probe": "_matched", "emotion2vec_plus_head": "_head"}

def context_suffix(context: str = "none") -> str:
    "The part of a checkpoint's and a results file's name that says the entropy model's inter-frame context: '' or `_context_<kind>`."
    from eib.entropy import CONTEXTS
    if context not in CONTEXTS: raise EibError(f"unknown entropy-model context {context!r}; known: {', '.join(CONTEXTS)}")
    return "" if context == "none" else f"_context_{context}"

def results_path(dataset: str, out_dir="evaluation_results", encoder: str = "compare", classifier: str = "linear_probe",
                 context: str = "none") -> Path:
    "Where a sweep of `dataset` writes its results: `rate_sweep_<DATASET>[_<encoder>][_context_<kind>][_matched|_head].json`."
    if classifier not in CLASSIFIER_SUFFIX: raise EibError(f"unknown classifier {classifier!r}; known: {', '.join(CLASSIFIER_SUFFIX)}")
    name = dataset.upper() + ("" if encoder == "compare" else f"_{encoder}") + context_suffix(context) + CLASSIFIER_SUFFIX[classifier]
    return Path(out_dir) / f"rate_sweep_{name}.json"


# %%
test_eq(resolve_data_root("ravdess", None), None)
test_eq(resolve_data_root("synth", "nbs"), repo_root() / "nbs")  # relative to the repository root from anywhere
test_fail(lambda: resolve_data_root("emodb", "no/such/folder"), contains="emodb: no data at")
test_eq(results_path("ravdess", "x").name, "rate_sweep_RAVDESS.json")
test_eq(results_path("ravdess", "x", "whisper_base", "matched_linear_probe", context="frame").name,
        "rate_sweep_RAVDESS_whisper_base_context_frame_matched.json")
test_fail(lambda: results_path("ravdess", context="word"), contains="known: none, frame")
test_eq(results_path("ravdess", "x", "emotion2vec_plus_base", "emotion2vec_plus_head").name,
        "rate_sweep_RAVDESS_emotion2vec_plus_base_head.json")


# %% [markdown]
# ## Features, codec, probe

# %%
#| export
def store_path(dataset: str, data_root=None, encoder: str = "compare", features_dir="data_subset", name: str | None = None) -> Path:
    "The folder of `dataset`'s feature store: `<features_dir>/<name or dataset>[_<encoder>]` (`eib.features.store_name`)."
    from eib.features import store_name
    return _in_repo(features_dir) / store_name(dataset, encoder, resolve_data_root(dataset, data_root), name)

def prepare_features(dataset: str, data_root=None, encoder: str = "compare", features_dir="data_subset",
                     device: str = "cpu", progress: bool = True, model_dir=None, name: str | None = None,
                     workers: int = 2, shard: tuple[int, int] | None = None):
    """The feature store of `dataset` (built from `data_root` if missing; `model_dir`: the encoder's weights) -> `FeatureStore`.
    `dataset="manifest"`: any corpus folder with a `manifest.csv` (`data_root`), stored under `name` (default: the folder's).
    `shard=(k, n)`: only encode the k-th of n shares of the missing feature files (`build_store`), for a job; returns the folder."""
    from eib.data import DATASETS
    from eib.features import ENCODERS, build_store, load_store
    if dataset not in DATASETS: raise EibError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    if encoder not in ENCODERS: raise EibError(f"unknown encoder {encoder!r}; known: {', '.join(ENCODERS)}")
    root = resolve_data_root(dataset, data_root)
    if dataset == "manifest" and root is None: raise EibError("dataset 'manifest' needs data_root=<folder with manifest.csv>")
    path = store_path(dataset, root, encoder, features_dir, name)
    if shard is not None or not (path / "meta.json").exists():
        build_store(dataset, root, encoder=encoder, out=path.parent, name=path.name, model_dir=model_dir, device=device, workers=workers,
                    progress=progress, command=f"eib.sweep.prepare_features({dataset!r}, encoder={encoder!r}, name={name!r})", shard=shard)
        if shard is not None: return path
    store = load_store(path)
    if store.encoder != encoder:
        raise EibError(f"{path} holds {store.encoder} features, not {encoder}; pass features_dir=<another folder>")
    return store


# %%
_st = prepare_features("synth")
test_eq((_st.encoder, _st.dim), ("compare", 130))
test_fail(lambda: prepare_features("tess"), contains="known: ravdess")
test_fail(lambda: prepare_features("manifest"), contains="needs data_root")
test_fail(lambda: prepare_features("synth", encoder="wav2vec"), contains="unknown encoder")


# %%
#| export
def default_checkpoint(dataset: str, preset: str, encoder: str = "compare", context: str = "none") -> Path:
    "`checkpoints/<dataset>_<preset>` (with `_<encoder>` for a non-default encoder, `_context_<kind>` with inter-frame context)."
    return repo_root() / "checkpoints" / (f"{dataset}_{preset}" + ("" if encoder == "compare" else f"_{encoder}") + context_suffix(context))

def get_codec(store, checkpoint, preset: str = "cpu", seed: int = 0, device: str = "cpu", progress: bool = True, context: str = "none"):
    "Load the codec at `checkpoint`, or train one on `store` (its entropy model with inter-frame `context`) and save it there."
    from eib.codec import load_codec
    from eib.train import train_codec
    ck = Path(checkpoint)
    if (ck / "config.json").exists(): codec = load_codec(ck)
    else: codec = train_codec(store, preset=preset, out=ck, seed=seed, device=device, progress=progress, context=context)
    if codec.model is None: raise EibError(f"{ck} is an RVQ-only codec; the sweep needs its entropy model — retrain it with eib-train")
    if codec.model.cfg.context != context:
        raise EibError(f"codec {ck} has an entropy model with context {codec.model.cfg.context!r}, the sweep asked for {context!r}; "
                       f"pass context={codec.model.cfg.context!r} or another checkpoint")
    if codec.cfg.dim != store.dim:
        raise EibError(f"codec {ck} is for {codec.cfg.dim}-dim frames, the store {store.path} has {store.dim}; pass checkpoint=<matching codec>")
    return codec


# %%
#| export
def fit_classifier(store, protocol: str, seed: int = 42):
    "Linear probe on the unquantised TRAIN split; returns (probe, train labels)."
    _, frames, y, spk = store_split(store, protocol, "train")
    return fit_probe(frames, y, groups=spk, seed=seed), y

def test_subset(store, protocol: str, samples_per_emotion: int | None = 100, seed: int = 42):
    "(ids, frames, labels) of the evaluation subset of the TEST split."
    ids, frames, y, _ = split_subset(store, protocol, "test", samples_per_emotion, seed)
    return ids, frames, y

def split_subset(store, protocol: str, split: str, samples_per_emotion: int | None = 100, seed: int = 42):
    "(ids, frames, labels, speakers) of up to `samples_per_emotion` utterances per class of `split` (seeded)."
    from eib.data import apply_protocol, select_subset
    m = apply_protocol(store.manifest, protocol, verbose=False)
    sub = select_subset(m, samples_per_emotion, seed=seed, split=split)
    ids = list(sub["id"])
    return ids, [store.frames(u) for u in ids], sub["label"].to_numpy(str), sub["speaker"].to_numpy(str)

def plus_head(store, classes, model_dir=None):
    """emotion2vec_plus's own head over `classes` (`eib.evaluate.PlusHead`) when `store` holds a plus model's
    features and that model's weights are present, else None; the head must be the model that made the store."""
    from eib.features import E2V_MODELS, get_encoder
    name = store.encoder
    if name not in E2V_MODELS or not E2V_MODELS[name][3]: return None
    try: enc = get_encoder(name, model_dir=model_dir, check_dim=False)
    except EibError as e:
        print(f"{name}'s own head is not evaluated: {e}")
        return None
    if enc.version != store.meta.get("encoder_version"):
        raise EibError(f"the head's model ({enc.version}) is not the one that made {store.path} "
                       f"({store.meta.get('encoder_version')}): features and head must come from the same model")
    return PlusHead(enc, classes)


# %%
_ids, _fr, _y = test_subset(_st, "synth", 2)
test_eq(len(_ids), 12); test_eq(sorted(set(_y)), ["angry", "fear", "happy", "neutral", "sad", "surprise"])
test_eq(plus_head(_st, ["sad"]), None)  # ComParE features: no head to ask

# %% [markdown]
# ## The layer-sweep baseline
#
# Plain residual VQ with the codec's own codebooks: n layers in all, spread as evenly as possible over the G
# groups (`spread_layers`), each the nearest code (no SKIP decision: layers beyond a group's share send SKIP,
# which the entropy model learns to predict almost for free). A context-free code would handicap this baseline,
# so it gets an entropy model of the codec's own shape (`EntropyModel`, same config) trained by
# `eib.entropy`'s own training loop on layer-sweep tokens of the training split, n drawn uniformly per frame,
# early-stopped on the held-out speakers that `eib.train` holds out. It is saved beside the codec
# (`<checkpoint>_layers`) as a loadable codec, so its streams decode with `eib.bitstream.decompress`.

# %%
#| export
LAYER_STEPS = 300  # training steps of the layer-sweep entropy model (warm-started from the codec's)

def layer_tokens(rvq, x, n: int) -> torch.Tensor:
    "Plain-RVQ tokens of frames `x` with `n` layers spread over the groups."
    from eib.rvq import spread_layers
    c = rvq.cfg
    return rvq.encode_nearest(x, layers_per_group=spread_layers(n, c.groups, c.layers))

def layer_depths(lo: int, hi: int, most: int = 24) -> list[int]:
    "At most `most` layer counts, evenly spaced from `lo` to `hi` inclusive (every one when there are fewer)."
    if hi - lo + 1 <= most: return list(range(lo, hi + 1))
    return sorted({int(v) for v in np.linspace(lo, hi, most).round()})

def train_layer_model(codec, store, seed: int = 0, max_steps: int = LAYER_STEPS, epochs: int = 8, device: str = "cpu",
                      progress: bool = True, warm: bool = True):
    """An `EntropyModel` (the codec's config) trained on layer-sweep tokens of `store`'s training split for at most
    `max_steps` steps, validation-stopped; `warm`: starting from the codec's own entropy model (it knows the codebooks:
    on RAVDESS 300 such steps end 1.7% below 1500 steps from scratch, in a third of the time), else from a fresh one."""
    from tqdm.auto import tqdm
    from eib.entropy import EntropyModel
    from eib.ecvq import fit_entropy_model
    from eib.train import open_features, stack_frames, split_train_val
    man, frames_of, _, _ = open_features(store)
    tr_ids, va_ids, how = split_train_val(man, 0.1, seed)
    rvq, c = codec.rvq, codec.cfg
    g = torch.Generator().manual_seed(seed)
    def toks(x):
        n = torch.randint(c.groups, c.positions + 1, (len(x),), generator=g)
        out = torch.empty(len(x), c.positions, dtype=torch.long)
        for k in n.unique().tolist(): out[n == k] = layer_tokens(rvq, x[(n == k).numpy()], k)
        return out
    tr, va = toks(stack_frames(tr_ids, frames_of)), toks(stack_frames(va_ids, frames_of))
    torch.manual_seed(seed)
    model = EntropyModel(codec.model.cfg)
    if warm: model.load_state_dict(codec.model.state_dict())
    model = model.to(device)
    lr = 1e-3 if model.cfg.d_model <= 128 else 5e-4
    bar = tqdm(total=epochs, desc="layer-sweep entropy model", disable=not progress)
    model, hist = fit_entropy_model(model, tr, va, epochs=epochs, max_steps=max_steps, batch_size=256, lr=lr, patience=3,
                                    generator=g, device=device, bar=bar)
    bar.close()
    return model.cpu().eval(), dict(history=hist, validation=how, train_frames=len(tr), val_frames=len(va),
                                    max_steps=max_steps, epochs=epochs, seed=seed, warm=warm)

def layer_codec_ready(codec, checkpoint) -> bool:
    """Whether `checkpoint` holds the layer-sweep codec of `codec` (made from its RVQ: the same base fingerprint). A model
    of an earlier recipe is kept (its own recipe is in its config's `layer_model`): the committed ones code the pinned
    reference streams."""
    from eib.codec import load_codec
    ck = Path(checkpoint)
    return (ck / "config.json").exists() and load_codec(ck).meta.get("base_fingerprint") == codec.fingerprint

def get_layer_codec(codec, store, checkpoint, seed: int = 0, device: str = "cpu", progress: bool = True,
                    max_steps: int = LAYER_STEPS, warm: bool = True):
    "The layer-sweep codec (codec's RVQ + its own entropy model) at `checkpoint`, trained and saved if missing."
    from eib.codec import Codec, load_codec, save_codec
    ck = Path(checkpoint)
    if layer_codec_ready(codec, ck): return load_codec(ck)
    model, info = train_layer_model(codec, store, seed=seed, device=device, progress=progress, max_steps=max_steps, warm=warm)
    lc = Codec(codec.rvq, model, dict(kind="layer_sweep", base_fingerprint=codec.fingerprint, layer_model=info))
    save_codec(lc, ck)
    return lc


# %% [markdown]
# A small random codec (k-means codebooks from a few frames, an untrained entropy model) checks the layer-sweep
# streams: they decode with `eib.bitstream.decompress` to exactly the tokens coded, and their size is the ideal code
# length plus a small fixed cost.

# %%
from eib.rvq import RVQConfig, fit_rvq
from eib.entropy import EntropyConfig, EntropyModel
_x = np.concatenate(_fr)
_rvq = fit_rvq(_x, RVQConfig.for_dim(130, layers=3, codes=8), iters=1, progress=False)
torch.manual_seed(0)
_em = EntropyModel(EntropyConfig.for_rvq(_rvq.cfg, "cpu", d_model=16, n_layers=1, n_heads=2, d_ff=32)).eval()
_toks = [layer_tokens(_rvq, f, n) for f, n in zip(_fr[:3], (10, 20, 30))]
test_eq([int((t == _rvq.cfg.skip).sum(1)[0]) for t in _toks], [20, 10, 0])
_ss = compress_tokens((_rvq, _em), _toks)
for _t, _s in zip(_toks, _ss): test_eq(decompress((_rvq, _em), _s)[0].numpy(), _t.numpy())
from eib.entropy import CodingModel
for _t, _s in zip(_toks, _ss):  # the stream is the ideal code length plus a small container and termination cost
    _ideal = float(CodingModel(_em).bits(_t).sum()); assert _ideal <= 8 * len(_s) <= _ideal + 8 * 48, (_ideal, len(_s))
test_eq((layer_depths(10, 30), layer_depths(8, 64)[:4], len(layer_depths(8, 64)), layer_depths(8, 64)[-1]),
        (list(range(10, 31)), [8, 10, 13, 15], 24, 64))  # ComParE's 21 depths all; a deep codec's 57 thinned to 24


# %% [markdown]
# ## The sweep

# %%
#| export
def _stats(v) -> dict:
    v = np.asarray(v, np.float64)
    return dict(mean=float(v.mean()), std=float(v.std()), min=float(v.min()), max=float(v.max()))

def _mse(dist, T, dim) -> float:
    "Per-dimension MSE in normalised space from per-utterance mean squared error per frame (summed over dims)."
    return float((np.asarray(dist) * T).sum() / T.sum() / dim)

def _evaluate(probe, frames, y, seed) -> dict:
    return evaluate_predictions(y, probe.predict_proba(frames), probe.classes_, seed=seed)

def _roundtrip(codec, data: bytes, tokens) -> None:
    tok, _ = decompress(codec, data)
    if not np.array_equal(tok.numpy(), np.asarray(tokens, np.int64)):
        raise EibError("a stream did not decode to the tokens it coded: the codec is broken (report it)")


# %%
#| export
_NOTES = ("Rates are whole eib.bitstream containers (header, payload, coder termination, CRC) per utterance, in bits per "
          "frame. MSE and rd_bound: mean squared error per dimension in the codec's normalised space (training-split "
          "standardisation). {clf} Targets above an utterance's lambda=0 rate are capped there (capped=true). Layer "
          "sweep: plain RVQ, nearest code, n layers spread over groups, coded by an entropy model of the codec's shape "
          "trained on layer-sweep tokens.")
_CLF_NOTES = {"linear_probe": "The classifier is the FIXED linear probe: fitted once on pooled UNQUANTISED training-split "
              "frames, applied unchanged to the decoded test frames of every point.",
              "matched_linear_probe": "The classifier is the MATCHED linear probe: the same recipe (fit_probe) fitted at "
              "every point on the DECODED training subset (coded by the same codec and the same per-utterance lambda "
              "search), so it measures the emotion information the code still carries; the unquantised baseline is that "
              "recipe fitted on the same training subset, unquantised.",
              "emotion2vec_plus_head": "The classifier is the emotion2vec_plus model's own 9-class head (the model that "
              "made the features), its probabilities restricted to the protocol's classes and renormalised; a class the "
              "head lacks gets probability 0."}

def _fixed(clf, y, seed):
    "Scorer of a classifier fitted once: the decoded training subset is not needed."
    return lambda recon, recon_train: (_evaluate(clf, recon, y, seed), None)

def _matched(y, y_train, spk_train, classes, seed):
    "Scorer that fits the probe recipe on the decoded training subset of each point."
    def score(recon, recon_train):
        p = fit_probe(recon_train, y_train, groups=spk_train, seed=seed)
        if p.classes_ != list(classes): raise EibError(f"the matched probe learned classes {p.classes_}, not {classes}")
        return _evaluate(p, recon, y, seed), dict(pooling=p.pooling, C=p.C, cv_best=p.cv["best"])
    return score

@dataclass
class Sweep:
    "What the steps of one sweep share: the store, the codec, the coded subsets and one results file per classifier."
    label: str
    store: object
    codec: object
    checkpoint: Path
    protocol: str
    seed: int
    ids: list = field(default_factory=list)  # the test subset
    frames: list = field(default_factory=list)
    y: np.ndarray | None = None
    train_ids: list = field(default_factory=list)  # the matched probe's training subset (empty without it)
    train_frames: list = field(default_factory=list)
    train_y: np.ndarray | None = None
    train_spk: np.ndarray | None = None
    outs: list = field(default_factory=list)  # (classifier kind, results path, results object, scorer)
    classes: list = field(default_factory=list)  # the classifiers' classes
    model_dir: object = None  # the encoder's weights (emotion2vec_plus's own head is rebuilt from them in a job)
    tag: str = ""  # what a job's point must have been computed for: every results file's configuration (`sweep_results`)
    context: str = "none"  # the codec's inter-frame context (`eib.entropy.CONTEXTS`): part of the results files' names

    @property
    def T(self) -> np.ndarray: return np.array([len(f) for f in self.frames])
    @property
    def matched(self) -> bool: return bool(self.train_ids)

    def done(self, key: str, ident: str) -> set:
        "The points (`key`: rate_points or layer_sweep, named by `ident`) present in every results file."
        return set.intersection(*({q[ident] for q in obj[key]} for _, _, obj, _ in self.outs))

    def score_point(self, point: dict, recon, recon_train) -> dict:
        """`{classifier kind: [point with its metrics, seconds the scoring took]}`: the decoded test frames `recon` scored
        by every classifier (the matched one fitted on the decoded training subset `recon_train`)."""
        out = {}
        for kind, _, _, score in self.outs:
            t0 = time.time()
            metrics, fit = score(recon, recon_train)
            out[kind] = [dict(point, metrics=metrics, **({} if fit is None else dict(classifier_fit=fit))), time.time() - t0]
        return out

    def merge_point(self, key: str, ident: str, scored: dict, secs: float):
        "Write each file's point of `scored` (`score_point`; the same point again replaces it); `secs`: the work before scoring."
        for kind, path, obj, _ in self.outs:
            p, s = scored[kind]
            obj[key] = sorted([q for q in obj[key] if q[ident] != p[ident]] + [p], key=lambda q: q[ident])
            timing, s = obj["timing"], secs + s
            timing["rate_points_s" if key == "rate_points" else "layer_points_s"][str(p[ident])] = round(s, 2)
            timing["total_s"] = round(timing.get("total_s", 0.0) + s, 2)
            write_results(path, obj)

    def save_point(self, key, ident, point, recon, recon_train, secs):
        "Score a point with every classifier and write it into each results file."
        self.merge_point(key, ident, self.score_point(point, recon, recon_train), secs)

    def for_jobs(self) -> "Sweep":
        """A copy to send to jobs: the store as its path and no frames (a job reads them from the store), no results objects,
        and no emotion2vec_plus model inside a scorer (a job loads its head again, `model_dir`)."""
        return replace(self, store=str(self.store.path), frames=[], train_frames=[],
                       outs=[(k, p, None, None if k == PlusHead.kind else s) for k, p, _, s in self.outs])

    def job_point(self, path: Path) -> dict | None:
        "The point a job wrote to `path` for this sweep (its `tag`), or None (no such file, or one of another sweep)."
        try: d = json.loads(path.read_text())
        except (OSError, ValueError): return None
        return d if d.get("tag") == self.tag else None

    def points_dir(self) -> Path:
        "Where jobs write their points before they are merged: beside the first results file, `<its name>.points/`."
        return self.outs[0][1].parent / (self.outs[0][1].stem + ".points")

    def merge_job_points(self, key: str, ident: str):
        """Merge the points jobs wrote (`point_job`) for this sweep into the results files, then remove them (merging again
        changes nothing); points left by a sweep of another codec, subset or classifier set are removed unmerged."""
        for f in sorted(self.points_dir().glob(f"{key}_*.json")):
            if (d := self.job_point(f)) is not None: self.merge_point(key, ident, d["scored"], d["secs"])
            f.unlink()
        if self.points_dir().is_dir() and not any(self.points_dir().iterdir()): self.points_dir().rmdir()

    def finish(self, t_start: float) -> Path:
        for _, path, obj, _ in self.outs:
            obj["timing"]["wall_s_last_run"] = round(time.time() - t_start, 2)
            write_results(path, obj)
        return self.outs[0][1]


def sweep_features(dataset, data_root, encoder, features_dir, device, progress, model_dir, name):
    "Step 1: the feature store and the sweep's label (the dataset, or the manifest corpus's name)."
    from eib.features import corpus_name
    store = prepare_features(dataset, data_root, encoder, features_dir, device, progress, model_dir=model_dir, name=name)
    return store, corpus_name(dataset, resolve_data_root(dataset, data_root), name)

def sweep_codec(store, label, encoder, checkpoint, preset, codec_seed, device, progress, context="none"):
    "Step 2: the codec at `checkpoint` (default `checkpoints/<label>_<preset>[_<encoder>][_context_<kind>]`), trained there if missing."
    ck = Path(checkpoint) if checkpoint is not None else default_checkpoint(label, preset, encoder, context)
    return get_codec(store, ck, preset, seed=codec_seed, device=device, progress=progress, context=context), ck

def codec_job(kw: dict) -> str:
    "In a job: train (or find) the codec of `sweep_codec`'s arguments `kw`, the store given as its folder; returns the checkpoint."
    from eib.features import load_store
    return str(sweep_codec(**dict(kw, store=load_store(kw["store"])))[1])

def sweep_subsets(sw: Sweep, samples_per_emotion, matched: bool, matched_per_emotion):
    "Step 3: the test subset and, for the matched probe, the training subset that is coded like it."
    sw.ids, sw.frames, sw.y = test_subset(sw.store, sw.protocol, samples_per_emotion, sw.seed)
    if matched:
        sw.train_ids, sw.train_frames, sw.train_y, sw.train_spk = split_subset(sw.store, sw.protocol, "train", matched_per_emotion, sw.seed)

def sweep_classifiers(sw: Sweep, model_dir) -> list:
    """Step 4: `(kind, classifier, scorer, training)` of each classifier: the fixed probe (unquantised training split),
    the matched probe (its recipe refitted on the decoded training subset at every point) and emotion2vec_plus's head."""
    probe, y_train = fit_classifier(sw.store, sw.protocol, sw.seed)
    sw.classes, sw.model_dir = list(probe.classes_), model_dir
    if set(sw.y) - set(probe.classes_): raise EibError(f"test labels {sorted(set(sw.y) - set(probe.classes_))} never occur in training")
    clfs = [("linear_probe", probe, _fixed(probe, sw.y, sw.seed), dict(fitted_on="unquantised training split", utterances=len(y_train),
                                                                       cv=probe.cv["scheme"]))]
    if sw.matched:
        clean = fit_probe(sw.train_frames, sw.train_y, groups=sw.train_spk, seed=sw.seed)
        clfs.append(("matched_linear_probe", clean, _matched(sw.y, sw.train_y, sw.train_spk, probe.classes_, sw.seed),
                     dict(fitted_on="decoded training split at each point", utterances=len(sw.train_ids), cv=clean.cv["scheme"])))
    head = plus_head(sw.store, probe.classes_, model_dir)
    if head is not None:
        clfs.append((head.kind, head, _fixed(head, sw.y, sw.seed), dict(fitted_on="the emotion2vec_plus model's own training",
                                                                         utterances=1, cv="none (a pretrained head)")))
    return clfs, y_train

def sweep_results(sw: Sweep, clfs, y_train, targets, out_dir, config: dict, command: str, force: bool, timing: dict,
                  matched_per_emotion, layer_sweep: bool):
    "Step 5: the baselines (unquantised, majority, Gaussian R(D) curve) and one results file per classifier, resumed if there."
    rvq, classes = sw.codec.rvq, clfs[0][1].classes_
    bound = gaussian_rd_bound(sw.frames, np.unique(np.r_[np.linspace(0, max(targets), 61), targets]),
                              mean=rvq.mean.numpy(), std=rvq.std.numpy())
    majority = majority_baseline(y_train, sw.y, classes, seed=sw.seed)
    for kind, clf, score, training in clfs:
        cfg = config | (dict(matched_per_emotion=matched_per_emotion, matched_ids_fingerprint=fingerprint(sw.train_ids))
                        if kind == "matched_linear_probe" else {})
        base = dict(unquantised=evaluate_predictions(sw.y, clf.predict_proba(sw.frames), classes, seed=sw.seed), majority=majority)
        skel = new_results(sw.label.upper(), sw.store.encoder, kind, sw.protocol, classes, cfg, base, bound, command=command,
                           classifier_training=training)
        skel["notes"] = _NOTES.format(clf=_CLF_NOTES[kind])
        path = results_path(sw.label, out_dir, sw.store.encoder, kind, sw.context)
        obj = start_results(path, skel, force=force)
        obj.setdefault("notes", skel["notes"])
        if {q["target_bpf"] for q in obj["rate_points"]} <= set(targets) and (layer_sweep or not obj["layer_sweep"]):
            obj["command"] = command  # a resumed file names the latest command that reproduces all of its points
        t = obj.setdefault("timing", {})
        t.update(timing, threads=torch.get_num_threads(), machine=platform.machine(), python=platform.python_version(), torch=torch.__version__)
        t.setdefault("rate_points_s", {}); t.setdefault("layer_points_s", {})
        write_results(path, obj)
        sw.outs.append((kind, path, obj, score))
    sw.tag = fingerprint(dict(configs=[obj["config"] for _, _, obj, _ in sw.outs], classifiers=[k for k, *_ in sw.outs],
                              train_ids=sw.train_ids))
    if force and sw.points_dir().is_dir(): shutil.rmtree(sw.points_dir())  # afresh: points jobs left earlier are not merged

def rate_point(sw: Sweep, t: float, r_all, maxb, workers: int) -> tuple[dict, list, list | None]:
    """The point at target `t` from the rate controller's answer `r_all` (the test subset, then the matched training
    subset; `maxb`: the test utterances' λ=0 rates): its shortest stream rebuilt, sized and round-tripped; with the decoded
    frames of both subsets."""
    codec, rvq, n, T = sw.codec, sw.codec.rvq, len(sw.frames), sw.T
    r, r_train = r_all.subset(range(n)), r_all.subset(range(n, n + len(sw.train_frames)))
    u = int(np.argmin(T))  # the shortest stream is rebuilt from its tokens: its size must be the counted one
    data = compress_tokens(codec, [r.tokens[u]])[0]
    if 8 * len(data) != r.bits[u]: raise EibError(f"stream of {sw.ids[u]} has {8 * len(data)} bits, counted {r.bits[u]:.0f}")
    _roundtrip(codec, data, r.tokens[u])
    capped = bool(r.clamped.any() or (t > maxb).any())
    point = dict(
        target_bpf=float(t), capped=capped, n_capped=int(max(r.clamped.sum(), (t > maxb).sum())),
        **{f"achieved_bpf_{k}": v for k, v in _stats(r.bpf).items()}, set_bpf=r.set_bpf,
        lam=dict(mean=float(r.lam.mean()), min=float(r.lam.min()), max=float(r.lam.max())),
        mse=_mse(r.distortion, T, rvq.cfg.dim), status={s: int((r.status == s).sum()) for s in sorted(set(r.status))},
        per_utterance=dict(id=list(sw.ids), achieved_bpf=r.bpf.round(4).tolist(), lam=r.lam.tolist()),
        roundtrip_checked=sw.ids[u], workers=int(workers),
        passes=int(r.passes), evals=np.bincount(r.evals).tolist(), frames_encoded=int(r.frames_encoded),
        **({} if not sw.matched else dict(train_achieved_bpf_mean=float(r_train.bpf.mean()), train_set_bpf=r_train.set_bpf)))
    return point, r.recon(rvq), r_train.recon(rvq) if sw.matched else None

def sweep_rate_points(sw: Sweep, targets, rate_mode: str, workers: int, progress: bool, jobs: Jobs | None = None):
    """Step 6: for each target not yet in every file, the per-utterance (or set) λ search on real stream sizes over the
    test and matched-training subsets at once; decode, check one stream's size and round trip, score, write. With
    `jobs` (an executor other than 'none'): one job per target (`point_job`), merged into the files as they finish."""
    from tqdm.auto import tqdm
    from eib.rate import RateController, solve_sharded
    todo = [t for t in targets if t not in sw.done("rate_points", "target_bpf")]
    if jobs is not None and jobs.away:
        _run_point_jobs(sw, "rate_points", "target_bpf", todo, jobs, progress, rate_mode=rate_mode)
        return
    if not todo: return
    coded, coded_ids = sw.frames + sw.train_frames, sw.ids + sw.train_ids  # one per-utterance search for both subsets
    def solved():  # (target, RateResult) in order; per-utterance control is split over `workers` processes
        if rate_mode == "utterance" and workers > 1:
            yield from solve_sharded(sw.codec, coded, todo, workers=workers, ids=coded_ids, on_range=rng_box.append)
            return
        rc = RateController(sw.codec, coded, count="stream", ids=coded_ids)
        rng_box.append(rc.achievable_range())
        for t in todo: yield t, rc.solve(t, mode=rate_mode, clamp=True)
    rng_box, t0 = [], time.time()
    for t, r_all in tqdm(solved(), total=len(todo), desc=f"{sw.label} rate points", disable=not progress):
        maxb = rng_box[0]["max_bpf"].to_numpy()[:len(sw.frames)]
        point, recon, recon_train = rate_point(sw, t, r_all, maxb, workers if rate_mode == "utterance" else 1)
        sw.save_point("rate_points", "target_bpf", point, recon, recon_train, time.time() - t0)
        t0 = time.time()

def layer_point(sw: Sweep, lc, k: int, workers: int = 1, memo: dict | None = None) -> tuple[dict, list, list | None]:
    """The layer-sweep point of depth `k` coded by the layer codec `lc` (`workers` threads); with the decoded frames of both
    subsets. `memo`, a dict kept over the depths of one sweep, holds both subsets' full-depth tokens (encoded once: every
    depth is `keep_layers` of them), the normalised test frames and the last depth's tokens and coder intervals: a depth codes only the positions from
    the first one where its tokens differ from the last depth's (the same intervals, and bytes, as coding all of them)."""
    from eib.rvq import spread_layers
    rvq = sw.codec.rvq
    c, T = rvq.cfg, sw.T
    memo = {} if memo is None else memo
    if "full" not in memo:
        memo["full"] = torch.cat([rvq.encode_nearest(f) for f in sw.frames])
        memo["full_train"] = [rvq.encode_nearest(f) for f in sw.train_frames] if sw.matched else None
        memo["z"] = [rvq.normalise(f) for f in sw.frames]
    lpg = spread_layers(k, c.groups, c.layers)
    tok, prefix = rvq.keep_layers(memo["full"], lpg), None
    if "last" in memo:
        last, ck0, fk0 = memo["last"]
        changed = (last != tok).any(0).nonzero()
        s = int(changed[0]) if len(changed) else c.positions
        prefix = (ck0[:, :s], fk0[:, :s])
    ck, fk = token_intervals(lc.coding_model, tok, workers=workers, prefix=prefix)
    memo["last"] = (tok, ck, fk)
    toks = list(tok.split([int(n) for n in T]))
    streams = token_streams(lc, toks, ck, fk)
    u = int(np.argmin(T))
    _roundtrip(lc, streams[u], toks[u])
    bpf = np.array([8 * len(s) for s in streams]) / T
    zr = [rvq.decode_normalised(tk) for tk in toks]
    dist = np.array([float(((a - b) ** 2).sum(1).mean()) for a, b in zip(memo["z"], zr)])
    point = dict(layers=int(k), **{f"achieved_bpf_{s}": v for s, v in _stats(bpf).items()},
                 set_bpf=float(8 * sum(len(s) for s in streams) / T.sum()), mse=_mse(dist, T, c.dim),
                 per_utterance=dict(id=list(sw.ids), achieved_bpf=bpf.round(4).tolist()))
    decode = lambda tk: rvq.denormalise(rvq.decode_normalised(tk)).numpy()
    return (point, [rvq.denormalise(q).numpy() for q in zr],
            [decode(rvq.keep_layers(tk, lpg)) for tk in memo["full_train"]] if sw.matched else None)

def sweep_layer_points(sw: Sweep, layer_points: int, layer_max_steps: int, codec_seed: int, device: str, progress: bool,
                       jobs: Jobs | None = None, workers: int = 1):
    """Step 7: the layer-sweep baseline at up to `layer_points` depths not yet in every file: plain RVQ with n layers,
    coded by the layer-sweep entropy model (trained and saved beside the codec if missing; with `jobs`, in a job, and
    one job per depth; else here, each depth coded by `workers` threads)."""
    from tqdm.auto import tqdm
    c = sw.codec.rvq.cfg
    ns = [k for k in layer_depths(c.groups, c.positions, layer_points) if k not in sw.done("layer_sweep", "layers")]
    away = jobs is not None and jobs.away
    if not ns:
        if away: sw.merge_job_points("layer_sweep", "layers")  # what killed runs left
        return
    t0, ck = time.time(), Path(str(sw.checkpoint) + "_layers")
    train = dict(checkpoint=str(ck), seed=codec_seed, device=device, progress=progress, max_steps=layer_max_steps)
    if away:
        run_jobs(layer_codec_job, [(sw.for_jobs(), train)], jobs, done=lambda _: layer_codec_ready(sw.codec, ck),
                 name=f"eib-{sw.label}-layer-model", progress=progress)
    lc = get_layer_codec(sw.codec, sw.store, **train)
    for _, _, obj, _ in sw.outs: obj["timing"]["layer_model_s"] = round(time.time() - t0, 2)
    if away:
        _run_point_jobs(sw, "layer_sweep", "layers", ns, jobs, progress, layer_codec=lc)
        return
    memo = {}  # full-depth tokens and the last depth's intervals (ascending depths share their first positions)
    for k in tqdm(ns, desc=f"{sw.label} layer sweep", disable=not progress):
        t0 = time.time()
        point, recon, recon_train = layer_point(sw, lc, k, workers, memo)
        sw.save_point("layer_sweep", "layers", point, recon, recon_train, time.time() - t0)

@dataclass
class PointJob:
    "One rate or layer point as a job: the sweep as `Sweep.for_jobs` sends it, which point, and the file it writes."
    sw: Sweep
    key: str  # "rate_points" (value: a target BPF) or "layer_sweep" (value: a depth)
    value: float
    out: Path
    rate_mode: str = "utterance"
    layer_codec: object = None

    def __repr__(self): return f"{self.key} {self.value:.10g} of {self.sw.label}"

def _job_sweep(sw: Sweep) -> Sweep:
    "A sweep sent to a job, with its store opened and its frames read again."
    from eib.features import load_store
    store = load_store(sw.store)
    outs = [(k, p, o, s if s is not None else _fixed(plus_head(store, sw.classes, sw.model_dir), sw.y, sw.seed)) for k, p, o, s in sw.outs]
    return replace(sw, store=store, frames=[store.frames(u) for u in sw.ids], train_frames=[store.frames(u) for u in sw.train_ids], outs=outs)

def point_job(job: PointJob) -> str:
    "In a job: compute one point, score it with every classifier, and write it to `job.out` atomically; returns that path."
    from eib.rate import RateController
    sw, t0 = _job_sweep(job.sw), time.time()
    if job.key == "rate_points":
        rc = RateController(sw.codec, sw.frames + sw.train_frames, count="stream", ids=sw.ids + sw.train_ids)
        maxb = rc.achievable_range()["max_bpf"].to_numpy()[:len(sw.frames)]
        point, recon, recon_train = rate_point(sw, job.value, rc.solve(job.value, mode=job.rate_mode, clamp=True), maxb, 1)
    else: point, recon, recon_train = layer_point(sw, job.layer_codec, int(job.value))
    secs = time.time() - t0
    atomic_write_json(job.out, dict(key=job.key, value=job.value, secs=secs, tag=sw.tag,
                                    scored=sw.score_point(point, recon, recon_train)), allow_nan=False)
    return str(job.out)

def layer_codec_job(args) -> str:
    "In a job: train and save the layer-sweep codec of a sweep (`args`: the sweep for jobs, `get_layer_codec`'s arguments)."
    sw, train = args
    sw = _job_sweep(sw)
    get_layer_codec(sw.codec, sw.store, **train)
    return train["checkpoint"]

def _run_point_jobs(sw: Sweep, key: str, ident: str, values, jobs: Jobs, progress: bool, **kw):
    "One job per point value (points already written by an earlier job are merged, not redone); merged as far as they got."
    pdir, slim = sw.points_dir(), sw.for_jobs()
    pj = [PointJob(slim, key, v, pdir / f"{key}_{v:.10g}.json", **kw) for v in values]
    try: run_jobs(point_job, pj, replace(jobs, gpus=0), done=lambda j: sw.job_point(j.out) is not None, name=f"eib-{sw.label}-{key.replace('_', '-')}",
                  progress=progress)  # the exact coding model runs on CPUs
    finally: sw.merge_job_points(key, ident)

def run_sweep(dataset: str, data_root=None, encoder: str = "compare", rates="quick", rate_mode: str = "utterance",
              preset: str = "cpu", device: str = "cpu", seed: int = 42, samples_per_emotion: int | None = 100,
              out_dir="evaluation_results", checkpoint=None, features_dir="data_subset", layer_sweep: bool = True,
              progress: bool = True, force: bool = False, layer_max_steps: int = LAYER_STEPS, command: str | None = None,
              workers: int = 2, model_dir=None, matched: bool = True, matched_per_emotion: int | None = 20,
              name: str | None = None, layer_points: int = 12, codec_seed: int = 0, jobs: Jobs | None = None,
              context: str = "none") -> Path:
    """Sweep `dataset` over the target `rates` ('quick', 'full' or a list of BPF) and the layer-sweep baseline;
    write `results_path(...)` after every point, resuming the points already there. Every decoded point is scored
    by the fixed probe and (`matched`) by a probe fitted on the decoded training subset (`matched_per_emotion`
    training utterances per class, coded like the test set), each into its own file; with emotion2vec_plus features
    and weights (`model_dir`), the model's own head scores them into a third. `dataset="manifest"`: any folder
    (`data_root`) with a `manifest.csv`, named `name`. The layer sweep takes at most `layer_points` depths n, evenly
    spaced from G to G*M layers (all of them when there are fewer). Seeds: `seed` drives the subsets, the classifiers
    and the bootstrap; `codec_seed` the training of a codec or layer-sweep model that is missing (0: the seed of the
    committed checkpoints, so that a recorded command rebuilds the same codec). `jobs` (`eib.core.Jobs`): run the
    feature extraction, the codec's training, each rate point and each layer point as jobs (local processes or SLURM;
    default: all here), each kept as it finishes, so that a rerun resumes after a killed job. `context` "frame": the codec's
    entropy model also sees the previous frame (`eib.entropy.CONTEXTS`; its checkpoint and results files are named
    `..._context_frame`); such a sweep has no layer sweep: that baseline (plain RVQ on the same codebooks) is the intra
    sweep's."""
    from eib.data import LABEL_PROTOCOLS
    t_start = time.time()
    targets = resolve_rates(rates)
    context_suffix(context)  # a known context
    if layer_sweep and context != "none":
        print(f"sweep with context {context!r}: no layer sweep (the plain-RVQ baseline on the same codebooks is the sweep "
              f"without context's)", file=sys.stderr)
        layer_sweep = False
    if rate_mode not in ("utterance", "set"): raise EibError(f"rate_mode must be 'utterance' or 'set', got {rate_mode!r}")
    if matched and rate_mode != "utterance": raise EibError("the matched classifier needs rate_mode='utterance' (pass matched=False)")
    jobs = jobs or Jobs()
    if device == "cuda" and jobs.executor != "slurm" and not torch.cuda.is_available():  # a SLURM job finds its GPU there
        raise EibError("device='cuda' but no CUDA device is available")
    fkw = dict(dataset=dataset, data_root=data_root, encoder=encoder, features_dir=features_dir, device=device, progress=progress,
               model_dir=model_dir, name=name)
    if jobs.away:  # `parallel` jobs encode a share of the files each; the store's manifest is then written here
        run_jobs(call, [partial(prepare_features, **fkw, workers=jobs.cpus, shard=(k, jobs.parallel)) for k in range(jobs.parallel)], jobs,
                 done=lambda kw: (store_path(dataset, data_root, encoder, features_dir, name) / "meta.json").exists(),
                 name="eib-features", progress=progress)
    store, label = sweep_features(**fkw)  # 1 (the files the jobs encoded are found, not encoded again)
    t_feat = time.time()
    ckw = dict(store=str(store.path), label=label, encoder=encoder, checkpoint=checkpoint, preset=preset, codec_seed=codec_seed,
               device=device, progress=progress, context=context)
    ck = Path(checkpoint) if checkpoint is not None else default_checkpoint(label, preset, encoder, context)
    if jobs.away: run_jobs(codec_job, [ckw], jobs, done=lambda kw: (ck / "config.json").exists(), name="eib-codec", progress=progress)
    codec, ck = sweep_codec(**dict(ckw, store=store))  # 2 (a codec trained by the job is loaded here)
    t_codec = time.time()
    sw = Sweep(label, store, codec, ck, dataset if dataset in LABEL_PROTOCOLS else "identity", seed, context=context)
    sweep_subsets(sw, samples_per_emotion, matched, matched_per_emotion)  # 3
    clfs, y_train = sweep_classifiers(sw, model_dir)  # 4
    config = dict(codec_fingerprint=codec.fingerprint, preset=preset, rate_mode=rate_mode, seed=int(seed),
                  samples_per_emotion=samples_per_emotion, counts={c: int((sw.y == c).sum()) for c in clfs[0][1].classes_},
                  count="stream", checkpoint=ck.name, store=store.path.name, test_ids_fingerprint=fingerprint(sw.ids),
                  layer_model="EntropyModel(codec config) warm-started from the codec's, on layer-sweep tokens", layer_max_steps=int(layer_max_steps),
                  probe_scale_floor=SCALE_FLOOR) | ({} if context == "none" else dict(context=context))
    cmd = command if command is not None else " ".join(shlex.quote(a) for a in sys.argv)
    sweep_results(sw, clfs, y_train, targets, out_dir, config, cmd, force, dict(features_s=round(t_feat - t_start, 2),
                  codec_s=round(t_codec - t_feat, 2), probe_s=round(time.time() - t_codec, 2)), matched_per_emotion, layer_sweep)  # 5
    sweep_rate_points(sw, targets, rate_mode, workers, progress, jobs)  # 6
    if layer_sweep: sweep_layer_points(sw, layer_points, layer_max_steps, codec_seed, device, progress, jobs, workers)  # 7
    return sw.finish(t_start)


# %% [markdown]
# An end-to-end sweep with that small codec (saved to a temporary folder) on two test utterances per class:
# the file validates, the points are there, and a rerun resumes instead of recomputing.

# %%
#| slow
import tempfile
from eib.records import load_results
from eib.codec import save_codec
_tmp = Path(tempfile.mkdtemp())
save_codec(Codec(_rvq, _em, dict(preset="test")), _tmp / "ck")
_p = run_sweep("synth", rates=[5, 1000], samples_per_emotion=2, out_dir=_tmp, checkpoint=_tmp / "ck", progress=False,
               layer_max_steps=5, command="test")
_o = load_results(_p)
test_eq([q["target_bpf"] for q in _o["rate_points"]], [5.0, 1000.0]); assert _o["rate_points"][1]["capped"]
test_eq([q["layers"] for q in _o["layer_sweep"]], list(range(10, 31)))
assert _o["layer_sweep"][0]["mse"] > _o["layer_sweep"][-1]["mse"]  # more layers, less distortion
_t0 = time.time(); run_sweep("synth", rates=[5, 1000], samples_per_emotion=2, out_dir=_tmp, checkpoint=_tmp / "ck", progress=False, layer_max_steps=5)
test_eq(load_results(_p)["timing"]["total_s"], _o["timing"]["total_s"])  # nothing recomputed
test_fail(lambda: run_sweep("synth", rates="x", out_dir=_tmp), contains="unknown rate list")

# %% [markdown]
# A sweep with inter-frame context (`context="frame"`): a small codec whose entropy model also sees the previous frame is
# swept at one target. Its files are named `..._context_frame`, record the context in their configuration and hold no layer
# sweep; each point's rate is the real streams' (one of them decoded from its bytes), and asking that checkpoint for a sweep
# without context is refused.

# %%
import tempfile
from eib.records import load_results
from eib.codec import save_codec
_tmpc = Path(tempfile.mkdtemp())
torch.manual_seed(0)
_emc = EntropyModel(EntropyConfig.for_rvq(_rvq.cfg, "cpu", d_model=16, n_layers=1, n_heads=2, d_ff=32, context="frame")).eval()
save_codec(Codec(_rvq, _emc, dict(preset="test")), _tmpc / "ck")
_pc = run_sweep("synth", rates=[95], samples_per_emotion=2, matched_per_emotion=2, out_dir=_tmpc, checkpoint=_tmpc / "ck",
                progress=False, workers=1, command="test", context="frame")
_oc, _ocm = load_results(_pc), load_results(results_path("synth", _tmpc, classifier="matched_linear_probe", context="frame"))
test_eq((_pc.name, _oc["config"]["context"], _ocm["config"]["context"], len(_oc["layer_sweep"])),
        ("rate_sweep_SYNTH_context_frame.json", "frame", "frame", 0))
_q = _oc["rate_points"][0]
test_eq((_q["target_bpf"], _q["capped"]), (95.0, False))
test_close(_q["set_bpf"], 95, eps=1.0)  # the real streams' rate, at the target
test_fail(lambda: run_sweep("synth", rates=[95], samples_per_emotion=2, out_dir=_tmpc, checkpoint=_tmpc / "ck", progress=False,
                            workers=1), contains="context 'frame'")

# %% [markdown]
# The same sweep on emotion2vec_plus features. A random-weight plus model (funasr's own `Emotion2vec` class, 32 dims,
# `eib.features.tiny_emotion2vec`) encodes a few noise clips into a store, a small codec is fitted to them, and
# `run_sweep` scores every decoded point three times: the fixed probe into one file, the matched probe (fitted on the
# decoded training subset of each point) into another, the model's own head into a third, with the same rates. A head from other weights than the store's is refused.

# %%
import tempfile
import soundfile as sf
from eib.evaluate import evaluate_predictions
from eib.records import load_results
from eib.features import build_store, tiny_emotion2vec, PLUS_LABELS
from eib.codec import save_codec
_tmp2 = Path(tempfile.mkdtemp())
_mdir = tiny_emotion2vec(_tmp2 / "plus", labels=PLUS_LABELS)
_rng, _rows = np.random.default_rng(0), []
for _s in range(6):
    for _k, _e in enumerate(("angry", "neutral", "sad")):
        for _j in range(2):
            _f = _tmp2 / "audio" / f"s{_s}_{_e}_{_j}.wav"; _f.parent.mkdir(exist_ok=True)
            sf.write(_f, _rng.normal(0, 0.05 * (1 + _k), 16000).astype(np.float32), 16000)
            _rows.append(dict(path=f"audio/{_f.name}", speaker=f"s{_s}", emotion=_e, split="test" if _s >= 4 else "train"))
pd.DataFrame(_rows).to_csv(_tmp2 / "manifest.csv", index=False)
build_store("manifest", _tmp2, encoder="emotion2vec_plus_base", model_dir=_mdir, out=_tmp2 / "feats",
            name="synth_emotion2vec_plus_base", workers=1, progress=False, verbose=False, check_dim=False)
_st2 = prepare_features("synth", encoder="emotion2vec_plus_base", features_dir=_tmp2 / "feats")
_st3, _lab3 = sweep_features("manifest", _tmp2, "emotion2vec_plus_base", _tmp2 / "feats", "cpu", False, _mdir, "synth")
test_eq((_st3.path, _lab3), (_st2.path, "synth"))  # a manifest corpus named `synth`: the same store, labelled by its corpus name
_rvq2 = fit_rvq(np.concatenate([_st2.frames(u) for u in _st2.manifest.id]), RVQConfig.for_dim(32, layers=2, codes=8),
                iters=1, progress=False)
torch.manual_seed(0)
_em2 = EntropyModel(EntropyConfig.for_rvq(_rvq2.cfg, "cpu", d_model=16, n_layers=1, n_heads=2, d_ff=32)).eval()
save_codec(Codec(_rvq2, _em2, dict(preset="test")), _tmp2 / "ck")
_p = run_sweep("synth", encoder="emotion2vec_plus_base", model_dir=_mdir, features_dir=_tmp2 / "feats", rates=[5, 1000],
               samples_per_emotion=None, out_dir=_tmp2, checkpoint=_tmp2 / "ck", progress=False, layer_max_steps=5,
               workers=1, command="test")
_o, _oh = load_results(_p), load_results(results_path("synth", _tmp2, "emotion2vec_plus_base", "emotion2vec_plus_head"))
test_eq((_p.name, _o["classifier"], _oh["classifier"]),
        ("rate_sweep_SYNTH_emotion2vec_plus_base.json", "linear_probe", "emotion2vec_plus_head"))
for _k in ("rate_points", "layer_sweep"):  # the same coded frames, scored by both classifiers
    test_eq([q["achieved_bpf_mean"] for q in _oh[_k]], [q["achieved_bpf_mean"] for q in _o[_k]])
test_eq(len(_o["layer_sweep"]), 3)                                  # n = G..G*M = 2..4 layers
_om = load_results(results_path("synth", _tmp2, "emotion2vec_plus_base", "matched_linear_probe"))  # the matched probe's file
test_eq((_om["classifier"], _om["classifier_training"]["fitted_on"], [q["achieved_bpf_mean"] for q in _om["rate_points"]]),
        ("matched_linear_probe", "decoded training split at each point", [q["achieved_bpf_mean"] for q in _o["rate_points"]]))
test_eq([q for q in _om["rate_points"] + _om["layer_sweep"] if "classifier_fit" not in q], [])  # one probe fitted per point
_ids2, _fr2, _y2 = test_subset(_st2, "synth", None)
_P = plus_head(_st2, _o["classes"], _mdir).predict_proba(_fr2)    # the head's own scores of the clean test frames
test_eq(_oh["baselines"]["unquantised"]["f1_weighted"], evaluate_predictions(_y2, _P, _o["classes"], seed=42)["f1_weighted"])
test_fail(lambda: plus_head(_st2, _o["classes"], tiny_emotion2vec(_tmp2 / "other", labels=PLUS_LABELS, seed=1)),
          contains="same model")
