"""Exact round trips of the codec (eib.bitstream), both entropy-model presets, across batch sizes (one frame at a
time vs all frames of an utterance at once) and torch thread counts (1 vs 2): on the synthetic store with the
committed codec checkpoints/synth_cpu, and on RAVDESS ComParE features extracted at test time. Plus the console
scripts eib-compress / eib-decompress.

The `paper` preset has no committed checkpoint: its codec is the synth checkpoint's RVQ with a paper-preset
EntropyModel of random weights (seeded; PyTorch's default Linear init, N(0, 1) embeddings, head weights x2 and a
+3 SKIP bias, so that the probabilities depend on the context and SKIP is common). Exactness is a property of the
fixed-point CodingModel and the range coder, not of training, so random weights test it as well as trained ones."""
import contextlib, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from eib.core import repo_root, datasets_root, SAMPLE_RATE
from eib.entropy import EntropyConfig, EntropyModel, MODEL_SIZES, freqs_to_bits, CodingModel
from eib.ecvq import lambda_grid
from eib.bitstream import compress_with_result, compress, decompress, stream_info, stream_bpf
from eib.codec import Codec, load_codec
from eib.features import load_store

ROOT = repo_root()
CKPT = ROOT / "checkpoints" / "synth_cpu"
STORE = ROOT / "data_subset" / "synth"
RAVDESS = datasets_root() / "ravdess"
BIN = Path(sys.executable).parent


@contextlib.contextmanager
def threads(n: int):
    "Run the block with `n` torch threads."
    old = torch.get_num_threads(); torch.set_num_threads(n)
    try: yield
    finally: torch.set_num_threads(old)


@pytest.fixture(scope="module")
def codec():
    if not (CKPT / "config.json").exists(): pytest.fail(f"{CKPT} is missing: it is committed with the repository")
    return load_codec(CKPT)


def preset_model(rvq, preset: str, seed: int = 0) -> EntropyModel:
    "An EntropyModel of `preset` for `rvq` with random, context-dependent weights (see the module docstring)."
    torch.manual_seed(seed)
    m = EntropyModel(EntropyConfig.for_rvq(rvq.cfg, preset)).eval()
    for mod in m.modules():
        if isinstance(mod, nn.Linear): mod.reset_parameters()
        if isinstance(mod, nn.Embedding): nn.init.normal_(mod.weight, std=1.0)
    with torch.no_grad(): m.head.weight.mul_(2.0); m.head.bias[rvq.cfg.skip] = 3.0
    return m


def _is_preset(m, preset: str) -> bool:
    return {k: getattr(m.cfg, k) for k in MODEL_SIZES[preset]} == MODEL_SIZES[preset]


@pytest.fixture(scope="module")
def models(codec):
    """name -> entropy model, all for the synth checkpoint's RVQ: 'cpu' is the checkpoint's trained model when it has
    the cpu preset's sizes; when the preset has changed since the checkpoint was trained, 'cpu' is a random model of
    the current preset and the trained one is tested too, as 'checkpoint'. 'paper' has random weights."""
    out = {"cpu": codec.model} if _is_preset(codec.model, "cpu") else \
        {"checkpoint": codec.model, "cpu": preset_model(codec.rvq, "cpu")}
    out["paper"] = preset_model(codec.rvq, "paper")
    assert _is_preset(out["cpu"], "cpu") and _is_preset(out["paper"], "paper")
    return out


# Frames per utterance for each arm, kept small for the paper preset's exact (float64) model. Two torch threads on a
# machine whose cores are busy with other jobs cost ~10-30 ms per parallel region (the second thread waits for a time
# slice), whatever the batch, so the two-thread arms run on one utterance's first frames only.
CROP = {"checkpoint": None, "cpu": None, "paper": 24}  # all-frames arm (None: whole utterance), 1 thread, every utterance
TWO = {"checkpoint": 24, "cpu": 24, "paper": 8}  # two-thread arm: encoder with 2 threads (its bytes must equal the
# one-thread encoder's), decoded with 1 thread; the cpu-size models also decode a one-thread stream with 2 threads
# (the paper model skips that: its two-thread encoder already ran the same CodingModel steps on the same batch)
DEC2 = {"checkpoint": True, "cpu": True, "paper": False}
ONE = {"checkpoint": 8, "cpu": 8, "paper": 4}  # one-frame-at-a-time arm (encoder and decoder step a single frame)


