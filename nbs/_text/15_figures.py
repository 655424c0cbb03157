# %% [markdown]
# # The book's figures
#
# > Figures of the book, from the results files

# %%
#| default_exp figures

# %%
#| export
from __future__ import annotations
import json, math, re, xml.etree.ElementTree as ET
from pathlib import Path
import numpy as np
import pandas as pd
import altair as alt
from eib.core import EibError, atomic_write_bytes, fingerprint, repo_root
from eib.evaluate import (CI_METRICS, blobs, evaluate_predictions, fit_probe, gaussian_rd_bound, majority_baseline,
                          unquantised_baseline)
from eib.records import load_results, new_results, validate_results

# %%
import tempfile, xml.etree.ElementTree as ET
import operator
from fastcore.test import test, test_eq, test_fail, test_close

# %% [markdown]
# Every figure of the book is a function of the results files `evaluation_results/rate_sweep_<DATASET>.json`
# (schema: `eib.records.RESULTS_SCHEMA`) and returns an altair chart. A function takes one results object or
# a list of them (dicts, or paths to results files), one per dataset, and draws every dataset it is given.
# Optional parts of a results file (the layer sweep, the Gaussian R(D) curve, points not run yet) are left out of a
# figure when they are missing, never invented.
#
# Charts render without a network: `use_offline_renderer()` makes notebooks show every chart as an inline SVG
# drawn by vl-convert (mimetype `image/svg+xml`, no vega-embed script from a CDN), which is also what the
# website shows, since it renders the outputs saved in the notebooks. `save_figure` writes PNG and SVG files
# with vl-convert, atomically.
#
# The examples in this chapter are a **demonstration on synthetic blobs**, not results: the real evaluation
# functions (`fit_probe`, `evaluate_predictions`, the baselines, `gaussian_rd_bound`) are run on synthetic
# utterances whose test frames are degraded by Gaussian noise, with a made-up "pseudo-rate" standing for
# each noise level. Every number in them is computed by those functions; none is a measurement of the codec.

# %% [markdown]
# ## Rendering without a network

# %%
#| export
_VL = alt.SCHEMA_VERSION.lstrip("v").rsplit(".", 1)[0]  # e.g. "6.4", the Vega-Lite version altair writes

def vl_version() -> str | None:
    "The Vega-Lite version vl-convert draws with: altair's own when vl-convert has it, else vl-convert's default (None)."
    import vl_convert as vlc
    return _VL if _VL in vlc.get_vegalite_versions() else None

def chart_spec(chart) -> dict:
    "The Vega-Lite spec of an altair `chart`, its data inline (however many rows)."
    if not isinstance(chart, alt.TopLevelMixin):
        raise EibError(f"expected an altair chart, got {type(chart).__name__}")
    with alt.data_transformers.disable_max_rows():
        return chart.to_dict()

def to_svg(chart) -> str:
    "The chart drawn as an SVG document by vl-convert (no browser, no network)."
    import vl_convert as vlc
    return vlc.vegalite_to_svg(chart_spec(chart), vl_version=vl_version())

def to_png(chart, scale: float = 2.0) -> bytes:
    "The chart drawn as PNG bytes by vl-convert; `scale` multiplies the pixel size."
    import vl_convert as vlc
    return vlc.vegalite_to_png(chart_spec(chart), vl_version=vl_version(), scale=scale)

def use_offline_renderer() -> str:
    """Show altair charts as inline SVG (vl-convert) in notebooks and in the website built from their outputs,
    and lift altair's 5000-row limit on inline data. Returns the name of the renderer that was active."""
    old = alt.renderers.active
    alt.renderers.enable("svg")
    alt.data_transformers.disable_max_rows()
    return old

class SvgFigure:
    "A chart drawn as SVG; notebooks (and so the website) show it as `image/svg+xml`."
    def __init__(self, svg: str): self.svg = svg
    def _repr_mimebundle_(self, include=None, exclude=None): return {"image/svg+xml": self.svg}
    def __repr__(self): return f"SvgFigure({len(self.svg)} characters of SVG)"

def show(chart) -> SvgFigure:
    "The chart as an inline SVG figure, whatever renderer altair has enabled."
    return SvgFigure(to_svg(chart))


# %%
#| export
def _names(o, out: set) -> set:
    "Every string in a spec (field names, shorthand, expressions), outside its inline data."
    if isinstance(o, str): out.add(o)
    elif isinstance(o, dict):
        for k, v in o.items():
            if k != "datasets": _names(v, out)
    elif isinstance(o, list):
        for v in o: _names(v, out)
    return out

def slim_spec(spec: dict, digits: int = 6) -> dict:
    """`spec` with its inline data cut to what the chart reads: columns that no encoding, tooltip or expression
    names are dropped, and floats keep `digits` significant digits. A page that embeds the spec carries less."""
    names = _names(spec, set())
    exprs = [s for s in names if "datum" in s]
    keep = lambda c: c in names or any(c in e for e in exprs)
    num = lambda v: float(f"{v:.{digits}g}") if isinstance(v, float) and math.isfinite(v) else v
    out = dict(spec)
    if "datasets" in spec:
        out["datasets"] = {k: [{c: num(v) for c, v in row.items() if keep(c)} for row in rows] for k, rows in spec["datasets"].items()}
    return out


# %%
_c = alt.Chart(pd.DataFrame(dict(x=[1.0, 2.0], y=[0.123456789, 0.5], unused=["a", "b"]))).mark_line().encode(
    x="x:Q", y=alt.Y("y:Q"), tooltip=["x:Q"])
_sl = slim_spec(chart_spec(_c))
test_eq(list(_sl["datasets"].values())[0], [{"x": 1.0, "y": 0.123457}, {"x": 2.0, "y": 0.5}])  # 'unused' dropped, y rounded
test_eq({k: v for k, v in _sl.items() if k != "datasets"}, {k: v for k, v in chart_spec(_c).items() if k != "datasets"})
_t = alt.Chart(pd.DataFrame(dict(a=[1.0], b=[2.0]))).mark_point().encode(x="a:Q", y="s:Q").transform_calculate(s="datum.b * 2")
test_eq(list(list(slim_spec(chart_spec(_t))["datasets"].values())[0][0]), ["a", "b"])  # b is read by an expression

# %%
_c = alt.Chart(pd.DataFrame(dict(x=[1, 2, 3], y=[3, 1, 2]))).mark_line().encode(x="x", y="y")
_b = show(_c)._repr_mimebundle_()
test_eq(list(_b), ["image/svg+xml"])
_root = ET.fromstring(_b["image/svg+xml"]); test_eq(_root.tag, "{http://www.w3.org/2000/svg}svg")
_svg = _b["image/svg+xml"]
assert "<script" not in _svg and "cdn" not in _svg.lower(), [_svg[max(0, i - 60):i + 60] for i in (_svg.find("<script"), _svg.lower().find("cdn")) if i >= 0]
_old = use_offline_renderer()
test_eq(alt.renderers.active, "svg"); test_eq(list(_c._repr_mimebundle_()), ["image/svg+xml"])  # what a notebook stores
test_eq(to_png(_c)[:8], b"\x89PNG\r\n\x1a\n")
test_fail(lambda: show({"mark": "line"}), contains="expected an altair chart")

# %% [markdown]
# ## Fitting the page
#
# The website's text column is 654 px wide in a 1280 px window (measured in headless Chromium, between the
# sidebar and the table of contents), and a wider figure is cut off or hidden behind a scroll bar. So every figure is
# laid out to be at most `PAGE_WIDTH` = 640 px wide as drawn, legends,
# titles and padding included (`svg_size` measures it): legends go *below* the plot, where a long label
# (a dataset named with its encoder and classifier, an emotion such as "surprise") makes the figure taller, never
# wider, and is cut only beyond `LABEL_LIMIT`; panels are sized so that they add up to the page, and several
# panels are wrapped into rows. Rate axes get about one tick per 60 px, and labels that would still touch are
# thinned, so numbers never run together.

# %%
#| export
PAGE_WIDTH = 640  # px: the widest a figure is drawn, legend, titles and padding included
LABEL_LIMIT = PAGE_WIDTH // 2  # px: a legend label or title is cut only beyond this

def svg_size(chart) -> tuple[float, float]:
    "Width and height (px) of `chart` as vl-convert draws it: the whole figure, legends, titles and padding included."
    root = ET.fromstring(to_svg(chart))
    return float(root.get("width")), float(root.get("height"))

def _text_px(s, size: float = 10.0) -> float:
    "A generous estimate of the drawn width of the text `s` at font size `size` (sans-serif)."
    return 0.62 * size * len(str(s))

