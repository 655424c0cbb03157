# %% [markdown]
# # Corpora, splits and labels
#
# > Dataset readers: one utterance table per corpus

# %%
#| default_exp data

# %%
#| export
from __future__ import annotations
import math, re
from pathlib import Path
import numpy as np
import pandas as pd
import soundfile as sf
from eib.core import EibError, SAMPLE_RATE, datasets_root, repo_root

# %%
import tempfile
from fastcore.test import test_eq, test_ne, test_fail, test_close

# %% [markdown]
# Every corpus becomes the same table, one row per utterance:
#
# | column | meaning |
# |---|---|
# | `id` | unique, stable, filename-safe key (the corpus's own file stem where it has one) |
# | `path` | absolute path of the audio file |
# | `speaker` | speaker id, as a string |
# | `emotion` | the shared lower-case label (`EMOTIONS`, plus `excited`, `frustrated`, `other`, `unknown` for IEMOCAP) |
# | `emotion_orig` | the corpus's own label |
# | `split` | `train` or `test`, always speaker-disjoint |
# | `duration` | seconds, from the file header (NaN if the header cannot be read) |
# | `dataset` | the reader's name |
#
# plus columns particular to the corpus. Mapping emotions to evaluation classes is a separate step
# (`apply_protocol`), so the same table serves every protocol.

# %%
#| export
DATASETS = ("ravdess", "esd", "iemocap", "emodb", "manifest", "synth")
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise", "boredom")
AUDIO_EXTS = (".wav", ".flac")
_COLS = ["id", "path", "speaker", "emotion", "emotion_orig", "split", "duration", "dataset"]

def synth_root() -> Path:
    "Default folder of the synthetic corpus written by `eib.synth` (gitignored): `<repo>/_cache/synth_audio`."
    try: root = repo_root()
    except EibError:  # outside the repository: the one the installed package lives in
        import eib
        root = repo_root(Path(eib.__file__).parent)
    return root / "_cache" / "synth_audio"

def _duration(path) -> float:
    "Duration in seconds from the header, NaN when the file cannot be read."
    try: return float(sf.info(str(path)).duration)
    except Exception: return float("nan")

def _audio_files(root: Path) -> list[Path]:
    "All .wav/.flac files below `root`, sorted, skipping macOS `._` resource files."
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTS and not p.name.startswith("._")
                  and p.is_file())

def _finish(rows: list[dict], name: str, **attrs) -> pd.DataFrame:
    "Rows -> table with the common columns first, durations read, ids checked for uniqueness."
    df = pd.DataFrame(rows)
    df["dataset"] = name
    df["duration"] = [_duration(p) for p in df["path"]]
    dup = df["id"][df["id"].duplicated()]
    if len(dup): raise EibError(f"{name}: {len(dup)} duplicate utterance ids, e.g. {dup.iloc[0]!r}; "
                                "each audio file must have a unique name")
    df = df[_COLS + [c for c in df.columns if c not in _COLS]].sort_values("id", ignore_index=True)
    df.attrs.update(dataset=name, **attrs)
    return df


# %%
test_eq(len(DATASETS), 6)
test_eq(synth_root().parts[-2:], ("_cache", "synth_audio"))
_dur = _duration("/nonexistent.wav"); assert math.isnan(_dur), _dur

# %% [markdown]
# ## Where a corpus lives
#
# `root=None` looks in the shared datasets folder (`datasets_root()/<name>`), except for the synthetic
# corpus (`synth_root()`) and `manifest`, which always needs a folder. A missing folder is a user error:
# the message says where the data was expected and how to get it.

# %%
#| export
HOWTO = {
    "ravdess": "download Audio_Speech_Actors_01-24.zip from https://zenodo.org/records/1188976 (CC BY-NC-SA 4.0) "
               "and unpack it so that <root>/Actor_01/*.wav exists",
    "esd": "request the Emotional Speech Dataset (ESD) from https://hltsingapore.github.io/ESD/ and unpack it so "
           "that <root>/0001/Angry/0001_000351.wav exists",
    "iemocap": "request IEMOCAP_full_release from https://sail.usc.edu/iemocap/ and point root at the folder "
               "holding Session1 ... Session5",
    "emodb": "download download.zip from http://emodb.bilderbar.info/ and unpack it so that <root>/wav/03a01Fa.wav exists",
    "manifest": "pass root=<folder> holding manifest.csv (columns path, speaker, emotion[, split])",
    "synth": "run `from eib.synth import ensure_corpus; ensure_corpus()` (needs espeak-ng: apt-get install espeak-ng)",
}

def _resolve_root(name: str, root) -> Path:
    if root is None:
        if name == "manifest": raise EibError("read_dataset('manifest') needs root=<folder holding manifest.csv>")
        root = synth_root() if name == "synth" else datasets_root() / name
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise EibError(f"{name}: no data at {root}. To get it: {HOWTO[name]}; or pass root=<folder>.")
    return root

def read_dataset(name: str, root: str | Path | None = None) -> pd.DataFrame:
    "One row per utterance of corpus `name` (see `DATASETS`) found under `root`."
    if name not in _READERS:
        raise EibError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return _READERS[name](_resolve_root(name, root))


