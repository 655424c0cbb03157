# %% [markdown]
# # The trained codec
#
# > One object for a trained codec: the grouped RVQ, the entropy model, their fingerprint and the exact coding model, saved and loaded as a folder.

# %%
#| default_exp codec

# %%
#| export
from __future__ import annotations
import hashlib, importlib, io, json
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np
import pandas as pd
import torch
from eib.core import EibError, atomic_write_bytes, atomic_write_json, atomic_write_text, fingerprint
from eib.rvq import RVQConfig, GroupedRVQ
from eib.entropy import EntropyModel, EntropyConfig, CodingModel

# %%
import tempfile
from fastcore.test import test_eq, test_ne, test_is, test_fail


# %% [markdown]
# ## A codec and its fingerprint
#
# A `Codec` is what compression needs: the grouped RVQ (normalisation + codebooks), the entropy model (None for an
# RVQ-only codec) and a `meta` dict (training data, preset, λ grid, metrics). Like CompressAI's models, which build
# their coding tables once with `update()` and then `compress`/`decompress` with them, a `Codec` computes two
# things once, on first use, and keeps them:
#
# - its **fingerprint**, 16 hex digits over the RVQ and entropy-model configurations and every weight (float32
#   bytes, in sorted-name order); the bitstream stores its first 8 so that a stream is never decoded with another
#   model;
# - its **coding model**, the fixed-point twin of the entropy model (`eib.entropy.CodingModel`) whose integer
#   frequencies the range coder uses.
#
# Call `update()` after changing weights in place; a new `Codec` (as training makes) starts fresh.

# %%
#| export
def codec_fingerprint(rvq: GroupedRVQ, model=None) -> str:
    "16-hex-digit fingerprint of the RVQ and entropy-model (None allowed) configurations and weights."
    cfg = dict(rvq=rvq.cfg.to_dict(), model=None if model is None else model.cfg.to_dict())
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode())
    for tag, mod in (("rvq", rvq), ("model", model)):
        if mod is None: continue
        sd = mod.state_dict()
        for k in sorted(sd):
            h.update(f"{tag}.{k}{tuple(sd[k].shape)}".encode()); h.update(sd[k].detach().float().cpu().contiguous().numpy().tobytes())
    return fingerprint(h.digest())

@dataclass(eq=False)
class Codec:
    "A trained codec: grouped RVQ, entropy model (None for an RVQ-only codec) and metadata."
    rvq: GroupedRVQ
    model: torch.nn.Module | None = None
    meta: dict = field(default_factory=dict)
    _fp: str | None = field(default=None, init=False, repr=False)
    _cm: CodingModel | None = field(default=None, init=False, repr=False)

    def update(self) -> "Codec":
        "Recompute the fingerprint and the coding model from the current weights (after changing them in place)."
        self._fp = codec_fingerprint(self.rvq, self.model)
        self._cm = None if self.model is None else CodingModel(self.model)
        return self

    @property
    def fingerprint(self) -> str:
        if self._fp is None: self._fp = codec_fingerprint(self.rvq, self.model)
        return self._fp

    @property
    def coding_model(self) -> CodingModel:
        "The exact coding model of the entropy model, built once."
        if not isinstance(self.model, EntropyModel):
            raise EibError("this codec has no EntropyModel, so no coding model and no stream format (an RVQ-only codec)")
        if self._cm is None: self._cm = CodingModel(self.model)
        return self._cm

    @property
    def cfg(self) -> RVQConfig: return self.rvq.cfg

