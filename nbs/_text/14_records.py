# %% [markdown]
# # The results files
#
# > The results files: their schema and versions, validation, atomic writes, resuming a sweep and keeping superseded files

# %%
#| default_exp records

# %%
#| export
from __future__ import annotations
import json, math, os, shlex, sys, warnings
from datetime import datetime, timezone
from pathlib import Path
import pandas as pd
from eib.core import EibError, atomic_write_json, fingerprint, repo_root
from eib.evaluate import CI_METRICS

# %%
import copy, tempfile
import numpy as np
from fastcore.test import test_eq, test_fail, test_close
from eib.evaluate import blobs, evaluate_predictions, fit_probe, gaussian_rd_bound, majority_baseline

# %% [markdown]
# Every sweep writes its results here and every figure and page reads them from here: this chapter owns the
# file format. `eib.sweep` fills the files, `eib.figures` and `eib.results` draw them.

# %% [markdown]
# ## The results file
#
# `evaluation_results/rate_sweep_<DATASET>.json` holds everything a figure needs, for one dataset, encoder
# and classifier. Its JSON schema (`RESULTS_SCHEMA`, version `RESULTS_SCHEMA_VERSION` = 2; files of version 1, written
# before the matched classifier existed, still load: they differ only in lacking `classifier_training`):
#
# - `schema_version`, `dataset`, `encoder`, `classifier`, `label_protocol`, `classes` (the class order of every
#   metrics block), `created` (ISO 8601), `command` (what made it);
# - `classifier_training` (version 2): how the classifier was fitted: `fitted_on` (`unquantised training split`,
#   or `decoded training split at each point` for the matched probe), `utterances`, `cv` (its cross-validation
#   scheme, which says when it could not be grouped by speaker); a matched file's points also carry
#   `classifier_fit` (that point's probe: pooling, C, cross-validated score);
# - `config`: `codec_fingerprint`, `preset`, `rate_mode`, `seed`, `samples_per_emotion` (null: all), `counts`
#   (e.g. train/test utterances and frames), more keys allowed; sweeps since 2026-12-04 add `probe_scale_floor`
#   (`eib.evaluate.SCALE_FLOOR`; a file without it was fitted before the floor existed, that is with none);
# - `baselines`: `unquantised` and `majority`, each a metrics block (`evaluate_predictions`);
# - `rd_bound`: `[{bpf, mse}]` from `gaussian_rd_bound`;
# - `rate_points`: `[{target_bpf, capped, achieved_bpf_mean, achieved_bpf_std, achieved_bpf_min, achieved_bpf_max,
#   lam (a number, or {mean, min, max, ...}), mse, metrics}]`, sorted by `target_bpf`, one per target;
#   `capped` says the target was out of reach and the point is the nearest reachable rate;
# - `layer_sweep`: `[{layers, achieved_bpf_mean, mse, metrics}]` for plain RVQ with 1..M layers;
# - `timing`: seconds spent (free-form object); `notes`: optional free text.
#
# Points may carry extra keys (e.g. `mse_normalised`, per-point timing); the top level may not, so a typo
# in a key name fails loudly. `validate_results` also checks what JSON schema cannot: every metrics block
# uses the top-level class order, confusion matrices are C×C and sum to `n`, no number is NaN or infinite,
# targets are unique, intervals are ordered.

# %%
#| export
RESULTS_SCHEMA_VERSION = 2
RESULTS_SCHEMA_VERSIONS = (1, 2)  # versions that load

_P01 = {"type": "number", "minimum": 0, "maximum": 1}
_P01N = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_NN = {"type": "number", "minimum": 0}
_INT = {"type": "array", "items": _P01, "minItems": 2, "maxItems": 2}
_STR = {"type": "string", "minLength": 1}

METRICS_SCHEMA = {
    "type": "object",
    "required": ["n", "accuracy", "balanced_accuracy", "f1_weighted", "f1_macro", "mean_max_prob",
                 "mean_true_label_prob", "per_class", "confusion", "ci"],
    "properties": {
        "n": {"type": "integer", "minimum": 1},
        **{k: _P01 for k in ("accuracy", "balanced_accuracy", "f1_weighted", "f1_macro", "mean_max_prob", "mean_true_label_prob")},
        "per_class": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["precision", "recall", "f1", "support"],
            "properties": {"precision": _P01N, "recall": _P01N, "f1": _P01N, "support": {"type": "integer", "minimum": 0},
                           "predicted": {"type": "integer", "minimum": 0}, "mean_true_label_prob": _P01N}}},
        "confusion": {"type": "object", "required": ["classes", "matrix"], "properties": {
            "classes": {"type": "array", "items": _STR},
            "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0}}}}},
        "ci": {"type": "object", "required": ["level", "n_boot", "seed", *CI_METRICS], "properties": {
            "level": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "n_boot": {"type": "integer", "minimum": 1}, "seed": {"type": "integer"},
            **{k: _INT for k in CI_METRICS}}},
    },
}

