# %% [markdown]
# # Emotion recognition on decoded features
#
# > Emotion recognition on decoded features: classifiers, honest metrics and baselines

# %%
#| default_exp evaluate

# %%
#| export
from __future__ import annotations
import json, math, warnings
from pathlib import Path
import numpy as np
import pandas as pd
from eib.core import EibError, atomic_write_json, fingerprint, repo_root

# %%
import tempfile
from fastcore.test import test_eq, test_fail, test_close

# %% [markdown]
# This chapter answers one question per rate point: *how well is emotion still recognised from the decoded
# frames?* It holds the parts every rate sweep needs and nothing that depends on the codec:
#
# 1. two classifiers on every decoded test set, fitted by one recipe (`fit_probe`): the *fixed* one, trained
#    once on the **unquantised** training-split features and applied unchanged at every rate (the thesis's
#    protocol: does a deployed model still work on decoded features?), and the *matched* one, fitted at each
#    rate on the **decoded** training split (how much emotion information does the code still carry?). A fixed
#    classifier's collapse can be a domain shift, not lost information: the book reports both;
# 2. metrics that cannot flatter: accuracy, weighted and macro F1, per-class precision and recall, the
#    confusion matrix, two probabilities with names that say what they are, and bootstrap intervals;
# 3. two baselines on the same test set (the unquantised features, and a classifier that always says the
#    most frequent training class) and a reference curve (the Gaussian rate–distortion bound on MSE);
# 4. the schema of the results file `evaluation_results/rate_sweep_<DATASET>.json`, validated on every write,
#    with atomic, resumable updates.
#
# A synthetic example below runs everything in a few seconds.

# %% [markdown]
# ## Pooling
#
# A linear probe on frames mean-pooled over time is emotion2vec's downstream protocol. `meanstd` appends
# the per-dimension standard deviation over time (a 2D-dim embedding); `fit_probe(pooling="auto")`
# picks between the two by speaker-grouped cross-validation on the training split and records both scores.

# %%
#| export
POOLINGS = ("mean", "meanstd")

def pool(frames, how: str = "mean") -> np.ndarray:
    "Utterance embedding of `(T, D)` frames: the mean over time `(D,)`, or mean and std `(2D,)` for `meanstd`."
    if how not in POOLINGS: raise EibError(f"unknown pooling {how!r}; known: {', '.join(POOLINGS)}")
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise EibError(f"frames must be a (T, D) array with T >= 1, got shape {x.shape}")
    if not np.isfinite(x).all(): raise EibError("frames hold NaN or infinite values")
    m = x.mean(0)
    return m if how == "mean" else np.concatenate([m, x.std(0)])

def pool_many(utts, how: str = "mean") -> np.ndarray:
    "Pool each `(T, D)` array of the list `utts`: an `(N, D)` (or `(N, 2D)`) matrix."
    if isinstance(utts, np.ndarray) or len(utts) == 0:
        raise EibError("utts must be a non-empty list of (T, D) frame arrays, one per utterance")
    out = [pool(u, how) for u in utts]
    if len({len(o) for o in out}) != 1: raise EibError(f"utterances differ in feature dimension: {sorted({len(o) for o in out})}")
    return np.stack(out)


# %%
_f = np.arange(12, dtype=np.float32).reshape(4, 3)
test_eq(pool(_f), [4.5, 5.5, 6.5])
test_close(pool(_f, "meanstd")[3:], np.full(3, np.std([0, 3, 6, 9])))
test_eq(pool_many([_f, _f[:1]]).shape, (2, 3))
test_fail(lambda: pool(np.zeros((0, 3))), contains="T >= 1")
test_fail(lambda: pool(_f, "max"), contains="known: mean, meanstd")
test_fail(lambda: pool_many([_f, np.zeros((2, 4))]), contains="differ in feature dimension")


# %% [markdown]
# ## The linear probe
#
# Standardise (training-split statistics), then multinomial logistic regression (sklearn, L-BFGS). The inverse
# regularisation strength `C` (and, with `pooling="auto"`, the pooling) is chosen by cross-validation with
# folds **grouped by speaker** (`GroupKFold`), so that the choice rewards generalisation to unseen speakers,
# as the speaker-disjoint test split demands. Selection score: weighted F1 (ties go to the smaller `C`).
#
# A fitted `Probe` is plain data (class order, pooling, scaler statistics, weights): `to_dict()` / `from_dict()`
# and `save()` / `load_probe()` use JSON, no pickle, and prediction is a few lines of numpy, so a checkpoint
# does not depend on the sklearn version. A probe trained on a licensed corpus is derived from it: keep it
# out of the repository.

# %%
#| export
def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)

