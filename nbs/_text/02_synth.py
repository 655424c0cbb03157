# %% [markdown]
# # The synthetic corpus
#
# > A synthetic acted-emotion corpus made with espeak-ng

# %%
#| default_exp synth

# %%
#| export
from __future__ import annotations
import math, os, shutil, subprocess, tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from xml.sax.saxutils import escape
import numpy as np
import pandas as pd
import soundfile as sf
from tqdm.auto import tqdm
from eib.core import EibError, SAMPLE_RATE, atomic_write_json, atomic_write_text, fingerprint
from eib.data import LABEL_PROTOCOLS, synth_root

# %%
from fastcore.test import test_eq, test_ne, test_fail, test_close

# %% [markdown]
# The book needs a corpus it can ship: the shared corpora are licensed and stay outside the repository. This
# one is made here, by the formant synthesiser `espeak-ng`, from sentences written for it. An "emotion" is
# a prosody profile, a point in (pitch, speed, amplitude, pitch range, word gap), the cues acted emotional
# speech is known to move. Every utterance draws its own values around its emotion's point, and every voice
# has its own habits, so classes overlap: the task is learnable, not trivial (measured at the end).
# espeak-ng is deterministic, and so is everything else here given the seed.

# %%
#| export
SENTENCES = (
    "The train leaves at nine.", "Put the cups on the table.", "The shop opens on Monday.",
    "My sister lives by the river.", "The window faces the garden.", "We walked to the market.",
    "The letter came this morning.", "He painted the fence.", "The keys are in the drawer.",
    "She reads the paper after lunch.", "The bus stops by the library.", "They moved the desk upstairs.",
    "The meeting starts at two.", "I left my coat in the car.", "The kettle is on the stove.",
    "Our neighbours have a grey cat.", "The bridge is made of stone.", "He ordered soup and bread.",
    "The lamp stands by the door.", "We need more paper.", "The road turns after the hill.",
    "She planted beans in spring.", "The clock in the hall is slow.", "They sold the old boat.",
    "The film lasts two hours.", "I will call you on Friday.", "The boxes are in the basement.",
    "The dog sleeps under the stairs.", "He checked the tyres.", "The class meets on Tuesday.",
)
# espeak-ng voices: a language voice plus a variant (+m1..m7 male, +f1..f5 female)
VOICES = ("en-us+m1", "en-us+f2", "en-gb+m3", "en-gb+f4", "en-gb-scotland+m5", "en-029+f1", "en-us-nyc+m7",
          "en-gb-x-rp+f5", "en+m2", "en+f3")
TEST_VOICES = ("en-gb-x-rp+f5", "en+m2", "en+f3")
# per emotion: espeak-ng -p pitch (0-99), -s speed (words/min), -a amplitude (0-200),
# SSML <prosody range> (% of the voice's pitch range), -g word gap (10 ms units)
PROFILES = {
    "neutral":  dict(pitch=45, speed=165, amplitude=100, range=70, gap=0),
    "happy":    dict(pitch=62, speed=185, amplitude=125, range=150, gap=0),
    "sad":      dict(pitch=32, speed=140, amplitude=75, range=35, gap=2),
    "angry":    dict(pitch=50, speed=190, amplitude=165, range=110, gap=0),
    "fear":     dict(pitch=72, speed=205, amplitude=95, range=55, gap=1),
    "surprise": dict(pitch=68, speed=160, amplitude=130, range=190, gap=0),
}
ESPEAK_RATE = 22050
TRIM_LEVEL, TRIM_TAIL_S = 10 ** (-50 / 20), 0.1  # trailing silence below -50 dBFS is cut to 0.1 s

def speaker_name(voice: str) -> str:
    "Filename-safe speaker id of an espeak-ng voice: 'en-us+m1' -> 'en-us-m1'."
    return voice.replace("+", "-")


# %%
test_eq(set(PROFILES), set(LABEL_PROTOCOLS["synth"]))  # the reader's protocol knows every class made here
test_eq((len(SENTENCES), len(set(SENTENCES)), set(TEST_VOICES) - set(VOICES)), (30, 30, set())); assert len(VOICES) >= 8, VOICES
test_eq(speaker_name("en-gb+f4"), "en-gb-f4")


# %% [markdown]
# ## The plan
#
# The plan fixes every utterance before anything is rendered, so the result does not depend on the order
# in which the workers finish. Each voice gets a personal offset of pitch (sd 5 units) and speed (sd 6%);
# each utterance then draws pitch (sd 7 units x `jitter`), and log-normal speed (sd 0.10), amplitude (0.20),
# pitch range (0.35) and an integer word-gap step, all scaled by `jitter`, around its emotion's profile.
# Each voice x emotion speaks `n_sentences` of the 30 sentences, drawn without repetition.