def check_roundtrip(rvq, model, utts, lam: float, crop, two: int, one: int, dec2: bool = True) -> dict:
    "Assert the exact round trips; returns counts for the caller to check the test's teeth."
    n_tok = n_skip = 0
    for i, u in enumerate(utts):
        u = u[:crop] if crop else u
        with threads(1):
            data, res = compress_with_result((rvq, model), u, lam)  # all frames of the utterance in one chunk
            assert stream_info(data).chunk == len(u)
            tok, y = decompress((rvq, model), data)
        assert torch.equal(tok, res.tokens) and np.array_equal(y, res.recon.numpy())
        n_tok += res.tokens.numel(); n_skip += int((res.tokens == rvq.cfg.skip).sum())
        with threads(1):  # one frame at a time: the encoder's ECVQ and the decoder both step a single frame
            d1, r1 = compress_with_result((rvq, model), u[:one], lam, batch_size=1)
            assert stream_info(d1).chunk == 1
            t1, y1 = decompress((rvq, model), d1)
        assert torch.equal(r1.tokens, res.tokens[:one]), "tokens depend on the batch size"
        assert np.array_equal(r1.recon.numpy(), res.recon[:one].numpy())
        assert torch.equal(t1, res.tokens[:one]) and np.array_equal(y1, res.recon[:one].numpy())
        if i: continue
        v = u[:two]
        with threads(1): d_1 = compress((rvq, model), v, lam)
        with threads(2): d_2, r_2 = compress_with_result((rvq, model), v, lam)
        assert d_2 == d_1, "the encoder's bytes depend on the thread count"
        assert torch.equal(r_2.tokens, res.tokens[:two])
        if dec2:
            with threads(2): t_2, y_2 = decompress((rvq, model), d_1)  # a one-thread stream decoded with two threads
            assert torch.equal(t_2, res.tokens[:two]) and np.array_equal(y_2, res.recon[:two].numpy())
        with threads(1): t_1, y_1 = decompress((rvq, model), d_2)  # and a two-thread stream with one
        assert torch.equal(t_1, res.tokens[:two]) and np.array_equal(y_1, res.recon[:two].numpy())
    return dict(tokens=n_tok, skip=n_skip / n_tok)


def run_both_presets(codec, models, utts):
    lam = float(lambda_grid(codec.rvq, np.concatenate(utts))[5])
    for name in models:
        out = check_roundtrip(codec.rvq, models[name], utts, lam, CROP[name], TWO[name], ONE[name], DEC2[name])
        assert 0.05 < out["skip"] < 0.95, f"{name}: SKIP rate {out['skip']:.2f}: λ={lam:g} does not exercise codes and SKIP"


def test_paper_model_is_context_dependent(codec, models):
    "The random paper model is not a near-uniform distribution: its frequencies vary with the context."
    t = torch.randint(0, codec.rvq.cfg.vocab, (16, codec.rvq.cfg.positions), generator=torch.Generator().manual_seed(0))
    f = CodingModel(models["paper"]).freqs(t).double() / 2 ** 24
    assert float(f[:, 5].std(0).max()) > 0.01  # position 5's distribution changes with the earlier tokens
    assert float(freqs_to_bits(f * 2 ** 24).mul(f).sum(-1).mean()) < 6.5  # well below log2(129) = 7.01 bits


def test_roundtrip_synth_store(codec, models):
    st = load_store(STORE)
    utts = [st.frames(u) for u in st.ids("test")[:3]]
    run_both_presets(codec, models, utts)


def _ravdess_pick(n: int = 3):
    from eib.data import read_dataset
    df = read_dataset("ravdess").sort_values("id")
    df = df[df.split == "test"]
    return [df[df.emotion == e].iloc[0] for e in ("angry", "sad", "neutral")][:n]