# %% [markdown]
# ## RAVDESS
#
# A RAVDESS file name is a 7-part code `modality-vocal-emotion-intensity-statement-repetition-actor`, e.g.
# `03-01-06-01-02-01-12` = audio-only, speech, fearful, normal intensity, "Dogs are sitting by the door",
# first repetition, actor 12 (even: female). All 8 emotions are read; merging calm into neutral is the
# protocol's job. Only speech (vocal channel 01) is read; song files, if present, are skipped and counted in
# `df.attrs["skipped"]`. The reader globs `.wav` and `.flac` recursively, so it reads the original release
# (`Actor_XX/*.wav`) and the shared 16 kHz copy (`audio/Actor_XX/*.flac`). Split: actors 1-18 train,
# 19-24 test (the shared folder's suggestion). Where the folder has a `manifest.csv`, its `note` column
# (a known duplicate pair) is carried.

# %%
#| export
RAVDESS_EMOTIONS = {"01": ("neutral", "neutral"), "02": ("calm", "calm"), "03": ("happy", "happy"),
                    "04": ("sad", "sad"), "05": ("angry", "angry"), "06": ("fear", "fearful"),
                    "07": ("disgust", "disgust"), "08": ("surprise", "surprised")}
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_RAV = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")

def _manifest_extra(root: Path, cols) -> dict:
    "Map file stem -> {col: value} from `root/manifest.csv`, for the `cols` it has (empty if absent)."
    m = root / "manifest.csv"
    if not m.exists(): return {}
    t = pd.read_csv(m, dtype=str, keep_default_na=False)
    cols = [c for c in cols if c in t.columns]
    if "path" not in t.columns or not cols: return {}
    return {Path(p).stem: {c: r[c] for c in cols} for p, r in zip(t["path"], t[cols].to_dict("records"))}

def read_ravdess(root: Path) -> pd.DataFrame:
    "RAVDESS speech: emotion, intensity, statement, repetition and actor from the file name."
    rows, skipped = [], 0
    extra = _manifest_extra(root, ["note"])
    for p in _audio_files(root):
        m = _RAV.match(p.stem)
        if not m or m[2] != "01" or m[3] not in RAVDESS_EMOTIONS: skipped += 1; continue
        actor = int(m[7])
        emo, orig = RAVDESS_EMOTIONS[m[3]]
        rows.append(dict(id=p.stem, path=str(p), speaker=f"Actor_{actor:02d}", emotion=emo, emotion_orig=orig,
                         split="train" if actor <= 18 else "test", intensity="normal" if m[4] == "01" else "strong",
                         statement=int(m[5]), text=RAVDESS_STATEMENTS.get(m[5], ""), repetition=int(m[6]),
                         gender="male" if actor % 2 else "female", **extra.get(p.stem, {})))
    if not rows: raise EibError(f"ravdess: no files named like 03-01-01-01-01-01-01.wav under {root}. "
                                f"To get it: {HOWTO['ravdess']}")
    return _finish(rows, "ravdess", skipped=skipped)


# %% [markdown]
# ## ESD
#
# The Emotional Speech Dataset has 10 Mandarin (0001-0010) and 10 English (0011-0020) speakers, each
# speaking 350 sentences in 5 emotions: `<root>/<speaker>/<Emotion>/<speaker>_<nnnnnn>.wav`. Some
# releases put the files one level deeper, in `train/`, `evaluation/` or `test/` folders inside each
# emotion folder; that utterance-level subset is kept in `esd_subset` but **not** used as the split,
# because it is not speaker-disjoint. Our split: speakers 0009, 0010 (Mandarin) and 0019, 0020 (English)
# are `test`, the other 16 `train`. The per-speaker transcript `<root>/<speaker>/<speaker>.txt`
# (`0001_000001<TAB>text<TAB>emotion`, emotion in English, or in Chinese for the Mandarin speakers) gives
# `text`; its label is checked against the folder name, and disagreements are counted in
# `df.attrs["label_mismatch"]` (the folder wins).

# %%
#| export
ESD_EMOTIONS = {"neutral": "neutral", "happy": "happy", "angry": "angry", "sad": "sad", "surprise": "surprise",
                "中立": "neutral", "快乐": "happy", "生气": "angry", "伤心": "sad", "惊喜": "surprise"}
ESD_TEST_SPEAKERS = ("0009", "0010", "0019", "0020")
_ESD = re.compile(r"^(\d{4})_(\d{6})$")

def _read_text(path: Path) -> str:
    "Text of a transcript file, trying the encodings ESD's files come in."
    b = path.read_bytes()
    for enc in ("utf-8-sig", "utf-16", "gb18030"):
        try: return b.decode(enc)
        except UnicodeDecodeError: pass
    return b.decode("utf-8", errors="replace")

def _esd_transcripts(root: Path, spk: str) -> dict:
    f = root / spk / f"{spk}.txt"
    out = {}
    if f.exists():
        for line in _read_text(f).splitlines():
            parts = [s.strip() for s in line.split("\t")]
            if len(parts) >= 3 and _ESD.match(parts[0]): out[parts[0]] = (parts[1], parts[2])
    return out