RATE_POINT_SCHEMA = {
    "type": "object",
    "required": ["target_bpf", "capped", "achieved_bpf_mean", "achieved_bpf_std", "achieved_bpf_min",
                 "achieved_bpf_max", "lam", "mse", "metrics"],
    "properties": {
        "target_bpf": _NN, "capped": {"type": "boolean"},
        **{k: _NN for k in ("achieved_bpf_mean", "achieved_bpf_std", "achieved_bpf_min", "achieved_bpf_max", "mse")},
        "lam": {"oneOf": [_NN, {"type": "object", "required": ["mean", "min", "max"],
                                "additionalProperties": _NN}]},
        "metrics": METRICS_SCHEMA,
    },
}

LAYER_POINT_SCHEMA = {
    "type": "object", "required": ["layers", "achieved_bpf_mean", "mse", "metrics"],
    "properties": {"layers": {"type": "integer", "minimum": 0}, "achieved_bpf_mean": _NN, "mse": _NN, "metrics": METRICS_SCHEMA},
}

RESULTS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "eib rate sweep results",
    "description": "Emotion recognition on decoded features across bit rates, with baselines (eib.evaluate).",
    "type": "object",
    "additionalProperties": False,
    "required": ["schema_version", "dataset", "encoder", "classifier", "label_protocol", "classes", "config", "created",
                 "command", "baselines", "rd_bound", "rate_points", "layer_sweep", "timing"],
    "properties": {
        "schema_version": {"enum": list(RESULTS_SCHEMA_VERSIONS)},
        "classifier_training": {"type": "object", "required": ["fitted_on", "utterances", "cv"],
                                "properties": {"fitted_on": _STR, "utterances": {"type": "integer", "minimum": 1}, "cv": _STR}},
        "dataset": _STR, "encoder": _STR, "classifier": _STR, "label_protocol": _STR,
        "classes": {"type": "array", "items": _STR, "minItems": 2, "uniqueItems": True},
        "config": {"type": "object",
                   "required": ["codec_fingerprint", "preset", "rate_mode", "seed", "samples_per_emotion", "counts"],
                   "properties": {"codec_fingerprint": _STR, "preset": _STR, "rate_mode": _STR, "seed": {"type": "integer"},
                                  "samples_per_emotion": {"type": ["integer", "null"], "minimum": 1},
                                  "counts": {"type": "object"}}},
        "created": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d"},
        "command": {"type": "string"},
        "baselines": {"type": "object", "required": ["unquantised", "majority"],
                      "properties": {"unquantised": METRICS_SCHEMA, "majority": METRICS_SCHEMA}},
        "rd_bound": {"type": "array", "items": {"type": "object", "required": ["bpf", "mse"],
                                                 "properties": {"bpf": _NN, "mse": _NN}}},
        "rate_points": {"type": "array", "items": RATE_POINT_SCHEMA},
        "layer_sweep": {"type": "array", "items": LAYER_POINT_SCHEMA},
        "timing": {"type": "object"},
        "notes": {"type": "string"},
    },
}


# %%
#| export
def _path_str(parts) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)

def _nonfinite(obj, parts=()):
    "Path of the first NaN or infinite number in `obj`, or None."
    if isinstance(obj, float) and not math.isfinite(obj): return parts
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        if (r := _nonfinite(v, (*parts, k))) is not None: return r
    return None

def _check_schema(obj, schema, where=()):
    import jsonschema
    from jsonschema.exceptions import best_match
    err = best_match(jsonschema.Draft202012Validator(schema).iter_errors(obj))
    if err is not None:
        raise EibError(f"invalid results at {_path_str((*where, *err.absolute_path))}: {err.message}")