class Probe:
    "A fitted linear probe: pooling -> standardise -> softmax(W x + b) over `classes_`."
    kind = "linear_probe"
    def __init__(self, classes, pooling, mean, scale, coef, intercept, C=None, cv=None):
        self.classes_ = [str(c) for c in classes]
        self.pooling = pooling
        self.mean_, self.scale_ = np.asarray(mean, np.float64), np.asarray(scale, np.float64)
        self.coef_, self.intercept_ = np.asarray(coef, np.float64), np.asarray(intercept, np.float64)
        self.C, self.cv = C, cv or {}
        k, d = len(self.classes_), len(self.mean_)
        if self.coef_.shape != (k, d) or self.intercept_.shape != (k,) or self.scale_.shape != (d,):
            raise EibError(f"inconsistent probe: {k} classes, {d} inputs, coef {self.coef_.shape}, "
                           f"intercept {self.intercept_.shape}, scale {self.scale_.shape}")
    @property
    def dim(self) -> int:
        "The frame dimension D the probe expects."
        return len(self.mean_) // (2 if self.pooling == "meanstd" else 1)
    def __repr__(self):
        return f"Probe({len(self.classes_)} classes, D={self.dim}, pooling={self.pooling}, C={self.C})"
    def predict_proba_pooled(self, X) -> np.ndarray:
        "Class probabilities `(N, C)` of already pooled embeddings `X`."
        X = np.asarray(X, np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.mean_):
            raise EibError(f"pooled input must be (N, {len(self.mean_)}), got {X.shape}")
        return _softmax(((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_)
    def predict_proba(self, utts) -> np.ndarray:
        "Class probabilities `(N, C)` for a list of `(T, D)` frame arrays (columns in `classes_` order)."
        X = pool_many(utts, self.pooling)
        if X.shape[1] != len(self.mean_):
            raise EibError(f"the probe expects {self.dim}-dim frames, got {X.shape[1] // (2 if self.pooling == 'meanstd' else 1)}-dim")
        return self.predict_proba_pooled(X)
    def predict(self, utts) -> np.ndarray:
        "Predicted class names."
        return np.asarray(self.classes_)[self.predict_proba(utts).argmax(1)]
    def to_dict(self) -> dict:
        "Plain JSON-able data."
        return dict(kind=self.kind, version=1, classes=self.classes_, pooling=self.pooling, C=self.C, cv=self.cv,
                    mean=self.mean_.tolist(), scale=self.scale_.tolist(), coef=self.coef_.tolist(),
                    intercept=self.intercept_.tolist())
    @classmethod
    def from_dict(cls, d: dict) -> "Probe":
        "Inverse of `to_dict`."
        if d.get("kind") != cls.kind or d.get("version") != 1:
            raise EibError(f"not a linear probe checkpoint (kind={d.get('kind')!r}, version={d.get('version')!r})")
        return cls(d["classes"], d["pooling"], d["mean"], d["scale"], d["coef"], d["intercept"], d.get("C"), d.get("cv"))
    def save(self, path) -> Path:
        "Write the probe as JSON (atomically)."
        return atomic_write_json(path, self.to_dict(), allow_nan=False)

def load_probe(path) -> Probe:
    "Read a probe written by `Probe.save`."
    p = Path(path)
    if not p.is_file(): raise EibError(f"no probe at {p}; train one with fit_probe(...).save(path)")
    try: d = json.loads(p.read_text())
    except json.JSONDecodeError as e: raise EibError(f"{p} is not valid JSON ({e}); delete it and retrain") from None
    return Probe.from_dict(d)


# %%
#| export
DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 2, 7))
SCALE_FLOOR = 0.01  # a pooled feature is never scaled by less than 1% of its frame-level spread

def floored_scaler(floor):
    "sklearn's `StandardScaler` whose `scale_` is at least `floor` (per feature): unchanged where nothing falls below it."
    from sklearn.preprocessing import StandardScaler
    class FlooredScaler(StandardScaler):
        def fit(self, X, y=None, sample_weight=None):
            super().fit(X, y, sample_weight)
            self.scale_ = np.maximum(self.scale_, floor)
            return self
    return FlooredScaler()

def _as_labels(labels, n: int, what: str = "labels") -> np.ndarray:
    y = np.asarray([str(v) for v in labels], dtype=object)
    if len(y) != n: raise EibError(f"{len(y)} {what} for {n} utterances")
    return y