def read_esd(root: Path) -> pd.DataFrame:
    "ESD: speaker and emotion from the folders, text from the per-speaker transcript."
    rows, skipped, mismatch, trans = [], 0, 0, {}
    for p in _audio_files(root):
        rel = p.relative_to(root).parts
        m = _ESD.match(p.stem)
        if len(rel) < 3 or not m or rel[0] != m[1] or rel[1].lower() not in ESD_EMOTIONS: skipped += 1; continue
        spk = m[1]
        if spk not in trans: trans[spk] = _esd_transcripts(root, spk)
        text, temo = trans[spk].get(p.stem, ("", ""))
        emo = ESD_EMOTIONS[rel[1].lower()]
        if temo and ESD_EMOTIONS.get(temo.lower(), temo) != emo: mismatch += 1
        rows.append(dict(id=p.stem, path=str(p), speaker=spk, emotion=emo, emotion_orig=rel[1],
                         split="test" if spk in ESD_TEST_SPEAKERS else "train",
                         language="zh" if int(spk) <= 10 else "en", text=text,
                         esd_subset=rel[2] if len(rel) > 3 else ""))
    if not rows: raise EibError(f"esd: no files like <speaker>/<Emotion>/0001_000001.wav under {root}. "
                                f"To get it: {HOWTO['esd']}")
    return _finish(rows, "esd", skipped=skipped, label_mismatch=mismatch)


# %% [markdown]
# ## IEMOCAP
#
# Audio: `<root>/Session{n}/sentences/wav/<dialog>/<utterance>.wav`; labels: one file per dialog,
# `<root>/Session{n}/dialog/EmoEvaluation/<dialog>.txt`, whose summary lines read
# `[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]` (start, end, utterance,
# consensus label, valence/activation/dominance). Each session has two actors; the gender letter of the
# utterance's last part says who speaks, so `Ses01F_impro01_M003` is speaker `Ses01M`. Session 5 is `test`.
# Codes: neu, hap, exc, sad, ang, fru, sur, fea, dis, oth, and xxx (no majority) which becomes `unknown`.
# Utterances with audio but no label line, and label lines without audio, are counted in `df.attrs`.

# %%
#| export
IEMOCAP_EMOTIONS = {"neu": "neutral", "hap": "happy", "exc": "excited", "sad": "sad", "ang": "angry",
                    "fru": "frustrated", "sur": "surprise", "fea": "fear", "dis": "disgust", "oth": "other",
                    "xxx": "unknown"}
_IEM = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(Ses\d\d[FM]_\S+)\s+(\w+)\s+\[([^\]]*)\]")

def _iemocap_labels(root: Path) -> dict:
    "utterance id -> (start, end, code, (v, a, d)) from every EmoEvaluation file."
    out = {}
    for f in sorted(root.glob("Session*/dialog/EmoEvaluation/*.txt")):
        if f.name.startswith("._"): continue
        for line in _read_text(f).splitlines():
            m = _IEM.match(line.strip())
            if not m: continue
            try: vad = tuple(float(x) for x in m[5].split(","))
            except ValueError: vad = (math.nan,) * 3
            out[m[3]] = (float(m[1]), float(m[2]), m[4], vad if len(vad) == 3 else (math.nan,) * 3)
    return out

def read_iemocap(root: Path) -> pd.DataFrame:
    "IEMOCAP: consensus labels from EmoEvaluation, speaker = session + gender letter, session 5 = test."
    labels, rows, unlabelled = _iemocap_labels(root), [], 0
    for p in sorted(root.glob("Session*/sentences/wav/*/*")):
        if p.suffix.lower() not in AUDIO_EXTS or p.name.startswith("._"): continue
        if p.stem not in labels: unlabelled += 1; continue
        start, end, code, (v, a, d) = labels[p.stem]
        sess, g = int(p.stem[3:5]), p.stem.rsplit("_", 1)[-1][0]
        rows.append(dict(id=p.stem, path=str(p), speaker=f"Ses{sess:02d}{g}", emotion=IEMOCAP_EMOTIONS.get(code, "unknown"),
                         emotion_orig=code, split="test" if sess == 5 else "train", session=sess,
                         dialog=p.parent.name, gender="female" if g == "F" else "male",
                         improvised="_impro" in p.stem, start=start, end=end, valence=v, activation=a, dominance=d))
    if not rows: raise EibError(f"iemocap: no labelled Session*/sentences/wav/*/*.wav under {root}. "
                                f"To get it: {HOWTO['iemocap']}")
    return _finish(rows, "iemocap", unlabelled_audio=unlabelled, labels_without_audio=len(labels) - len(rows))


# %% [markdown]
# ## EmoDB
#
# An Emo-DB file name is `<speaker 2 digits><text code><emotion letter><version>`, e.g. `03a01Fa`: speaker
# 03, text a01, F = Freude (happy), version a. Letters: W Wut (angry), L Langeweile (boredom), E Ekel
# (disgust), A Angst (fear), F Freude (happy), T Trauer (sad), N neutral. Speakers 03 and 09 are `test`.
# The shared copy (`audio/<speaker>/*.flac`) is partly **truncated at 2 s** and resampled (see its README):
# its `manifest.csv` gives `audio_condition` (`original_16k`, `upsampled_padded_restored`,
# `upsampled_truncated_2s`), carried here; do not use duration as a feature on that copy. On the original
# release (`wav/*.wav`, no manifest) `audio_condition` is empty.

# %%
#| export
EMODB_EMOTIONS = {"W": ("angry", "W (Ärger)"), "L": ("boredom", "L (Langeweile)"), "E": ("disgust", "E (Ekel)"),
                  "A": ("fear", "A (Angst)"), "F": ("happy", "F (Freude)"), "T": ("sad", "T (Trauer)"),
                  "N": ("neutral", "N (neutral)")}
EMODB_MALE = ("03", "10", "11", "12", "15")
EMODB_TEST_SPEAKERS = ("03", "09")
_EMO = re.compile(r"^(\d\d)([ab]\d\d)([WLEAFTN])([a-z])$")