def _check_metrics(m: dict, classes: list, where: tuple):
    bad = lambda what, p=(): EibError(f"invalid results at {_path_str((*where, *p))}: {what}")
    if m["confusion"]["classes"] != classes:
        raise bad(f"class order {m['confusion']['classes']} differs from the top-level classes {classes}", ("confusion", "classes"))
    cm = m["confusion"]["matrix"]
    if len(cm) != len(classes) or any(len(r) != len(classes) for r in cm):
        raise bad(f"confusion matrix is not {len(classes)}x{len(classes)}", ("confusion", "matrix"))
    if sum(map(sum, cm)) != m["n"]: raise bad(f"confusion matrix sums to {sum(map(sum, cm))}, not n = {m['n']}", ("confusion", "matrix"))
    if sorted(m["per_class"]) != sorted(classes): raise bad(f"per_class keys {sorted(m['per_class'])} are not the classes", ("per_class",))
    for k in CI_METRICS:
        lo, hi = m["ci"][k]
        if lo > hi: raise bad(f"interval [{lo}, {hi}] is reversed", ("ci", k))

def validate_results(obj) -> dict:
    "Check `obj` against `RESULTS_SCHEMA` and the cross-field rules; raise EibError naming the first bad path."
    if (p := _nonfinite(obj)) is not None: raise EibError(f"invalid results at {_path_str(p)}: NaN or infinite number")
    _check_schema(obj, RESULTS_SCHEMA)
    cl = obj["classes"]
    for k in ("unquantised", "majority"): _check_metrics(obj["baselines"][k], cl, ("baselines", k, ))
    for key, ident in (("rate_points", "target_bpf"), ("layer_sweep", "layers")):
        seen = set()
        for i, pt in enumerate(obj[key]):
            _check_metrics(pt["metrics"], cl, (key, i, "metrics"))
            if pt[ident] in seen: raise EibError(f"invalid results at {_path_str((key, i, ident))}: {ident} {pt[ident]} repeats")
            seen.add(pt[ident])
    return obj


# %%
#| export
def new_results(dataset: str, encoder: str, classifier: str, label_protocol: str, classes, config: dict,
                baselines: dict, rd_bound, command: str | None = None, timing: dict | None = None,
                classifier_training: dict | None = None) -> dict:
    """A validated results object with no rate points yet (`rd_bound`: a DataFrame(bpf, mse) or list of dicts;
    `classifier_training`: `{fitted_on, utterances, cv}`)."""
    if isinstance(rd_bound, pd.DataFrame): rd_bound = rd_bound[["bpf", "mse"]].to_dict("records")
    obj = dict(schema_version=RESULTS_SCHEMA_VERSION, dataset=dataset, encoder=encoder, classifier=classifier,
               label_protocol=label_protocol, classes=[str(c) for c in classes], config=config,
               created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
               command=command if command is not None else " ".join(shlex.quote(a) for a in sys.argv),
               baselines=baselines, rd_bound=[{k: float(v) for k, v in r.items()} for r in rd_bound],
               rate_points=[], layer_sweep=[], timing=dict(timing or {}))
    if classifier_training is not None: obj["classifier_training"] = dict(classifier_training)
    return validate_results(obj)

def write_results(path, obj: dict) -> Path:
    "Validate `obj`, then write it as JSON atomically."
    validate_results(obj)
    return atomic_write_json(path, obj, allow_nan=False)

def load_results(path) -> dict:
    "Read and validate a results file."
    p = Path(path)
    if not p.is_file(): raise EibError(f"no results file at {p}")
    try: obj = json.loads(p.read_text())
    except json.JSONDecodeError as e: raise EibError(f"{p} is not valid JSON ({e}); it was not written by write_results") from None
    try: return validate_results(obj)
    except EibError as e: raise EibError(f"{p}: {e}") from None

def start_results(path, skeleton: dict, force: bool = False) -> dict:
    """Resume or begin a sweep: an existing file at `path` with the same dataset, encoder, classifier, protocol,
    classes and config is returned (its finished points kept); otherwise a new one is written from `skeleton`.
    An existing file of another configuration (or any, with `force`) is first moved to `superseded/` beside it."""
    validate_results(skeleton)
    p = Path(path)
    if p.exists():
        old = load_results(p)
        key = lambda o: fingerprint({k: o[k] for k in ("dataset", "encoder", "classifier", "label_protocol", "classes", "config")})
        k_old, same = key(old)[:8], key(old) == key(skeleton)
        if same and not force: return old
        keep, n = p.parent / "superseded" / f"{p.stem}.{k_old}.json", 1
        while keep.exists(): keep, n = keep.with_name(f"{p.stem}.{k_old}-{n}.json"), n + 1
        keep.parent.mkdir(exist_ok=True)
        os.replace(p, keep)
        warnings.warn(f"{p} held results of {'this' if same else 'another'} configuration (config {old['config']}); "
                      f"kept as {keep}, starting afresh")
    write_results(p, skeleton)
    return skeleton