def _legend(labels=(), wrap: bool = False, **kw) -> alt.Legend:
    """A legend below the plot, its entries in a column, labels cut only beyond `LABEL_LIMIT`; with `wrap`, the
    entries (`labels`) side by side in as many columns as the page holds."""
    if wrap and len(labels):
        per = max(_text_px(l) for l in labels) + 30  # symbol, gap, label
        kw = dict(direction="horizontal", columns=int(max(1, min(len(labels), (PAGE_WIDTH - 60) // per)))) | kw
    return alt.Legend(**(dict(orient="bottom", direction="vertical", labelLimit=LABEL_LIMIT, titleLimit=LABEL_LIMIT) | kw))

def _rate_axis(width: float, **kw) -> alt.Axis:
    "A quantitative axis with about one tick per 60 px of `width`; labels that would still touch are thinned."
    return alt.Axis(**(dict(tickCount=max(2, int(width // 60)), labelOverlap=True, labelFlush=True) | kw))


# %%
_wide = alt.Chart(pd.DataFrame(dict(x=[0, 560], y=[0, 1], k=["a" * 60, "b"]))).mark_line().encode(
    alt.X("x:Q", axis=_rate_axis(600)), alt.Y("y:Q"), alt.Color("k:N", legend=_legend()))
_w, _h = svg_size(_wide.properties(width=560))
assert 560 < _w <= PAGE_WIDTH, _w                                           # the 60-letter label is below, not beside
test_eq(_w, float(ET.fromstring(to_svg(_wide.properties(width=560))).get("width")))
_right = _wide.encode(alt.Color("k:N", legend=alt.Legend(orient="right", labelLimit=LABEL_LIMIT)))
assert svg_size(_right.properties(width=560))[0] > PAGE_WIDTH                  # the same label at the right: too wide
test_eq(_legend(["neutral", "surprise"], wrap=True).to_dict()["columns"], 2)
test_eq(_legend(["x" * 40] * 7, wrap=True).to_dict()["columns"], 2)         # long labels: fewer columns
test_eq(_rate_axis(640).to_dict()["tickCount"], 10)

# %% [markdown]
# ## Saving a figure
#
# `save_figure(chart, stem, out_dir)` writes `<stem>.png` and `<stem>.svg` (and `<stem>.vl.json`, the
# Vega-Lite spec, when asked). Every format is drawn first and only then written, each file atomically, so a
# failure leaves no partial file behind.

# %%
#| export
FIGURE_FORMATS = ("png", "svg", "json")

def save_figure(chart, stem: str, out_dir="figures", formats=("png", "svg"), scale: float = 2.0) -> dict:
    "Write `chart` as `out_dir/stem.png` and `.svg` (and `.vl.json` for `json`) atomically: `{format: path}`."
    if not isinstance(stem, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", stem):
        raise EibError(f"stem must be a plain file name (letters, digits, '_', '.', '-'), got {stem!r}")
    bad = [f for f in formats if f not in FIGURE_FORMATS]
    if bad or not formats: raise EibError(f"unknown formats {bad or formats}; known: {', '.join(FIGURE_FORMATS)}")
    try:
        data = {f: (to_png(chart, scale) if f == "png" else to_svg(chart).encode() if f == "svg"
                    else json.dumps(chart_spec(chart), indent=1).encode()) for f in formats}
    except EibError: raise
    except Exception as e: raise EibError(f"vl-convert could not draw the chart {stem!r}: {e}") from e
    ext, out = dict(png=".png", svg=".svg", json=".vl.json"), {}
    for f, b in data.items():
        out[f] = atomic_write_bytes(Path(out_dir) / f"{stem}{ext[f]}", b)
        out[f].chmod(0o644)  # a web page's file, readable by the server (the atomic write makes it 0600)
    return out


# %%
with tempfile.TemporaryDirectory() as _t:
    _paths = save_figure(_c, "demo_line", _t, formats=("png", "svg", "json"))
    test_eq(sorted(p.name for p in Path(_t).iterdir()), ["demo_line.png", "demo_line.svg", "demo_line.vl.json"])
    test_eq(_paths["png"].read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
    ET.parse(_paths["svg"]); test_eq(json.loads(_paths["json"].read_text())["mark"]["type"], "line")
    test_fail(lambda: save_figure(_c, "../x", _t), contains="plain file name")
    test_fail(lambda: save_figure(_c, "x", _t, formats=("pdf",)), contains="known: png, svg, json")
    test_eq(len(list(Path(_t).iterdir())), 3)                                 # refused calls wrote nothing


# %% [markdown]
# ## A demonstration results object
#
# `demo_results` builds a valid results object the way a sweep does, but with Gaussian noise in place of the
# codec: a linear probe is fitted on the clean training split of `blobs`; at each pseudo-rate r the test
# frames get noise of standard deviation `sd0 · 2^(−r/half)`, and the same probe is evaluated on them. The
# MSE of each point is measured on the noisy frames; the Gaussian R(D) curve is the real `gaussian_rd_bound` of the
# test frames; the layer sweep is the same noise law at `layer_bpf` pseudo-rates per layer count. `lam` holds
# the noise standard deviation (standing for λ). Two optional extras that the schema (version 1) does not
# require are filled in, so that the figures that need them can be shown:
#
# - `per_class[c]["mean_true_label_prob"]` in every metrics block: the mean probability given to class c over
#   the test utterances whose true class is c (proposed for `eib.evaluate.evaluate_predictions`);
# - `per_utterance = {"id": [...], "achieved_bpf": [...]}` in every rate point: each utterance's achieved rate
#   (here the pseudo-rate with a few per cent of jitter), the input of the rate-control figure.

# %%
#| export
def _per_class_true_prob(metrics: dict, y_true, proba, classes) -> dict:
    "Add `per_class[c]['mean_true_label_prob']` (mean P(c) over utterances of true class c; None without support)."
    y, P = np.asarray([str(v) for v in y_true]), np.asarray(proba, np.float64)
    for i, c in enumerate(classes):
        sel = y == c
        metrics["per_class"][c]["mean_true_label_prob"] = float(P[sel, i].mean()) if sel.any() else None
    return metrics

def demo_results(dataset: str = "SYNTH-DEMO", rates=(10, 20, 50, 100, 200), layer_bpf: float | None = 30.0,
                 layers=(1, 2, 3), rd_bound: bool = True, sd0: float = 48.0, half: float = 25.0, dim: int = 16,
                 classes=("neutral", "happy", "sad", "angry"), n_per_class=(6, 4, 3, 3), sep: float = 0.8,
                 n_boot: int = 200, seed: int = 0) -> dict:
    """A valid results object for DEMONSTRATION: synthetic blobs degraded by noise at pseudo-rates (not a codec,
    not a result). `layer_bpf=None` leaves out the layer sweep, `rd_bound=False` the Gaussian R(D) curve."""
    d = blobs(n_speakers=8, n_per_class=n_per_class, classes=classes, dim=dim, sep=sep, seed=seed)
    tr, te = d[d.speaker < "s05"], d[d.speaker >= "s05"]
    probe = fit_probe(list(tr.frames), tr.label, groups=tr.speaker, pooling="mean", Cs=(0.01, 0.1, 1.0), seed=seed)
    cl, clean, y = probe.classes_, list(te.frames), te.label.to_numpy(str)
    ev = lambda P: _per_class_true_prob(evaluate_predictions(y, P, cl, n_boot=n_boot, seed=seed), y, P, cl)
    unq = _per_class_true_prob(unquantised_baseline(probe, clean, y, n_boot=n_boot, seed=seed), y, probe.predict_proba(clean), cl)
    maj = majority_baseline(tr.label, y, cl, n_boot=n_boot, seed=seed)
    freq = np.array([maj["train_freq"][c] for c in cl])
    _per_class_true_prob(maj, y, np.tile(freq, (len(y), 1)), cl)
    rng = np.random.default_rng(seed)

    def degrade(r):
        sd = sd0 * 2.0 ** (-float(r) / half)
        noisy = [f + rng.normal(0, sd, f.shape).astype(np.float32) for f in clean]
        mse = float(np.mean(np.concatenate([(a - b).ravel() ** 2 for a, b in zip(noisy, clean)])))
        return sd, mse, ev(probe.predict_proba(noisy))

    rd = gaussian_rd_bound(clean, np.linspace(0, max(rates), 41)) if rd_bound else []
    cfg = dict(codec_fingerprint=fingerprint(dict(demo="noise", sd0=sd0, half=half)), preset="demo-noise",
               rate_mode="per_utterance", seed=seed, samples_per_emotion=None, counts=dict(train=len(tr), test=len(te)))
    obj = new_results(dataset, "synthetic blobs", "linear_probe", "synthetic", cl, cfg, dict(unquantised=unq, majority=maj),
                      rd, command="eib.figures.demo_results()", timing={})
    obj["notes"] = ("DEMONSTRATION on synthetic blobs: Gaussian noise stands for the codec and the rates are "
                    "pseudo-rates, not coded bits. Not a result.")
    for r in rates:
        sd, mse, m = degrade(r)
        ach = float(r) * (1 + rng.normal(0, 0.03, len(clean)))
        obj["rate_points"].append(dict(target_bpf=float(r), capped=False, achieved_bpf_mean=float(ach.mean()),
                                       achieved_bpf_std=float(ach.std()), achieved_bpf_min=float(ach.min()),
                                       achieved_bpf_max=float(ach.max()), lam=sd, mse=mse, metrics=m,
                                       per_utterance=dict(id=list(te.id), achieved_bpf=ach.tolist())))
    if layer_bpf is not None:
        for L in layers:
            sd, mse, m = degrade(L * layer_bpf)
            obj["layer_sweep"].append(dict(layers=int(L), achieved_bpf_mean=float(L * layer_bpf), mse=mse, metrics=m))
    return validate_results(obj)


# %%
demo = demo_results()
test_eq(len(demo["rate_points"]), 5); test_eq(len(demo["layer_sweep"]), 3); assert len(demo["rd_bound"]) > 0, demo["rd_bound"]
_f1 = [p["metrics"]["f1_weighted"] for p in demo["rate_points"]]
assert _f1[-1] > _f1[0], _f1                                          # less noise (a higher pseudo-rate), more emotion
_m = demo["rate_points"][0]["metrics"]
for c in demo["classes"]:                                             # the per-class true-label probability is a probability
    assert 0 <= _m["per_class"][c]["mean_true_label_prob"] <= 1, (c, _m["per_class"][c]["mean_true_label_prob"])
test_close(sum(_m["per_class"][c]["mean_true_label_prob"] * _m["per_class"][c]["support"] for c in demo["classes"]) / _m["n"],
           _m["mean_true_label_prob"], eps=1e-9)                      # support-weighted, it is the overall mean
test_eq(demo_results(layer_bpf=None, rd_bound=False, rates=(10, 100))["layer_sweep"], [])

# %% [markdown]
# ## From results files to tables
#
# The figures draw from four tidy tables, which are also handy on their own: one row per rate point
# (`rate_table`), per layer-sweep point (`layer_table`), per baseline (`baseline_table`), and per rate point and
# class (`class_table`). Each row
# names its dataset by the results' `dataset` (with encoder and classifier added when two results objects
# share a dataset name).

# %%
#| export
SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "f1_weighted", "f1_macro", "mean_max_prob", "mean_true_label_prob")
METRIC_TITLES = dict(accuracy="Accuracy", balanced_accuracy="Balanced accuracy (UA)", f1_weighted="Weighted F1",
                     f1_macro="Macro F1", mean_max_prob="Confidence = probability of the predicted class",
                     mean_true_label_prob="Probability given to the true class", recall="Recall", precision="Precision",
                     f1="F1")
BASELINES = {"unquantised": "unquantised features", "majority": "majority class"}
DECODED = "ECVQ (decoded features)"

def _one(r, i: int) -> dict:
    if isinstance(r, (str, Path)): return load_results(r)
    if not isinstance(r, dict): raise EibError(f"results[{i}] is a {type(r).__name__}: pass results dicts or paths to results files")
    try: return validate_results(r)
    except EibError as e: raise EibError(f"results[{i}] ({r.get('dataset', '?')}): {e}") from None

def named_results(results) -> list[tuple[str, dict]]:
    "`[(label, results)]` for one results object, a path, or a list of them; labels are unique."
    rs = [results] if isinstance(results, (dict, str, Path)) else list(results)
    if not rs: raise EibError("no results given: pass at least one results object (see figure_index())")
    if all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], dict) for x in rs): return rs  # already named
    rs = [_one(r, i) for i, r in enumerate(rs)]
    names = [r["dataset"] for r in rs]
    long = [f"{n} ({r['encoder']}, {r['classifier']})" for n, r in zip(names, rs)]
    labels = [n if names.count(n) == 1 else l if long.count(l) == 1 else f"{n} #{i}" for i, (n, l) in enumerate(zip(names, long))]
    return list(zip(labels, rs))

def _metric_row(m: dict) -> dict:
    row = {k: m[k] for k in SUMMARY_METRICS}
    for k in CI_METRICS: row[f"{k}_lo"], row[f"{k}_hi"] = m["ci"][k]
    return row

def rate_table(results) -> pd.DataFrame:
    "One row per rate point: dataset, target and achieved BPF, capped, MSE, summary metrics and their intervals."
    rows = [dict(dataset=lab, target_bpf=p["target_bpf"], bpf=p["achieved_bpf_mean"], bpf_std=p["achieved_bpf_std"],
                 bpf_min=p["achieved_bpf_min"], bpf_max=p["achieved_bpf_max"], capped=p["capped"], mse=p["mse"],
                 **_metric_row(p["metrics"]))
            for lab, r in named_results(results) for p in r["rate_points"]]
    cols = ["dataset", "target_bpf", "bpf", "bpf_std", "bpf_min", "bpf_max", "capped", "mse", *_metric_row(_EMPTY_METRICS)]
    return pd.DataFrame(rows, columns=cols)

def layer_table(results) -> pd.DataFrame:
    """One row per point of the layer sweep (plain RVQ with 1..M layers per group, entropy-coded): dataset, layers,
    achieved BPF, MSE, summary metrics and their intervals; no rows for results without a layer sweep."""
    rows = [dict(dataset=lab, layers=p["layers"], bpf=p["achieved_bpf_mean"], mse=p["mse"], **_metric_row(p["metrics"]))
            for lab, r in named_results(results) for p in r["layer_sweep"]]
    return pd.DataFrame(rows, columns=["dataset", "layers", "bpf", "mse", *_metric_row(_EMPTY_METRICS)])

def baseline_table(results) -> pd.DataFrame:
    "One row per dataset and baseline (`unquantised features`, `majority class`) with the summary metrics."
    rows = [dict(dataset=lab, curve=BASELINES[k], **_metric_row(r["baselines"][k]))
            for lab, r in named_results(results) for k in BASELINES]
    return pd.DataFrame(rows)

def class_table(results, source: str = "rate_points") -> pd.DataFrame:
    """One row per point and class of `source` (`rate_points`, `layer_sweep` or `baselines`): precision, recall,
    f1, support and `mean_true_label_prob` (NaN where the results file lacks it)."""
    if source not in ("rate_points", "layer_sweep", "baselines"):
        raise EibError(f"unknown source {source!r}; known: rate_points, layer_sweep, baselines")
    rows = []
    for lab, r in named_results(results):
        pts = ([(BASELINES[k], None, r["baselines"][k]) for k in BASELINES] if source == "baselines" else
               [(p.get("target_bpf", p.get("layers")), p["achieved_bpf_mean"], p["metrics"]) for p in r[source]])
        for key, bpf, m in pts:
            for c in r["classes"]:
                pc = m["per_class"][c]
                rows.append(dict(dataset=lab, point=key, bpf=bpf, emotion=c,
                                 **{k: (np.nan if pc.get(k) is None else pc[k]) for k in ("precision", "recall", "f1")},
                                 support=pc["support"], mean_true_label_prob=(np.nan if pc.get("mean_true_label_prob") is None
                                                                              else pc["mean_true_label_prob"])))
    return pd.DataFrame(rows, columns=["dataset", "point", "bpf", "emotion", "precision", "recall", "f1", "support",
                                       "mean_true_label_prob"])

_EMPTY_METRICS = dict(**{k: 0.0 for k in SUMMARY_METRICS}, ci={k: [0.0, 0.0] for k in CI_METRICS})

# %%
_t = rate_table(demo)
test_eq(len(_t), 5); test_eq(list(_t.target_bpf), [10.0, 20.0, 50.0, 100.0, 200.0])
assert (_t.f1_weighted_lo <= _t.f1_weighted).all() and (_t.f1_weighted <= _t.f1_weighted_hi).all(), _t[["f1_weighted_lo", "f1_weighted", "f1_weighted_hi"]]
demo_b = demo_results("SYNTH-B", seed=1, layer_bpf=None, rd_bound=False)
test_eq(named_results([demo, demo_b])[1][0], "SYNTH-B")
test_eq([l for l, _ in named_results([demo, demo])], ["SYNTH-DEMO #0", "SYNTH-DEMO #1"])  # same name twice: still unique
test_eq(set(baseline_table([demo, demo_b]).curve), {"unquantised features", "majority class"})
test_eq(len(class_table(demo)), 5 * 4); test_eq(len(class_table(demo, "baselines")), 2 * 4)
_lt = layer_table([demo, demo_b])                                        # demo_b has no layer sweep: no rows
test_eq((_lt.dataset.unique().tolist(), _lt.layers.tolist()), (["SYNTH-DEMO"], [1, 2, 3]))
test_eq(_lt.f1_weighted.tolist(), [p["metrics"]["f1_weighted"] for p in demo["layer_sweep"]])
test_eq(_lt.bpf.tolist(), [30.0, 60.0, 90.0]); test_eq(layer_table(demo_b).shape, (0, _lt.shape[1]))
test_eq(rate_table(new_results(**{k: demo[k] for k in ("dataset", "encoder", "classifier", "label_protocol", "classes",
                                                        "config", "baselines", "rd_bound", "command")})).shape[0], 0)
test_fail(lambda: named_results([]), contains="no results given")
test_fail(lambda: named_results([demo, {"dataset": "X"}]), contains="results[1] (X)")
test_fail(lambda: named_results([42]), contains="results[0] is a int")

# %% [markdown]
# ## Figure 1: weighted F1 against the achieved rate
#
# A line per dataset through its rate points, at the *achieved* (not the target) rate, with the bootstrap 95%
# band; the unquantised-feature baseline (the ceiling) and the majority-class baseline (the floor) are drawn
# as horizontal rules in the dataset's colour, told apart by their dash (legend "curve"). Where a results file
# holds a layer sweep (plain residual VQ with 1..M layers per group, entropy-coded: the baseline curve), its
# weighted F1 is drawn on the same rate axis as a dashed line with square points, so the two codes can be read
# against each other at equal rates (`layer_sweep=False` leaves it out).

# %%
#| export
LAYER_SWEEP = "layer sweep (plain RVQ)"
_BPF_TITLE = "achieved rate (bits per frame; × 50 = bits/s)"
CURVE_DASHES = {DECODED: [1, 0], LAYER_SWEEP: [4, 2], BASELINES["unquantised"]: [12, 4], BASELINES["majority"]: [2, 3]}

def _dash(curves) -> alt.StrokeDash:
    "The `curve` dash encoding for the curves present (`CURVE_DASHES`): the legend lists only those."
    return alt.StrokeDash("curve:N", title="curve", scale=alt.Scale(domain=list(curves), range=[CURVE_DASHES[c] for c in curves]),
                          legend=_legend(symbolType="stroke", symbolStrokeWidth=2, symbolSize=400, symbolStrokeColor="grey"))

def _x(log_x: bool = False, field: str = "bpf", width: float = 400):
    return alt.X(f"{field}:Q", title=_BPF_TITLE, scale=alt.Scale(type="log", nice=False) if log_x else alt.Scale(zero=True),
                 axis=_rate_axis(width))

def _color(labels):
    return alt.Color("dataset:N", title="dataset", scale=alt.Scale(domain=list(labels)), legend=_legend(symbolOpacity=1))

def _need_points(t: pd.DataFrame, what: str):
    if t.empty: raise EibError(f"no rate points in the results given: {what} needs a finished rate sweep "
                               "(see eib.records.upsert_rate_point)")

_Y_AXIS_PX = 60  # px: a [0, 1] y axis with its title, and the figure's padding

def _panel_width(panels: int, gap: int = 20) -> int:
    "Plot width of each of `panels` side-by-side panels that, with their y axes and gaps, fill `PAGE_WIDTH`."
    return int((PAGE_WIDTH - 40 - panels * _Y_AXIS_PX - (panels - 1) * gap) // panels)

def _metric_panel(rs, metric: str, title: str, band: bool, log_x: bool, width: int, height: int, layers: bool = False):
    t, b = rate_table(rs).assign(curve=DECODED), baseline_table(rs)
    lt = layer_table(rs).assign(curve=LAYER_SWEEP) if layers else pd.DataFrame()
    yt = METRIC_TITLES.get(metric, metric)
    x, color, y = _x(log_x, width=width), _color([l for l, _ in rs]), alt.Y(f"{metric}:Q", title=yt, scale=alt.Scale(domain=[0, 1]))
    dash = _dash([DECODED, *([LAYER_SWEEP] if len(lt) else []), *BASELINES.values()])
    tip = ["dataset:N", alt.Tooltip("target_bpf:Q", title="target BPF"), alt.Tooltip("bpf:Q", title="achieved BPF", format=".2f"),
           "capped:N", alt.Tooltip(f"{metric}:Q", format=".3f")]
    line = alt.Chart(t).mark_line().encode(x, y, color, dash)
    pts = alt.Chart(t).mark_point(filled=True, size=25).encode(x, y, color, tooltip=tip)
    rules = alt.Chart(b).mark_rule(strokeWidth=1.5).encode(alt.Y(f"{metric}:Q", title=yt), color, dash,
                                                         tooltip=["dataset:N", "curve:N", alt.Tooltip(f"{metric}:Q", format=".3f")])
    out = [line, pts, rules]
    if band and metric in CI_METRICS:
        out.insert(0, alt.Chart(t).mark_area(opacity=0.18).encode(x, alt.Y(f"{metric}_lo:Q", title=yt), alt.Y2(f"{metric}_hi:Q"), color))
    if len(lt):
        out += [alt.Chart(lt).mark_line().encode(x, y, color, dash),
                alt.Chart(lt).mark_point(shape="square", filled=True, size=25).encode(
                    x, y, color, tooltip=["dataset:N", "curve:N", "layers:Q", alt.Tooltip("bpf:Q", title="achieved BPF", format=".2f"),
                                          alt.Tooltip(f"{metric}:Q", format=".3f")])]
    return alt.layer(*out).properties(title=title, width=width, height=height)

def fig_f1(results, metric: str = "f1_weighted", log_x: bool = False, layer_sweep: bool = True, width: int = _panel_width(1),
           height: int = 300):
    """Figure 1: `metric` (weighted F1) against achieved BPF, a line per dataset with its 95% band; both baselines as
    rules; with `layer_sweep`, the layer sweep's points (where the results hold them) as a dashed line with squares."""
    if metric not in CI_METRICS[:4]: raise EibError(f"unknown metric {metric!r}; known: {', '.join(CI_METRICS[:4])}")
    rs = named_results(results)
    _need_points(rate_table(rs), "fig_f1")
    lvl = rs[0][1]["rate_points"][0]["metrics"]["ci"]["level"] if rs[0][1]["rate_points"] else 0.95
    sub = [f"bands: bootstrap {lvl:.0%} intervals; rules: unquantised-feature and majority-class baselines"]
    if layer_sweep and len(layer_table(rs)):
        sub.append("dashed, squares: the layer sweep (plain residual VQ, 1..M layers per group, entropy-coded)")
    title = alt.TitleParams(f"{METRIC_TITLES[metric]} of emotion recognition on decoded features", subtitle=sub)
    return _metric_panel(rs, metric, title, True, log_x, width, height, layers=layer_sweep)


# %%
use_offline_renderer()
fig1 = fig_f1([demo, demo_b])
_s = fig1.to_dict()
test_eq([l["mark"]["type"] for l in _s["layer"]], ["area", "line", "point", "rule", "line", "point"])
test_eq(_s["layer"][0]["encoding"]["y2"]["field"], "f1_weighted_hi")
_data = _s["datasets"]; _rules = next(v for v in _data.values() if len(v) == 4 and "curve" in v[0])
test_eq(sorted({(r["dataset"], r["curve"]) for r in _rules}),
        sorted((d, c) for d in ("SYNTH-DEMO", "SYNTH-B") for c in ("majority class", "unquantised features")))
_lay = _data[_s["layer"][-1]["data"]["name"]]                          # the layer sweep: demo's 3 points, demo_b has none
test_eq([(r["dataset"], r["layers"], r["bpf"], r["f1_weighted"]) for r in _lay],
        [("SYNTH-DEMO", p["layers"], p["achieved_bpf_mean"], p["metrics"]["f1_weighted"]) for p in demo["layer_sweep"]])
test_eq(_s["layer"][-1]["mark"]["shape"], "square")
test_eq(_s["layer"][1]["encoding"]["strokeDash"]["scale"]["domain"], [DECODED, LAYER_SWEEP, *BASELINES.values()])
_s0 = fig_f1([demo_b]).to_dict()                                       # no layer sweep in the file: no curve, no legend entry
test_eq(([l["mark"]["type"] for l in _s0["layer"]], _s0["layer"][1]["encoding"]["strokeDash"]["scale"]["domain"]),
        (["area", "line", "point", "rule"], [DECODED, *BASELINES.values()]))
test_eq(len(fig_f1(demo, layer_sweep=False).to_dict()["layer"]), 4)
test(svg_size(fig1)[0], PAGE_WIDTH, operator.le, "<=")
test_fail(lambda: fig_f1(demo, metric="mse"), contains="known: accuracy")
fig1


# %% [markdown]
# ## Figure 2: the two probabilities
#
# Two panels that the thesis figures mixed up: the **confidence** (the mean probability of the class the
# probe predicts) and the **probability given to the true class**. A probe can stay confident while being
# wrong; only the second panel measures what is left of the emotion. The true-class panel has its bootstrap
# band; in both, the rules are the baselines (for the majority class, its probabilities are the training class
# frequencies, so its true-class probability is what knowing only the class priors gives).

# %%
#| export
def fig_confidence(results, log_x: bool = False, width: int = _panel_width(2), height: int = 280):
    "Figure 2: mean max-probability (confidence) and mean true-label probability against BPF, side by side."
    rs = named_results(results)
    _need_points(rate_table(rs), "fig_confidence")
    a = _metric_panel(rs, "mean_max_prob", "Confidence = probability of the predicted class", False, log_x, width, height)
    b = _metric_panel(rs, "mean_true_label_prob", "Probability given to the true class", True, log_x, width, height)
    return alt.hconcat(a, b).resolve_scale(color="shared", strokeDash="shared").properties(
        title=alt.TitleParams("Mean class probabilities of the probe on decoded features",
                              subtitle=["left: its confidence in its own answer; right: what it gives the correct answer"]))


# %%
fig2 = fig_confidence([demo, demo_b])
_s = fig2.to_dict()
test_eq([p["title"] for p in _s["hconcat"]], ["Confidence = probability of the predicted class", "Probability given to the true class"])
test_eq([p["layer"][-2]["encoding"]["y"]["field"] for p in _s["hconcat"]], ["mean_max_prob", "mean_true_label_prob"])
test_eq([len(p["layer"]) for p in _s["hconcat"]], [3, 4])             # only the true-class panel has a band
test(svg_size(fig2)[0], PAGE_WIDTH, operator.le, "<=")
fig2

# %% [markdown]
# ## Figures 3 and 4: per emotion
#
# Per-class recall (or precision, or F1) against BPF, a panel per dataset. Recall alone flatters a class the
# probe falls back on at low rates: it reaches 1 while its precision sinks to the class frequency, so read the
# two together (`metric="precision"`). Figure 4 draws the mean probability given to the true class, per class.
# Schema version 1 does not require it; it is read from `per_class[c]["mean_true_label_prob"]` where a results
# file has it (the demonstration does), and a dataset whose file lacks it is left out, with a note.
#
# Panels are `columns` (2) to a row, each as wide as the page allows for that many (`width=None`; one dataset gets
# the whole width); the emotions' legend sits below the panels, its names in full, side by side.

# %%
#| export
CLASS_METRICS = ("recall", "precision", "f1", "mean_true_label_prob")

def _facet_width(columns: int, gap: int = 20) -> int:
    "Plot width of each panel of a facet `columns` wide (one y axis per row, `gap` between panels) that fills `PAGE_WIDTH`."
    return int((PAGE_WIDTH - 40 - _Y_AXIS_PX - (columns - 1) * gap) // columns)

def _class_fig(results, metric: str, title: str, subtitle: list, log_x: bool, columns: int, width: int | None, height: int):
    rs = named_results(results)
    ct = class_table(rs)
    _need_points(ct, title)
    missing = [l for l in dict.fromkeys(ct.dataset) if ct.loc[ct.dataset == l, metric].isna().all()]
    if metric == "mean_true_label_prob":
        if len(missing) == len(rs):
            raise EibError("no results file holds per-class true-label probabilities (per_class[c]['mean_true_label_prob'] "
                           "in each metrics block); the sweep must add them to draw this figure")
        if missing: subtitle = [*subtitle, f"not in the results file of: {', '.join(missing)}"]
        ct = ct[~ct.dataset.isin(missing)]
    labs, emotions = list(dict.fromkeys(ct.dataset)), list(dict.fromkeys(ct.emotion))
    columns = max(1, min(int(columns), len(labs)))
    width = _facet_width(columns) if width is None else width
    enc = [_x(log_x, width=width), alt.Y(f"{metric}:Q", title=METRIC_TITLES[metric], scale=alt.Scale(domain=[0, 1])),
           alt.Color("emotion:N", title="emotion", scale=alt.Scale(domain=emotions), legend=_legend(emotions, wrap=True))]
    tip = ["dataset:N", "emotion:N", "point:Q", alt.Tooltip("bpf:Q", format=".2f"), alt.Tooltip(f"{metric}:Q", format=".3f"), "support:Q"]
    ch = alt.Chart(ct).mark_line(point=True).encode(*enc, tooltip=tip).properties(width=width, height=height)
    return ch.facet(facet=alt.Facet("dataset:N", title=None, sort=labs, header=alt.Header(labelLimit=LABEL_LIMIT)),
                    columns=columns).properties(title=alt.TitleParams(title, subtitle=subtitle))

def fig_recall(results, metric: str = "recall", log_x: bool = False, columns: int = 2, width: int | None = None, height: int = 240):
    "Figure 3: per-emotion `metric` (recall, precision or f1) against achieved BPF, a panel per dataset."
    if metric not in CLASS_METRICS[:3]: raise EibError(f"unknown metric {metric!r}; known: {', '.join(CLASS_METRICS[:3])}")
    sub = ["gaps: precision is undefined where a class is never predicted"] if metric == "precision" else \
          ["read with precision: a class the probe falls back on keeps its recall"]
    return _class_fig(results, metric, f"Per-emotion {metric} on decoded features", sub, log_x, columns, width, height)

def fig_true_prob(results, log_x: bool = False, columns: int = 2, width: int | None = None, height: int = 240):
    "Figure 4: per-emotion mean probability given to the true class against achieved BPF, a panel per dataset."
    return _class_fig(results, "mean_true_label_prob", "Per-emotion probability given to the true class",
                      ["mean over the test utterances of each emotion of the probability the probe gives it"],
                      log_x, columns, width, height)


# %%
fig3 = fig_recall([demo, demo_b])
_s = fig3.to_dict()
test_eq(_s["facet"]["field"], "dataset"); test_eq(_s["spec"]["encoding"]["y"]["field"], "recall")
test_eq(len(next(iter(_s["datasets"].values()))), 2 * 5 * 4)                 # 2 datasets x 5 points x 4 emotions
test_eq(fig_recall(demo, metric="precision").to_dict()["spec"]["encoding"]["y"]["title"], "Precision")
test_fail(lambda: fig_recall(demo, metric="accuracy"), contains="known: recall, precision, f1")
test_eq((_s["columns"], _s["spec"]["width"]), (2, _facet_width(2)))          # two datasets: two panels that share the page
test_eq(fig_recall(demo).to_dict()["spec"]["width"], _facet_width(1))      # one: the whole width
_leg = _s["spec"]["encoding"]["color"]["legend"]
test_eq((_leg["orient"], _leg["columns"], _leg["labelLimit"]), ("bottom", 4, LABEL_LIMIT))  # below, names in full
test(svg_size(fig3)[0], PAGE_WIDTH, operator.le, "<=")
fig3

# %%
import copy
_bare = copy.deepcopy(demo_b)                                  # a results file without the optional per-class field
for _p in _bare["rate_points"]:
    for _c in _p["metrics"]["per_class"].values(): _c.pop("mean_true_label_prob")
fig4 = fig_true_prob([demo, _bare])
test_eq(fig4.to_dict()["title"]["subtitle"][-1], "not in the results file of: SYNTH-B")
test_fail(lambda: fig_true_prob(_bare), contains="per_class[c]['mean_true_label_prob']")
fig4


# %% [markdown]
# ## Figure 5: confusion matrices
#
# A block per dataset, titled with its name, of row-normalised matrices (each row: where the utterances of one
# true emotion went). For each asked rate the rate point whose *achieved* rate is nearest is drawn, titled with
# its achieved BPF (and, on a second line, the asked rate when they differ by more than 10%, and whether the
# controller was capped), so a sweep that lacks a rate says so. The first matrix is the unquantised baseline
# unless `unquantised=False`. The matrices are wrapped into rows of as many as fit the page (`per_row=None`:
# three for 7 classes at the default 24 px cells, with the class names in full on both axes).

# %%
#| export
def nearest_point(results: dict, bpf: float) -> dict | None:
    "The rate point of `results` whose achieved mean BPF is nearest to `bpf` (ties: the lower), or None."
    pts = results["rate_points"]
    return min(pts, key=lambda p: (abs(p["achieved_bpf_mean"] - bpf), p["achieved_bpf_mean"])) if pts else None

_AXIS_TITLE_PX = 16  # px: a y-axis title written sideways, with its padding

def _confusion_px(classes, cell: int) -> float:
    "Drawn width of one matrix: its cells and its y-axis labels (the class names, in full)."
    return cell * len(classes) + max(_text_px(c) for c in classes) + 12

def _confusion_chart(m: dict, title, cell: int, y_title: bool = True):
    cl, cm = m["confusion"]["classes"], np.asarray(m["confusion"]["matrix"], dtype=float)
    rs = cm.sum(1, keepdims=True)
    frac = np.divide(cm, rs, out=np.full_like(cm, np.nan), where=rs > 0)
    df = pd.DataFrame([dict(true=cl[i], predicted=cl[j], count=int(cm[i, j]), share=None if np.isnan(frac[i, j]) else float(frac[i, j]))
                       for i in range(len(cl)) for j in range(len(cl))])
    base = alt.Chart(df).transform_filter("isValid(datum.share)").encode(
        alt.X("predicted:N", sort=cl, title="predicted", axis=alt.Axis(labelAngle=-60, labelLimit=LABEL_LIMIT)),
        alt.Y("true:N", sort=cl, title="true" if y_title else None, axis=alt.Axis(labelLimit=LABEL_LIMIT)))
    rect = base.mark_rect().encode(alt.Color("share:Q", title="share of the true class", scale=alt.Scale(domain=[0, 1], scheme="blues"),
                                             legend=_legend(direction="horizontal", gradientLength=200)),
                                   tooltip=["true:N", "predicted:N", "count:Q", alt.Tooltip("share:Q", format=".2f")])
    text = base.mark_text(fontSize=9).encode(alt.Text("share:Q", format=".0%"),
                                            color=alt.condition("datum.share > 0.5", alt.value("white"), alt.value("black")))
    return alt.layer(rect, text).properties(
        title=alt.TitleParams(title, fontSize=12), width=cell * len(cl), height=cell * len(cl))

def fig_confusion(results, rates=(10, 20, 100, 200), unquantised: bool = True, cell: int = 24, per_row: int | None = None,
                  gap: int = 16):
    """Figure 5: row-normalised confusion matrices, a block per dataset (titled with it), a matrix per asked rate (the
    nearest achieved rate point to each), `per_row` to a row (None: as many as fit `PAGE_WIDTH`)."""
    rs = named_results(results)
    if not rates and not unquantised: raise EibError("nothing to draw: give rates, or unquantised=True")
    blocks = []
    for lab, r in rs:
        panels = [(r["baselines"]["unquantised"], ["unquantised features"])] if unquantised else []
        for bpf in rates:
            p = nearest_point(r, float(bpf))
            if p is None: continue
            a = p["achieved_bpf_mean"]
            note = ", ".join(([f"nearest to {bpf:g}"] if abs(a - bpf) > 0.1 * bpf else []) + (["capped"] if p["capped"] else []))
            panels.append((p["metrics"], [f"{a:.1f} BPF", *([f"({note})"] if note else [])]))
        if not panels: continue
        n = per_row or max(1, int((PAGE_WIDTH - 20 - _AXIS_TITLE_PX + gap) //
                                  (_confusion_px(r["classes"], cell) + gap)))
        charts = [_confusion_chart(m, t, cell, y_title=i % n == 0) for i, (m, t) in enumerate(panels)]
        rows = [alt.hconcat(*charts[i:i + n], spacing=gap) for i in range(0, len(charts), n)]
        blocks.append(alt.vconcat(*rows, spacing=gap, title=alt.TitleParams(lab, anchor="start", fontSize=13)))
    if not blocks: raise EibError("no rate points in the results given: fig_confusion needs a finished rate sweep (or unquantised=True)")
    return alt.vconcat(*blocks, spacing=2 * gap).resolve_scale(color="shared").properties(
        title=alt.TitleParams("Confusion matrices on decoded features (rows: true emotion, normalised)",
                              subtitle=["titles: the achieved rate of the rate point nearest to each asked rate"]))

def confusion_layout(chart) -> list[list[list]]:
    "The titles of a `fig_confusion` chart's matrices, as laid out: `[dataset][row][matrix]`, each title a list of lines."
    s = chart.to_dict() if isinstance(chart, alt.TopLevelMixin) else chart
    return [[[p["title"]["text"] for p in row["hconcat"]] for row in block["vconcat"]] for block in s["vconcat"]]


# %%
test_eq(nearest_point(demo, 22)["target_bpf"], 20.0); test_eq(nearest_point(_bare | dict(rate_points=[]), 5), None)
fig5 = fig_confusion([demo, demo_b], rates=(10, 20, 100, 200))
_s = fig5.to_dict()
test_eq([b["title"]["text"] for b in _s["vconcat"]], ["SYNTH-DEMO", "SYNTH-B"])  # a block per dataset, titled with it
_lay = confusion_layout(fig5)
test_eq([[len(r) for r in b] for b in _lay], [[3, 2], [3, 2]])              # 4 classes: 3 matrices to a row, then 2
_titles = [t for r in _lay[0] for t in r]
test_eq(_titles[0], ["unquantised features"]); assert all(t[0].endswith(" BPF") for t in _titles[1:]), _titles
test_eq([p["layer"][0]["encoding"]["y"]["title"] for r in _s["vconcat"][0]["vconcat"] for p in r["hconcat"]],
        ["true", None, None, "true", None])                                 # the axis title once per row
_ttl = confusion_layout(fig_confusion(demo, rates=(150,)))[0][0][1]; test_eq(_ttl[1], "(nearest to 150)")
_d7 = demo_results("SEVEN", rates=(10, 20, 100, 200), classes=("angry", "boredom", "disgust", "fear", "happy", "neutral", "surprise"),
                   n_per_class=(2,) * 7, n_boot=20)
_f7 = fig_confusion(_d7)
test_eq([len(r) for r in confusion_layout(_f7)[0]], [2, 2, 1])             # 7 classes at 24 px: 2 to a row
test(svg_size(_f7)[0], PAGE_WIDTH, operator.le, "<="); test(svg_size(fig5)[0], PAGE_WIDTH, operator.le, "<=")
test_eq([len(r) for r in confusion_layout(fig_confusion(_d7, per_row=3))[0]], [3, 2])
_rows = [v for v in _s["datasets"].values() if "share" in v[0]][0]          # each true class's shares sum to 1
test_close(pd.DataFrame(_rows).dropna(subset=["share"]).groupby("true").share.sum().to_numpy(), 1, eps=1e-9)
fig5

# %% [markdown]
# ## Figure 6: rate and distortion
#
# MSE against achieved BPF for ECVQ (the rate points), the layer sweep (plain residual VQ with more and more
# layers) and the Gaussian rate–distortion curve of the test features. That curve is drawn up to the highest
# measured rate (`bound_max_bpf`), on a log MSE axis by default; a results file without a layer sweep or a
# Gaussian curve simply has fewer curves.
#
# **How to read the Gaussian curve.** It is R(D) of a *Gaussian* source with the test features' covariance, coded
# frame by frame (reverse water-filling, `eib.evaluate.gaussian_rd_bound`). Among all sources with that covariance
# the Gaussian is the hardest to code, so the curve is an **upper** bound on what an ideal frame-by-frame code of
# the real features needs: it is not a floor. A codec may well fall *below* it by exploiting the features'
# non-Gaussian structure (the book's ECVQ does, at middle rates, in the measured sweeps of the Results chapter); a
# codec above it leaves room.
# Hence its name in the legend: "Gaussian R(D) (upper bound for this covariance)".

# %%
#| export
GAUSSIAN_RD = "Gaussian R(D) (upper bound for this covariance)"
RD_CURVES = ("ECVQ", LAYER_SWEEP, GAUSSIAN_RD)
RD_DASHES = {"ECVQ": [1, 0], LAYER_SWEEP: CURVE_DASHES[LAYER_SWEEP], GAUSSIAN_RD: [2, 2]}

def rd_table(results, bound_max_bpf: float | None = None) -> pd.DataFrame:
    "One row per point of every RD curve: dataset, curve (`RD_CURVES`), bpf, mse, label (target rate or layers)."
    rows = []
    for lab, r in named_results(results):
        rows += [dict(dataset=lab, curve=RD_CURVES[0], bpf=p["achieved_bpf_mean"], mse=p["mse"], label=f"target {p['target_bpf']:g}")
                 for p in r["rate_points"]]
        rows += [dict(dataset=lab, curve=RD_CURVES[1], bpf=p["achieved_bpf_mean"], mse=p["mse"], label=f"{p['layers']} layers")
                 for p in r["layer_sweep"]]
        top = bound_max_bpf if bound_max_bpf is not None else max([q["bpf"] for q in rows if q["dataset"] == lab], default=np.inf)
        rows += [dict(dataset=lab, curve=RD_CURVES[2], bpf=q["bpf"], mse=q["mse"], label="Gaussian R(D)")
                 for q in r["rd_bound"] if q["bpf"] <= top * 1.05]
    return pd.DataFrame(rows, columns=["dataset", "curve", "bpf", "mse", "label"])

def fig_rd(results, log_y: bool = True, bound_max_bpf: float | None = None, width: int = _panel_width(1), height: int = 300):
    "Figure 6: MSE against achieved BPF: ECVQ, the layer sweep and the Gaussian R(D) upper bound (those present), a colour per dataset."
    rs = named_results(results)
    t = rd_table(rs, bound_max_bpf)
    if log_y: t = t[t.mse > 0]
    if t.empty: raise EibError("nothing to draw: the results hold no rate points, no layer sweep and no rd_bound")
    curves = [c for c in RD_CURVES if c in set(t.curve)]
    dash = alt.StrokeDash("curve:N", title="curve", scale=alt.Scale(domain=curves, range=[RD_DASHES[c] for c in curves]),
                          legend=_legend(symbolType="stroke", symbolStrokeWidth=2, symbolSize=400, symbolStrokeColor="grey"))
    y = alt.Y("mse:Q", title="MSE per dimension", scale=alt.Scale(type="log") if log_y else alt.Scale())
    enc = [_x(width=width), y, _color([l for l, _ in rs]), dash, alt.Detail("curve:N")]
    line = alt.Chart(t).mark_line().encode(*enc)
    pts = alt.Chart(t[t.curve != RD_CURVES[2]]).mark_point(filled=True, size=30).encode(
        *enc[:3], alt.Shape("curve:N", scale=alt.Scale(domain=list(RD_CURVES[:2]), range=["circle", "square"]), legend=None),
        tooltip=["dataset:N", "curve:N", "label:N", alt.Tooltip("bpf:Q", format=".2f"), alt.Tooltip("mse:Q", format=".4g")])
    return alt.layer(line, pts).properties(width=width, height=height, title=alt.TitleParams(
        "Rate and distortion of the decoded features",
        subtitle=["points: measured (circles: ECVQ rate points, squares: layer sweep)",
                  "Gaussian R(D): reverse water-filling on the test features' covariance, frame by frame; the",
                  "Gaussian is the hardest source of that covariance: an upper bound for it, not a floor"]))


# %%
fig6 = fig_rd([demo, demo_b])
_t = rd_table([demo, demo_b])
test_eq(_t.groupby(["dataset", "curve"]).size().to_dict(),
        {("SYNTH-B", "ECVQ"): 5, ("SYNTH-DEMO", "ECVQ"): 5, ("SYNTH-DEMO", GAUSSIAN_RD): 41, ("SYNTH-DEMO", LAYER_SWEEP): 3})
test(_t[_t.curve == GAUSSIAN_RD].bpf.max(), 200 * 1.05, operator.le, "<=")
test_eq(len(rd_table(demo, bound_max_bpf=50).query("curve == @GAUSSIAN_RD")), 11)   # 0, 5, ..., 50
_s = fig6.to_dict()
test_eq(_s["layer"][0]["encoding"]["y"]["scale"]["type"], "log")
test_eq(_s["layer"][0]["encoding"]["strokeDash"]["scale"]["domain"], list(RD_CURVES))
test_eq(rd_table(demo_b).curve.unique().tolist(), ["ECVQ"])              # no layer sweep, no bound: one curve
test_eq(fig_rd(demo_b).to_dict()["layer"][0]["encoding"]["strokeDash"]["scale"]["domain"], ["ECVQ"])  # and one legend entry
test(svg_size(fig6)[0], PAGE_WIDTH, operator.le, "<=")
fig6

# %% [markdown]
# ## Figure 7: rate control
#
# How precisely the rate controller hits its target. Its input is a table of **per-utterance records**, one row
# per utterance and target, with the columns
#
# | column | required | meaning |
# |---|---|---|
# | `target_bpf` | yes | the rate asked of the controller |
# | `achieved_bpf` | yes | the rate of the utterance's coded bytes (header and coder termination included) |
# | `id` | no | the utterance |
# | `mode` | no | `per_utterance` or `per_set` (one λ for the whole set); colours the figure |
# | `dataset` | no | colours the figure when there is no `mode` |
# | `capped` | no | the target was beyond reach; such targets are left out unless `drop_capped=False` |
#
# (a DataFrame or a list of dicts). `rate_control_records(results)` makes this table from results files whose
# rate points carry the per-utterance rates as `per_utterance = {"id": [...], "achieved_bpf": [...]}` (schema
# version 1 allows extra keys in a rate point; the mode is the results' `config.rate_mode`). The upper panel
# shows achieved against target with the line y = x; the lower one the distribution of the per-utterance
# error (achieved − target, or relative to the target) per target rate. The two are stacked, each as wide as the
# page, so that a sweep's 40-odd targets keep boxes wide enough to read.

# %%
#| export
PER_UTTERANCE_KEY = "per_utterance"

def rate_control_records(results) -> pd.DataFrame:
    "Per-utterance records (dataset, mode, id, target_bpf, achieved_bpf, capped) from the rate points' `per_utterance`."
    rows = []
    for lab, r in named_results(results):
        for p in r["rate_points"]:
            pu = p.get(PER_UTTERANCE_KEY)
            if pu is None: continue
            if not isinstance(pu, dict) or len(pu.get("id", [])) != len(pu.get("achieved_bpf", [None])):
                raise EibError(f"{lab}, target {p['target_bpf']}: {PER_UTTERANCE_KEY} must be "
                               "{'id': [...], 'achieved_bpf': [...]} with lists of the same length")
            rows += [dict(dataset=lab, mode=r["config"]["rate_mode"], id=str(u), target_bpf=p["target_bpf"], achieved_bpf=float(a),
                          capped=p["capped"]) for u, a in zip(pu["id"], pu["achieved_bpf"])]
    if not rows: raise EibError(f"no rate point holds per-utterance rates ('{PER_UTTERANCE_KEY}': "
                                "{'id': [...], 'achieved_bpf': [...]}); the sweep must record them for the rate-control figure")
    return pd.DataFrame(rows)

def _records(records) -> pd.DataFrame:
    df = records.copy() if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    miss = [c for c in ("target_bpf", "achieved_bpf") if c not in df.columns]
    if miss: raise EibError(f"rate-control records lack the columns {miss}; needed: target_bpf, achieved_bpf (optional: id, mode, dataset, capped)")
    if df.empty: raise EibError("no rate-control records given")
    for c in ("target_bpf", "achieved_bpf"):
        v = pd.to_numeric(df[c], errors="coerce")
        if not np.isfinite(v).all() or (v < 0).any(): raise EibError(f"column {c} must hold finite numbers >= 0")
        df[c] = v.astype(float)
    if (df.target_bpf <= 0).any(): raise EibError("target_bpf must be > 0")
    parts = [c for c in ("dataset", "mode") if c in df and df[c].nunique() > 1] or [c for c in ("mode", "dataset") if c in df][:1]
    df["group"] = df[parts].astype(str).agg(" · ".join, axis=1) if parts else "all"
    df.attrs["group_title"] = " · ".join(parts) or "records"
    df["capped"] = df["capped"].eq(True) if "capped" in df else False  # missing: not capped
    return df

def _rates_text(rates, most: int = 8) -> str:
    "Rates as `10, 20, 50`, or, more than `most` of them, as `22 targets from 105 to 300`."
    v = sorted(set(float(r) for r in rates))
    return ", ".join(f"{r:g}" for r in v) if len(v) <= most else f"{len(v)} targets from {v[0]:g} to {v[-1]:g}"

def fig_rate_control(records, error: str = "absolute", drop_capped: bool = True, max_points: int = 2000,
                     width: int = _panel_width(1), height: int = 260):
    """Figure 7: achieved against target BPF per utterance (with y = x) above the per-utterance error per target
    (`error`: `absolute` = achieved − target in BPF, `relative` = that over the target, in %). Above `max_points`
    records the upper panel shows, per target, the median and the central 95% of achieved rates instead of every one."""
    if error not in ("absolute", "relative"): raise EibError(f"unknown error {error!r}; known: absolute, relative")
    df = _records(records)
    sub = []
    if drop_capped and df.capped.any():
        sub.append(f"targets beyond reach left out: {_rates_text(df.target_bpf[df.capped])}")
        df = df[~df.capped]
    if df.empty: raise EibError("every record is capped: nothing left to draw (drop_capped=False to draw them)")
    d = df.achieved_bpf - df.target_bpf
    df["error"] = d if error == "absolute" else 100 * d / df.target_bpf
    unit = "BPF" if error == "absolute" else "%"
    med, p95 = float(np.median(np.abs(df.error))), float(np.percentile(np.abs(df.error), 95))
    sub.append(f"|error| over {len(df)} utterance codings: median {med:.3g} {unit}, 95th percentile {p95:.3g} {unit}")
    lo, hi = float(min(df.target_bpf.min(), df.achieved_bpf.min())), float(max(df.target_bpf.max(), df.achieved_bpf.max()))
    groups = sorted(set(df.group))
    color = alt.Color("group:N", title=df.attrs["group_title"], scale=alt.Scale(domain=groups), legend=_legend(symbolOpacity=1))
    xt, yt = alt.X("target_bpf:Q", title="target rate (BPF)", axis=_rate_axis(width)), alt.Y("achieved_bpf:Q", title="achieved rate (BPF)")
    diag = alt.Chart(pd.DataFrame(dict(target_bpf=[lo, hi], achieved_bpf=[lo, hi]))).mark_line(color="grey", strokeDash=[4, 3]).encode(xt, yt)
    if len(df) <= max_points:
        tip = [c for c in ("id", "group", "target_bpf", "achieved_bpf") if c in df]
        marks = [alt.Chart(df).mark_circle(size=18, opacity=0.5).encode(xt, yt, color, tooltip=tip)]
        lt = "Achieved against target, per utterance (dashed: y = x)"
    else:
        agg = df.groupby(["group", "target_bpf"]).achieved_bpf.agg(
            achieved_bpf="median", lo=lambda v: v.quantile(0.025), hi=lambda v: v.quantile(0.975), n="size").reset_index()
        marks = [alt.Chart(agg).mark_rule().encode(xt, alt.Y("lo:Q", title="achieved rate (BPF)"), alt.Y2("hi:Q"), color),
                 alt.Chart(agg).mark_point(filled=True, size=20).encode(xt, yt, color, tooltip=["group", "target_bpf", "achieved_bpf", "lo", "hi", "n"])]
        lt = "Achieved against target: median, central 95% (dashed: y = x)"
    left = alt.layer(diag, *marks).properties(title=lt, width=width, height=height)
    n_box = df.target_bpf.nunique() * len(groups)
    # the boxes' statistics, computed here: the page carries one row per box, not one per utterance
    bx = df.groupby(["group", "target_bpf"]).error.quantile([0, 0.25, 0.5, 0.75, 1]).unstack().reset_index()
    bx.columns = ["group", "target_bpf", "min", "q1", "median", "q3", "max"]
    bx["n"] = df.groupby(["group", "target_bpf"]).size().to_numpy()
    size = int(max(2, min(14, 0.6 * width / n_box)))
    bxe = [alt.X("target_bpf:O", title="target rate (BPF)", axis=alt.Axis(labelAngle=0, labelOverlap="parity")), color,
           alt.XOffset("group:N", scale=alt.Scale(domain=groups))]
    yt = f"achieved − target ({unit})"
    tip = ["group:N", "target_bpf:Q", "n:Q", *[alt.Tooltip(f"{c}:Q", format=".3g") for c in ("min", "q1", "median", "q3", "max")]]
    box = [alt.Chart(bx).mark_rule().encode(*bxe, alt.Y("min:Q", title=yt), alt.Y2("max:Q")),
           alt.Chart(bx).mark_bar(size=size).encode(*bxe, alt.Y("q1:Q", title=yt), alt.Y2("q3:Q"), tooltip=tip),
           alt.Chart(bx).mark_tick(color="white", size=size, thickness=1.5).encode(*bxe[::2], alt.Y("median:Q", title=yt))]
    zero = alt.Chart(pd.DataFrame(dict(error=[0.0]))).mark_rule(color="grey").encode(alt.Y("error:Q", title=yt))
    right = alt.layer(zero, *box).properties(title="Per-utterance error (boxes: quartiles; whiskers: min–max)", width=width, height=height)
    return alt.vconcat(left, right, spacing=24).properties(title=alt.TitleParams("Rate-control precision", subtitle=sub))


# %%
_rec = rate_control_records([demo, demo_b])
test_eq(len(_rec), 2 * 5 * demo["config"]["counts"]["test"]); test_eq(set(_rec["mode"]), {"per_utterance"})
fig7 = fig_rate_control(_rec, error="relative")
_sub = fig7.to_dict()["title"]["subtitle"]
_e = np.abs(100 * (_rec.achieved_bpf - _rec.target_bpf) / _rec.target_bpf)
assert f"median {np.median(_e):.3g} %" in _sub[-1], _sub                    # the subtitle states what the records hold
_s = fig_rate_control(_rec, max_points=100).to_dict()                   # many records: a summary per target, not every dot
test_eq([l["mark"]["type"] for l in _s["vconcat"][0]["layer"]], ["line", "rule", "point"])
test_eq(len(_s["datasets"][_s["vconcat"][0]["layer"][2]["data"]["name"]]), 2 * 5)   # one per dataset and target
test(svg_size(fig7)[0], PAGE_WIDTH, operator.le, "<=")
test_eq(set(_records(_rec).group), {"SYNTH-DEMO", "SYNTH-B"})          # one mode: coloured by dataset
test_eq(set(_records(_rec.assign(mode=np.where(_rec.target_bpf > 50, "per_set", "per_utterance"))).group),
        {f"{d} · {m}" for d in ("SYNTH-DEMO", "SYNTH-B") for m in ("per_set", "per_utterance")})
test_eq(fig_rate_control([dict(target_bpf=10, achieved_bpf=9.5), dict(target_bpf=300, achieved_bpf=250.0, capped=True)]).to_dict()["title"]["subtitle"][0],
        "targets beyond reach left out: 300")
test_eq(_rates_text(range(105, 305, 5)), "40 targets from 105 to 300"); test_eq(_rates_text([20, 10, 10.0]), "10, 20")
test_fail(lambda: fig_rate_control([dict(target=10, achieved_bpf=9)]), contains="lack the columns ['target_bpf']")
test_fail(lambda: fig_rate_control([dict(target_bpf=10, achieved_bpf=float("nan"))]), contains="finite numbers")
test_fail(lambda: rate_control_records(_bare | dict(rate_points=[{k: v for k, v in p.items() if k != "per_utterance"} for p in _bare["rate_points"]])),
          contains="no rate point holds per-utterance rates")
fig7


# %% [markdown]
# ## Which results exist
#
# `figure_index` lists the results files of a folder (relative paths are taken from the repository root), one
# entry per file, with what the figures can draw from it. A file that does not validate is listed with its
# error instead of stopping the listing.

# %%
#| export
def figure_index(results_dir="evaluation_results") -> list[dict]:
    "One dict per `rate_sweep_<DATASET>.json` in `results_dir`: dataset, path, what it holds, or its `error`."
    d = Path(results_dir)
    if not d.is_absolute(): d = repo_root() / d
    out = []
    for p in sorted(d.glob("rate_sweep_*.json")):
        e = dict(dataset=p.stem[len("rate_sweep_"):], path=str(p), error=None)
        try: r = load_results(p)
        except EibError as err:
            out.append(e | dict(error=str(err))); continue
        pts = r["rate_points"]
        ach = [q["achieved_bpf_mean"] for q in pts]
        out.append(e | dict(dataset=r["dataset"], encoder=r["encoder"], classifier=r["classifier"], classes=r["classes"],
                            created=r["created"], n_rate_points=len(pts), n_layer_points=len(r["layer_sweep"]),
                            has_rd_bound=bool(r["rd_bound"]), bpf_range=[min(ach), max(ach)] if ach else None,
                            per_class_true_prob=bool(pts) and all("mean_true_label_prob" in c for q in pts for c in q["metrics"]["per_class"].values()),
                            per_utterance=any(PER_UTTERANCE_KEY in q for q in pts)))
    return out


# %%
from eib.records import write_results
with tempfile.TemporaryDirectory() as _t:
    test_eq(figure_index(Path(_t) / "none"), [])
    write_results(Path(_t) / "rate_sweep_SYNTH-DEMO.json", demo); write_results(Path(_t) / "rate_sweep_SYNTH-B.json", demo_b)
    (Path(_t) / "rate_sweep_BROKEN.json").write_text("{")
    _ix = figure_index(_t)
    test_eq([(e["dataset"], e["error"] is None) for e in _ix], [("BROKEN", False), ("SYNTH-B", True), ("SYNTH-DEMO", True)])
    test_eq((_ix[2]["n_rate_points"], _ix[2]["n_layer_points"], _ix[2]["has_rd_bound"], _ix[1]["has_rd_bound"]), (5, 3, True, False))
    assert _ix[2]["per_class_true_prob"] and _ix[2]["per_utterance"], _ix[2]
    test_eq(fig_f1([e["path"] for e in _ix[1:]]).to_dict()["layer"][0]["mark"]["type"], "area")  # paths work as input
figure_index()  # the repository's own results (empty until the sweeps have run)

# %% [markdown]
# ## Saving every figure
#
# `all_figures(results)` returns the figures a results list can support (name → chart), leaving out those
# whose data is missing; `save_figure` writes each. In the book, the results chapter saves them under
# `artifacts/figures/`. The test below draws every one of them for two datasets (4 and 7 classes, the latter with
# long emotion names) and checks that each fits the page (`PAGE_WIDTH`); `tests/test_figures_render.py` does the
# same with one, two and three datasets and long dataset labels.

# %%
#| export
FIGURES = dict(f1=fig_f1, confidence=fig_confidence, recall=fig_recall, precision=lambda r: fig_recall(r, metric="precision"),
               true_prob=fig_true_prob, confusion=fig_confusion, rd=fig_rd,
               rate_control=lambda r: fig_rate_control(rate_control_records(r)))

def figures_and_reasons(results, names=None) -> tuple[dict, dict]:
    "`({name: chart}, {name: why it is left out})` over the figures of `FIGURES` (or those in `names`) for `results`."
    ok, why = {}, {}
    for k, f in FIGURES.items():
        if names is not None and k not in names: continue
        try: ok[k] = f(results)
        except EibError as e: why[k] = str(e)
    return ok, why

def all_figures(results) -> dict:
    "`{name: chart}` of every figure in `FIGURES` that `results` can support (those it cannot are left out)."
    return figures_and_reasons(results)[0]


# %%
_figs = all_figures([demo, demo_b])
test_eq(list(_figs), list(FIGURES))
_sizes = {k: svg_size(ch)[0] for k, ch in all_figures([demo, _d7]).items()}  # 4 and 7 classes, long emotion names
test_eq({k: w for k, w in _sizes.items() if w > PAGE_WIDTH}, {})               # every figure fits the page
test_eq(list(all_figures(_bare)), ["f1", "confidence", "recall", "precision", "confusion", "rd", "rate_control"])
test_eq(list(figures_and_reasons(_bare)[1]), ["true_prob"])                # and why the eighth is left out
test_eq(list(figures_and_reasons(_bare, names=("rd", "true_prob"))[0]), ["rd"])
with tempfile.TemporaryDirectory() as _t:
    _p = save_figure(_figs["rd"], "fig_rd", _t)
    assert _p["png"].stat().st_size > 1000 and ET.parse(_p["svg"]).getroot().get("width"), (_p["png"].stat().st_size, ET.parse(_p["svg"]).getroot().attrib)