def read_emodb(root: Path) -> pd.DataFrame:
    "Emo-DB: speaker, text, emotion and version from the file name; `audio_condition` from manifest.csv."
    rows, skipped = [], 0
    extra = _manifest_extra(root, ["audio_condition"])
    for p in _audio_files(root):
        m = _EMO.match(p.stem)
        if not m: skipped += 1; continue
        emo, orig = EMODB_EMOTIONS[m[3]]
        rows.append(dict(id=p.stem, path=str(p), speaker=m[1], emotion=emo, emotion_orig=orig,
                         split="test" if m[1] in EMODB_TEST_SPEAKERS else "train", text_id=m[2], version=m[4],
                         gender="male" if m[1] in EMODB_MALE else "female",
                         audio_condition=extra.get(p.stem, {}).get("audio_condition", "")))
    if not rows: raise EibError(f"emodb: no files named like 03a01Fa.wav under {root}. To get it: {HOWTO['emodb']}")
    return _finish(rows, "emodb", skipped=skipped)


# %% [markdown]
# ## Any folder with a manifest, and the synthetic corpus
#
# `manifest.csv` needs the columns `path` (relative to the folder), `speaker` and `emotion`; an `id` column
# is used when present, otherwise the id is the relative path without extension, `/` -> `__`. Common
# spellings of emotions are normalised (`fearful` -> `fear`, `surprised` -> `surprise`, ...), other labels
# are kept in lower case. Without a `split` column the split is speaker-disjoint and deterministic: the
# speakers sorted by name, the last `ceil(25%)` of them `test` (at least one speaker on each side).
# Other columns are kept. The synthetic corpus of `eib.synth` is read the same way.

# %%
#| export
EMOTION_ALIASES = {"fearful": "fear", "afraid": "fear", "scared": "fear", "surprised": "surprise",
                   "anger": "angry", "mad": "angry", "happiness": "happy", "joy": "happy", "sadness": "sad",
                   "disgusted": "disgust", "neu": "neutral", "bored": "boredom"}

def _safe_id(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(s)).strip("._") or "utt"

def speaker_split(speakers, test_frac: float = 0.25) -> dict:
    "Deterministic speaker-disjoint split: sorted speakers, the last ceil(test_frac) of them 'test'."
    spk = sorted(set(map(str, speakers)))
    if len(spk) < 2: raise EibError(f"cannot make a speaker-disjoint split from {len(spk)} speaker(s); "
                                    "add a split column to manifest.csv")
    n_test = min(len(spk) - 1, max(1, math.ceil(test_frac * len(spk))))
    return {s: ("test" if i >= len(spk) - n_test else "train") for i, s in enumerate(spk)}

def _not_utf8_rows(t: pd.DataFrame) -> pd.DataFrame:
    """A manifest may name files whose names are not UTF-8 (a Latin-1 name on a POSIX file system). Their rows are
    kept, the odd bytes shown escaped (`m\\xfcde.wav`), and `read_error` says why they will not be encoded: the
    whole manifest is not refused for one name."""
    t = t.copy(); t["read_error"] = ""
    for c in [c for c in t.columns if c != "read_error"]:
        for i, v in t[c].items():
            if isinstance(v, str) and any("\udc80" <= ch <= "\udcff" for ch in v):
                t.at[i, c] = v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                t.at[i, "read_error"] = f"{c} {t.at[i, c]} is not UTF-8 text: rename the file, or save the manifest as UTF-8"
    return t

def _read_manifest(root: Path, name: str) -> pd.DataFrame:
    f = root / "manifest.csv"
    if not f.exists(): raise EibError(f"{name}: no manifest.csv in {root}. {HOWTO[name]}")
    try: t = pd.read_csv(f, dtype=object, keep_default_na=False, encoding_errors="surrogateescape")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e: raise EibError(f"{f} is not a readable CSV file ({e})") from None
    t = _not_utf8_rows(t)
    miss = [c for c in ("path", "speaker", "emotion") if c not in t.columns]
    if miss: raise EibError(f"{f}: missing column(s) {', '.join(miss)}; needs path, speaker, emotion[, split]")
    if not len(t): raise EibError(f"{f} lists no utterances")
    t["emotion_orig"] = t["emotion_orig"] if "emotion_orig" in t.columns else t["emotion"].astype(str)
    emo = t["emotion"].astype(str).str.strip().str.lower()
    t["emotion"] = emo.map(lambda e: EMOTION_ALIASES.get(e, e))
    if "split" in t.columns and len(t["split"]) and (t["split"] != "").all():
        bad = sorted(set(t["split"]) - {"train", "test"})
        if bad: raise EibError(f"{f}: split must be 'train' or 'test', found {bad}")
        split_rule = "manifest"
    else:
        t["split"] = t["speaker"].map(speaker_split(t["speaker"])); split_rule = "speaker-sorted last 25% test"
    rel = t["path"].astype(str)
    t["id"] = [_safe_id(i) for i in t["id"]] if "id" in t.columns else [_safe_id(re.sub(r"\.[^./]+$", "", r).replace("/", "__")) for r in rel]
    t["path"] = [str((root / r).resolve()) for r in rel]
    t = t.drop(columns=[c for c in ("dataset", "duration") if c in t.columns])
    return _finish(t.to_dict("records"), name, split_rule=split_rule)

def read_manifest(root: Path) -> pd.DataFrame:
    "Any corpus described by `root/manifest.csv` (path, speaker, emotion[, split, ...])."
    return _read_manifest(root, "manifest")