def as_codec(obj, need_model: bool = True) -> Codec:
    "`obj` (a `Codec` or an `(rvq, model)` pair) as a `Codec`; `need_model`: it must have an `EntropyModel`."
    if isinstance(obj, Codec): c = obj
    elif isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[0], GroupedRVQ): c = Codec(obj[0], obj[1])
    else: raise EibError(f"expected a Codec (eib.codec.load_codec) or an (rvq, model) pair, got {type(obj).__name__}")
    if need_model and not isinstance(c.model, EntropyModel):
        raise EibError(f"this needs the codec's EntropyModel, got {type(c.model).__name__} (an RVQ-only codec has no stream format)")
    if c.model is not None and hasattr(c.model, "cfg"):
        mc, rc = c.model.cfg, c.rvq.cfg
        if (mc.vocab, mc.positions) != (rc.vocab, rc.positions):
            raise EibError(f"entropy model (vocab {mc.vocab}, {mc.positions} positions) does not fit the RVQ "
                           f"(vocab {rc.vocab}, {rc.positions} positions); load the checkpoint they were trained together in")
    return c


# %% [markdown]
# The fingerprint sees any weight change, once `update()` is called; the coding model is built once:

# %%
q = GroupedRVQ(RVQConfig(6, 2, layers=2, codes=4))
m = EntropyModel(EntropyConfig.for_rvq(q.cfg, "cpu"))
c = Codec(q, m)
f0 = c.fingerprint
q.codebooks[0, 0, 0, 0] = 1e-7
test_eq(c.fingerprint, f0)  # cached: computed once
test_ne(c.update().fingerprint, f0)  # any weight change shows after update()
test_eq(c.fingerprint, codec_fingerprint(q, m))
test_is(c.coding_model, c.coding_model)
test_eq(as_codec((q, m)).fingerprint, c.fingerprint)
test_fail(lambda: Codec(q).coding_model, contains="RVQ-only")
test_fail(lambda: as_codec("codec"), contains="expected a Codec")

# %% [markdown]
# ## Saving and loading
#
# A checkpoint is a folder: `rvq.pt` and `entropy.pt` (state dicts), `config.json` (RVQ and entropy-model
# configuration, how to rebuild the model, training data, preset, λ grid, metrics, fingerprint) and a
# `README.md`. Every file is written atomically and `config.json` last, so a folder with a `config.json`
# is complete. Loading checks that the folder and files exist, that the weights fit the configuration and
# that the fingerprint matches; each failure is an `EibError` that says what to do.
#
# The entropy model is rebuilt from `config.json`: its class and its configuration class (both inside the
# `eib` package) are recorded by name, and the configuration comes from `model.cfg.to_dict()`.

# %%
#| export
_RVQ_FILE, _ENT_FILE, _CFG_FILE = "rvq.pt", "entropy.pt", "config.json"
_HOW = "train one with `eib-train --features data_subset/<DATASET> --preset cpu --out DIR`"

def _torch_bytes(state) -> bytes:
    buf = io.BytesIO(); torch.save(state, buf); return buf.getvalue()

def _qualname(obj) -> str: return f"{type(obj).__module__}:{type(obj).__qualname__}"

def _import(qual: str):
    mod, _, name = qual.partition(":")
    if not (mod == "eib" or mod.startswith("eib.")):
        raise EibError(f"checkpoint names class {qual!r} outside the eib package; refusing to load it")
    try:
        obj = importlib.import_module(mod)
        for part in name.split("."): obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise EibError(f"checkpoint needs {qual}, which this eib version lacks ({e}); update eib or retrain") from None
    return obj

def model_spec(model) -> dict | None:
    "How to rebuild `model`: its class, its configuration class and configuration (a JSON-able dict)."
    if model is None: return None
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "to_dict"):
        raise EibError(f"{type(model).__name__} has no `.cfg` with `to_dict()`; cannot record how to rebuild it")
    return {"class": _qualname(model), "config_class": _qualname(cfg), "config": cfg.to_dict()}

def build_model(spec: dict | None):
    "Rebuild an (untrained) model from `model_spec` output."
    if spec is None: return None
    ccls = _import(spec["config_class"])
    cfg = ccls.from_dict(spec["config"]) if hasattr(ccls, "from_dict") else ccls(**spec["config"])
    return _import(spec["class"])(cfg)

