# %% [markdown]
# # explorer
#
# > The λ explorer: move λ (or a target bit rate), see the real stream's rate, the distortion, the code/SKIP map and what a classifier still hears

# %%
#| default_exp explorer

# %%
#| export
from __future__ import annotations
import html, math, struct, time, zlib
from pathlib import Path
import numpy as np
import torch
from fastcore.basics import patch
from eib.core import EibError, FRAME_RATE, fingerprint, repo_root

# %%
from fastcore.test import test_eq, test_fail, test_close
torch.set_num_threads(1)  # the checks below run faster on one thread on a shared two-core machine


# %% [markdown]
# Open this notebook in JupyterLab and run it: the panel at the end re-encodes one utterance of the test split every
# time λ, the target rate or the utterance changes. Every rate it shows is the size of a real, decodable stream made
# by `eib.bitstream.compress` (header, payload, coder termination and checksum all counted); the decoded features are
# the ones that stream decodes to, and the class probabilities come from a linear probe trained on the *unquantised*
# training split (`eib.evaluate.fit_probe`), so "original" is the probe's answer on the features before coding.
#
# With the default checkpoint (`checkpoints/synth_cpu`) and the default store (`data_subset/synth`, the synthetic
# espeak-ng corpus with ComParE features), what you see is an offline stand-in for emotion2vec on acted speech.

# %% [markdown]
# ## Pictures without an imaging library
#
# The code/SKIP map is a small RGB image; `png_bytes` writes it as a PNG with `zlib` alone (no matplotlib or
# Pillow needed), which an `ipywidgets.Image` shows as it is.

# %%
#| export
def png_bytes(rgb) -> bytes:
    "An (H, W, 3) uint8 RGB image as PNG bytes (8-bit truecolour, no interlace)."
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or 0 in a.shape[:2]:
        raise EibError(f"an image must be a non-empty (H, W, 3) uint8 array, got {a.dtype} {a.shape}")
    h, w = a.shape[:2]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), a.reshape(h, 3 * w)], 1).tobytes()  # filter 0 per row
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


# %%
def _read_png(b: bytes) -> np.ndarray:  # the inverse, for the test: chunks, CRCs, filter bytes, pixels
    assert b[:8] == b"\x89PNG\r\n\x1a\n", b[:8]
    i, idat, hdr = 8, b"", None
    while i < len(b):
        n, t = struct.unpack(">I", b[i:i + 4])[0], b[i + 4:i + 8]
        d = b[i + 8:i + 8 + n]
        assert struct.unpack(">I", b[i + 8 + n:i + 12 + n])[0] == zlib.crc32(t + d), (t, i, struct.unpack(">I", b[i + 8 + n:i + 12 + n])[0], zlib.crc32(t + d))
        if t == b"IHDR": hdr = struct.unpack(">IIBBBBB", d)
        if t == b"IDAT": idat += d
        i += 12 + n
    w, h = hdr[:2]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert (rows[:, 0] == 0).all(), np.unique(rows[:, 0])
    return rows[:, 1:].reshape(h, w, 3)

img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
test_eq(_read_png(png_bytes(img)), img)
test_fail(lambda: png_bytes(np.zeros((4, 4))), contains="uint8")
test_fail(lambda: png_bytes(np.zeros((0, 4, 3), np.uint8)), contains="non-empty")

# %% [markdown]
# ## The code/SKIP map
#
# Time runs left to right (one column per frame), the positions of a frame top to bottom in coding order: group 0
# layer 0, group 0 layer 1, ..., with a thin grey line between groups. A coded position is blue, darker for earlier
# layers; a SKIP is white.

# %%
#| export
SKIP_RGB = (255, 255, 255)
GRID_RGB = (200, 200, 200)
_DARK, _LIGHT = np.array((8, 48, 107)), np.array((120, 180, 220))

def layer_colours(layers: int) -> np.ndarray:
    "One RGB colour per RVQ layer, dark (first layer) to light (last)."
    t = np.linspace(0, 1, layers)[:, None] if layers > 1 else np.zeros((1, 1))
    return np.round(_DARK + t * (_LIGHT - _DARK)).astype(np.uint8)