# %%
#| export
def _clip(v, lo, hi): return int(round(min(max(v, lo), hi)))

def make_plan(seed: int = 0, voices=VOICES, emotions=tuple(PROFILES), n_sentences: int = 7, jitter: float = 1.0,
              test_voices=TEST_VOICES) -> pd.DataFrame:
    "One row per utterance: id, speaker, voice, emotion, split, text and the espeak-ng parameters."
    bad = [e for e in emotions if e not in PROFILES]
    if bad: raise EibError(f"unknown emotion(s) {bad}; known: {', '.join(PROFILES)}")
    if not 1 <= n_sentences <= len(SENTENCES): raise EibError(f"n_sentences must be in 1..{len(SENTENCES)}, got {n_sentences}")
    rng, rows = np.random.default_rng(seed), []
    for voice in voices:
        dp, ds = rng.normal(0, 5), rng.normal(0, 0.06)
        for emo in emotions:
            pr = PROFILES[emo]
            for k in sorted(rng.choice(len(SENTENCES), n_sentences, replace=False)):
                z = rng.normal(size=5) * jitter
                spk = speaker_name(voice)
                rows.append(dict(id=f"{spk}_{emo}_s{k:02d}", speaker=spk, voice=voice, emotion=emo,
                                 split="test" if voice in test_voices else "train", sentence=int(k), text=SENTENCES[k],
                                 pitch=_clip(pr["pitch"] + dp + 7 * z[0], 0, 99),
                                 speed=_clip(pr["speed"] * math.exp(ds + 0.10 * z[1]), 80, 400),
                                 amplitude=_clip(pr["amplitude"] * math.exp(0.20 * z[2]), 10, 200),
                                 range=_clip(pr["range"] * math.exp(0.35 * z[3]), 5, 400),
                                 gap=_clip(pr["gap"] + z[4], 0, 20)))
    return pd.DataFrame(rows)


# %%
_p = make_plan(seed=0)
test_eq((len(_p), int(_p["id"].duplicated().sum()), _p["speaker"].nunique(), _p["emotion"].nunique()), (420, 0, 10, 6))
test_eq(_p, make_plan(seed=0)); test_ne(_p, make_plan(seed=1))
test_eq(set(_p.loc[_p["split"] == "test", "voice"]), set(TEST_VOICES))
test_eq(_p.groupby("emotion")["pitch"].mean().idxmin(), "sad")
test_fail(lambda: make_plan(emotions=("bored",)), contains="known: neutral")


# %% [markdown]
# ## Rendering one utterance
#
# `espeak-ng -m -z -v VOICE -p P -s S -a A -g G -w out.wav "<speak><prosody range=R%>text</prosody></speak>"`
# writes 22.05 kHz 16-bit mono; it is converted to 16 kHz with a polyphase filter (320/441) and written as
# 16-bit WAV, atomically. espeak-ng ends every utterance with 0.2-0.35 s of silence even with `-z`; the
# tail below -50 dBFS is cut to 0.1 s (this keeps the corpus small). A file is "already rendered" when it opens as 16 kHz mono 16-bit PCM with at
# least 0.3 s of audio.

# %%
#| export
def espeak_path() -> str:
    "Path of the espeak-ng program, or an EibError saying how to install it."
    p = shutil.which("espeak-ng")
    if not p: raise EibError("espeak-ng not found on PATH; install it (Debian/Ubuntu: apt-get install espeak-ng)")
    return p

def _ok(path: Path) -> bool:
    try: i = sf.info(str(path))
    except Exception: return False
    return i.samplerate == SAMPLE_RATE and i.channels == 1 and i.subtype == "PCM_16" and i.frames >= 0.3 * SAMPLE_RATE