def read_synth(root: Path) -> pd.DataFrame:
    "The synthetic espeak-ng corpus written by `eib.synth.make_corpus`."
    return _read_manifest(root, "synth")

_READERS = dict(ravdess=read_ravdess, esd=read_esd, iemocap=read_iemocap, emodb=read_emodb,
                manifest=read_manifest, synth=read_synth)

# %%
test_eq(set(_READERS), set(DATASETS))
test_fail(lambda: read_dataset("crema"), contains="known: ravdess, esd, iemocap, emodb, manifest, synth")
test_fail(lambda: read_dataset("ravdess", root="/nonexistent/ravdess"), contains="zenodo")
test_fail(lambda: read_dataset("manifest"), contains="needs root")
test_eq(speaker_split(["b", "a", "d", "c", "e"]), dict(a="train", b="train", c="train", d="test", e="test"))
test_fail(lambda: speaker_split(["a", "a"]), contains="speaker-disjoint")

# %%
import tempfile
with tempfile.TemporaryDirectory() as _d:  # a file name that is not UTF-8 (Latin-1 "müde.wav"): its row is kept, with its error
    (Path(_d) / "manifest.csv").write_bytes(b"path,speaker,emotion,split\nm\xfcde.wav,s1,sad,train\nok.wav,s2,angry,test\n")
    _t = read_dataset("manifest", root=_d)
    test_eq(list(_t.id), ["m_xfcde", "ok"])
    test_eq(list(_t.read_error), ["path m\\xfcde.wav is not UTF-8 text: rename the file, or save the manifest as UTF-8", ""])

# %% [markdown]
# ## Label protocols
#
# A protocol maps the shared emotion labels to the classes of an evaluation; `None` (or a label the protocol
# does not name) drops the utterance. RAVDESS: 7 classes, calm merged into neutral. ESD: its 5 emotions.
# IEMOCAP: the usual 4 classes, excited merged into happy, the rest dropped. Emo-DB: its 7 emotions.
# Synth: the 6 it generates. `apply_protocol(df, "identity")` keeps every label.

# %%
#| export
_ID = lambda *e: {x: x for x in e}
LABEL_PROTOCOLS = {
    "ravdess": {**_ID("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise"), "calm": "neutral"},
    "esd": _ID("neutral", "happy", "angry", "sad", "surprise"),
    "iemocap": {**_ID("angry", "happy", "neutral", "sad"), "excited": "happy", "frustrated": None,
                "surprise": None, "fear": None, "disgust": None, "other": None, "unknown": None},
    "emodb": _ID("neutral", "happy", "sad", "angry", "fear", "disgust", "boredom"),
    "synth": _ID("neutral", "happy", "sad", "angry", "fear", "surprise"),
}

KNOWN_EMOTIONS = frozenset(k for m in LABEL_PROTOCOLS.values() for k, v in m.items() if v) | {"contempt"}

def known_emotions(dataset: str) -> set:
    "The labels `dataset`'s protocol maps or drops; for a corpus without one (`manifest`), `KNOWN_EMOTIONS`."
    return set(LABEL_PROTOCOLS.get(dataset, KNOWN_EMOTIONS))

def unknown_emotions(dataset: str, emotions) -> np.ndarray:
    "True where an emotion label is not in `known_emotions(dataset)` (a misspelt label would become a class of its own)."
    known = known_emotions(dataset)
    return np.array([str(e) not in known for e in emotions], dtype=bool)

def apply_protocol(df: pd.DataFrame, name: str, verbose: bool = True) -> pd.DataFrame:
    "Add a `label` column by protocol `name`; drop rows mapped to None (counts in `attrs['protocol_dropped']`)."
    if name in ("identity", "manifest"): mapping = None
    elif name in LABEL_PROTOCOLS: mapping = LABEL_PROTOCOLS[name]
    else: raise EibError(f"unknown label protocol {name!r}; known: {', '.join([*LABEL_PROTOCOLS, 'identity'])}")
    out = df.copy()
    out["label"] = out["emotion"] if mapping is None else out["emotion"].map(lambda e: mapping.get(e))
    drop = out["label"].isna()
    dropped = out.loc[drop, "emotion"].value_counts().to_dict()
    out = out[~drop].reset_index(drop=True)
    out.attrs.update(df.attrs, protocol=name, protocol_dropped={k: int(v) for k, v in dropped.items()})
    if verbose and dropped:
        print(f"apply_protocol({name!r}): dropped {int(drop.sum())} of {len(df)} utterances "
              f"({', '.join(f'{k} {v}' for k, v in sorted(dropped.items()))})")
    return out


# %%
_t = pd.DataFrame(dict(id=list("abcde"), emotion=["calm", "neutral", "excited", "frustrated", "sad"]))
_r = apply_protocol(_t, "ravdess", verbose=False)
test_eq(list(_r["label"]), ["neutral", "neutral", "sad"]); test_eq(_r.attrs["protocol_dropped"], {"excited": 1, "frustrated": 1})
_i = apply_protocol(_t, "iemocap", verbose=False)
test_eq(list(_i["label"]), ["neutral", "happy", "sad"]); test_eq(_i.attrs["protocol_dropped"], {"calm": 1, "frustrated": 1})
test_eq(len(set(LABEL_PROTOCOLS["ravdess"].values())), 7)
test_fail(lambda: apply_protocol(_t, "ravdes"), contains="known: ravdess")
test_eq(unknown_emotions("manifest", ["happy", "angyr", "contempt"]).tolist(), [False, True, False])
test_eq(unknown_emotions("ravdess", ["calm", "boredom"]).tolist(), [False, True])
test_eq(known_emotions("synth"), {"neutral", "happy", "sad", "angry", "fear", "surprise"})


