"""`eib-prepare` and the feature store as a user meets them: a real console script, exit status 2 and one
line on a user error, an interrupted build that resumes, and emotion2vec (a tiny random-weight model built
from funasr's own class) encoded by two spawned worker processes."""
import os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

PREPARE = [str(Path(sys.executable).parent / "eib-prepare")]


def _corpus(root: Path, n: int, seconds: float = 1.0) -> Path:
    "`n` clips of noise in manifest layout, 3 speakers, two emotions."
    rng, rows = np.random.default_rng(0), []
    (root / "wav").mkdir(parents=True)
    for i in range(n):
        sf.write(root / "wav" / f"u{i:03d}.wav", rng.normal(0, 0.05, int(16000 * seconds)), 16000, subtype="PCM_16")
        rows.append(dict(path=f"wav/u{i:03d}.wav", speaker=f"s{i % 3}", emotion=("happy", "sad")[i % 2]))
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def test_user_error_exits_2_with_one_line(tmp_path):
    r = subprocess.run(PREPARE + ["--dataset", "emodb", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("eib-prepare: error: emodb: no data at") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    r = subprocess.run(PREPARE + ["--dataset", "emodb", "--encoder", "mfcc"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice: 'mfcc'" in r.stderr


@pytest.mark.parametrize("sig,workers", [(signal.SIGINT, 1), (signal.SIGTERM, 2)])
def test_interrupted_build_resumes(tmp_path, sig, workers):
    from eib.core import EibError
    from eib.features import load_store
    _corpus(tmp_path / "c", 40)
    cmd = PREPARE + ["--dataset", "manifest", "--root", str(tmp_path / "c"), "--out", str(tmp_path / "s"), "--workers", str(workers)]
    feats = tmp_path / "s" / "c" / "features"
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,  # Ctrl-C as in a terminal
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.time()
    while len(list(feats.glob("*.npy"))) < 3 and time.time() - t0 < 120: time.sleep(0.05)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "run the same command again to resume" in err
    done = sorted(feats.glob("*.npy"))
    assert 3 <= len(done) < 40
    assert not [f for f in feats.iterdir() if f.suffix != ".npy"]          # no partial files
    man = pd.read_csv(tmp_path / "s" / "c" / "manifest.csv", keep_default_na=False)
    assert set(man["id"]) == {f.stem for f in done}                      # the manifest lists what is on disk
    with pytest.raises(EibError, match="incomplete"):
        load_store(tmp_path / "s" / "c")
    mtimes = {f.name: f.stat().st_mtime_ns for f in done}
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{len(done)} already encoded, {40 - len(done)} to encode" in r.stdout
    assert {f.name: f.stat().st_mtime_ns for f in done} == mtimes      # kept, not recomputed
    st = load_store(tmp_path / "s" / "c")
    assert len(st) == 40 and st.meta["complete"] and st.meta["command"].startswith("eib-prepare --dataset manifest")
    assert {st.frames(u).shape for u in st.ids()} == {(48, 130)}


def test_emotion2vec_store_two_spawned_workers(tmp_path):
    from eib.features import PLUS_LABELS, build_store, load_store, tiny_emotion2vec
    _corpus(tmp_path / "c", 6, seconds=1.5)
    model = tiny_emotion2vec(tmp_path / "e2v", labels=PLUS_LABELS)
    p = build_store("manifest", tmp_path / "c", "emotion2vec_plus_base", out=tmp_path / "s", model_dir=model,
                    workers=2, check_dim=False, progress=False)
    st = load_store(p)
    assert len(st) == 6 and st.dim == 32 and st.meta["labels"][:2] == ["angry", "disgusted"]
    assert {st.frames(u).shape for u in st.ids()} == {(74, 32)}           # floor((24000 - 400) / 320) + 1
    assert st.meta["encoder_version"].startswith("funasr-1.4.16/emotion2vec_plus_base/weights-")
    with pytest.raises(Exception, match="holds emotion2vec_plus_base features, not compare"):
        build_store("manifest", tmp_path / "c", "compare", out=tmp_path / "s", name=p.name, progress=False)


def test_whisper_store_offline_and_bad_weights_refused(tmp_path):
    "The Whisper-base encoder through the console script: a 512-dim, 50 Hz store; a damaged weight file gets one line."
    from eib.features import WHISPER_LAYER, load_store, whisper_model_dir
    _corpus(tmp_path / "c", 4, seconds=1.5)
    env = dict(os.environ, HF_HUB_OFFLINE="1", EIB_OFFLINE="1")
    r = subprocess.run(PREPARE + ["--dataset", "manifest", "--root", str(tmp_path / "c"), "--out", str(tmp_path / "s"),
                                  "--encoder", "whisper_base", "--workers", "1"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    st = load_store(tmp_path / "s" / "c_whisper_base")                       # the name the sweep looks for (store_name)
    assert (st.dim, st.frame_rate, st.meta["encoder_layer"]) == (512, 50, WHISPER_LAYER)
    assert {st.frames(u).shape for u in st.ids()} == {(75, 512)}            # 1.5 s at 50 frames per second
    bad = tmp_path / "bad"; bad.mkdir()
    data = bytearray((whisper_model_dir() / "model.bin").read_bytes()); data[len(data) // 2] ^= 0xFF  # one flipped byte
    (bad / "model.bin").write_bytes(bytes(data))
    r = subprocess.run(PREPARE + ["--dataset", "manifest", "--root", str(tmp_path / "c"), "--out", str(tmp_path / "s2"),
                                  "--encoder", "whisper_base", "--model-dir", str(bad)], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "is not Whisper base's weights" in r.stderr and "refusing a corrupted or different model" in r.stderr


def test_bad_rows_and_paths_each_get_one_line(tmp_path):
    """Unknown emotion labels, file names that are not UTF-8 and over-loud audio are listed as errors, not encoded; a store
    that is or holds the corpus is refused."""
    from eib.features import load_store
    c = _corpus(tmp_path / "c", 6)
    man = pd.read_csv(c / "manifest.csv")
    man.loc[0, "emotion"] = "angyr"                                        # a misspelt label
    man.to_csv(c / "manifest.csv", index=False)
    row = dict(man.iloc[2].astype(str)) | dict(path="wav/m\udcfcde.wav")   # a Latin-1 file name: byte 0xfc, not UTF-8
    with open(c / "manifest.csv", "ab") as f: f.write(",".join(row[k] for k in man.columns).encode("utf-8", "surrogateescape") + b"\n")
    (c / "wav" / "m\udcfcde.wav").write_bytes((c / "wav" / "u002.wav").read_bytes())
    sf.write(c / "wav" / "u001.wav", np.full(16000, 1e30, np.float32), 16000, subtype="FLOAT")  # not a waveform
    r = subprocess.run(PREPARE + ["--dataset", "manifest", "--root", str(c), "--out", str(tmp_path / "s"), "--workers", "1"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "error wav__u000: unknown emotion label 'angyr'" in r.stdout and "error wav__u001: " in r.stdout and "peaks at 1e+30" in r.stdout
    assert "error wav__m_xfcde: path wav/m\\xfcde.wav is not UTF-8 text" in r.stdout, r.stdout  # listed, not a traceback
    assert "0 already encoded, 5 to encode" in r.stdout
    st = load_store(tmp_path / "s" / "c")
    assert sorted(st.ids()) == [f"wav__u{i:03d}" for i in range(2, 6)]
    for out, name in ((tmp_path, "c"), (tmp_path.parent, tmp_path.name)):  # the store would be, or hold, the corpus
        r = subprocess.run(PREPARE + ["--dataset", "manifest", "--root", str(c), "--out", str(out), "--name", name],
                           capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.startswith("eib-prepare: error: the output folder") and " the input " in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