def render(row, path: str | Path, exe: str | None = None) -> Path:
    "Render one plan row with espeak-ng to a 16 kHz mono int16 WAV at `path` (atomic)."
    from scipy.signal import resample_poly
    path, exe = Path(path), exe or espeak_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    ssml = f'<speak><prosody range="{row["range"]}%">{escape(row["text"])}</prosody></speak>'
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".espeak-") as d:
        raw = Path(d) / "raw.wav"
        cmd = [exe, "-m", "-z", "-v", row["voice"], "-p", str(row["pitch"]), "-s", str(row["speed"]),
               "-a", str(row["amplitude"]), "-g", str(row["gap"]), "-w", str(raw), ssml]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode or not raw.exists():
            raise EibError(f"espeak-ng failed for {row['id']} (voice {row['voice']!r}): {r.stderr.strip() or r.returncode}")
        x, fs = sf.read(str(raw), dtype="float32")
        if fs != ESPEAK_RATE or x.ndim != 1 or not len(x): raise EibError(f"espeak-ng wrote unexpected audio for {row['id']}: {fs} Hz, shape {x.shape}")
        y = np.clip(resample_poly(x, 320, 441), -1, 32767 / 32768)
        loud = np.flatnonzero(np.abs(y) > TRIM_LEVEL)
        if len(loud): y = y[:loud[-1] + 1 + int(TRIM_TAIL_S * SAMPLE_RATE)]  # keep 0.1 s after the last sound
        tmp = Path(d) / "out.wav"
        sf.write(str(tmp), (y * 32768).round().astype(np.int16), SAMPLE_RATE, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    return path


# %%
with tempfile.TemporaryDirectory() as d:
    f = render(_p.iloc[0], Path(d) / "a.wav")
    i = sf.info(str(f)); test_eq((i.samplerate, i.channels, i.subtype, _ok(f)), (16000, 1, "PCM_16", True))
    assert 0.8 < i.duration < 4, i.duration; test_eq(sorted(p.name for p in Path(d).iterdir()), ["a.wav"])
    test_fail(lambda: render({**_p.iloc[0].to_dict(), "voice": "xx-nonesuch"}, Path(d) / "b.wav"), contains="espeak-ng failed")
_path = os.environ["PATH"]
try: os.environ["PATH"] = "/nonexistent"; test_fail(espeak_path, contains="apt-get install espeak-ng")
finally: os.environ["PATH"] = _path


# %% [markdown]
# ## The corpus
#
# `make_corpus` renders the plan with 2 workers into `out_dir/audio/<speaker>/<id>.wav`, skipping files
# already rendered, and then writes `out_dir/manifest.csv` (path, speaker, emotion, split, text and the
# prosody parameters) atomically; `eib.data.read_dataset("synth", out_dir)` reads it. `out_dir/plan.json`
# records the settings: a folder made with other settings is refused (pass `overwrite=True` to replace
# it), so a resumed run never mixes two corpora.

# %%
#| export
def make_corpus(out_dir: str | Path, seed: int = 0, voices=VOICES, emotions=tuple(PROFILES), n_sentences: int = 7,
                jitter: float = 1.0, test_voices=TEST_VOICES, workers: int = 2, overwrite: bool = False,
                progress: bool = True) -> pd.DataFrame:
    "Render the synthetic corpus into `out_dir` (resumable) and return its manifest."
    exe, out_dir = espeak_path(), Path(out_dir)
    plan = make_plan(seed, voices, emotions, n_sentences, jitter, test_voices)
    settings = dict(seed=seed, voices=list(voices), emotions=list(emotions), n_sentences=n_sentences, jitter=jitter,
                    test_voices=list(test_voices), profiles={e: PROFILES[e] for e in emotions}, sentences=list(SENTENCES))
    fp = fingerprint(settings)
    pj = out_dir / "plan.json"
    if pj.exists():
        import json
        old = json.loads(pj.read_text()).get("fingerprint")
        if old != fp and not overwrite:
            raise EibError(f"{out_dir} holds a synthetic corpus made with other settings (plan {old}, now {fp}); "
                           "pass another out_dir, or overwrite=True to replace it")
        if old != fp:
            shutil.rmtree(out_dir / "audio", ignore_errors=True); (out_dir / "manifest.csv").unlink(missing_ok=True)
    ver = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.split("  Data at")[0].strip()
    atomic_write_json(pj, dict(fingerprint=fp, espeak_ng=ver, **settings))
    plan["path"] = [f"audio/{s}/{i}.wav" for s, i in zip(plan["speaker"], plan["id"])]
    todo = [r for r in plan.to_dict("records") if not _ok(out_dir / r["path"])]
    with ThreadPoolExecutor(max(1, workers)) as ex:
        futs = [ex.submit(render, r, out_dir / r["path"], exe) for r in todo]
        for f in tqdm(as_completed(futs), total=len(futs), desc="espeak-ng", disable=not progress or not futs): f.result()
    plan["duration_s"] = [round(sf.info(str(out_dir / p)).duration, 4) for p in plan["path"]]
    plan["seed"] = seed
    cols = ["path", "speaker", "emotion", "split", "text", "id", "voice", "sentence", "pitch", "speed", "amplitude",
            "range", "gap", "duration_s", "seed"]
    atomic_write_text(out_dir / "manifest.csv", plan[cols].to_csv(index=False))
    return plan[cols]

def ensure_corpus(out_dir: str | Path | None = None, **kw) -> Path:
    "The synthetic corpus folder (default `synth_root()`), made with `make_corpus` if it has no manifest yet."
    out_dir = Path(out_dir) if out_dir is not None else synth_root()
    if not (out_dir / "manifest.csv").exists(): make_corpus(out_dir, **kw)
    return out_dir


# %% [markdown]
# A tiny corpus (1 voice for training, 1 for testing, 2 emotions, 1 sentence each) checks the files, the
# manifest, resuming, determinism and the reader.

# %%
from eib.data import read_dataset, load_audio
with tempfile.TemporaryDirectory() as d:
    kw = dict(voices=("en-us+m1", "en+f3"), emotions=("sad", "angry"), n_sentences=1, test_voices=("en+f3",), progress=False)
    m = make_corpus(Path(d) / "a", seed=3, **kw)
    test_eq((len(m), set(m["split"])), (4, {"train", "test"}))
    test_eq({"path", "speaker", "emotion", "split", "text", "pitch", "speed", "amplitude", "range"} - set(m.columns), set())
    t = read_dataset("synth", Path(d) / "a")
    test_eq(set(t["emotion"]), {"sad", "angry"}); test_close(t["duration"].values, m.set_index("id").loc[t["id"], "duration_s"].values, eps=1e-3)
    test_eq([x for x in t["duration"] if not 0.5 < x < 5], [])
    m2 = make_corpus(Path(d) / "b", seed=3, **kw)  # a second folder, same seed: the same samples
    test_eq([p for p in m["path"] if not np.array_equal(load_audio(Path(d) / "a" / p), load_audio(Path(d) / "b" / p))], [])
    f0 = Path(d) / "a" / m["path"][0]; mt = f0.stat().st_mtime_ns; (Path(d) / "a" / m["path"][1]).unlink()
    make_corpus(Path(d) / "a", seed=3, **kw)     # resume: the missing file comes back, the others are kept
    test_eq(f0.stat().st_mtime_ns, mt); assert (Path(d) / "a" / m["path"][1]).exists(), m["path"][1]
    test_fail(lambda: make_corpus(Path(d) / "a", seed=4, **kw), contains="other settings")
    test_eq(ensure_corpus(Path(d) / "b"), Path(d) / "b")


# %% [markdown]
# ## Learnable, but not trivially
#
# A quick proxy for how hard the task is: five numbers per utterance (mean and sd of the frame RMS, median
# and sd of log-f0 from `librosa.yin` on the loud frames, duration), a logistic regression trained on the
# training voices and scored on the unseen test voices. With the features as they are (`raw`) the voices'
# own pitch and loudness get in the way; normalising each feature per speaker (`speaker_norm`, common
# practice in speech-emotion recognition) removes most of that. Chance is 1/6.

# %%
#| export
def prosody_features(path) -> np.ndarray:
    "RMS mean, RMS sd, median log-f0, sd log-f0 (loud frames, librosa.yin) and duration of one file."
    import librosa
    from eib.data import load_audio
    x = load_audio(path)
    rms = librosa.feature.rms(y=x)[0]
    f0 = librosa.yin(x, fmin=60, fmax=500, sr=SAMPLE_RATE)
    loud = (rms > 0.3 * rms.max())[:len(f0)]
    lf0 = np.log(f0[loud] if loud.any() else f0)
    return np.array([rms.mean(), rms.std(), np.median(lf0), lf0.std(), len(x) / SAMPLE_RATE])

def proxy_accuracy(df: pd.DataFrame, label_col: str = "emotion") -> dict:
    "Test accuracy of a logistic regression on `prosody_features`, raw and per-speaker normalised."
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X = np.stack([prosody_features(p) for p in tqdm(df["path"], desc="features", leave=False)])
    Z = X.copy()
    for s in df["speaker"].unique():
        i = (df["speaker"] == s).values
        Z[i] = (X[i] - X[i].mean(0)) / (X[i].std(0) + 1e-9)
    tr, y, out = (df["split"] == "train").values, df[label_col].values, {}
    for name, F in (("raw", X), ("speaker_norm", Z)):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(F[tr], y[tr])
        out[name] = round(float(clf.score(F[~tr], y[~tr])), 3)
    return out


# %% [markdown]
# ## The default corpus
#
# `ensure_corpus()` renders the default corpus (seed 0: 10 voices, 3 of them test, 6 emotions x 7 sentences
# per voice, 420 utterances, about 11.5 minutes) into `_cache/synth_audio`, which git ignores.

# %%
#| slow
import time
from eib.data import read_dataset
t0 = time.time(); root = ensure_corpus(); syn = read_dataset("synth", root)
print(f"{len(syn)} files, {syn['duration'].sum() / 60:.2f} min, {time.time() - t0:.0f} s")
test_eq((len(syn), syn["emotion"].nunique(), syn["speaker"].nunique()), (420, 6, 10))
assert syn["duration"].sum() < 12 * 60, syn["duration"].sum()
print(pd.crosstab(syn["emotion"], syn["split"]))

# %%
#| slow
acc = proxy_accuracy(syn); print(acc)
assert 1 / 6 + 0.2 < acc["speaker_norm"] < 0.95, acc; assert acc["raw"] > 1 / 6 + 0.1, acc