def _readme(codec: Codec, cfgd: dict) -> str:
    m = codec.meta
    lines = [f"# eib codec checkpoint", "",
             f"- fingerprint: `{cfgd['fingerprint']}`",
             f"- RVQ: {cfgd['rvq']}",
             f"- entropy model: {cfgd['entropy']['class'] if cfgd['entropy'] else 'none (RVQ only)'}",
             f"- command: `{m.get('command') or '-'}`",
             f"- preset: {m.get('preset', '-')}, seed: {m.get('seed', '-')}, entropy training: {m.get('entropy_train', '-')}",
             f"- training data: {json.dumps(m.get('data', {}), default=str)}",
             f"- λ grid: {m.get('lams', '-')}", "",
             "## Metrics", "", "```json", json.dumps(m.get("metrics", {}), indent=1, default=str), "```", "",
             "Load with `eib.codec.load_codec(DIR)`.", ""]
    return "\n".join(lines)

def save_codec(codec: Codec, out: str | Path) -> Path:
    "Write `codec` to the folder `out` (created); `config.json` is written last."
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    spec = model_spec(codec.model)
    atomic_write_bytes(out / _RVQ_FILE, _torch_bytes(codec.rvq.state_dict()))
    if codec.model is not None: atomic_write_bytes(out / _ENT_FILE, _torch_bytes(codec.model.state_dict()))
    else: (out / _ENT_FILE).unlink(missing_ok=True)
    cfgd = {"format": 1, "rvq": codec.rvq.cfg.to_dict(), "entropy": spec, "fingerprint": codec.fingerprint,
            "fingerprint_fn": "eib.codec.codec_fingerprint",
            **{k: v for k, v in codec.meta.items() if k not in ("rvq", "entropy", "fingerprint", "format")}}
    atomic_write_text(out / "README.md", _readme(codec, cfgd))
    atomic_write_json(out / _CFG_FILE, cfgd, default=_json_default)
    return out

def _json_default(o):
    if isinstance(o, (np.integer,)): return int(o)
    if isinstance(o, (np.floating,)): return float(o)
    if isinstance(o, (np.ndarray, torch.Tensor)): return o.tolist()
    if isinstance(o, pd.DataFrame): return o.to_dict(orient="list")
    if isinstance(o, Path): return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to config.json")

def _load_state(path: Path) -> dict:
    try: return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e: raise EibError(f"{path} is not a readable torch state dict ({e}); {_HOW}") from None