@pytest.fixture(scope="module")
def ravdess_features(tmp_path_factory):
    "ComParE frames of 3 RAVDESS test files, extracted now into a pytest tmp dir (never into the repository)."
    if not RAVDESS.is_dir(): pytest.skip(f"RAVDESS is not available at {RAVDESS} (licensed corpus, read at run time only)")
    from eib.data import load_audio
    from eib.features import get_encoder
    enc, out = get_encoder("compare"), tmp_path_factory.mktemp("ravdess_compare")
    paths = []
    for row in _ravdess_pick():
        p = out / f"{row['id']}.npy"
        np.save(p, enc(load_audio(row["path"]), SAMPLE_RATE))
        paths.append(p)
    return paths


def test_roundtrip_ravdess_features(codec, models, ravdess_features):
    utts = [np.load(p) for p in ravdess_features]
    assert all(u.shape[1] == codec.rvq.cfg.dim == 130 and len(u) > 50 for u in utts)
    run_both_presets(codec, models, utts)


# ---- the console scripts ----

def cli(name: str, *args) -> subprocess.CompletedProcess:
    exe = BIN / name
    if not exe.exists(): pytest.fail(f"{exe} is missing: install the package (pip install -e .) to get the console scripts")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def synth_npy():
    st = load_store(STORE)
    p = STORE / "features" / f"{st.ids('test')[0]}.npy"
    assert p.exists()
    return p


def test_cli_roundtrip_exact(codec, synth_npy, tmp_path):
    x = np.load(synth_npy)
    lam = float(lambda_grid(codec.rvq, x)[5])
    r = cli("eib-compress", synth_npy, tmp_path / "a.eib", "--checkpoint", CKPT, "--lam", repr(lam))
    assert r.returncode == 0, r.stderr
    data = (tmp_path / "a.eib").read_bytes()
    assert f"{stream_bpf(data):.3f} BPF" in r.stdout and "λ=" in r.stdout
    with threads(1): ref, res = compress_with_result(codec, x, lam)
    assert data == ref  # the same bytes in another process
    r = cli("eib-decompress", tmp_path / "a.eib", tmp_path / "y.npy", "--checkpoint", CKPT)
    assert r.returncode == 0, r.stderr
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.float32 and np.array_equal(y, res.recon.numpy())


def test_cli_rejects_damaged_streams(codec, synth_npy, tmp_path):
    with threads(1): data = compress(codec, np.load(synth_npy)[:40], 0.05)
    bad = bytearray(data); bad[len(bad) // 2] ^= 0x04
    cases = {"flip.eib": (bytes(bad), "corrupted stream"), "cut.eib": (data[:-7], "truncated"),
             "npy.eib": (synth_npy.read_bytes(), "not an eib stream"), "empty.eib": (b"", "not an eib stream")}
    for name, (blob, msg) in cases.items():
        (tmp_path / name).write_bytes(blob)
        r = cli("eib-decompress", tmp_path / name, tmp_path / "o.npy", "--checkpoint", CKPT)
        assert r.returncode == 2, (name, r.returncode, r.stderr)
        assert r.stderr.startswith("eib-decompress: error:") and msg in r.stderr, (name, r.stderr)
        assert "Traceback" not in r.stderr + r.stdout, (name, r.stderr)
        assert not (tmp_path / "o.npy").exists()  # nothing written on failure


def test_cli_bpf_target(codec, synth_npy, tmp_path):
    from eib.rate import achievable_range
    x = np.load(synth_npy)
    rng = achievable_range(codec, [x])
    lo, hi = float(rng.min_bpf[0]), float(rng.max_bpf[0])
    target = round(lo + 0.4 * (hi - lo), 1)
    r = cli("eib-compress", synth_npy, tmp_path / "b.eib", "--checkpoint", CKPT, "--bpf", target)
    assert r.returncode == 0, r.stderr
    data = (tmp_path / "b.eib").read_bytes()
    assert abs(stream_bpf(data) - target) <= 1.0, (target, stream_bpf(data), r.stdout)
    assert f"{stream_bpf(data):.3f} BPF" in r.stdout and f"target {target:g} BPF" in r.stdout
    with threads(1): tok, _ = decompress(codec, data)
    assert tok.shape == (len(x), codec.rvq.cfg.positions)
    r = cli("eib-compress", synth_npy, tmp_path / "c.eib", "--checkpoint", CKPT, "--bpf", round(hi + 20, 1))
    assert r.returncode == 2 and "outside the achievable range" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout and not (tmp_path / "c.eib").exists()