def fit_probe(utts, labels, groups=None, seed: int = 42, pooling: str = "auto", Cs=DEFAULT_CS,
              n_splits: int = 5, max_iter: int = 3000, scoring: str = "f1_weighted", threads: int | None = 1,
              scale_floor: float = SCALE_FLOOR) -> Probe:
    """Linear probe on pooled `utts` (list of `(T, D)` arrays, UNQUANTISED training split) with `labels`.
    `C` (and the pooling, if `auto`) chosen by cross-validation with folds grouped by `groups` (speakers).
    `threads`: BLAS/OpenMP threads while fitting (1 is fastest for these small problems; None: library default).
    `scale_floor`: each pooled feature is standardised by its spread over utterances, but never by less than
    `scale_floor` times the spread of its frame-level dimension over the training frames."""
    from threadpoolctl import threadpool_limits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.exceptions import ConvergenceWarning
    poolings = POOLINGS if pooling == "auto" else (pooling,)
    if pooling != "auto" and pooling not in POOLINGS:
        raise EibError(f"unknown pooling {pooling!r}; known: auto, {', '.join(POOLINGS)}")
    y = _as_labels(labels, len(utts))
    classes = sorted(set(y))
    if len(classes) < 2: raise EibError(f"a probe needs at least 2 classes; the labels hold only {classes}")
    if not len(Cs): raise EibError("Cs must list at least one value of C")
    g = None if groups is None else _as_labels(groups, len(utts), "groups")
    if g is not None and len(set(g)) >= 2:
        k = min(n_splits, len(set(g)))
        splits, cv_kind = list(GroupKFold(n_splits=k).split(np.zeros(len(y)), y, g)), f"GroupKFold({k}) by speaker"
    else:  # no speakers given, or a corpus with a single training speaker: folds over utterances, and the scheme says so
        k = min(n_splits, min(int((y == c).sum()) for c in classes))
        if k < 2: raise EibError("cross-validation needs at least 2 utterances per class (or pass groups=speakers)")
        splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
        why = "no groups given" if g is None else f"only one training speaker, {g[0]!r}"
        cv_kind = f"StratifiedKFold({k}) over utterances, NOT speaker-grouped ({why})"
    if not (isinstance(scale_floor, (int, float)) and 0 <= scale_floor < 1): raise EibError(f"scale_floor must be in [0, 1), got {scale_floor!r}")
    X = {p: pool_many(utts, p) for p in poolings}
    spread = np.concatenate([np.asarray(u, np.float64) for u in utts]).std(0)  # frame-level spread of each dimension
    floor = {p: scale_floor * np.tile(spread, X[p].shape[1] // len(spread)) for p in poolings}
    mk = lambda C, p: make_pipeline(floored_scaler(floor[p]), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    scores = {}
    with warnings.catch_warnings(), threadpool_limits(limits=threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        for p in poolings:
            for C in sorted(Cs):
                scores[(p, C)] = float(np.mean(cross_val_score(mk(C, p), X[p], y, cv=splits, scoring=scoring)))
        best = max(scores.values())
        p, C = next(k for k, v in scores.items() if v == best)  # first max: pooling order, then smallest C
        pipe = mk(C, p).fit(X[p], y)
    sc, lr = pipe[0], pipe[1]
    coef, b = lr.coef_, lr.intercept_
    if len(lr.classes_) == 2: coef, b = np.vstack([-coef / 2, coef / 2]), np.array([-b[0] / 2, b[0] / 2])  # sigmoid as softmax
    floored = int((sc.scale_ <= floor[p]).sum()) if scale_floor > 0 else 0
    cv = dict(scheme=cv_kind, scoring=scoring, best=best, scale_floor=float(scale_floor), floored=floored, n_train=len(y), converged=bool(lr.n_iter_.max() < max_iter),
              scores=[dict(pooling=q, C=c, score=s) for (q, c), s in scores.items()])
    return Probe(list(lr.classes_), p, sc.mean_, sc.scale_, coef, b, C=float(C), cv=cv)


# %% [markdown]
# Synthetic data for the tests and the example: Gaussian class means in D dimensions, a per-speaker offset,
# per-utterance frame sequences of varying length. `blobs` is part of the module so later chapters can test
# with the same data.

# %%
#| export
def blobs(n_speakers: int = 8, n_per_class=4, classes=("angry", "happy", "neutral", "sad"), dim: int = 16,
          sep: float = 1.5, speaker_sd: float = 0.5, frame_sd: float = 2.0, frames=(20, 60), seed: int = 0) -> pd.DataFrame:
    """Synthetic utterances: one row per utterance with id, speaker, label and `frames` (a `(T, dim)` float32 array).
    `n_per_class`: utterances per speaker and class (an int, or one count per class)."""
    rng = np.random.default_rng(seed)
    counts = [n_per_class] * len(classes) if np.isscalar(n_per_class) else list(n_per_class)
    if len(counts) != len(classes): raise EibError(f"{len(counts)} counts for {len(classes)} classes")
    mu = rng.normal(0, sep, (len(classes), dim))
    rows = []
    for s in range(n_speakers):
        off = rng.normal(0, speaker_sd, dim)
        for ci, c in enumerate(classes):
            for j in range(counts[ci]):
                T = int(rng.integers(frames[0], frames[1] + 1))
                f = (mu[ci] + off + rng.normal(0, frame_sd, (T, dim))).astype(np.float32)
                rows.append(dict(id=f"s{s:02d}_{c}_{j}", speaker=f"s{s:02d}", label=c, frames=f))
    return pd.DataFrame(rows)


# %%
_d = blobs(n_speakers=6, seed=1)
_tr, _te = _d[_d.speaker < "s04"], _d[_d.speaker >= "s04"]
_p = fit_probe(list(_tr.frames), _tr.label, groups=_tr.speaker)
_P = _p.predict_proba(list(_te.frames))
test_eq(_P.shape, (len(_te), 4)); test_close(_P.sum(1), 1, eps=1e-9)
test_eq(_p.classes_, ["angry", "happy", "neutral", "sad"])
assert (_p.predict(list(_te.frames)) == _te.label.to_numpy()).mean() > 0.8   # separable blobs: held-out speakers work
test_eq(_p.cv["scheme"], "GroupKFold(4) by speaker"); test_eq(len(_p.cv["scores"]), 2 * len(DEFAULT_CS))

# %% [markdown]
# A corpus with a single training speaker cannot be cross-validated by speaker: the folds then run over utterances
# (stratified by class), and `cv['scheme']` says so, so that the results file can say it too.

# %%
_one = _tr[_tr.speaker == "s00"]
_p1 = fit_probe(list(_one.frames), _one.label, groups=_one.speaker)
test_eq(_p1.cv["scheme"], "StratifiedKFold(4) over utterances, NOT speaker-grouped (only one training speaker, 's00')")

# %% [markdown]
# The numpy prediction is sklearn's: refit the chosen configuration with sklearn and compare probabilities;
# a JSON round trip changes nothing; a two-class probe works too.

# %%
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
_X = pool_many(list(_tr.frames), _p.pooling); _sc = StandardScaler().fit(_X)
_lr = LogisticRegression(C=_p.C, max_iter=3000, random_state=42).fit(_sc.transform(_X), _tr.label)
test_close(_P, _lr.predict_proba(_sc.transform(pool_many(list(_te.frames), _p.pooling))), eps=1e-9)
with tempfile.TemporaryDirectory() as _t:
    _q = load_probe(_p.save(Path(_t) / "probe.json"))
    test_eq(_q.predict_proba(list(_te.frames)), _P); test_eq(_q.pooling, _p.pooling)
_b = _tr[_tr.label.isin(["angry", "sad"])]
_p2 = fit_probe(list(_b.frames), _b.label, groups=_b.speaker, pooling="mean")
_lr2 = LogisticRegression(C=_p2.C, max_iter=3000).fit(StandardScaler().fit(pool_many(list(_b.frames))).transform(pool_many(list(_b.frames))), _b.label)
test_close(_p2.predict_proba(list(_b.frames)), _lr2.predict_proba(StandardScaler().fit(pool_many(list(_b.frames))).transform(pool_many(list(_b.frames)))), eps=1e-9)

# %%
test_fail(lambda: fit_probe(list(_tr.frames), ["a"] * len(_tr)), contains="at least 2 classes")
test_fail(lambda: fit_probe(list(_tr.frames), _tr.label[:3]), contains="labels for")
test_fail(lambda: _p.predict_proba([np.zeros((5, 7))]), contains="expects 16-dim frames")
test_fail(lambda: Probe.from_dict({"kind": "mlp"}), contains="not a linear probe")


# %% [markdown]
# **Why the scale floor.** A linear probe standardises each pooled feature by its spread over the training
# utterances. Some pooled features barely vary from utterance to utterance although their frames vary a lot. ComParE's
# delta coefficients are the clearest case: the mean of a delta over a clip is about (last frame minus first frame)
# divided by the clip's length, and RAVDESS clips start and end in silence. On RAVDESS's training split the pooled
# means of four deltas (of spectral band energies, harmonicity and slope) spread over 1e-5 to 5e-5 of their
# frame-level spread, and all 44 pooled means that spread over less than 1% of it are deltas. Standardised, such a feature turns differences far
# below anything a lossy code can keep into large inputs. The probe fitted without a floor leaned on them, and a codec
# whose frames kept all but 0.3% of the variance (normalised MSE 0.0027, 16 RVQ layers per group) still left it at a
# weighted F1 of 0.30 against 0.53 unquantised: a measurement of the probe's conditioning, not of lost emotion.
#
# So no pooled feature is scaled by less than `SCALE_FLOOR` (1%) of its frame-level spread. Where nothing falls below
# the floor the probe is exactly the standardised one. The floor changes nothing in the committed Whisper-base and
# EmoDB ComParE probes: their unquantised F1 is the same to the last digit. On RAVDESS ComParE it raises the unquantised
# F1 from 0.534 to 0.556, and the cross-validated score from 0.488 to 0.493.
#
# The example adds to the blobs a 17th dimension of spread 1 whose utterance mean is the class index times 1e-4. Without
# the floor, the probe finds that dimension and is perfect, until each frame is moved by 0.003 (0.3% of the spread) and
# it falls to chance. With the floor, the same shift changes nothing.

# %%
def _with_edge(df, shift=0.0, seed=0):
    "The utterances of `df` with a 17th dimension: noise of spread 1 whose utterance mean is the class index times 1e-4."
    rng, out = np.random.default_rng(seed), []
    for f, c in zip(df.frames, df.label):
        e = rng.normal(size=len(f)); e = e - e.mean() + 1e-4 * ["angry", "happy", "neutral", "sad"].index(c) + shift
        out.append(np.column_stack([f, e]))
    return out
_acc = lambda p, utts: float((p.predict(utts) == _te.label.to_numpy()).mean())
_raw = fit_probe(_with_edge(_tr), _tr.label, groups=_tr.speaker, scale_floor=0)
_flo = fit_probe(_with_edge(_tr), _tr.label, groups=_tr.speaker)
test_eq((_raw.cv["floored"], _flo.cv["floored"], _flo.cv["scale_floor"]), (0, 1, SCALE_FLOOR))
test_eq([_acc(_raw, _with_edge(_te, seed=1)), _acc(_raw, _with_edge(_te, 0.003, seed=1))], [1.0, 0.25])
test_eq([_acc(_flo, _with_edge(_te, seed=1)), _acc(_flo, _with_edge(_te, 0.003, seed=1))], [1.0, 1.0])
test_eq(_p.cv["floored"], 0)  # the blobs alone: nothing is floored, so the probe above is sklearn's standardised one
test_fail(lambda: fit_probe(list(_tr.frames), _tr.label, scale_floor=1.5), contains="scale_floor must be in [0, 1)")

# %% [markdown]
# ## emotion2vec_plus's own head
#
# The emotion2vec_plus models carry a 9-class head (angry, disgusted, fearful, happy, neutral, other, sad,
# surprised, unknown). It is the second classifier only when the features come from the *same* plus model
# (the thesis code paired emotion2vec_base features with the plus head). `plus_head_available` is the cheap
# check a sweep makes before loading anything: a funasr model folder whose `tokens.txt` lists exactly 9
# labels. Loading and applying the head is `eib.features.Emotion2vecEncoder(...).classify`, which asserts
# 9 outputs; `PlusHead` (below) maps its labels onto a label protocol.

# %%
#| export
PLUS_HEAD_LABELS = 9

def plus_head_available(model_dir) -> bool:
    "Does `model_dir` hold a funasr emotion2vec_plus model with its 9-label head (config.yaml, model.pt, tokens.txt)?"
    if model_dir is None: return False
    p = Path(model_dir).expanduser()
    if not ((p / "config.yaml").is_file() and (p / "model.pt").is_file() and (p / "tokens.txt").is_file()): return False
    toks = [t.strip() for t in (p / "tokens.txt").read_text(encoding="utf-8").splitlines() if t.strip()]
    return len(toks) == PLUS_HEAD_LABELS


# %%
with tempfile.TemporaryDirectory() as _t:
    _m = Path(_t)
    test_eq(plus_head_available(_m), False); test_eq(plus_head_available(None), False)
    (_m / "config.yaml").write_text("model: Emotion2vec\n"); (_m / "model.pt").write_bytes(b"x")
    test_eq(plus_head_available(_m), False)                                  # base model: no head
    (_m / "tokens.txt").write_text("\n".join(["angry", "happy", "neutral", "sad", "<unk>"]) + "\n")
    test_eq(plus_head_available(_m), False)                                  # a 5-label head is not the plus head
    (_m / "tokens.txt").write_text("\n".join([*"abcdefgh", "<unk>"]) + "\n")
    test_eq(plus_head_available(_m), True)


# %% [markdown]
# `PlusHead` makes the head a classifier of a protocol's classes, like the probe: its probabilities of the
# emotions the protocol names (disgusted → disgust, fearful → fear, surprised → surprise), renormalised over
# them. 'other' and 'unknown' name no protocol class; a protocol class the head lacks (EmoDB's boredom) gets
# probability 0, so its recall is 0 — a limit of the head, reported as measured, not hidden.

# %%
#| export
class PlusHead:
    "emotion2vec_plus's own 9-class head (an `Emotion2vecEncoder`) as a classifier over the protocol's `classes`."
    kind = "emotion2vec_plus_head"
    def __init__(self, encoder, classes):
        labels = list(getattr(encoder, "labels", None) or [])
        if len(labels) != PLUS_HEAD_LABELS:
            raise EibError(f"{getattr(encoder, 'name', encoder)} has a head of {len(labels)} labels, expected "
                           f"{PLUS_HEAD_LABELS}: not an emotion2vec_plus model")
        from eib.data import EMOTIONS, EMOTION_ALIASES  # the shared vocabulary: disgusted -> disgust, ...; not 'other'
        col = {e: i for i, l in enumerate(labels) if (e := EMOTION_ALIASES.get(l, l)) in EMOTIONS}
        self.encoder, self.classes_ = encoder, [str(c) for c in classes]
        self.missing = [c for c in self.classes_ if c not in col]  # protocol classes the head cannot say
        if len(self.missing) == len(self.classes_): raise EibError(f"the head names none of the classes {self.classes_}")
        self._cols = [col.get(c) for c in self.classes_]
    def __repr__(self): return f"PlusHead({self.encoder.name}, {len(self.classes_)} classes, missing {self.missing})"
    def predict_proba(self, utts) -> np.ndarray:
        "Probabilities `(N, C)` of `classes_` for a list of `(T, D)` frame arrays."
        P9 = np.stack([np.asarray(self.encoder.classify(f), np.float64) for f in utts])
        P = np.stack([P9[:, j] if j is not None else np.zeros(len(P9)) for j in self._cols], 1)
        s = P.sum(1, keepdims=True)
        return np.where(s > 0, P / np.where(s > 0, s, 1), 1 / len(self._cols))


# %% [markdown]
# With a random-weight plus model (funasr's own class, 32 dims; `eib.features.tiny_emotion2vec`) and an
# EmoDB-like class list: the probabilities are the head's own, renormalised, and boredom is never predicted.

# %%
from eib.features import get_encoder, tiny_emotion2vec, PLUS_LABELS
with tempfile.TemporaryDirectory() as _d:
    _plus = get_encoder("emotion2vec_plus_base", model_dir=tiny_emotion2vec(Path(_d) / "plus", labels=PLUS_LABELS), check_dim=False)
    _h = PlusHead(_plus, ["angry", "boredom", "neutral", "sad"])
    _u = [np.random.default_rng(i).normal(0, 1, (40, 32)).astype(np.float32) for i in range(3)]
    _P = _h.predict_proba(_u)
    test_eq((_P.shape, _h.missing), ((3, 4), ["boredom"])); test_close(_P.sum(1), np.ones(3)); test_eq(_P[:, 1], np.zeros(3))
    _p9, _i = _plus.classify(_u[0]), [_plus.labels.index(l) for l in ("angry", "neutral", "sad")]
    test_close(_P[0, [0, 2, 3]], _p9[_i] / _p9[_i].sum(), eps=1e-6)
    _base = get_encoder("emotion2vec_base", model_dir=tiny_emotion2vec(Path(_d) / "base"), check_dim=False)
    test_fail(lambda: PlusHead(_base, ["sad"]), contains="expected 9")
    test_fail(lambda: PlusHead(_plus, ["boredom", "calm"]), contains="names none")

# %% [markdown]
# ## Metrics
#
# `evaluate_predictions(y_true, proba, classes)` takes true labels and the classifier's probabilities (columns
# in `classes` order); the prediction is the column of highest probability (ties: the first in `classes`).
# It returns a JSON-able dict:
#
# | key | meaning |
# |---|---|
# | `n` | test utterances |
# | `accuracy` | fraction predicted correctly (emotion2vec's "WA") |
# | `balanced_accuracy` | mean recall over the classes present in `y_true` ("UA") |
# | `f1_weighted` | per-class F1 averaged with weights = true support |
# | `f1_macro` | plain mean of per-class F1 over classes that occur in `y_true` or the predictions (sklearn's rule) |
# | `mean_max_prob` | mean probability of the **predicted** class (the classifier's confidence in its own answer) |
# | `mean_true_label_prob` | mean probability given to the **correct** class |
# | `per_class` | `{class: {precision, recall, f1, support, predicted, mean_true_label_prob}}` (the last: mean P(c) over utterances whose true class is c); `null` where undefined (never predicted: no precision; no support: no recall) |
# | `confusion` | `{classes, matrix}`: rows = true class, columns = predicted class, in `classes` order |
# | `ci` | `{level, n_boot, seed, <metric>: [lo, hi]}`: percentile bootstrap intervals, resampling utterances |
#
# Bootstrap intervals are computed from confusion counts, vectorised over replicates, so 1000 replicates
# of a 1000-utterance test set take a fraction of a second.

# %%
#| export
CI_METRICS = ("accuracy", "balanced_accuracy", "f1_weighted", "f1_macro", "mean_true_label_prob")

def _counts(t: np.ndarray, p: np.ndarray, C: int):
    "Per-replicate support, predicted counts and true positives of label-index arrays `(B, n)`: each `(B, C)`."
    B = t.shape[0]
    off = np.arange(B)[:, None] * C
    bc = lambda a: np.bincount(a.ravel(), minlength=B * C).reshape(B, C)
    return bc(t + off), bc(p + off), bc((t + off)[t == p])

def _scores(sup, prd, tp, n) -> dict:
    den = sup + prd
    f1 = np.divide(2 * tp, den, out=np.zeros(tp.shape), where=den > 0)
    rec = np.divide(tp, sup, out=np.zeros(tp.shape), where=sup > 0)
    return dict(accuracy=tp.sum(1) / n, balanced_accuracy=rec.sum(1) / (sup > 0).sum(1),
                f1_weighted=(f1 * sup).sum(1) / n, f1_macro=f1.sum(1) / (den > 0).sum(1))

def _check_inputs(y_true, proba, classes):
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes): raise EibError(f"classes repeat: {classes}")
    P = np.asarray(proba, dtype=np.float64)
    y = [str(v) for v in y_true]
    if len(y) == 0: raise EibError("no test utterances: y_true is empty")
    if P.ndim != 2 or P.shape != (len(y), len(classes)):
        raise EibError(f"proba must be (n, C) = ({len(y)}, {len(classes)}) for {len(y)} labels and classes {classes}; got {P.shape}")
    if not np.isfinite(P).all() or (P < 0).any() or not np.allclose(P.sum(1), 1, atol=1e-4):
        raise EibError("proba rows must be finite, non-negative and sum to 1 (pass probabilities, not scores)")
    idx = {c: i for i, c in enumerate(classes)}
    bad = sorted(set(y) - set(idx))
    if bad: raise EibError(f"labels {bad} are not among classes {classes}")
    return classes, P, np.array([idx[v] for v in y])

def _nz(x): return None if x is None or not np.isfinite(x) else float(x)

def evaluate_predictions(y_true, proba, classes, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    "Accuracy, F1 (weighted, macro), per-class scores, confusion, probabilities and bootstrap intervals."
    classes, P, t = _check_inputs(y_true, proba, classes)
    if n_boot < 1: raise EibError(f"n_boot must be >= 1 (got {n_boot}): the results schema requires intervals")
    if not 0 < level < 1: raise EibError(f"level must be in (0, 1), got {level}")
    n, C = len(t), len(classes)
    p = P.argmax(1)
    ptrue, pmax = P[np.arange(n), t], P[np.arange(n), p]
    sup, prd, tp = (a[0] for a in _counts(t[None], p[None], C))
    point = {k: float(v[0]) for k, v in _scores(sup[None], prd[None], tp[None], n).items()}
    per_class = {}
    for i, c in enumerate(classes):
        pr = tp[i] / prd[i] if prd[i] else None
        rc = tp[i] / sup[i] if sup[i] else None
        f1 = 2 * tp[i] / (sup[i] + prd[i]) if sup[i] + prd[i] else None
        mt = float(P[t == i, i].mean()) if sup[i] else None  # mean P(c) over utterances whose true class is c
        per_class[c] = dict(precision=_nz(pr), recall=_nz(rc), f1=_nz(f1), support=int(sup[i]), predicted=int(prd[i]),
                            mean_true_label_prob=_nz(mt))
    cm = np.zeros((C, C), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    rng = np.random.default_rng(seed)
    boots = {k: [] for k in CI_METRICS}
    for s in range(0, n_boot, max(1, 2_000_000 // n)):  # chunks of about 2M resampled utterances
        idx = rng.integers(0, n, size=(min(n_boot - s, max(1, 2_000_000 // n)), n))
        for k, v in _scores(*_counts(t[idx], p[idx], C), n).items(): boots[k].append(v)
        boots["mean_true_label_prob"].append(ptrue[idx].mean(1))
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    ci = dict(level=level, n_boot=int(n_boot), seed=int(seed),
              **{k: [float(x) for x in np.percentile(np.concatenate(v), q)] for k, v in boots.items()})
    return dict(n=int(n), **point, mean_max_prob=float(pmax.mean()), mean_true_label_prob=float(ptrue.mean()),
                per_class=per_class, confusion=dict(classes=classes, matrix=cm.tolist()), ci=ci)


# %% [markdown]
# Checks against sklearn on hand-made cases: a perfect classifier scores 1; a constant classifier scores the
# majority frequency with the weighted F1 worked out by hand; random predictions match sklearn's numbers.

# %%
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
_cl = ["a", "b", "c"]
_y = np.array(["a"] * 6 + ["b"] * 3 + ["c"] * 1)
_m = evaluate_predictions(_y, np.eye(3)[[_cl.index(v) for v in _y]], _cl, n_boot=200)
test_eq([_m[k] for k in ("accuracy", "f1_weighted", "f1_macro", "mean_true_label_prob")], [1.0] * 4)
test_eq(_m["ci"]["accuracy"], [1.0, 1.0]); test_eq(_m["confusion"]["matrix"], [[6, 0, 0], [0, 3, 0], [0, 0, 1]])
_m = evaluate_predictions(_y, np.tile([0.5, 0.3, 0.2], (10, 1)), _cl, n_boot=200)  # always says "a"
test_close(_m["accuracy"], 0.6, eps=1e-12)
test_close(_m["f1_weighted"], 0.6 * (2 * 0.6 / 1.6), eps=1e-12)   # F1(a) = 2PR/(P+R) with P = 0.6, R = 1; others 0
test_close(_m["f1_macro"], (0.75 + 0 + 0) / 3, eps=1e-12)
test_close(_m["mean_max_prob"], 0.5, eps=1e-12); test_close(_m["mean_true_label_prob"], 0.6 * .5 + .3 * .3 + .1 * .2, eps=1e-12)
test_eq(_m["per_class"]["b"], dict(precision=None, recall=0.0, f1=0.0, support=3, predicted=0, mean_true_label_prob=0.3))

# %%
_r = np.random.default_rng(3)
_y = _r.choice(_cl, 300, p=[0.5, 0.3, 0.2]); _P = _r.dirichlet([1, 1, 1], 300); _yp = np.array(_cl)[_P.argmax(1)]
_m = evaluate_predictions(_y, _P, _cl, n_boot=300)
test_close(_m["accuracy"], accuracy_score(_y, _yp), eps=1e-12)
test_close(_m["balanced_accuracy"], balanced_accuracy_score(_y, _yp), eps=1e-12)
test_close(_m["f1_weighted"], f1_score(_y, _yp, average="weighted"), eps=1e-12)
test_close(_m["f1_macro"], f1_score(_y, _yp, average="macro"), eps=1e-12)
_pr, _rc, _f, _s = precision_recall_fscore_support(_y, _yp, labels=_cl)
test_close([_m["per_class"][c]["recall"] for c in _cl], _rc, eps=1e-12); test_close([_m["per_class"][c]["f1"] for c in _cl], _f, eps=1e-12)
test_eq(_m["confusion"]["matrix"], confusion_matrix(_y, _yp, labels=_cl).tolist())

# %% [markdown]
# The intervals contain the point estimates, are reproducible with the same seed, and shrink as the test set
# grows (roughly as 1/√n: 16 times the data, a quarter of the width).

# %%
for k in CI_METRICS: assert _m["ci"][k][0] <= _m[k] <= _m["ci"][k][1], k
test_eq(evaluate_predictions(_y, _P, _cl, n_boot=300)["ci"], _m["ci"])
_big = evaluate_predictions(np.tile(_y, 16), np.tile(_P, (16, 1)), _cl, n_boot=300)
_w = lambda m, k: m["ci"][k][1] - m["ci"][k][0]
for k in CI_METRICS: assert 0.15 < _w(_big, k) / _w(_m, k) < 0.4, (k, _w(_big, k) / _w(_m, k))
test_fail(lambda: evaluate_predictions(["a", "z"], np.eye(3)[:2], _cl), contains="labels ['z'] are not among")
test_fail(lambda: evaluate_predictions(["a"], [[2.0, -1.0, 0.0]], _cl), contains="sum to 1")
test_fail(lambda: evaluate_predictions(["a"], np.eye(3)[:1].T, _cl), contains="proba must be (n, C) = (1, 3)")


# %% [markdown]
# ## Baselines
#
# The **majority** baseline always says the most frequent *training* class (ties: the first in `classes`), and
# its probabilities are the training class frequencies, so its `mean_true_label_prob` is what knowing only
# the class priors gives. Any per-class claim ("neutral keeps ~100% recall") must beat it. The **unquantised**
# baseline is the probe on the original test features: the ceiling of every rate curve.

# %%
#| export
def majority_baseline(y_train, y_test, classes, **kw) -> dict:
    "Metrics (as `evaluate_predictions`, `**kw` passed on) of always predicting the most frequent training class."
    classes = [str(c) for c in classes]
    ytr = [str(v) for v in y_train]
    bad = sorted(set(ytr) - set(classes))
    if bad: raise EibError(f"training labels {bad} are not among classes {classes}")
    if not ytr: raise EibError("y_train is empty")
    freq = np.array([ytr.count(c) for c in classes], dtype=np.float64) / len(ytr)
    m = evaluate_predictions(y_test, np.tile(freq, (len(y_test), 1)), classes, **kw)
    return m | dict(majority_class=classes[int(freq.argmax())], train_freq={c: float(f) for c, f in zip(classes, freq)})

def unquantised_baseline(probe: Probe, utts, y, **kw) -> dict:
    "Metrics of `probe` on the original (unquantised) test frames `utts` with labels `y`."
    return evaluate_predictions(y, probe.predict_proba(utts), probe.classes_, **kw)


# %%
_mb = majority_baseline(["a", "a", "b", "c", "a"], ["a", "b", "b", "c"], _cl, n_boot=100)
test_eq(_mb["majority_class"], "a"); test_close(_mb["accuracy"], 0.25, eps=1e-12)
test_close(_mb["mean_true_label_prob"], (0.6 + 0.2 + 0.2 + 0.2) / 4, eps=1e-12)
test_eq(_mb["per_class"]["a"]["recall"], 1.0)
test_fail(lambda: majority_baseline(["x"], ["a"], _cl), contains="training labels ['x']")


# %% [markdown]
# ## The Gaussian rate–distortion bound
#
# For a Gaussian source with the covariance Σ of the test frames (eigenvalues λᵢ), coded frame by frame at R
# bits per frame, the least achievable MSE follows from reverse water-filling: Dᵢ = min(θ, λᵢ) with the water
# level θ set by R = Σᵢ ½ log₂(λᵢ / Dᵢ). We solve for θ exactly (the active set grows at known break-point rates).
#
# **Units.** `mse` is the mean squared error *per dimension* in original feature units, which is how the codec
# reports `mse` (`eib.rvq.rvq_report`); `mean`/`std` switch to the normalised space (x − mean) / std of the
# codec, matching its `mse_normalised`. At rate 0 the bound is the mean variance (the MSE of sending the test
# mean; covariance with 1/N).
#
# **What it is a bound of.** Among sources with covariance Σ, the Gaussian is the hardest to code, so this
# curve is an *upper* bound on the true distortion-rate function of the features under an i.i.d.-frame model:
# an ideal frame-by-frame code reaches it or better. A practical codec above it leaves room; one below it
# exploits non-Gaussian structure. It ignores correlation between frames, as does a codec that codes frames
# independently.

# %%
#| export
def gaussian_rd_bound(test_frames, rates_bpf, mean=None, std=None) -> pd.DataFrame:
    "Gaussian distortion-rate curve `DataFrame(bpf, mse)` by reverse water-filling on `test_frames`' covariance."
    x = np.concatenate(test_frames) if isinstance(test_frames, (list, tuple)) else np.asarray(test_frames)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2: raise EibError(f"test_frames must be (N, D) with N >= 2, got shape {x.shape}")
    if not np.isfinite(x).all(): raise EibError("test_frames hold NaN or infinite values")
    if (mean is None) != (std is None): raise EibError("pass both mean and std (the codec's normaliser), or neither")
    if std is not None:
        std = np.asarray(std, np.float64)
        if (std <= 0).any(): raise EibError("std must be positive")
        x = (x - np.asarray(mean, np.float64)) / std
    R = np.atleast_1d(np.asarray(rates_bpf, dtype=np.float64))
    if not np.isfinite(R).all() or (R < 0).any(): raise EibError(f"rates must be finite and >= 0, got {R.tolist()}")
    D = x.shape[1]
    lam = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False, bias=True).reshape(D, D)))[::-1]
    lam = lam[lam > lam[0] * 1e-12] if lam[0] > 0 else lam[:0]
    if len(lam) == 0: return pd.DataFrame(dict(bpf=R, mse=np.zeros_like(R)))
    l2 = np.log2(lam)
    cum = np.cumsum(l2)
    k = np.arange(1, len(lam) + 1)
    brk = 0.5 * (cum[:-1] - k[:-1] * l2[1:])        # rate at which component k+1 switches on
    na = 1 + np.searchsorted(brk, R, side="left")   # active components at each rate
    theta = 2.0 ** ((cum[na - 1] - 2 * R) / na)
    tail = np.concatenate([np.cumsum(lam[::-1])[::-1], [0.0]])  # sum of lam[j:]
    mse = (na * theta + tail[na]) / D
    return pd.DataFrame(dict(bpf=R, mse=mse))


# %%
_r = np.random.default_rng(0)
_x = _r.normal(0, 1, (4000, 8)) @ np.diag([3, 2, 1.5, 1, .5, .3, .2, .1])
_rd = gaussian_rd_bound(_x, np.linspace(0, 40, 81))
test_close(_rd.mse[0], np.var(_x, 0).mean(), eps=1e-10)            # rate 0: the mean variance
_d1 = np.diff(_rd.mse); assert (_d1 < 0).all() and (np.diff(_d1) > -1e-12).all()  # decreasing, convex
_w = np.linalg.eigvalsh(np.cov(_x, rowvar=False, bias=True))        # white after whitening: s^2 2^(-2R/D) exactly
_xw = (_x - _x.mean(0)) @ np.linalg.eigh(np.cov(_x, rowvar=False, bias=True))[1] / np.sqrt(_w) * 0.7
test_close(gaussian_rd_bound(_xw, [0, 4, 8, 30]).mse, 0.49 * 2 ** (-2 * np.array([0, 4, 8, 30]) / 8), eps=1e-9)

# %% [markdown]
# Exactness away from break points: with eigenvalues (4, 1) the second component switches on at
# R = ½ log₂ 4 = 1 bit; below that only the first is coded (D = (4·2^(−2R) + 1)/2), above it both
# (D = 2·2^(−R), since θ = √(4·1)·2^(−R)). The normalised space and bad input are handled too.

# %%
_x2 = np.column_stack([_r.normal(0, 1, 5000), _r.normal(0, 1, 5000)]); _x2 = (_x2 - _x2.mean(0)) / _x2.std(0)
_x2 = _x2 @ np.linalg.inv(np.linalg.cholesky(np.cov(_x2, rowvar=False, bias=True))).T * [2, 1]  # covariance exactly diag(4, 1)
test_close(gaussian_rd_bound(_x2, [0.5, 2, 5]).mse, [(4 * 2 ** -1 + 1) / 2, 2 * 2 ** -2, 2 * 2 ** -5], eps=1e-9)
test_close(gaussian_rd_bound(_x2 * 10 + 3, [0, 2], mean=[3, 3], std=[10, 10]).mse, gaussian_rd_bound(_x2, [0, 2]).mse, eps=1e-9)
test_fail(lambda: gaussian_rd_bound(_x2, [-1]), contains="rates must be finite and >= 0")
test_fail(lambda: gaussian_rd_bound(_x2, [1], mean=[0, 0]), contains="pass both mean and std")


# %% [markdown]
# ## Joining a feature store with a label protocol
#
# `store_split` reads one split of a feature store (`eib.features.load_store`) with labels from a protocol
# (`eib.data.apply_protocol`); utterances the protocol drops (e.g. IEMOCAP's frustrated) and utterances the
# store failed to encode are left out.

# %%
#| export
def store_split(store, protocol: str, split: str | None) -> tuple[list, list, np.ndarray, np.ndarray]:
    "`(ids, frames, labels, speakers)` of `split` (None: all) of a feature store, labelled by `protocol`."
    from eib.data import apply_protocol
    m = store.manifest
    if "error" in m.columns: m = m[m["error"].fillna("") == ""]
    if split is not None:
        if split not in set(m["split"]): raise EibError(f"no split {split!r} in the store; splits: {sorted(set(m['split']))}")
        m = m[m["split"] == split]
    m = apply_protocol(m.reset_index(drop=True), protocol, verbose=False)
    if len(m) == 0: raise EibError(f"split {split!r} holds no utterance labelled by protocol {protocol!r}")
    ids = list(m["id"])
    return ids, [store.frames(u) for u in ids], m["label"].to_numpy(str), m["speaker"].to_numpy(str)


# %%
from types import SimpleNamespace
_man = pd.DataFrame(dict(id=["u1", "u2", "u3", "u4"], speaker=["01", "01", "02", "02"], emotion=["calm", "sad", "angry", "happy"],
                         split=["train", "train", "test", "train"], error=["", "", "", "decode failed"]))
_st = SimpleNamespace(manifest=_man, frames=lambda u: np.full((3, 2), int(u[1]), np.float32))  # stands in for a FeatureStore
_ids, _fr, _lab, _spk = store_split(_st, "ravdess", "train")
test_eq(_ids, ["u1", "u2"]); test_eq(list(_lab), ["neutral", "sad"]); test_eq(_fr[1][0, 0], 2.0)
test_fail(lambda: store_split(_st, "ravdess", "val"), contains="splits: ['test', 'train']")

# %% [markdown]
# The rate grids: the thesis's "47 rate points" were 44 (10 to 200 in steps of 5, then 220 to 300 in steps of
# 20); the quick grid is four points. Targets above ~252 BPF (36 tokens at log₂ 129 bits) say nothing new.

# %%
#| export
THESIS_RATES_BPF = tuple(float(r) for r in [*range(10, 201, 5), *range(220, 301, 20)])
QUICK_RATES_BPF = (10.0, 100.0, 200.0, 300.0)

# %%
test_eq(len(THESIS_RATES_BPF), 44); test_eq((THESIS_RATES_BPF[38], THESIS_RATES_BPF[39]), (200.0, 220.0))

# %% [markdown]
# ## Worked example: noise in, F1 out
#
# Synthetic utterances from 12 speakers (8 train, 4 test), five classes of unequal size so that the majority
# baseline is not simply 1/C. The probe is trained on the clean training split; the test frames are degraded
# with Gaussian noise of growing variance (a stand-in for coarser quantisation; mean pooling averages
# 20–60 frames, so the noise that matters is the frame noise over √T), and the same probe is
# evaluated on them. Weighted F1 falls from the unquantised baseline towards the majority baseline; the
# probability the probe gives the true class falls towards what the class priors give.

# %%
_ex = blobs(n_speakers=12, n_per_class=(8, 4, 4, 3, 2), classes=("neutral", "happy", "sad", "angry", "fear"), dim=32,
            sep=0.6, seed=0)
tr, te = _ex[_ex.speaker < "s08"], _ex[_ex.speaker >= "s08"]
probe = fit_probe(list(tr.frames), tr.label, groups=tr.speaker)
base = unquantised_baseline(probe, list(te.frames), te.label, n_boot=300)
maj = majority_baseline(tr.label, te.label, probe.classes_, n_boot=300)
rng = np.random.default_rng(0)
rows = []
for sd in [0, 4, 8, 16, 32, 64, 128]:
    noisy = [f + rng.normal(0, sd, f.shape).astype(np.float32) for f in te.frames]
    m = evaluate_predictions(te.label, probe.predict_proba(noisy), probe.classes_, n_boot=300)
    rows.append(dict(noise_sd=sd, accuracy=m["accuracy"], f1_weighted=m["f1_weighted"],
                     f1_w_ci=f"[{m['ci']['f1_weighted'][0]:.2f}, {m['ci']['f1_weighted'][1]:.2f}]",
                     f1_macro=m["f1_macro"], mean_true_label_prob=m["mean_true_label_prob"], mean_max_prob=m["mean_max_prob"]))
curve = pd.DataFrame(rows)
print(probe, f"chosen by {probe.cv['scheme']}, CV weighted F1 {probe.cv['best']:.3f}")
print(f"unquantised: weighted F1 {base['f1_weighted']:.3f}; majority ({maj['majority_class']}): weighted F1 "
      f"{maj['f1_weighted']:.3f}, accuracy {maj['accuracy']:.3f}, true-label prob {maj['mean_true_label_prob']:.3f}")
curve.round(3)

# %%
test_close(curve.f1_weighted[0], base["f1_weighted"], eps=1e-12)     # no noise: the unquantised baseline
assert curve.f1_weighted.iloc[:5].is_monotonic_decreasing            # more noise, less emotion ...
assert abs(curve.f1_weighted.iloc[-1] - maj["f1_weighted"]) < 0.15   # ... down to the majority baseline
assert (curve.mean_max_prob.iloc[3:] > curve.mean_true_label_prob.iloc[3:] + 0.3).all()  # confident and wrong

# %% [markdown]
# Note how `mean_max_prob` (confidence in the predicted class) stays well above `mean_true_label_prob` at
# high noise: the probe stays confident while being wrong, which is why the two must never be confused.