def load_codec(path: str | Path) -> Codec:
    "Load a codec folder written by `save_codec`, checking shapes and the fingerprint."
    p = Path(path)
    if not p.is_dir(): raise EibError(f"no codec checkpoint at {p}; {_HOW}")
    if not (p / _CFG_FILE).exists():
        raise EibError(f"{p} has no {_CFG_FILE} (not a codec checkpoint, or training did not finish); {_HOW}")
    try: cfgd = json.loads((p / _CFG_FILE).read_text())
    except json.JSONDecodeError as e: raise EibError(f"{p / _CFG_FILE} is not valid JSON ({e}); {_HOW}") from None
    need = [_RVQ_FILE] + ([_ENT_FILE] if cfgd.get("entropy") else [])
    missing = [f for f in need if not (p / f).exists()]
    if missing: raise EibError(f"{p} lacks {', '.join(missing)} (incomplete checkpoint); {_HOW}")
    rvq = GroupedRVQ(RVQConfig.from_dict(cfgd.get("rvq", {})))
    model = build_model(cfgd.get("entropy"))
    for name, mod, f in (("RVQ", rvq, _RVQ_FILE), ("entropy model", model, _ENT_FILE)):
        if mod is None: continue
        try: mod.load_state_dict(_load_state(p / f))
        except RuntimeError as e:
            raise EibError(f"{p / f} does not fit the {name} configuration in {_CFG_FILE}: "
                           f"{str(e).splitlines()[-1].strip()}; the files come from different trainings — {_HOW}") from None
    if model is not None: model.eval()
    for name, mod in (("RVQ", rvq), ("entropy model", model)):
        bad = [k for k, v in ({} if mod is None else mod.state_dict()).items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad: raise EibError(f"{p}: the {name} weights {', '.join(bad[:3])} hold NaN or infinite values (a diverged or damaged training); {_HOW}")
    meta = {k: v for k, v in cfgd.items() if k not in ("format", "rvq", "entropy", "fingerprint", "fingerprint_fn")}
    codec = Codec(rvq, model, meta)
    got = codec.fingerprint
    if got != cfgd.get("fingerprint"):
        raise EibError(f"{p}: weights fingerprint {got} differs from {cfgd.get('fingerprint')} in {_CFG_FILE} "
                       f"(weights changed or mixed from two trainings); {_HOW}")
    return codec


# %% [markdown]
# Round trip, and the three kinds of failure: a missing folder, a missing file, and weights that do not
# match the configuration (wrong shape, or changed values).

# %%
q = GroupedRVQ(RVQConfig(6, 2, layers=2, codes=4)); q.codebooks.normal_(generator=torch.Generator().manual_seed(0))
c = Codec(q, None, {"preset": "cpu", "metrics": {"mse": np.float32(0.5)}})
with tempfile.TemporaryDirectory() as d:
    save_codec(c, Path(d) / "ck")
    c2 = load_codec(Path(d) / "ck")
    test_eq(c2.rvq.codebooks, q.codebooks)
    test_eq((c2.fingerprint, c2.meta["preset"], c2.meta["metrics"]["mse"]), (c.fingerprint, "cpu", 0.5))
    test_eq(sorted(x.name for x in (Path(d) / "ck").iterdir()), ["README.md", "config.json", "rvq.pt"])
    test_fail(lambda: load_codec(Path(d) / "nope"), contains="eib-train")

# %%
# a codec whose entropy model sees the previous frame saves and loads as one; its config says so, and its fingerprint
# differs from the intra-frame model's with the same other weights
from eib.entropy import EntropyConfig
torch.manual_seed(0)
mi = EntropyModel(EntropyConfig.for_rvq(q.cfg, "cpu", d_model=16, n_heads=2, d_ff=32))
mc = EntropyModel(EntropyConfig(**{**mi.cfg.to_dict(), "context": "frame"})); mc.load_state_dict(mi.state_dict(), strict=False)
with tempfile.TemporaryDirectory() as d:
    cc = load_codec(save_codec(Codec(q, mc), Path(d) / "ctx"))
    test_eq((cc.model.cfg.context, cc.fingerprint, torch.equal(cc.model.ctx.weight, mc.ctx.weight)), ("frame", Codec(q, mc).fingerprint, True))
    test_eq(json.loads((Path(d) / "ctx" / "config.json").read_text())["entropy"]["config"]["context"], "frame")
test_eq(Codec(q, mc).fingerprint == Codec(q, mi).fingerprint, False)

# %%
with tempfile.TemporaryDirectory() as d:
    ck = save_codec(c, Path(d) / "ck")
    (ck / "rvq.pt").unlink()
    test_fail(lambda: load_codec(ck), contains="lacks rvq.pt")
    save_codec(c, ck); big = GroupedRVQ(RVQConfig(6, 2, layers=2, codes=8))
    atomic_write_bytes(ck / "rvq.pt", _torch_bytes(big.state_dict()))
    test_fail(lambda: load_codec(ck), contains="does not fit the RVQ")
    q2 = GroupedRVQ(q.cfg); q2.load_state_dict(q.state_dict()); q2.codebooks[1, 1, 3, 2] += 1e-3
    atomic_write_bytes(ck / "rvq.pt", _torch_bytes(q2.state_dict()))
    test_fail(lambda: load_codec(ck), contains="fingerprint")
    q3 = GroupedRVQ(q.cfg); q3.load_state_dict(q.state_dict()); q3.codebooks[0, 0, 0, 0] = float("nan")
    save_codec(Codec(q3), ck)  # a checkpoint of NaN weights, its fingerprint matching them
    test_fail(lambda: load_codec(ck), contains="NaN or infinite")