# %% [markdown]
# ## A reproducible subset
#
# Evaluations run on up to N utterances per class of one split. The draw depends only on the seed and the
# set of ids (rows are sorted by id first), not on the row order of the input. A class with fewer than N
# utterances keeps all of them; such classes are listed in `attrs["short_classes"]`.

# %%
#| export
def select_subset(df: pd.DataFrame, n_per_emotion: int | None = 100, seed: int = 42, split: str | None = "test",
                  label_col: str = "label") -> pd.DataFrame:
    "Up to `n_per_emotion` random rows per class of `split` (None: all splits); a short class keeps all its rows."
    if label_col not in df.columns:
        raise EibError(f"no column {label_col!r}; call apply_protocol(df, name) first or pass label_col='emotion'")
    if split is not None:
        if split not in set(df["split"]): raise EibError(f"no rows with split={split!r}; splits: {sorted(set(df['split']))}")
        df = df[df["split"] == split]
    df = df.sort_values("id", ignore_index=True)
    parts, short = [], {}
    for lab, g in df.groupby(label_col, sort=True):
        if n_per_emotion is None or len(g) <= n_per_emotion:
            parts.append(g)
            if n_per_emotion is not None and len(g) < n_per_emotion: short[lab] = len(g)
        else: parts.append(g.sample(n=n_per_emotion, random_state=seed))
    out = pd.concat(parts).sort_values([label_col, "id"], ignore_index=True)
    out.attrs.update(df.attrs, subset=dict(n_per_emotion=n_per_emotion, seed=seed, split=split), short_classes=short)
    return out


# %%
_d = pd.DataFrame(dict(id=[f"u{i:03d}" for i in range(50)], split="test", label=["a"] * 40 + ["b"] * 10))
_s1, _s2 = select_subset(_d, 20, seed=1), select_subset(_d.sample(frac=1, random_state=0), 20, seed=1)
test_eq(list(_s1["id"]), list(_s2["id"]))                       # same seed, any row order: same ids
test_eq(_s1["label"].value_counts().to_dict(), {"a": 20, "b": 10}); test_eq(_s1.attrs["short_classes"], {"b": 10})
test_ne(list(select_subset(_d, 20, seed=2)["id"]), list(_s1["id"]))
test_fail(lambda: select_subset(_d.drop(columns="label")), contains="apply_protocol")

# %% [markdown]
# ## Reading audio
#
# `load_audio` returns float32 mono at `sr`: channels are averaged, the rate converted with a polyphase
# filter (`scipy.signal.resample_poly`). A file that cannot be read, holds no samples, or holds NaN/inf
# raises an `EibError` naming the file.

# %%
#| export
MAX_PEAK = 16.0  # a float file may overshoot [-1, 1] a little; beyond this it is not a waveform scaled as audio