def _upsert(path, point: dict, key: str, ident: str, schema: dict) -> dict:
    _check_schema(point, schema, (key, "<new>"))
    obj = load_results(path)
    pts = [q for q in obj[key] if q[ident] != point[ident]] + [point]
    obj[key] = sorted(pts, key=lambda q: q[ident])
    write_results(path, obj)
    return obj

def upsert_rate_point(path, point: dict) -> dict:
    "Add (or replace, same `target_bpf`) one rate point in the results file at `path`; rewritten atomically."
    return _upsert(path, point, "rate_points", "target_bpf", RATE_POINT_SCHEMA)

def upsert_layer_point(path, point: dict) -> dict:
    "Add (or replace, same `layers`) one layer-sweep point in the results file at `path`; rewritten atomically."
    return _upsert(path, point, "layer_sweep", "layers", LAYER_POINT_SCHEMA)

def finished_targets(path) -> list[float]:
    "Target rates already in the results file at `path` (empty if there is no file): skip these when resuming."
    return [q["target_bpf"] for q in load_results(path)["rate_points"]] if Path(path).exists() else []


# %% [markdown]
# Where the book finds results: the committed sweeps in `evaluation_results/`, and, when `make book` has just rerun
# the synthetic sweep, that fresh run in the folder named by the environment variable `EIB_BOOK_RESULTS`; the
# results chapter checks the fresh numbers against the committed ones.

# %%
#| export
def results_files(folder=None) -> dict:
    "Dataset name (upper case, from the file name) -> `rate_sweep_*.json` in `folder` (default evaluation_results/)."
    d = Path(folder) if folder is not None else repo_root() / "evaluation_results"
    return {f.stem[len("rate_sweep_"):].upper(): f for f in sorted(d.glob("rate_sweep_*.json"))}

def rerun_files() -> dict:
    "The results files of the sweep `make book` has just rerun (`$EIB_BOOK_RESULTS`), or {} when there is none."
    d = os.environ.get("EIB_BOOK_RESULTS", "").strip()
    return results_files(d) if d and Path(d).is_dir() else {}


# %%
import tempfile
with tempfile.TemporaryDirectory() as _a:
    for n in ("synth", "EMODB"): (Path(_a) / f"rate_sweep_{n}.json").write_text("{}")
    test_eq(sorted(results_files(_a)), ["EMODB", "SYNTH"])
    _prev = os.environ.get("EIB_BOOK_RESULTS")  # `make book` sets it for the chapters run after this one: restore it
    try:
        os.environ["EIB_BOOK_RESULTS"] = _a
        test_eq(rerun_files()["SYNTH"], Path(_a) / "rate_sweep_synth.json")
        os.environ["EIB_BOOK_RESULTS"] = ""
        test_eq(rerun_files(), {})
    finally:
        if _prev is None: os.environ.pop("EIB_BOOK_RESULTS", None)
        else: os.environ["EIB_BOOK_RESULTS"] = _prev

# %% [markdown]
# A small valid object, then several invalid ones: each names the path of its first problem.

# %%
import copy, jsonschema
jsonschema.Draft202012Validator.check_schema(RESULTS_SCHEMA)     # the schema itself is valid JSON schema
_cl = ["a", "b", "c"]; _y = np.array(["a"] * 5 + ["b"] * 3 + ["c"] * 2)
_Pq = np.full((10, 3), 0.1) + 0.7 * np.eye(3)[[0, 0, 0, 1, 2, 1, 1, 0, 2, 2]]
_met = lambda P: evaluate_predictions(_y, P, _cl, n_boot=50)
_cfg = dict(codec_fingerprint="abc123", preset="cpu", rate_mode="per_utterance", seed=42, samples_per_emotion=None,
            counts=dict(train=30, test=10))
_sk = new_results("synth", "compare", "linear_probe", "synth", _cl, _cfg,
                  dict(unquantised=_met(_Pq), majority=majority_baseline(["a", "a", "b"], _y, _cl, n_boot=50)),
                  gaussian_rd_bound(np.random.default_rng(0).normal(0, 1, (400, 8)), [0, 10]), command="test")