def code_map(tokens, skip: int, cell=(4, 5), width: int | None = 600) -> np.ndarray:
    """RGB image (H, W, 3) of tokens (T, G, M): a column per frame, a row per position (group-major), SKIP white.
    `cell` = (pixels per frame, pixels per row); with `width`, the frame width shrinks (not below 1) to fit it."""
    t = np.asarray(tokens)
    if t.ndim != 3 or 0 in t.shape: raise EibError(f"tokens must be a non-empty (frames, groups, layers) array, got {t.shape}")
    T, G, M = t.shape
    cw, rh = int(cell[0]), int(cell[1])
    if width: cw = max(1, min(cw, width // T))
    rows = t.transpose(1, 2, 0)  # (G, M, T)
    rgb = np.where((rows == skip)[..., None], np.array(SKIP_RGB, np.uint8), layer_colours(M)[None, :, None, :])
    rgb = np.repeat(np.repeat(rgb, rh, axis=1), cw, axis=2)  # (G, M*rh, T*cw, 3) after the reshape below
    rgb = rgb.reshape(G, M, rh, T * cw, 3).reshape(G, M * rh, T * cw, 3)
    line = np.broadcast_to(np.array(GRID_RGB, np.uint8), (G, 1, T * cw, 3))
    return np.concatenate([rgb, line], 1).reshape(G * (M * rh + 1), T * cw, 3)[:-1].astype(np.uint8)


# %%
tk = np.array([[[0, 4], [4, 1]], [[2, 2], [4, 4]], [[1, 4], [3, 0]]])  # T=3, G=2, M=2, SKIP=4
im = code_map(tk, skip=4, cell=(2, 3), width=None)
test_eq(im.shape, (2 * (2 * 3 + 1) - 1, 3 * 2, 3))
test_eq(im[0, 0], layer_colours(2)[0]); test_eq(im[3, 0], SKIP_RGB)  # frame 0: group 0 layer 0 coded, layer 1 SKIP
test_eq(im[6, 0], GRID_RGB)  # the line between groups
test_eq(im[7, 4], layer_colours(2)[0]); test_eq(im[10, 4], layer_colours(2)[1])  # frame 2, group 1: both coded
test_eq(code_map(np.zeros((400, 2, 2), int), skip=4, width=600).shape[1], 400)  # long clips: 1 px per frame
test_fail(lambda: code_map(np.zeros((3, 4)), skip=4), contains="(frames, groups, layers)")


# %% [markdown]
# ## Class probabilities as bars
#
# The probe's probabilities on the original features (grey) and on the decoded ones (blue), one row per class; the
# true label is marked. Plain HTML, so it draws instantly and needs no chart library in the browser.

# %%
#| export
def proba_html(classes, original, decoded, true_label: str | None = None, width: int = 220) -> str:
    "HTML bars of class probabilities: `original` (grey) and `decoded` (blue) per class, the true label marked."
    classes = [str(c) for c in classes]
    po, pd_ = np.asarray(original, float), np.asarray(decoded, float)
    if po.shape != (len(classes),) or pd_.shape != (len(classes),):
        raise EibError(f"need one probability per class ({len(classes)}), got {po.shape} and {pd_.shape}")
    bar = lambda p, col: (f"<div style='display:flex;align-items:center;height:11px;margin:1px 0'><div style='width:{p * width:.1f}px;"
                          f"height:9px;background:{col}'></div><span style='font-size:10px;margin-left:4px'>{100 * p:.1f}%</span></div>")
    rows = []
    for c, a, b in zip(classes, po, pd_):
        true = c == true_label
        name = f"<b>{html.escape(c)}</b> &#9664; true" if true else html.escape(c)
        rows.append(f"<tr class='eib-class{' eib-true' if true else ''}'><td style='padding-right:8px;white-space:nowrap'>{name}</td>"
                    f"<td>{bar(a, '#9e9e9e')}{bar(b, '#1f6fb5')}</td></tr>")
    key = ("<div style='font-size:11px;margin-top:4px'><span style='color:#9e9e9e'>&#9632;</span> original features "
           "<span style='color:#1f6fb5;margin-left:8px'>&#9632;</span> decoded features</div>")
    return f"<table class='eib-proba' style='border-collapse:collapse'>{''.join(rows)}</table>{key}"


# %%
h = proba_html(["angry", "sad"], [0.75, 0.25], [0.4, 0.6], "sad")
test_eq(h.count("eib-class"), 2); test_eq(h.count("eib-true"), 1)
assert "width:165.0px" in h and "60.0%" in h and "&#9664; true" in h, h
test_fail(lambda: proba_html(["a", "b"], [1.0], [0.5, 0.5]), contains="one probability per class")


# %% [markdown]
# ## The probe
#
# The explorer's classifier is `eib.evaluate.fit_probe` on the store's *unquantised* training split, labelled by the
# dataset's protocol (`identity` for stores without one), with speaker-grouped cross-validation. Fitting takes a few
# seconds, so the probe is cached in `_cache/explorer/` under a fingerprint of the store's metadata, the protocol and
# the training ids; a cache file that does not read back is refitted and replaced.

# %%
#| export
def default_protocol(store) -> str:
    "The label protocol of a store's dataset (`identity` when the dataset has none)."
    from eib.data import LABEL_PROTOCOLS
    ds = str(store.meta.get("dataset", "")).lower()
    return ds if ds in LABEL_PROTOCOLS else "identity"

def _cache_dir() -> Path | None:
    try: return repo_root() / "_cache" / "explorer"
    except EibError: return None

def explorer_probe(store, protocol: str | None = None, cache: bool = True, seed: int = 42):
    "A linear probe fitted on `store`'s unquantised train split (cached in `_cache/explorer/`)."
    from eib.evaluate import fit_probe, load_probe, store_split
    protocol = protocol or default_protocol(store)
    ids, frames, y, spk = store_split(store, protocol, "train")
    key = fingerprint(dict(meta=store.meta, protocol=protocol, ids=ids, seed=seed, version=1))
    d = _cache_dir() if cache else None
    path = d / f"probe-{key}.json" if d else None
    if path is not None and path.exists():
        try: return load_probe(path)
        except EibError: pass  # unreadable cache: refit below and overwrite it
    probe = fit_probe(frames, y, groups=spk, seed=seed)
    if path is not None: probe.save(path)
    return probe


# %% [markdown]
# ## The explorer
#
# `Explorer(codec, store)` holds a codec (a `Codec` or a checkpoint folder), the utterances of one split of a feature
# store (a `FeatureStore` or its folder) and a probe. `update` re-encodes the current utterance and returns the
# readouts; `panel()` builds the widgets, which call `update` and show its readouts.
#
# - `update(lam=λ)` compresses at that λ: `eib.bitstream.compress_with_result` gives the stream and the ECVQ result
#   at once, so nothing is encoded twice.
# - `update(bpf=target)` runs the rate controller (`eib.rate.RateController.solve`, the engine behind
#   `eib.rate.solve_lambda`, one controller per utterance so later targets start from the earlier answers) on the
#   real stream size with `clamp=True`; a target outside the utterance's achievable range is answered with the
#   nearest end and flagged `clamped_max` / `clamped_min`. The stream shown is the controller's, byte for byte what
#   `compress` writes at the λ found (`mix=False`: one λ for the whole utterance, so the λ slider can show it).
# - `update(utt=...)` (an index into `ex.ids` or an utterance id) switches utterance and keeps the mode: the same λ,
#   or, if the last change was a target rate, the same target.
#
# `threads` (default 1) is the number of torch threads while encoding. One thread is the default because it was
# the fastest on this shared two-core machine (see "How fast" below): with two threads, every one of the coder's
# many small operations waits for a second core that other work is holding.

# %%
#| export
def _lam(v) -> float:
    try: v = float(v)
    except (TypeError, ValueError): raise EibError(f"λ must be a number, got {v!r}") from None
    if not math.isfinite(v) or v < 0: raise EibError(f"λ must be finite and non-negative, got {v}")
    return v

def _bpf(v) -> float:
    try: v = float(v)
    except (TypeError, ValueError): raise EibError(f"the target BPF must be a number, got {v!r}") from None
    if not math.isfinite(v) or v <= 0: raise EibError(f"the target BPF must be finite and positive, got {v}")
    return v

class Explorer:
    "Re-encode one utterance at a λ or a target rate and report rate, distortion, tokens and class probabilities."
    def __init__(self, codec, store, probe=None, split: str = "test", protocol: str | None = None,
                 threads: int | None = 1, cache: bool = True):
        from eib.codec import load_codec
        from eib.features import load_store
        from eib.evaluate import Probe, load_probe, store_split
        from eib.ecvq import lambda_grid
        if threads is not None and (not isinstance(threads, (int, np.integer)) or threads < 1):
            raise EibError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = threads
        self.codec = load_codec(codec) if isinstance(codec, (str, Path)) else codec
        if not hasattr(self.codec, "rvq") or not hasattr(self.codec, "model"):
            raise EibError(f"codec must be a checkpoint folder or an eib.codec.Codec, got {type(codec).__name__}")
        if self.codec.model is None:
            raise EibError("the codec has no entropy model, so it cannot make a stream; train one with eib-train")
        self.rvq, self.model = self.codec.rvq, self.codec.model
        self.store = load_store(store) if isinstance(store, (str, Path)) else store
        if self.store.dim != self.rvq.cfg.dim:
            raise EibError(f"the store has {self.store.dim}-dim features, the codec codes {self.rvq.cfg.dim} dims; "
                           "use the checkpoint trained on this store's encoder")
        self.protocol = protocol or default_protocol(self.store)
        self.split = split
        self.ids, self.frames, self.labels, _ = store_split(self.store, self.protocol, split)
        if probe is None: probe = explorer_probe(self.store, self.protocol, cache=cache)
        elif isinstance(probe, (str, Path)): probe = load_probe(probe)
        if not isinstance(probe, Probe): raise EibError(f"probe must be an eib.evaluate.Probe or a probe file, got {type(probe).__name__}")
        if probe.dim != self.rvq.cfg.dim: raise EibError(f"the probe reads {probe.dim}-dim frames, the store has {self.rvq.cfg.dim}")
        self.probe = probe
        sample = np.concatenate(self.frames)[:: max(1, sum(map(len, self.frames)) // 4096)]
        grid = lambda_grid(self.rvq, sample)
        self.lam_grid = grid
        self.lam_min, self.lam_max = float(grid[0] / 10), float(grid[-1] * 10)  # the grid, a decade wider each side
        self.bpf_max = math.ceil(self.rvq.cfg.positions * math.log2(self.rvq.cfg.vocab))  # a plain fixed-length code
        self.reset()
        self._rc, self._orig, self._z = {}, {}, {}
        self.last, self.w, self._mute = None, None, False

    def __repr__(self):
        return (f"Explorer({len(self.ids)} {self.split} utterances of {self.store.path}, protocol {self.protocol}, "
                f"codec {self.rvq.cfg.groups}x{self.rvq.cfg.layers}x{self.rvq.cfg.codes}, {self.probe})")

    def reset(self):
        "Back to the start: the test clip nearest 3 s, at the middle λ of the grid, no target rate."
        self.utt = int(np.argmin([abs(len(f) - 3 * FRAME_RATE) for f in self.frames]))
        self.lam, self.target = float(self.lam_grid[len(self.lam_grid) // 2]), None
        return self

    def index(self, utt) -> int:
        "The index of an utterance given by index or id."
        if isinstance(utt, (int, np.integer)) and not isinstance(utt, bool):
            if 0 <= utt < len(self.ids): return int(utt)
            raise EibError(f"utterance index {utt} is out of range: the {self.split} split has {len(self.ids)} utterances")
        if isinstance(utt, str) and utt in self.ids: return self.ids.index(utt)
        raise EibError(f"unknown utterance {utt!r}; give an index 0..{len(self.ids) - 1} or an id such as {self.ids[0]!r}")

    def _controller(self, u: int):
        from eib.rate import RateController
        if u not in self._rc: self._rc[u] = RateController(self.codec, [self.frames[u]], ids=[self.ids[u]])
        return self._rc[u]

    def _original(self, u: int):
        if u not in self._orig:
            self._orig[u] = self.probe.predict_proba([self.frames[u]])[0]
            self._z[u] = self.rvq.normalise(self.frames[u]).numpy()
        return self._orig[u], self._z[u]

    def encode(self, u: int, lam: float | None = None, bpf: float | None = None) -> dict:
        "The stream of utterance `u` at λ, or at the λ the rate controller finds for target `bpf`: bytes, tokens, decoded frames."
        x = self.frames[u]
        if bpf is not None:
            rc = self._controller(u)
            r = rc.solve(bpf, clamp=True, mix=False)
            data = rc.stream(0)
            tokens = torch.from_numpy(r.tokens[0].astype(np.int64))
            return dict(data=data, tokens=tokens, recon=self.rvq.decode(tokens).numpy(), lam=float(r.lam[0]),
                        status=str(r.status[0]), passes=int(r.passes))
        from eib.bitstream import compress_with_result
        data, res = compress_with_result(self.codec, x, lam)
        return dict(data=data, tokens=res.tokens, recon=res.recon.numpy(), lam=float(lam), status="λ", passes=1)

    def update(self, lam=None, bpf=None, utt=None) -> dict:
        """Re-encode and return the readouts. `lam`: code at this λ; `bpf`: solve for this target rate; `utt`: switch
        utterance (index or id), keeping the current λ or target. Updates the panel when there is one."""
        from eib.bitstream import stream_bpf, payload_bpf
        t0 = time.perf_counter()
        if lam is not None and bpf is not None: raise EibError("give either λ or a target BPF, not both")
        u = self.utt if utt is None else self.index(utt)
        if lam is not None: lam, target = _lam(lam), None
        elif bpf is not None: lam, target = None, _bpf(bpf)
        else: lam, target = (None, self.target) if self.target is not None else (self.lam, None)
        prev = torch.get_num_threads()
        if self.threads and self.threads != prev: torch.set_num_threads(int(self.threads))
        try: e = self.encode(u, lam=lam, bpf=target)
        finally:
            if torch.get_num_threads() != prev: torch.set_num_threads(prev)
        x, c = self.frames[u], self.rvq.cfg
        po, zx = self._original(u)
        zr = self.rvq.normalise(e["recon"]).numpy()
        pd_ = self.probe.predict_proba([e["recon"]])[0]
        tok = e["tokens"].numpy().reshape(len(x), c.groups, c.layers)
        cls = self.probe.classes_
        out = dict(utt=u, id=self.ids[u], label=str(self.labels[u]), frames=len(x), lam=e["lam"], target_bpf=target,
                   status=e["status"], passes=e["passes"], bpf=stream_bpf(e["data"]), payload_bpf=payload_bpf(e["data"]),
                   bytes=len(e["data"]), mse=float(((zr - zx) ** 2).mean()), mse_raw=float(((e["recon"] - x) ** 2).mean()),
                   skip=float((tok == c.skip).mean()), tokens=tok, classes=list(cls), proba=pd_, proba_original=po,
                   pred=cls[int(pd_.argmax())], pred_original=cls[int(po.argmax())], data=e["data"])
        self.utt, self.lam, self.target = u, e["lam"], target
        if self.w is not None: self._show(out)
        out["seconds"] = time.perf_counter() - t0
        if self.w is not None: self.w["time"].value = f"{out['seconds']:.3f} s"
        self.last = out
        return out


# %% [markdown]
# ### On the default codec and store
#
# `checkpoints/synth_cpu` is the cpu-preset codec trained on the synthetic store. The checks below hold for any
# sensible codec, so they do not depend on the numbers of the current checkpoint.

# %%
from eib.bitstream import compress, decompress, stream_bpf
ex = Explorer(repo_root() / "checkpoints" / "synth_cpu", repo_root() / "data_subset" / "synth")
ex

# %%
a = ex.update(lam=ex.lam_grid[2])
b = ex.update(lam=ex.lam_grid[-2])
assert b["bpf"] < a["bpf"] and b["mse"] > a["mse"] and b["skip"] > a["skip"], (a["bpf"], b["bpf"], a["mse"], b["mse"])
test_eq(b["data"], compress(ex.codec, ex.frames[ex.utt], ex.lam_grid[-2]))  # the readout's stream is compress's
tok, rec = decompress(ex.codec, b["data"])
test_eq(tok.numpy().reshape(b["tokens"].shape), b["tokens"])  # ... and decodes to the tokens shown
test_close(b["bpf"], len(b["data"]) * 8 / b["frames"], eps=1e-12)
test_close(b["proba"], ex.probe.predict_proba([rec])[0], eps=1e-9)  # probabilities of the decoded stream
test_close(b["proba_original"].sum(), 1.0, eps=1e-9); assert b["label"] in b["classes"], (b["label"], b["classes"])
print(f"{b['id']} ({b['frames']} frames): λ {a['lam']:.3g} -> {a['bpf']:.1f} BPF, MSE {a['mse']:.3f}; "
      f"λ {b['lam']:.3g} -> {b['bpf']:.1f} BPF, MSE {b['mse']:.3f}, SKIP {b['skip']:.0%}")

# %% [markdown]
# A target rate runs the controller; the answer is within 1 BPF of the target, or flagged as clamped when the target
# lies outside what the utterance can reach:

# %%
mid = (a["bpf"] + b["bpf"]) / 2
r = ex.update(bpf=mid)
assert abs(r["bpf"] - mid) <= 1 or r["status"].startswith("clamped"), (mid, r["bpf"], r["status"])
test_eq(r["data"], compress(ex.codec, ex.frames[ex.utt], r["lam"]))  # one λ, the stream compress writes
far = 2 * ex.bpf_max  # twice the rate of a plain fixed-length code: out of reach
hi = ex.update(bpf=far)
test_eq(hi["status"], "clamped_max"); assert hi["bpf"] < far, (hi["bpf"], far)
print(f"target {mid:.1f} BPF -> λ {r['lam']:.4g}, {r['bpf']:.2f} BPF ({r['status']}, {r['passes']} passes); "
      f"target {far} -> {hi['bpf']:.1f} BPF ({hi['status']})")

# %% [markdown]
# Another utterance keeps the mode (here: the target rate), and bad input says what to do:

# %%
other = (ex.utt + 1) % len(ex.ids)
o = ex.update(utt=ex.ids[other])
test_eq((o["utt"], o["target_bpf"], o["status"]), (other, far, "clamped_max"))
o = ex.update(lam=b["lam"])
assert o["bpf"] != b["bpf"] and o["id"] != b["id"], (o["bpf"], o["id"], b["id"])
test_fail(lambda: ex.update(utt="nope"), contains="unknown utterance")
test_fail(lambda: ex.update(utt=len(ex.ids)), contains="out of range")
test_fail(lambda: ex.update(lam=-1), contains="non-negative")
test_fail(lambda: ex.update(bpf=0), contains="positive")
test_fail(lambda: ex.update(lam=1, bpf=10), contains="not both")
test_fail(lambda: Explorer(repo_root() / "checkpoints" / "nope", ex.store), contains="eib-train")
test_fail(lambda: Explorer(ex.codec, ex.store, probe=42), contains="probe must be")
test_fail(lambda: Explorer(ex.codec, ex.store, threads=0), contains="threads must be")


# %% [markdown]
# ## The panel
#
# A log-scale λ slider over the codec's λ grid (a decade wider at each end), a target-BPF slider that runs the rate
# controller, an utterance picker (test split, with labels and durations), the readouts, the code/SKIP map and the
# class probabilities. The sliders act on release (`continuous_update=False`). After a target is solved, the λ slider
# moves to the λ found (without a second encoding); moving λ by hand leaves the target slider where it was and says
# so. The readouts carry CSS classes (`eib-bpf`, `eib-mse`, `eib-lam`, ...) for the browser test.

# %%
#| export
def _fmt_lam(lam: float) -> str:
    from eib.engine import LAM_INF
    return "0 (λ → 0 end)" if lam == 0 else "∞ (λ → ∞ end)" if lam >= LAM_INF else f"{lam:.4g}"

def _panel(ex: Explorer):
    import ipywidgets as W
    c = ex.rvq.cfg
    lo, hi = math.log10(ex.lam_min), math.log10(ex.lam_max)
    lam_s = W.FloatLogSlider(value=float(np.clip(ex.lam, ex.lam_min, ex.lam_max)), base=10, min=lo, max=hi, step=0.05,
                             description="λ", continuous_update=False, readout_format=".3g",
                             layout=W.Layout(width="430px")).add_class("eib-lam-slider")
    bpf_s = W.FloatSlider(value=round(ex.bpf_max / 4), min=0.5, max=ex.bpf_max, step=0.5, description="target BPF",
                          continuous_update=False, readout_format=".1f", layout=W.Layout(width="430px")).add_class("eib-bpf-slider")
    opts = [(f"{i}  ·  {lab}  ·  {len(f) / FRAME_RATE:.2f} s", k) for k, (i, lab, f) in enumerate(zip(ex.ids, ex.labels, ex.frames))]
    pick = W.Dropdown(options=opts, value=ex.utt, description="utterance", layout=W.Layout(width="430px")).add_class("eib-utt")
    for s in (lam_s, bpf_s, pick): s.style.description_width = "80px"
    val = lambda cls: W.Label(value="", layout=W.Layout(min_width="110px")).add_class(cls)
    names = dict(bpf="achieved BPF (stream bytes)", lam="λ", mse="MSE (normalised, per dim)", mse_raw="MSE (raw units)",
                 skip="SKIP fraction", bytes="stream bytes", time="update time")
    w = {k: val(f"eib-{k.replace('_', '-')}") for k in names}
    rows = [W.HBox([W.Label(n, layout=W.Layout(width="190px")), w[k]]) for k, n in names.items()]
    w.update(lam_slider=lam_s, bpf_slider=bpf_s, utt=pick, status=W.HTML().add_class("eib-status"),
             map=W.Image(format="png").add_class("eib-map"), map_caption=W.HTML(), proba=W.HTML().add_class("eib-proba-chart"))
    legend = "".join(f"<span style='color:rgb{tuple(int(v) for v in col)}'>&#9632;</span> layer {m} " for m, col in enumerate(layer_colours(c.layers)))
    w["legend"] = W.HTML(f"<div style='font-size:11px'>{legend}&#9633; SKIP · rows: {c.groups} groups × {c.layers} layers "
                         "(coding order, top to bottom) · columns: frames, left to right</div>")
    ex.w, ex._mute = w, False

    def on(kind):
        def f(change):
            if ex._mute: return
            w["status"].value = "<i>encoding…</i>"
            try: ex.update(**{kind: change["new"]})
            except EibError as e: w["status"].value = f"<span style='color:#b00020'>{html.escape(str(e))}</span>"
        return f
    lam_s.observe(on("lam"), "value"); bpf_s.observe(on("bpf"), "value"); pick.observe(on("utt"), "value")
    left = W.VBox([lam_s, bpf_s, pick, w["status"], *rows])
    right = W.VBox([W.HTML("<b>class probabilities</b> (linear probe, unquantised training split)"), w["proba"]])
    return W.VBox([W.HBox([left, right], layout=W.Layout(gap="24px")),
                   W.HTML("<b>code/SKIP map</b>"), w["map"], w["map_caption"], w["legend"]]).add_class("eib-explorer")

@patch
def _show(self: Explorer, out: dict):
    "Write readouts `out` into the panel's widgets."
    w = self.w
    w["bpf"].value = f"{out['bpf']:.2f}"
    w["lam"].value = _fmt_lam(out["lam"])
    w["mse"].value = f"{out['mse']:.4f}"
    w["mse_raw"].value = f"{out['mse_raw']:.4g}"
    w["skip"].value = f"{out['skip']:.1%}"
    w["bytes"].value = f"{out['bytes']} ({out['payload_bpf']:.2f} BPF payload)"
    if out["target_bpf"] is None:
        w["status"].value = f"coded at λ = {_fmt_lam(out['lam'])} (set by hand)"
    else:
        w["status"].value = (f"target {out['target_bpf']:.1f} BPF → λ = {_fmt_lam(out['lam'])}: {html.escape(out['status'])}, "
                             f"{out['passes']} encoder passes")
        self._mute = True
        try: w["lam_slider"].value = float(np.clip(out["lam"], self.lam_min, self.lam_max))
        finally: self._mute = False
    if w["utt"].value != out["utt"]:
        self._mute = True
        try: w["utt"].value = out["utt"]
        finally: self._mute = False
    img = code_map(out["tokens"], self.rvq.cfg.skip)
    w["map"].value = png_bytes(img)
    w["map"].layout.width, w["map"].layout.height = f"{img.shape[1]}px", f"{img.shape[0]}px"  # 1:1, not stretched
    w["map_caption"].value = (f"<div style='font-size:11px'>{out['frames']} frames ({out['frames'] / FRAME_RATE:.2f} s) · "
                              f"true label <b>{html.escape(out['label'])}</b> · probe says <b>{html.escape(out['pred_original'])}</b> "
                              f"on the original, <b>{html.escape(out['pred'])}</b> on the decoded features</div>")
    w["proba"].value = proba_html(out["classes"], out["proba_original"], out["proba"], out["label"])

@patch
def panel(self: Explorer):
    "The ipywidgets panel: λ and target-BPF sliders, utterance picker, readouts, code/SKIP map, class probabilities."
    box = _panel(self)
    self.update()
    return box


# %% [markdown]
# The widgets, driven from Python as a user drives them: moving a slider or picking an utterance changes the readouts.

# %%
box = ex.panel()
w = ex.w
x0 = float(w["bpf"].value); m0 = float(w["mse"].value)
w["lam_slider"].value = ex.lam_max / 10
x1 = float(w["bpf"].value); m1 = float(w["mse"].value)
assert x1 < x0 and m1 > m0, (x0, x1, m0, m1)
test_eq(w["status"].value[-len("(set by hand)"):], "(set by hand)")
w["utt"].value = (w["utt"].value + 2) % len(ex.ids)
assert float(w["bpf"].value) != x1 and ex.last["id"] == ex.ids[w["utt"].value], (float(w["bpf"].value), x1, ex.last["id"], ex.ids[w["utt"].value])
tgt = round((x0 + x1) / 2)
w["bpf_slider"].value = tgt
got = float(w["bpf"].value)
assert abs(got - tgt) <= 1 or "clamped" in w["status"].value, (tgt, got, w["status"].value)
test_close(w["lam_slider"].value, np.clip(ex.lam, ex.lam_min, ex.lam_max), eps=1e-9)  # the λ slider follows
test_eq((bytes(w["map"].value[:8]), w["proba"].value.count("eib-true")), (b"\x89PNG\r\n\x1a\n", 1))
print(f"slider: {x0:.2f} -> {x1:.2f} BPF; target {tgt} -> {got:.2f} BPF at λ {ex.lam:.4g}; update took {w['time'].value}")


# %% [markdown]
# ## How fast
#
# The update time of a 3 s clip (150 frames; the test utterance nearest that length, cut to it) at four λ across
# the grid, on the machine that runs this notebook. Each update compresses the clip with the exact coding model (the
# frequencies the range coder uses), builds the stream, computes the readouts and redraws the widgets.
# `Explorer(threads=1)` (the default) encodes on one torch thread; `threads=2` uses both cores of this machine.

# %%
#| export
def time_updates(ex: Explorer, frames: int = 3 * FRAME_RATE, lams=None, repeat: int = 1) -> np.ndarray:
    """Seconds per `update` of a `frames`-long clip (the test utterance nearest that length, cut or repeated to it)
    at each of `lams` (default: every other λ of the grid), after one warm-up; the explorer's state is restored."""
    k = int(np.argmin([abs(len(f) - frames) for f in ex.frames]))
    orig, state = ex.frames[k], (ex.utt, ex.lam, ex.target)
    x = np.resize(orig, (frames, orig.shape[1])) if len(orig) < frames else orig[:frames]
    lams = ex.lam_grid[1:-1:2] if lams is None else lams
    def forget(): ex._rc.pop(k, None); ex._orig.pop(k, None); ex._z.pop(k, None)
    try:
        ex.frames[k] = x; forget()
        ex.update(utt=k, lam=float(lams[0]))  # warm-up
        return np.array([ex.update(lam=float(l))["seconds"] for _ in range(repeat) for l in lams])
    finally:
        ex.frames[k] = orig; forget()
        ex.utt, ex.lam, ex.target = state
        if ex.w is not None: ex.update()


# %%
import os
def measure(threads: int, repeat: int = 1):
    "Wall seconds per update, and the process's CPU seconds per update (a busy machine inflates the wall time)."
    ex.threads, c0 = threads, time.process_time()
    try: sec = time_updates(ex, repeat=repeat)
    finally: ex.threads = 1
    cpu = (time.process_time() - c0) / (len(sec) + 2)  # + the warm-up and the restoring update
    print(f"update of a 150-frame (3 s) clip, {threads} torch thread(s): median {np.median(sec):.3f} s, min {sec.min():.3f} s, "
          f"max {sec.max():.3f} s over {len(sec)} updates; {cpu:.3f} CPU-s per update; load average {os.getloadavg()[0]:.1f}")
measure(1, repeat=2)

# %%
#| slow
measure(2)

# %% [markdown]
# Measured here (checkpoint `synth_cpu` with the cpu preset of d_model 64, one layer; the 152-frame test clip
# `en-f3_sad_s20` cut to 150 frames; λ = the 2nd, 4th, 6th and 8th of the grid, three times each) with
# `time_updates` on the idle two-core machine (load average 0.2), after the faster exact coding step:
#
# | torch threads | median update | min | max | CPU-s per update |
# |---|---|---|---|---|
# | 1 (default) | 0.155 s | 0.151 s | 0.167 s | 0.146 |
# | 2 | 0.141 s | 0.136 s | 0.148 s | 0.262 |
#
# About 95% of an update is the exact ECVQ pass (`eib.ecvq.ecvq_encode` with the integer coding model, 30 positions;
# cProfile of four updates); redrawing the widgets takes about 12 ms of the rest. A second thread buys 9% for 80%
# more CPU, so one thread stays the default. On a busy machine the wall time is the CPU time stretched by the load
# (last session, at load 6.6 and before the faster step: 0.485 s on one thread, 3.3 s on two). A target-rate change
# runs the rate controller (a calibration pass, then 2–5 encoder passes): 0.70, 0.47 and 0.45 s for targets 40, 80
# and 120 BPF.

# %% [markdown]
# ## The explorer
#
# Move the λ slider, set a target rate, or pick another utterance.

# %%
ex.reset().panel()