def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    "Float32 mono samples of `path` at `sr` Hz."
    from scipy.signal import resample_poly
    path = Path(path)
    if not path.is_file(): raise EibError(f"audio file not found: {path}")
    try: x, fs = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e: raise EibError(f"cannot read audio file {path} (corrupt or unsupported format): {e}") from None
    if x.size == 0: raise EibError(f"audio file {path} holds no samples")
    if not np.isfinite(x).all(): raise EibError(f"audio file {path} holds NaN or infinite samples")
    peak = float(np.abs(x).max())
    if peak > MAX_PEAK: raise EibError(f"audio file {path} peaks at {peak:.3g}; samples belong in [-1, 1] (is it scaled wrongly?)")
    x = x.mean(axis=1)
    if fs != sr:
        g = math.gcd(int(fs), int(sr))
        x = resample_poly(x, sr // g, int(fs) // g).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


# %%
with tempfile.TemporaryDirectory() as d:
    d = Path(d); t = np.arange(22050) / 22050
    sf.write(d / "st.wav", np.stack([np.sin(2 * np.pi * 440 * t)] * 2, 1) * 0.5, 22050, subtype="PCM_16")
    y = load_audio(d / "st.wav")
    test_eq((y.dtype, len(y)), (np.float32, 16000)); test_close(np.abs(y).max(), 0.5, eps=0.01)
    (d / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    test_fail(lambda: load_audio(d / "bad.wav"), contains="bad.wav")
    sf.write(d / "empty.wav", np.zeros(0), 16000)
    test_fail(lambda: load_audio(d / "empty.wav"), contains="no samples")
    sf.write(d / "nan.wav", np.array([0.1, np.nan, 0.2], dtype=np.float32), 16000, subtype="FLOAT")
    test_fail(lambda: load_audio(d / "nan.wav"), contains="NaN")
    sf.write(d / "loud.wav", np.array([0.1, 1e30, 0.2], dtype=np.float32), 16000, subtype="FLOAT")
    test_fail(lambda: load_audio(d / "loud.wav"), contains="peaks at 1e+30")
    test_fail(lambda: load_audio(d / "missing.wav"), contains="not found")

# %% [markdown]
# ## The real corpora
#
# On the shared folder, RAVDESS has 1440 files from 24 actors in 8 emotions: 1080 train (actors 1-18) and
# 360 test (19-24). Neutral has half as many files (no strong intensity), so after merging calm the neutral
# class holds 96 + 192 = 288 files. Emo-DB has 535 files, 443 train and 92 test. The cells skip with a
# message when the shared folder is absent.

# %%
if (datasets_root() / "ravdess").is_dir():
    rav = read_dataset("ravdess")
    test_eq((len(rav), rav["speaker"].nunique(), rav["emotion"].nunique()), (1440, 24, 8))
    test_eq(rav["split"].value_counts().to_dict(), {"train": 1080, "test": 360})
    test_eq(rav["duration"].isna().sum(), 0); test_eq(rav["id"][rav["id"].duplicated()].tolist(), [])
    r7 = apply_protocol(rav, "ravdess")
    test_eq((len(r7), r7["label"].nunique()), (1440, 7))
    test_eq(r7.groupby("split")["label"].value_counts()["test"].to_dict(),
            dict(neutral=72, angry=48, disgust=48, fear=48, happy=48, sad=48, surprise=48))
    test_eq(r7.groupby("split")["label"].value_counts()["train"]["neutral"], 216)
    sub = select_subset(r7, 60)
    test_eq(sub["label"].value_counts().to_dict()["neutral"], 60); test_eq(sub.attrs["short_classes"], {
        k: 48 for k in ["angry", "disgust", "fear", "happy", "sad", "surprise"]})
    test_eq(len(load_audio(rav["path"][0])) / 16000, rav["duration"][0])
else: print(f"skipped: no RAVDESS at {datasets_root() / 'ravdess'}")

# %%
if (datasets_root() / "emodb").is_dir():
    emo = read_dataset("emodb")
    test_eq((len(emo), emo["speaker"].nunique(), emo["emotion"].nunique()), (535, 10, 7))
    test_eq(emo["split"].value_counts().to_dict(), {"train": 443, "test": 92})
    test_eq(emo["emotion"].value_counts().to_dict(),
            dict(angry=127, boredom=81, neutral=79, happy=71, fear=69, sad=62, disgust=46))
    test_eq(emo["audio_condition"].value_counts().to_dict(),
            dict(upsampled_truncated_2s=342, upsampled_padded_restored=101, original_16k=92))
    test_eq(apply_protocol(emo, "emodb")["label"].nunique(), 7)
else: print(f"skipped: no Emo-DB at {datasets_root() / 'emodb'}")


# %% [markdown]
# The original releases' layouts (`Actor_XX/*.wav` for RAVDESS, a flat `wav/` folder for Emo-DB) read the
# same way; song files and files with other names are skipped and counted.

# %%
def _wav(p, n=1600, sr=16000, seed=0):
    "A short noise file (`n` samples) for fixtures."
    p.parent.mkdir(parents=True, exist_ok=True)
    sf.write(p, np.random.default_rng(seed).uniform(-.1, .1, n).astype(np.float32), sr, subtype="PCM_16")

with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    for n in ("Actor_01/03-01-02-02-01-02-01.wav", "Actor_20/03-01-08-01-02-01-20.wav", "Actor_20/03-02-03-01-01-01-20.wav",
              "Actor_20/readme.wav"):
        _wav(d / "rav" / n, sr=48000, n=4800)
    r = read_dataset("ravdess", d / "rav").set_index("id")
    test_eq(r[["speaker", "emotion", "split", "intensity", "statement", "repetition", "gender"]].values.tolist(),
            [["Actor_01", "calm", "train", "strong", 1, 2, "male"], ["Actor_20", "surprise", "test", "normal", 2, 1, "female"]])
    test_eq(r.attrs["skipped"], 2); test_close(r["duration"].values, [0.1, 0.1])
    for n in ("03a01Fa.wav", "09b02Tc.wav", "16a05Lb.wav"): _wav(d / "emodb" / "wav" / n)
    e = read_dataset("emodb", d / "emodb")
    test_eq(e[["speaker", "emotion", "split", "text_id", "gender", "audio_condition"]].values.tolist(),
            [["03", "happy", "test", "a01", "male", ""], ["09", "sad", "test", "b02", "female", ""],
             ["16", "boredom", "train", "a05", "female", ""]])
    test_fail(lambda: read_dataset("emodb", d / "rav"), contains="03a01Fa")


# %% [markdown]
# ## ESD and IEMOCAP on fixtures
#
# These corpora are not on this machine, so the tests lay out tiny copies with the real folder structure and
# label-file formats (0.1 s of noise per utterance).

# %%
def make_esd_fixture(root: Path):
    "Speakers 0001 (zh), 0010 (zh, test), 0011 (en, train/evaluation/test subfolders), 0019 (en, test)."
    zh = dict(Neutral="中立", Angry="生气", Happy="快乐", Sad="伤心", Surprise="惊喜")
    for spk in ("0001", "0010", "0011", "0019"):
        lines = []
        for k, emo in enumerate(zh):
            for j in range(2):
                u = f"{spk}_{k * 350 + j + 1:06d}"
                sub = ("train", "test")[j] if spk == "0011" else ""
                _wav(root / spk / emo / sub / f"{u}.wav", seed=k * 10 + j)
                lines.append(f"{u}\tsentence {k} {j}\t{zh[emo] if int(spk) <= 10 else emo}")
        enc = "utf-16" if spk == "0010" else "utf-8"
        (root / spk / f"{spk}.txt").write_bytes(("\n".join(lines) + "\n").encode(enc))
    (root / "0001" / "Sad" / "notes.wav").write_bytes(b"")  # stray file, not an utterance: skipped

with tempfile.TemporaryDirectory() as d:
    make_esd_fixture(Path(d)); esd = read_dataset("esd", d)
    test_eq((len(esd), esd["emotion"].nunique()), (40, 5))
    test_eq(esd.groupby("split")["speaker"].unique().map(sorted).to_dict(), dict(test=["0010", "0019"], train=["0001", "0011"]))
    test_eq(esd.set_index("id").loc["0011_000352", ["emotion", "language", "esd_subset", "text"]].tolist(),
            ["angry", "en", "test", "sentence 1 1"])
    test_eq(esd.set_index("id").loc["0010_000701", ["emotion", "text"]].tolist(), ["happy", "sentence 2 0"])
    test_eq((esd.attrs["skipped"], esd.attrs["label_mismatch"]), (1, 0)); test_close(esd["duration"].mean(), 0.1)
    test_eq(len(apply_protocol(esd, "esd")), 40)


# %%
def make_iemocap_fixture(root: Path):
    "Session1 (train) and Session5 (test): one improvised and one scripted dialog, real EmoEvaluation format."
    utts = {1: [("Ses01F_impro01", "Ses01F_impro01_F000", "neu"), ("Ses01F_impro01", "Ses01F_impro01_M000", "fru"),
                ("Ses01F_impro01", "Ses01F_impro01_F001", "exc"), ("Ses01M_script01_1", "Ses01M_script01_1_M002", "ang"),
                ("Ses01M_script01_1", "Ses01M_script01_1_F003", "xxx")],
            5: [("Ses05F_impro03", "Ses05F_impro03_M001", "hap"), ("Ses05F_impro03", "Ses05F_impro03_F002", "sad")]}
    for s, us in utts.items():
        ev = {}
        for k, (dlg, u, code) in enumerate(us):
            _wav(root / f"Session{s}" / "sentences" / "wav" / dlg / f"{u}.wav", n=3200, seed=k)
            ev.setdefault(dlg, ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]).extend([
                f"[{k * 3 + 1.2:.4f} - {k * 3 + 3.1:.4f}]\t{u}\t{code}\t[2.5000, 3.0000, 3.5000]",
                "C-E1:\tNeutral;\t()", "C-E2:\tFrustration;\t()", "A-E1:\tval 3; act 2; dom  3;\t()", ""])
        ev[us[0][0]].insert(2, f"[0.1000 - 0.9000]\t{us[0][0]}_F009\tneu\t[2.0000, 2.0000, 2.0000]")  # label, no audio
        for dlg, lines in ev.items():
            f = root / f"Session{s}" / "dialog" / "EmoEvaluation" / f"{dlg}.txt"
            f.parent.mkdir(parents=True, exist_ok=True); f.write_text("\n".join(lines) + "\n")
        (root / f"Session{s}" / "dialog" / "EmoEvaluation" / "Categorical").mkdir(exist_ok=True)

with tempfile.TemporaryDirectory() as d:
    make_iemocap_fixture(Path(d)); iem = read_dataset("iemocap", d)
    test_eq(len(iem), 7); test_eq(iem.attrs["labels_without_audio"], 2)
    r = iem.set_index("id")
    test_eq(r.loc["Ses01F_impro01_M000", ["speaker", "emotion", "split", "gender"]].tolist(), ["Ses01M", "frustrated", "train", "male"])
    test_eq(r.loc["Ses05F_impro03_M001", ["speaker", "split", "session", "valence"]].tolist(), ["Ses05M", "test", 5, 2.5])
    test_eq(r.loc["Ses01M_script01_1_F003", ["emotion", "improvised"]].tolist(), ["unknown", False])
    i4 = apply_protocol(iem, "iemocap")
    test_eq(sorted(i4["label"]), ["angry", "happy", "happy", "neutral", "sad"])
    test_eq(i4.attrs["protocol_dropped"], {"frustrated": 1, "unknown": 1})

# %% [markdown]
# ## A folder with a manifest

# %%
with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    for i in range(8): _wav(d / "clips" / f"s{i % 4}" / f"c{i}.wav", seed=i)
    m = pd.DataFrame(dict(path=[f"clips/s{i % 4}/c{i}.wav" for i in range(8)], speaker=[f"s{i % 4}" for i in range(8)],
                          emotion=["Fearful", "happy"] * 4, text="x"))
    m.to_csv(d / "manifest.csv", index=False)
    t = read_dataset("manifest", d)
    test_eq(t.set_index("id").loc["clips__s3__c7", ["speaker", "split", "emotion", "text"]].tolist(), ["s3", "test", "happy", "x"])
    test_eq(sorted(t["emotion"].unique()), ["fear", "happy"]); test_eq((t["split"] == "test").sum(), 2)
    assert Path(t["path"][0]).is_absolute(), t["path"][0]
    m.drop(columns="emotion").to_csv(d / "manifest.csv", index=False)
    test_fail(lambda: read_dataset("manifest", d), contains="missing column(s) emotion")
    m.assign(split="dev").to_csv(d / "manifest.csv", index=False)
    test_fail(lambda: read_dataset("manifest", d), contains="'train' or 'test'")
    (d / "clips" / "s0" / "c0.wav").write_bytes(b"broken")  # one bad file: NaN duration, no exception
    m.to_csv(d / "manifest.csv", index=False)
    test_eq(int(read_dataset("manifest", d)["duration"].isna().sum()), 1)