_pt = lambda r: dict(target_bpf=r, capped=False, achieved_bpf_mean=r + .1, achieved_bpf_std=.5, achieved_bpf_min=r - 1,
                     achieved_bpf_max=r + 1, lam=dict(mean=.1, min=.05, max=.2), mse=1 / r, metrics=_met(_Pq))
_ok = copy.deepcopy(_sk); _ok["rate_points"] = [_pt(10.0)]; _ok["layer_sweep"] = [dict(layers=1, achieved_bpf_mean=20.0, mse=.3, metrics=_met(_Pq))]
test_eq(validate_results(_ok), _ok)
_v1 = copy.deepcopy(_ok); _v1["schema_version"] = 1  # a file written before version 2 still loads
test_eq(validate_results(_v1)["schema_version"], 1)
_m = copy.deepcopy(_ok); _m["classifier_training"] = dict(fitted_on="decoded training split at each point", utterances=30, cv="GroupKFold(5) by speaker")
test_eq(validate_results(_m)["classifier_training"]["utterances"], 30)

def _bad(edit, contains):
    o = copy.deepcopy(_ok); edit(o); test_fail(lambda: validate_results(o), contains=contains)
_bad(lambda o: o.pop("encoder"), "at $: 'encoder' is a required property")
_bad(lambda o: o.update(clases=[]), "Additional properties are not allowed ('clases'")
_bad(lambda o: o["rate_points"][0]["metrics"].update(accuracy=1.5), "at $.rate_points[0].metrics.accuracy: 1.5 is greater than the maximum")
_bad(lambda o: o["rate_points"][0].update(mse=float("nan")), "at $.rate_points[0].mse: NaN")
_bad(lambda o: o["rate_points"][0].update(capped="no"), "at $.rate_points[0].capped")
_bad(lambda o: o["baselines"]["majority"]["confusion"].update(classes=["b", "a", "c"]), "at $.baselines.majority.confusion.classes: class order")
_bad(lambda o: o["rate_points"].append(_pt(10.0)), "at $.rate_points[1].target_bpf: target_bpf 10.0 repeats")
_bad(lambda o: o.update(schema_version=3), "at $.schema_version")
_bad(lambda o: o["layer_sweep"][0]["metrics"]["confusion"]["matrix"][0].__setitem__(0, 99), "sums to")

# %% [markdown]
# A sweep resumes: `start_results` writes the skeleton (or returns the existing file of the same
# configuration), each finished point is upserted (the file rewritten atomically), and `finished_targets`
# says what to skip after an interruption. A file of another configuration (say, the committed results of a codec
# that a fresh clone retrains) is never overwritten: it is moved to `superseded/` beside it, out of the
# `rate_sweep_*.json` pattern that the website reads, and the sweep starts afresh.

# %%
with tempfile.TemporaryDirectory() as _t:
    _fp = Path(_t) / "evaluation_results" / "rate_sweep_SYNTH.json"
    test_eq(finished_targets(_fp), [])
    start_results(_fp, _sk)
    upsert_rate_point(_fp, _pt(100.0)); upsert_rate_point(_fp, _pt(10.0))
    _o = upsert_rate_point(_fp, _pt(100.0) | dict(capped=True))          # same target again: replaced, not added
    test_eq(finished_targets(_fp), [10.0, 100.0]); test_eq(_o["rate_points"][1]["capped"], True)
    test_eq(start_results(_fp, _sk)["rate_points"], _o["rate_points"])   # resuming keeps finished points
    test_fail(lambda: upsert_rate_point(_fp, {"target_bpf": 5}), contains="at $.rate_points.<new>: 'capped' is a required")
    test_eq(load_results(_fp), _o)                                        # a refused point loses nothing
    _other = copy.deepcopy(_sk); _other["config"]["seed"] = 7
    with warnings.catch_warnings(record=True) as _w:
        warnings.simplefilter("always")
        test_eq(start_results(_fp, _other)["rate_points"], [])           # another configuration starts afresh ...
    test_eq(finished_targets(_fp), []); assert "another configuration" in str(_w[0].message), _w[0].message
    _kept = list((_fp.parent / "superseded").iterdir())
    test_eq(len(_kept), 1); test_eq(load_results(_kept[0]), _o)          # ... and the old file is kept, not overwritten
    test_eq(sorted(p.name for p in _fp.parent.iterdir()), ["rate_sweep_SYNTH.json", "superseded"])  # no temporary files
    _fp.write_text("{"); test_fail(lambda: load_results(_fp), contains="not valid JSON")
