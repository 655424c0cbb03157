# %% [markdown]
# # Results
#
# > Emotion recognition on decoded features, per dataset and compared, computed from the results files.

# %%
#| default_exp results

# %%
#| export
from __future__ import annotations
import hashlib, html, itertools, json, re
from pathlib import Path
import numpy as np
import pandas as pd
import altair as alt
from IPython.display import Markdown, display
from eib.core import EibError, atomic_write_text, fingerprint, repo_root
from eib.records import load_results
from eib import figures as F

# %%
#| code-fold: true
import copy, tempfile, xml.etree.ElementTree as ET
from fastcore.test import test_eq, test_fail, test_close
from eib.records import write_results
from eib.results import *  # the helpers of this page, defined (and tested) in its last section

# %% [markdown]
# Every number on this page is read from the results files `evaluation_results/rate_sweep_<DATASET>.json`
# (schema `eib.records.RESULTS_SCHEMA`) when the page is built; none is typed in. A dataset whose file is
# missing is named as missing, never filled in. The book expects three sweeps:
#
# - **SYNTH**, the embedded synthetic corpus (speech rendered with `espeak-ng`, features from openSMILE):
#   `make book` re-runs its quick sweep and this page checks that run against the committed file (see
#   [How to reproduce](30_reproduce.ipynb));
# - **RAVDESS** and **EMODB**, measured on the licensed corpora themselves (read at run time, never committed) (their features and
#   codecs are never committed; the results files are).
#
# The page shows every dataset present, then compares them. The helpers that turn a results file into these
# tables and charts (the module `eib.results`) are defined and tested in the last section, [How this page is
# made](#how-this-page-is-made). For what the numbers mean next to the thesis's claims, see
# [Findings](20_findings.ipynb).

# %% [markdown]
# ## The results files

# %%
F.use_offline_renderer()
named, bad = load_all()
display(Markdown(availability(named, bad)))
vega_script()

# %% [markdown]
# The figures are also written as PNG and SVG files (vl-convert, no browser) under `artifacts/figures/<DATASET>/`
# in the repository, a build output that git ignores (redrawn only when a results file changed):

# %%
save_book_figures(named) if named else "no results: no figures"

# %% [markdown]
# ## This build's re-run
#
# `make book` re-runs the synthetic sweeps (quick targets, both encoders, the fixed probe) before it builds the website;
# here each fresh run is checked against the committed results of the same dataset, encoder and classifier.

# %%
from eib.records import rerun_files, results_files
_fresh = {k: load_results(v) for k, v in rerun_files().items()}
_committed = {k: load_results(v) for k, v in results_files().items()}  # keyed like the fresh files: dataset, encoder, classifier
for _k, _fr in _fresh.items():
    display(Markdown(describe_rerun(_k, _fr, _committed.get(_k))))
    if _k in _committed: display(fmt_table(compare_runs(_fr, _committed[_k]).set_index("target_bpf")))
    else: display(fmt_table(at_rates([(_k, _fr)]).drop(columns="dataset").set_index("asked_bpf")))
if not _fresh:
    display(Markdown("This build did not re-run a sweep (`EIB_BOOK_RESULTS` names no folder): only the committed "
                     "results are shown. `make book` re-runs the synthetic one."))

# %% [markdown]
# ## Per dataset
#
# Each results file has a page of its own on the website, with its tables and every figure it supports (one page
# per file keeps each page light; the book's build makes them from the template notebook `nbs/22_dataset.ipynb`):

# %%
display(Markdown("\n".join(f"- [**{_lab}**](results/{safe_name(_lab)}.ipynb): {len(_r['rate_points'])} rate points, "
                          f"{len(_r['layer_sweep'])} layer-sweep points, created {_r['created'][:10]}" for _lab, _r in named)
                 if named else "No results file is present yet."))

# %% [markdown]
# ## Compared
#
# The datasets side by side: the landmarks of the weighted-F1 curve, the rate-control precision, and the
# figures that draw every dataset in one panel (`COMPARED_FIGURES`: a line per dataset). The per-emotion figures and
# the confusion matrices, a panel per dataset, are on each results file's page.

# %%
if len(named) < 2:
    display(Markdown(f"Only {len(named)} results file{'' if len(named) == 1 else 's'} present, so there is nothing to "
                     "compare yet; the tables and figures below show what there is, and fill in as the sweeps arrive."))
_rows = []
for _lab, _r in named:
    _d = drop_points(_r)
    _rows.append(dict(dataset=_lab, encoder=_r["encoder"], test_utterances=_r["baselines"]["unquantised"]["n"],
                      classes=len(_r["classes"]), unquantised_f1=_d["ceiling"], majority_f1=_d["floor"],
                      best_decoded_f1=_d["best_f1"], holds_ci_from_bpf=_d["holds_ci_from"], holds_90pct_from_bpf=_d["holds_90_from"],
                      lowest_bpf=_d["bpf_range"][0] if _d["bpf_range"] else None, highest_bpf=_d["bpf_range"][1] if _d["bpf_range"] else None))
fmt_table(pd.DataFrame(_rows).set_index("dataset")) if _rows else "no results"

# %%
fmt_table(at_rates(named).pivot_table(index="asked_bpf", columns="dataset", values=["achieved_bpf", "f1_weighted", "f1_macro"]).swaplevel(axis=1).sort_index(axis=1)) if named else "no results"

# %%
fmt_table(rate_control_summary(named).set_index("dataset")) if named else "no results"

# %%
if len(named) > 1:
    show_figures(named, "### Compared:", COMPARED_FIGURES)
else: display(Markdown("The figures that draw every dataset at once are left out: with one dataset they are the ones above."))

# %% [markdown]
# ## Inter-frame context
#
# The codec's entropy model codes each frame's tokens from that frame's earlier tokens only, as the thesis's does. Frames
# 20 ms apart (50 per second) are strongly correlated, so the chapter "Entropy model" gives it the option to see the previous frame's
# tokens as well (`eib-train --context frame`; `papermill nbs/sweep.ipynb ... -p context frame`), on the same codebooks.
# Each sweep made with it is shown here beside a sweep without it: the one in `evaluation_results/context/`, whose codec
# has the same codebooks and was trained by the same recipe without context (`eib-train --codebooks`), where there is one,
# else the book's own. Shown: the rate the codec without context needs for the same distortion and the bits saved, the
# weighted F1 of both at the same rate, and both curves.

# %%
_cp = context_pairs()
if not _cp: display(Markdown("No sweep with inter-frame context is present yet (run one with `-p context frame`)."))
for _lab, _a, _b in _cp:
    display(Markdown(f"### {_lab}\n\n{len(_b['rate_points'])} rate points with context (codec `{_b['config']['checkpoint']}`), "
                     f"{len(_a['rate_points'])} without (codec `{_a['config']['checkpoint']}`). Commands: "
                     f"`{reader_command(_b['command'])}`; `{reader_command(_a['command'])}`."),
            fmt_table(context_table(_a, _b).set_index("target_bpf")))
    for _k, _ch in context_figures(_lab, _a, _b).items(): display(Markdown(f"#### {_lab}: {FIGURE_TITLES.get(_k, _k)}"), interactive(_ch))

# %% [markdown]
# ## How this page is made
#
# The helpers of this page, exported as `eib.results` (the cells above import them from there), with their
# tests on a demonstration results object (`eib.figures.demo_results`: synthetic blobs, not a result).
#
# ### Loading every results file

# %%
#| export
BOOK_RATES = (10, 20, 50, 100, 200)
EXPECTED_DATASETS = {
    "SYNTH": "the embedded synthetic corpus (espeak-ng speech): its full sweep is committed, `make book` re-runs the quick one",
    "RAVDESS": "RAVDESS, measured on the licensed corpus with `papermill nbs/sweep.ipynb ... -p dataset ravdess`",
    "EMODB": "EmoDB, measured on the licensed corpus with `papermill nbs/sweep.ipynb ... -p dataset emodb`"}

def load_all(results_dir="evaluation_results", context: str = "none") -> tuple[list[tuple[str, dict]], list[dict]]:
    """Every valid `rate_sweep_*.json` in `results_dir` (relative: to the repository root) of a codec whose entropy model
    has inter-frame `context` ("none": the book's codecs; the sweeps with context are set beside them by `context_pairs`)
    as `[(label, results)]`, and the files that did not validate as `[{dataset, path, error}]`."""
    ix = F.figure_index(results_dir)
    good = [r for r in (load_results(e["path"]) for e in ix if e["error"] is None) if r["config"].get("context", "none") == context]
    bad = [dict(dataset=e["dataset"], path=e["path"], error=e["error"]) for e in ix if e["error"] is not None]
    return (F.named_results(good) if good else []), bad

def missing_datasets(named, expected=EXPECTED_DATASETS) -> list[str]:
    "The expected datasets that no results file covers."
    have = {r["dataset"].upper() for _, r in named}
    return [d for d in expected if d.upper() not in have]

def availability(named, bad=(), expected=EXPECTED_DATASETS) -> str:
    "A Markdown paragraph: which results files are present, which are missing, which are broken."
    have = ", ".join(f"**{lab}** ({len(r['rate_points'])} rate points, created {r['created'][:10]})" for lab, r in named)
    out = [f"Results present: {have}." if named else "**No results file is present yet**: run a sweep (see How to reproduce)."]
    miss = missing_datasets(named, expected)
    if miss: out.append("Missing: " + "; ".join(f"**{d}** ({expected[d]})" for d in miss) +
                        ". Their sections are left out, not filled in.")
    for b in bad: out.append(f"Not readable: `{Path(b['path']).name}` ({b['error']}).")
    return " ".join(out)


# %%
#| code-fold: true
_demo = F.demo_results("SYNTH", n_boot=50)
with tempfile.TemporaryDirectory() as _t:
    write_results(Path(_t) / "rate_sweep_SYNTH.json", _demo); (Path(_t) / "rate_sweep_BROKEN.json").write_text("{")
    _named, _bad = load_all(_t)
    test_eq([l for l, _ in _named], ["SYNTH"]); test_eq([b["dataset"] for b in _bad], ["BROKEN"])
    test_eq(missing_datasets(_named), ["RAVDESS", "EMODB"])
    _a = availability(_named, _bad)
    assert "Missing: **RAVDESS**" in _a and "**EMODB**" in _a and "rate_sweep_BROKEN.json" in _a, _a
    test_eq(load_all(Path(_t) / "nothing"), ([], []))
    test_eq(load_all(_t, context="frame")[0], [])  # a sweep without context is not one with it
    assert "No results file" in availability([])


# %% [markdown]
# ### The table at the book's rates
#
# A sweep seldom lands exactly on 10, 20, 50, 100 and 200 BPF: the rate controller can be capped by what
# the codec can reach (a target below the rate at the largest λ, or above the rate at λ = 0), and a sweep
# may have run other targets. `at_rates` takes, for each asked rate, the rate point whose **achieved** rate
# is nearest (`eib.figures.nearest_point`) and says which one it took: its target, its achieved rate, whether
# it was capped, and how far it is from the asked rate.

# %%
#| export
def at_rates(results, rates=BOOK_RATES) -> pd.DataFrame:
    """One row per dataset and asked rate: the nearest rate point (by achieved BPF), its target, achieved rate,
    capped flag, distance, and weighted/macro F1 and accuracy with their 95% intervals."""
    rows = []
    for lab, r in F.named_results(results):
        for a in rates:
            p = F.nearest_point(r, float(a))
            if p is None: continue
            m = p["metrics"]
            rows.append(dict(dataset=lab, asked_bpf=float(a), target_bpf=p["target_bpf"], achieved_bpf=p["achieved_bpf_mean"],
                             off_pct=100 * (p["achieved_bpf_mean"] - a) / a, capped=bool(p["capped"]),
                             f1_weighted=m["f1_weighted"], f1_weighted_lo=m["ci"]["f1_weighted"][0],
                             f1_weighted_hi=m["ci"]["f1_weighted"][1], f1_macro=m["f1_macro"],
                             f1_macro_lo=m["ci"]["f1_macro"][0], f1_macro_hi=m["ci"]["f1_macro"][1], accuracy=m["accuracy"]))
    return pd.DataFrame(rows, columns=["dataset", "asked_bpf", "target_bpf", "achieved_bpf", "off_pct", "capped", "f1_weighted",
                                       "f1_weighted_lo", "f1_weighted_hi", "f1_macro", "f1_macro_lo", "f1_macro_hi", "accuracy"])

def class_at_rates(results, rates=BOOK_RATES, unquantised: bool = True) -> pd.DataFrame:
    """Per-class precision and recall, one row per dataset, emotion and column (the unquantised baseline, then
    the nearest rate point to each asked rate, named `~<asked> (<achieved>)`); precision is NaN where the class
    is never predicted."""
    rows = []
    for lab, r in F.named_results(results):
        cols = [("unquantised", r["baselines"]["unquantised"])] if unquantised else []
        for a in rates:
            p = F.nearest_point(r, float(a))
            if p is not None: cols.append((f"~{a:g} ({p['achieved_bpf_mean']:.1f})", p["metrics"]))
        for col, m in cols:
            for c in r["classes"]:
                pc = m["per_class"][c]
                rows.append(dict(dataset=lab, emotion=c, column=col, support=pc["support"],
                                 precision=np.nan if pc["precision"] is None else pc["precision"], recall=pc["recall"],
                                 predicted=pc.get("predicted", np.nan)))
    return pd.DataFrame(rows, columns=["dataset", "emotion", "column", "support", "precision", "recall", "predicted"])

def class_grid(results, rates=BOOK_RATES) -> pd.DataFrame:
    "`class_at_rates` of one dataset as a grid: emotions × (column, precision/recall)."
    t = class_at_rates(results, rates)
    if t.empty: raise EibError("no rate points in the results given: the class grid needs a rate sweep")
    if t.dataset.nunique() > 1: raise EibError(f"class_grid draws one dataset; got {sorted(t.dataset.unique())}")
    order = list(dict.fromkeys(t.column))
    g = t.pivot_table(index="emotion", columns="column", values=["precision", "recall"], dropna=False, sort=False)
    g = g.swaplevel(axis=1).reindex(columns=pd.MultiIndex.from_product([order, ["precision", "recall"]]))
    return g.reindex(list(dict.fromkeys(t.emotion)))


# %%
#| code-fold: true
_t = at_rates(_demo, rates=(10, 45))
test_eq(list(_t.target_bpf), [10.0, 50.0]); test_eq(_t.capped.tolist(), [False, False])
test_close(_t.off_pct.iloc[1], 100 * (_demo["rate_points"][2]["achieved_bpf_mean"] - 45) / 45)
assert (_t.f1_weighted_lo <= _t.f1_weighted).all() and (_t.f1_weighted <= _t.f1_weighted_hi).all()
_g = class_grid(_demo, rates=(10, 200))
test_eq(_g.shape, (4, 6)); test_eq(_g.columns[0], ("unquantised", "precision"))
_pc = _demo["rate_points"][-1]["metrics"]["per_class"]["sad"]
test_eq(_g.loc["sad", _g.columns[-1]], _pc["recall"])
test_fail(lambda: class_grid([_demo, F.demo_results("B", n_boot=20)]), contains="one dataset")
test_eq(len(at_rates(_demo | dict(rate_points=[]))), 0)


# %% [markdown]
# ### Where the curve drops
#
# Two tests of a rate point's weighted F1, both against the unquantised-feature baseline (the same probe on
# the original features): does it lie **inside the baseline's 95% interval**, and is it at least **90% of the
# baseline's F1**? For each, `drop_points` gives the lowest achieved rate from which every measured point
# upwards passes (so a single lucky point low down does not count), and the points that fail. A point whose
# interval reaches down to the majority-class F1 is marked as no better than guessing the most frequent class.

# %%
#| export
def _holds_from(bpf, ok):
    "Lowest bpf from which every point at or above passes (None when even the highest point fails)."
    best = None
    for b, o in sorted(zip(bpf, ok), reverse=True):
        if not o: break
        best = b
    return best

def drop_points(results: dict) -> dict:
    """Weighted-F1 landmarks of one results object: the unquantised `ceiling` (+ interval), the majority `floor`,
    `holds_ci_from` / `holds_90_from` (lowest achieved BPF from which all points upwards are inside the ceiling's
    interval / at least 90% of it), the points below 90%, and those no better than the majority class."""
    r = F.named_results(results)[0][1] if not isinstance(results, dict) else results
    u, mj = r["baselines"]["unquantised"], r["baselines"]["majority"]
    ceil, (clo, chi), floor = u["f1_weighted"], u["ci"]["f1_weighted"], mj["f1_weighted"]
    pts = sorted(r["rate_points"], key=lambda p: p["achieved_bpf_mean"])
    seen, uniq = set(), []
    for p in pts:  # capped targets can repeat one point; keep it once
        k = (round(p["achieved_bpf_mean"], 6), p["metrics"]["f1_weighted"])
        if k not in seen: seen.add(k); uniq.append(p)
    bpf = [p["achieved_bpf_mean"] for p in uniq]
    f1 = [p["metrics"]["f1_weighted"] for p in uniq]
    lo = [p["metrics"]["ci"]["f1_weighted"][0] for p in uniq]
    return dict(ceiling=ceil, ceiling_ci=(clo, chi), floor=floor, n_points=len(uniq),
                bpf_range=(min(bpf), max(bpf)) if bpf else None, best_f1=max(f1) if f1 else None,
                holds_ci_from=_holds_from(bpf, [f >= clo for f in f1]),
                holds_90_from=_holds_from(bpf, [f >= 0.9 * ceil for f in f1]),
                below_90=[(b, f) for b, f in zip(bpf, f1) if f < 0.9 * ceil],
                at_floor=[(b, f) for b, f, l in zip(bpf, f1, lo) if l <= floor])

def _rate_list(pts, n_all: int) -> str:
    "Rates of `pts` for prose: listed when few, else counted with their range."
    b = [x for x, _ in pts]
    if len(b) <= 6: return ", ".join(f"{x:.1f}" for x in b) + " BPF"
    return (f"{'all ' if len(b) == n_all else ''}{len(b)} of the {n_all} points, between {min(b):.1f} and {max(b):.1f} BPF")

def describe_drop(label: str, d: dict) -> str:
    "One Markdown paragraph stating the landmarks of `drop_points`, every number from `d`."
    if not d["n_points"]: return f"**{label}**: no rate point measured yet."
    s = (f"**{label}**: the unquantised features give weighted F1 **{d['ceiling']:.3f}** (95% interval "
         f"{d['ceiling_ci'][0]:.3f}–{d['ceiling_ci'][1]:.3f}); always answering the majority class gives {d['floor']:.3f}. "
         f"{d['n_points']} distinct rate points were measured, from {d['bpf_range'][0]:.1f} to {d['bpf_range'][1]:.1f} BPF "
         f"(best weighted F1 {d['best_f1']:.3f}). ")
    s += (f"Weighted F1 stays inside the unquantised interval from **{d['holds_ci_from']:.1f} BPF** upwards. "
          if d["holds_ci_from"] is not None else "Not even the highest rate point reaches the unquantised interval. ")
    s += (f"It stays at or above 90% of the unquantised F1 from **{d['holds_90_from']:.1f} BPF** upwards"
          if d["holds_90_from"] is not None else "No rate point from the top down keeps 90% of the unquantised F1")
    s += (f"; below 90% at {_rate_list(d['below_90'], d['n_points'])}. " if d["below_90"] else ". ")
    if d["at_floor"]:
        s += (f"At {_rate_list(d['at_floor'], d['n_points'])}, the 95% interval reaches down to the majority-class "
              "F1: there the probe does no better than always answering the most frequent class.")
    return s


# %%
#| code-fold: true
_d = drop_points(_demo)
_f1 = {round(p["achieved_bpf_mean"], 6): p["metrics"]["f1_weighted"] for p in _demo["rate_points"]}
assert all(f >= 0.9 * _d["ceiling"] for b, f in _f1.items() if _d["holds_90_from"] is not None and b >= _d["holds_90_from"] - 1e-9)
test_eq(_holds_from([10, 20, 50, 100], [True, False, True, True]), 50)   # a lucky low point does not count
test_eq(_holds_from([10, 20], [True, False]), None)
test_eq(_rate_list([(10, 0), (20.04, 0)], 5), "10.0, 20.0 BPF")
test_eq(_rate_list([(float(b), 0) for b in range(10, 90, 10)], 8), "all 8 of the 8 points, between 10.0 and 80.0 BPF")
test_eq(drop_points(_demo | dict(rate_points=_demo["rate_points"] * 2))["n_points"], 5)   # repeated points count once
assert f"{_d['ceiling']:.3f}" in describe_drop("SYNTH", _d)
test_eq(describe_drop("X", drop_points(_demo | dict(rate_points=[]))), "**X**: no rate point measured yet.")


# %% [markdown]
# ### The verdict
#
# `verdict` condenses `drop_points` into the book's answer for each results file: whether the top point is
# transparent (inside the unquantised 95% interval: only then can the curve say where loss begins), the lowest rate
# from which the curve stays transparent, the rate where it falls below 90% of the unquantised F1, and the rate where
# its interval reaches the majority-class F1; each with that point's F1 and interval.

# %%
#| export
def verdict(results) -> pd.DataFrame:
    """The book's answer, one row per results file (dataset x encoder x classifier), every number read from it:
    the unquantised weighted F1 and its 95% interval; the top rate point and whether it is transparent (its F1
    inside that interval); `transparent_from`, the lowest rate from which every point upwards is inside the interval;
    `below_90_at`, the highest rate whose F1 is below 90% of unquantised (where the curve falls, coming down); and
    `majority_at`, the highest rate whose F1 interval reaches the majority-class F1. Each rate with its point's F1
    and interval; None where the curve never does it."""
    rows = []
    for lab, r in F.named_results(results):
        d = drop_points(r)
        if not d["n_points"]: continue
        pts = {p["achieved_bpf_mean"]: p["metrics"] for p in r["rate_points"]}
        near = lambda b: pts[min(pts, key=lambda k: abs(k - b))]  # drop_points keeps each point's own rate
        at = lambda b: None if b is None else (b, near(b)["f1_weighted"], *near(b)["ci"]["f1_weighted"])
        top = max(pts)
        lo, hi = d["ceiling_ci"]
        rows.append(dict(dataset=r["dataset"], encoder=r["encoder"], classifier=r["classifier"], label=lab,
                         unquantised=(d["ceiling"], lo, hi), majority_f1=d["floor"], top=at(top),
                         top_transparent=bool(pts[top]["f1_weighted"] >= lo), transparent_from=at(d["holds_ci_from"]),
                         below_90_at=at(max(b for b, _ in d["below_90"]) if d["below_90"] else None),
                         majority_at=at(max(b for b, _ in d["at_floor"]) if d["at_floor"] else None)))
    return pd.DataFrame(rows)

def _fmt_point(v) -> str:
    "(bpf, f1, lo, hi) -> '123: 0.71 (0.66–0.76)' (rate in BPF, weighted F1, its 95% interval); None -> 'never'."
    return "never" if v is None else f"{v[0]:.0f}: {v[1]:.2f} ({v[2]:.2f}–{v[3]:.2f})"

def verdict_table(results) -> Table:
    """`verdict` as a table for the page: one row per dataset, encoder and probe; each cell 'rate (BPF): weighted F1
    (its 95% interval)'; ✗ marks a top point that is not transparent."""
    v = verdict(results)
    if not len(v): return fmt_table(pd.DataFrame())
    short = {"linear_probe": "fixed", "matched_linear_probe": "matched", "emotion2vec_plus_head": "plus head"}
    enc = {"compare": "ComParE", "whisper_base": "Whisper"}
    cell = _fmt_point
    t = pd.DataFrame({"result": [f"{d} {enc.get(e, e)} {short.get(c, c)}" for d, e, c in zip(v.dataset, v.encoder, v.classifier)],
                      "unquantised": [f"{a:.2f} ({lo:.2f}–{hi:.2f})" for a, lo, hi in v.unquantised],
                      "top": [cell(x) + ("" if ok else " ✗") for x, ok in zip(v.top, v.top_transparent)],
                      "transparent from": [cell(x) for x in v.transparent_from],
                      "below 90%": [cell(x) for x in v.below_90_at], "majority level": [cell(x) for x in v.majority_at]})
    return fmt_table(t.set_index("result"))



# %%
#| code-fold: true
_v = verdict(_demo).iloc[0]
test_eq((_v.transparent_from[0] if _v.transparent_from else None), _d["holds_ci_from"])
test_eq(_v.top[0], max(p["achieved_bpf_mean"] for p in _demo["rate_points"]))
test_eq(_v.top_transparent, _v.top[1] >= _v.unquantised[1])
if _v.below_90_at is not None: assert _v.below_90_at[1] < 0.9 * _v.unquantised[0]
if _v.majority_at is not None: assert _v.majority_at[2] <= _v.majority_f1
test_eq(_fmt_point(None), "never"); test_eq(_fmt_point((12.34, 0.5, 0.4, 0.6)), "12: 0.50 (0.40–0.60)")

# %% [markdown]
# ### The first page
#
# The website's first page opens with the answer: a few lines, one per corpus measured with the book's primary
# encoder, and the weighted-F1 chart of those corpora, both made from the results files when the site is built
# (`eib.book.write_landing` puts them into `index.qmd`). Synthetic speech is named as such.

# %%
#| export
PRIMARY_ENCODER = "whisper_base"  # the learned 50 Hz encoder the book's answer is given for

def _enc_name(e: str) -> str: return ENCODERS.get(e, e).split(" (")[0].split(",")[0]

def _probe_line(r, who: str) -> str:
    "One probe's part of a headline line, from a `verdict` row."
    if not r.top_transparent:
        return f"{who} probe not transparent even at its top ({r.top[0]:.0f} BPF)"
    s = f"{who} probe transparent from **{r.transparent_from[0]:.0f} BPF** (F1 {r.unquantised[0]:.2f})"
    return s + (f", at the majority-class level at {r.majority_at[0]:.0f} BPF" if r.majority_at else ", never at the majority-class level")

def headline(named, encoder: str = PRIMARY_ENCODER, max_lines: int = 5) -> list[str]:
    """The book's answer for its first page in at most `max_lines` Markdown list items, every number read from the
    results files: per corpus measured with `encoder` (real corpora first), where the fixed and the matched probe
    stay transparent and where they reach the majority-class level; then one item naming the other encoders' curves
    whose top point is not transparent."""
    v = verdict(named) if named else pd.DataFrame()
    if not len(v): return ["- No results file is present yet: run a sweep (see How to reproduce)."]
    lines, main = [], v[v.encoder == encoder]
    for d in sorted(main.dataset.unique(), key=lambda d: (d.upper() == "SYNTH", d)):
        rows = {r.classifier: r for r in main[main.dataset == d].itertuples()}
        parts = [_probe_line(rows[c], who) for c, who in (("linear_probe", "fixed"), ("matched_linear_probe", "matched")) if c in rows]
        if not parts: continue
        syn = " (synthetic speech: how the pipeline behaves, not how people express emotion)" if d.upper() == "SYNTH" else ""
        lines.append(f"- **{d}**{syn}: " + "; ".join(parts) + ".")
    bad = v[(v.encoder != encoder) & ~v.top_transparent]
    if len(bad):
        lines.append(f"- With {', '.join(sorted({_enc_name(e) for e in bad.encoder}))}, the codec's top point is not "
                     f"transparent on {', '.join(sorted(set(bad.dataset)))}: those curves cannot say where loss begins.")
    return lines[:max_lines]

def headline_chart(named, encoder: str = PRIMARY_ENCODER, width: int = 520, height: int = 260):
    """The first page's chart: weighted F1 against the achieved rate (log axis) of the real corpora measured with
    `encoder`, fixed and matched probes (the synthetic corpus only when no real one is present); None without results."""
    pick = lambda real: [(f"{r['dataset']} {'matched' if r['classifier'].startswith('matched') else 'fixed'}", r)
                         for _, r in named if r["encoder"] == encoder and (r["dataset"].upper() != "SYNTH") == real and r["rate_points"]]
    sel = pick(True) or pick(False)
    return F.fig_f1(sel, log_x=True, layer_sweep=False, width=width, height=height) if sel else None


# %%
_hd = copy.deepcopy(_demo); _hd["encoder"] = "whisper_base"
_hl = headline(F.named_results([_hd]))
test_eq(len(_hl), 1); test_eq(_hl[0].startswith("- **SYNTH** (synthetic speech"), True)
test_eq(headline([]), ["- No results file is present yet: run a sweep (see How to reproduce)."])
test_eq(headline_chart(F.named_results([_demo])), None)  # no result of the primary encoder
test_eq(type(headline_chart(F.named_results([_hd]))).__name__, "LayerChart")


# %% [markdown]
# ### Rate control in numbers
#
# `rate_control_summary` condenses the per-utterance rates that a sweep stores in each rate point: over the
# targets the controller could reach (capped ones left out), how far each utterance's coded rate is from its
# target, and how far the mean over the test set is.

# %%
#| export
def rate_control_summary(results) -> pd.DataFrame:
    """Per dataset: reachable targets, utterance codings, median and 95th-percentile |achieved − target| (BPF),
    share within ±1 BPF, the largest |set mean − target|, and the capped targets."""
    rows = []
    for lab, r in F.named_results(results):
        try: rec = F.rate_control_records([(lab, r)])
        except EibError: rec = None
        free = [p for p in r["rate_points"] if not p["capped"]]
        row = dict(dataset=lab, targets=len(free), capped_targets=", ".join(f"{p['target_bpf']:g}" for p in r["rate_points"] if p["capped"]),
                   codings=0, median_abs_err=np.nan, p95_abs_err=np.nan, within_1bpf=np.nan,
                   max_set_err=max((abs(p["achieved_bpf_mean"] - p["target_bpf"]) for p in free), default=np.nan))
        if rec is not None:
            e = (rec.achieved_bpf - rec.target_bpf)[~rec.capped].abs()
            if len(e): row |= dict(codings=int(len(e)), median_abs_err=float(e.median()), p95_abs_err=float(e.quantile(0.95)),
                                   within_1bpf=float((e <= 1).mean()))
        rows.append(row)
    return pd.DataFrame(rows)


# %%
#| code-fold: true
_s = rate_control_summary(_demo).iloc[0]
_rec = F.rate_control_records(_demo)
test_eq(_s.codings, len(_rec)); test_close(_s.within_1bpf, float(((_rec.achieved_bpf - _rec.target_bpf).abs() <= 1).mean()))
test_eq(_s.capped_targets, "")
_c = _demo | dict(rate_points=[p | dict(capped=True) for p in _demo["rate_points"]])
test_eq(rate_control_summary(_c).iloc[0].codings, 0)

# %% [markdown]
# ### Inter-frame context
#
# A sweep whose codec's entropy model also sees the previous frame's tokens (`-p context frame`; see the chapter
# "Entropy model") is set beside the sweep of the same corpus, encoder, classifier and test subset without it
# (`context_pairs`). `context_table` reads both at each of its rate points: the rate the codec without context needs for
# the same distortion (interpolated log-log between its own rate points, so only inside their range) and the bits saved;
# and the weighted F1 of both at the same rate. `context_figures` draws their rate–distortion and F1 curves in one panel
# each.

# %%
#| export
CLASSIFIER_NAMES = {"linear_probe": "fixed probe", "matched_linear_probe": "matched probe", "emotion2vec_plus_head": "own head"}

def context_pairs(results_dir="evaluation_results") -> list[tuple[str, dict, dict]]:
    """`[(label, without, with)]`: every sweep in `results_dir` whose codec has inter-frame context beside a sweep without
    it of the same dataset, encoder, classifier and test subset: the one in `results_dir/context/` (a codec on the same
    codebooks, swept for this comparison, `eib-train --codebooks`) if there is one, else the book's own. A sweep with
    context that has neither is left out."""
    from eib.entropy import CONTEXTS
    key = lambda o: (o["dataset"], o["encoder"], o["classifier"], o["config"].get("test_ids_fingerprint"))
    base = {key(r): r for _, r in load_all(results_dir)[0]} | {key(r): r for _, r in load_all(Path(results_dir) / "context")[0]}
    return [(f"{r['dataset']}, {_enc_name(r['encoder'])}, {CLASSIFIER_NAMES.get(r['classifier'], r['classifier'])}", base[key(r)], r)
            for c in CONTEXTS if c != "none" for _, r in load_all(results_dir, c)[0] if key(r) in base]

def _along(x, xs, ys, log_y: bool = True) -> float:
    "y at x on the curve through (xs, ys), interpolated in log x (and log y); nan outside the curve's x range."
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    o = np.argsort(xs); xs, ys = xs[o], ys[o]
    if not len(xs) or not xs[0] <= x <= xs[-1]: return float("nan")
    y = np.interp(np.log(x), np.log(xs), np.log(ys) if log_y else ys)
    return float(np.exp(y) if log_y else y)

def context_table(without: dict, with_: dict, metric: str = "f1_weighted") -> pd.DataFrame:
    """Per rate point of the sweep `with_` context: target, achieved BPF, MSE and `metric`; the rate the sweep `without`
    context needs for that MSE and the share of bits saved; `without`'s `metric` at the same rate (both interpolated
    between `without`'s rate points; nan outside them)."""
    a = without["rate_points"]
    rows = []
    for p in sorted(with_["rate_points"], key=lambda q: q["achieved_bpf_mean"]):
        bpf, mse = p["achieved_bpf_mean"], p["mse"]
        need = _along(mse, [q["mse"] for q in a], [q["achieved_bpf_mean"] for q in a])
        rows.append(dict(target_bpf=p["target_bpf"], bpf=bpf, mse=mse, bpf_without_at_mse=need, saving=1 - bpf / need,
                         **{metric: p["metrics"][metric], f"{metric}_without": _along(bpf, [q["achieved_bpf_mean"] for q in a],
                                                                                     [q["metrics"][metric] for q in a], log_y=False)}))
    return pd.DataFrame(rows)

def context_figures(label: str, without: dict, with_: dict) -> dict:
    "The rate–distortion and weighted-F1 figures of one pair of `context_pairs`, both sweeps in each."
    named = [(f"{label}: no context", without), (f"{label}: previous frame", with_)]
    top = max((p["achieved_bpf_mean"] for p in with_["rate_points"]), default=None)
    return dict(rd=F.fig_rd(named, bound_max_bpf=top), f1=F.fig_f1(named, layer_sweep=False))


# %%
#| code-fold: true
_ctx = copy.deepcopy(_demo); _ctx["config"]["context"] = "frame"
for _p in _ctx["rate_points"]: _p["achieved_bpf_mean"] *= 0.7  # a demonstration twin: the same distortion in 30% fewer bits
with tempfile.TemporaryDirectory() as _t:
    write_results(Path(_t) / "rate_sweep_SYNTH.json", _demo); write_results(Path(_t) / "rate_sweep_SYNTH_context_frame.json", _ctx)
    test_eq([l for l, _ in load_all(_t)[0]], ["SYNTH"])  # the book's own sweeps: the one without context
    _pairs = context_pairs(_t)
    test_eq([(l, a["config"].get("context"), b["config"]["context"]) for l, a, b in _pairs], [("SYNTH, synthetic blobs, fixed probe", None, "frame")])
    _tw = copy.deepcopy(_demo); _tw["config"]["checkpoint"] = "twin"  # a sweep without context on the same codebooks
    write_results(Path(_t) / "context" / "rate_sweep_SYNTH.json", _tw)
    test_eq([a["config"]["checkpoint"] for _, a, _ in context_pairs(_t)], ["twin"])  # preferred to the book's own
_ct = context_table(_demo, _ctx)
_in = _ct.dropna(subset=["bpf_without_at_mse"])
test_close(_in.saving.to_numpy(), np.full(len(_in), 0.3), eps=1e-9)  # 30% fewer bits at the same MSE
test_eq(len(_in), len(_demo["rate_points"]))  # every MSE of the twin lies on the curve without context
test_close(_along(5.0, [1, 10], [1, 10]), 5.0, eps=1e-12); test_eq(np.isnan(_along(20.0, [1, 10], [1, 10])), True)
test_eq(sorted(context_figures("SYNTH", _demo, _ctx)), ["f1", "rd"])


# %% [markdown]
# ### Checking a fresh run against the committed one
#
# `make book` first re-runs the synthetic sweep (the quick targets) from the committed codec into a scratch folder,
# named to the book by the environment variable `EIB_BOOK_RESULTS` (`eib.records.rerun_files`). `compare_runs`
# sets each of its rate points against the committed point of the same target: achieved rate and weighted F1 of
# both, and two checks: the fresh F1 lies inside the committed point's 95% interval, and the fresh achieved rate
# is within 1 BPF of the committed one. `describe_rerun` says whether the two runs share the codec, the test
# utterances and the seed, and whether every check passed.

# %%
#| export
def compare_runs(fresh: dict, committed: dict) -> pd.DataFrame:
    """One row per target rate present in both results objects: achieved BPF and weighted F1 of each, the committed
    95% interval, `f1_inside` (fresh F1 within it) and `bpf_close` (achieved rates within 1 BPF)."""
    old = {p["target_bpf"]: p for p in committed["rate_points"]}
    rows = []
    for p in fresh["rate_points"]:
        q = old.get(p["target_bpf"])
        if q is None: continue
        lo, hi = q["metrics"]["ci"]["f1_weighted"]
        f = p["metrics"]["f1_weighted"]
        rows.append(dict(target_bpf=p["target_bpf"], fresh_bpf=p["achieved_bpf_mean"], committed_bpf=q["achieved_bpf_mean"],
                         fresh_f1=f, committed_f1=q["metrics"]["f1_weighted"], committed_lo=lo, committed_hi=hi,
                         f1_inside=bool(lo - 1e-9 <= f <= hi + 1e-9),
                         bpf_close=bool(abs(p["achieved_bpf_mean"] - q["achieved_bpf_mean"]) <= 1.0)))
    return pd.DataFrame(rows, columns=["target_bpf", "fresh_bpf", "committed_bpf", "fresh_f1", "committed_f1", "committed_lo",
                                       "committed_hi", "f1_inside", "bpf_close"])

_SAME = (("codec_fingerprint", "codec"), ("test_ids_fingerprint", "test utterances"), ("seed", "seed"), ("rate_mode", "rate mode"))

def describe_rerun(label: str, fresh: dict, committed: dict | None) -> str:
    "A Markdown paragraph: what the fresh run shares with the committed one and whether its points agree."
    n = len(fresh["rate_points"])
    if committed is None:
        return (f"**{label}** was re-run by this build ({n} rate points), but no committed results file of it is present "
                "to check against.")
    same = [w for k, w in _SAME if fresh["config"].get(k) == committed["config"].get(k) and k in fresh["config"]]
    diff = [w for k, w in _SAME if fresh["config"].get(k) != committed["config"].get(k)]
    t = compare_runs(fresh, committed)
    s = (f"**{label}** was re-run by this build: {n} rate points, {len(t)} of them at targets the committed run has. "
         f"Same {', '.join(same) or 'nothing'}" + (f"; different {', '.join(diff)}" if diff else "") + ". ")
    uf, uc = fresh["baselines"]["unquantised"]["f1_weighted"], committed["baselines"]["unquantised"]["f1_weighted"]
    s += f"Unquantised weighted F1: {uf:.3f} now, {uc:.3f} committed. "
    if t.empty: return s + "No target in common: nothing to check."
    bad = t[~(t.f1_inside & t.bpf_close)]
    if bad.empty:
        return s + ("**The fresh run agrees with the committed one**: at every common target its weighted F1 lies inside the "
                    "committed 95% interval and its achieved rate is within 1 BPF.")
    return s + ("**The fresh run differs from the committed one** at " +
                ", ".join(f"{r.target_bpf:g} BPF ({'F1 outside the interval' if not r.f1_inside else ''}"
                          f"{' and ' if not r.f1_inside and not r.bpf_close else ''}{'rate off by more than 1 BPF' if not r.bpf_close else ''})"
                          for r in bad.itertuples()) + ": re-run the full sweep, or find what changed.")


# %%
#| code-fold: true
_old = F.demo_results("SYNTH", rates=(10, 50, 100), n_boot=50)
_new = copy.deepcopy(_old); _new["rate_points"] = [p for p in _new["rate_points"] if p["target_bpf"] != 50] + [
    dict(_old["rate_points"][0], target_bpf=300.0)]
_c = compare_runs(_new, _old)
test_eq(_c.target_bpf.tolist(), [10.0, 100.0]); assert _c.f1_inside.all() and _c.bpf_close.all()
assert "agrees with the committed one" in describe_rerun("SYNTH", _new, _old)
_new["rate_points"][1] = copy.deepcopy(_new["rate_points"][1]); _new["rate_points"][1]["achieved_bpf_mean"] += 3
_new["rate_points"][1]["metrics"] = copy.deepcopy(_old["rate_points"][0]["metrics"])   # the F1 of 10 BPF at 100 BPF
_d = describe_rerun("SYNTH", _new, _old)
assert "differs from the committed one** at 100 BPF (" in _d and "rate off by more than 1 BPF" in _d, _d
assert "no committed results file" in describe_rerun("SYNTH", _new, None)
_new["config"] = dict(_new["config"], seed=7)
assert "different seed" in describe_rerun("SYNTH", _new, _old)


# %% [markdown]
# ### Interactive charts with no network
#
# `eib.figures` draws each figure as an altair chart. In this website the charts are interactive (tooltips
# on every point) and load nothing from a CDN: `vega_script()` puts the Vega, Vega-Lite and vega-embed
# libraries **inline** in the page once (the bundle that vl-convert ships, about 0.9 MB), and `interactive(chart)`
# is a chart drawn by vega-embed (as SVG) from its spec, which altair has already made self-contained (the
# data is inline). The same outputs work in JupyterLab. For files, `eib.figures.save_figure` writes PNG and
# SVG; `save_book_figures` below does it for every dataset, and skips figures whose results file has not
# changed since it last wrote them.

# %%
#| export
class VegaScript:
    "The Vega, Vega-Lite and vega-embed libraries as one inline `<script>` (show once per page, before the charts)."
    def _repr_mimebundle_(self, include=None, exclude=None):
        import vl_convert as vlc
        js = vlc.javascript_bundle(vl_version=F.vl_version())
        if "</script" in js.lower(): raise EibError("the vl-convert bundle holds '</script' and cannot be inlined")
        return {"text/html": f'<script type="text/javascript" class="eib-vega-bundle">\n{js}\n</script>',
                "text/plain": "Vega, Vega-Lite and vega-embed, inline (no CDN)"}

def vega_script() -> VegaScript:
    "Show this once on a page (a notebook) before `interactive` charts."
    return VegaScript()

_CHART_IDS = itertools.count(1)

class VegaChart:
    "An altair chart shown by vega-embed from its inline spec (needs `vega_script()` earlier on the page)."
    def __init__(self, chart):
        self.spec = F.slim_spec(F.chart_spec(chart))  # only the data the chart reads
        # unique on the page (the same chart may be shown twice), and stable from one build to the next
        self.id = f"eib-chart-{next(_CHART_IDS)}-" + hashlib.sha1(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:8]
    def html(self) -> str:
        spec = json.dumps(self.spec).replace("</", "<\\/")
        return (f'<div class="eib-chart" id="{self.id}" style="overflow-x: auto; max-width: 100%;"></div>\n<script type="text/javascript">(function() {{\n'
                f'  var el = document.getElementById("{self.id}"), spec = {spec}, n = 0;\n'
                '  function go() {\n'
                '    if (window.vegaEmbed) vegaEmbed(el, spec, {renderer: "svg", actions: false})\n'
                '      .catch(function(e) { el.textContent = "This chart could not be drawn: " + e; });\n'
                '    else if (n++ < 200) setTimeout(go, 50);\n'
                '    else el.textContent = "This chart needs the Vega libraries: show eib.results.vega_script() first.";\n'
                '  }\n  go();\n})();</script>')
    def _repr_mimebundle_(self, include=None, exclude=None):
        t = self.spec.get("title", "")
        t = t.get("text", "") if isinstance(t, dict) else t
        return {"text/html": self.html(), "text/plain": f"chart: {t if isinstance(t, str) else ' '.join(t)}"}

def interactive(chart) -> VegaChart:
    "`chart` as an interactive vega-embed chart (offline: see `vega_script`)."
    return VegaChart(chart)


# %%
#| code-fold: true
_ch = F.fig_f1(_demo)
_h = interactive(_ch)._repr_mimebundle_()["text/html"]
_spec = json.loads(re.search(r"spec = (\{.*\}), n = 0;", _h).group(1).replace("<\\/", "</"))
test_eq(_spec, F.slim_spec(F.chart_spec(_ch)))                               # the page holds the spec, with the data it reads
assert "<script src" not in _h and '"url"' not in _h                     # nothing to fetch: no script file, no data URL
_i1, _i2 = interactive(_ch).id, interactive(_ch).id                      # the same chart twice: two ids on the page
assert _i1 != _i2 and _i1.split("-")[-1] == _i2.split("-")[-1], (_i1, _i2)
_b = vega_script()._repr_mimebundle_()["text/html"]
assert len(_b) > 100_000 and "window.vegaEmbed=" in _b and "<script src" not in _b
test_fail(lambda: interactive({"mark": "line"}), contains="expected an altair chart")


# %%
#| export
def _save_fast(chart, stem: str, d: Path, formats) -> None:
    "PNG and SVG of one chart drawn once: the PNG is the SVG rasterised (scale 2), at a third of the cost of two drawings."
    import vl_convert as vlc
    if set(formats) - {"png", "svg"}: F.save_figure(chart, stem, d, formats=formats); return
    svg = F.to_svg(chart)
    data = dict(svg=svg.encode(), png=vlc.svg_to_png(svg, scale=2.0))
    for f in formats:
        p = Path(d) / f"{stem}.{f}"
        F.atomic_write_bytes(p, data[f]); p.chmod(0o644)

def safe_name(label: str) -> str:
    "`label` as a file name: runs of other characters than letters, digits, `_.-` become `_`."
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "results"

def save_book_figures(named, out_dir="artifacts/figures", formats=("png", "svg"), compared: bool = True, names=None) -> dict:
    """Write every figure (or those in `names`) of every dataset, and with two or more datasets the compared ones, as
    `out_dir/<DATASET>/fig_<name>.png` and `.svg`; a folder whose `stamp.json` matches its results is left as it is.
    Returns `{folder: 'written'|'up to date'}`."""
    if names is not None and (bad := [n for n in names if n not in F.FIGURES]):
        raise EibError(f"unknown figures {bad}; known: {', '.join(F.FIGURES)}")
    out = Path(out_dir) if Path(out_dir).is_absolute() else repo_root() / out_dir
    groups = [(safe_name(lab), [(lab, r)]) for lab, r in named]
    if compared and len(named) > 1: groups.append(("compared", list(named)))
    done = {}
    for name, rs in groups:
        d = out / name
        stamp = dict(results=fingerprint([(lab, r) for lab, r in rs]), formats=list(formats), figures=list(names or F.FIGURES))
        sp = d / "stamp.json"
        if sp.exists() and json.loads(sp.read_text()) == stamp:
            done[name] = "up to date"; continue
        for k, ch in F.all_figures(rs).items():
            if names is None or k in names: _save_fast(ch, f"fig_{k}", d, formats)
        atomic_write_text(sp, json.dumps(stamp, indent=1)); sp.chmod(0o644)
        done[name] = "written"
    return done


# %%
#| code-fold: true
_small = F.demo_results("SYNTH", rates=(10, 100), n_boot=20)
with tempfile.TemporaryDirectory() as _t:
    _two = [("SYNTH", _small), ("B", _small)]
    test_eq(save_book_figures(_two, _t, formats=("svg",), names=("rd",)), {"SYNTH": "written", "B": "written", "compared": "written"})
    test_eq(sorted(p.name for p in (Path(_t) / "SYNTH").iterdir()), ["fig_rd.svg", "stamp.json"])
    ET.parse(Path(_t) / "compared" / "fig_rd.svg")
    test_eq(save_book_figures(_two, _t, formats=("svg",), names=("rd",))["compared"], "up to date")
    test_eq(save_book_figures(_two[:1], _t, names=("rd",)), {"SYNTH": "written"})   # asked for other formats: redrawn
    test_eq((Path(_t) / "SYNTH" / "fig_rd.png").read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
    test_fail(lambda: save_book_figures(_two, _t, names=("f9",)), contains="known: f1")
    test_eq(safe_name("RAVDESS (compare, linear_probe)"), "RAVDESS_compare_linear_probe")

# %% [markdown]
# ### One dataset's section
#
# `show_dataset` displays, for one results object: what was run, the two baselines, the table at the book's
# rates, per-class precision and recall, and every figure of `eib.figures` that the file can support.

# %%
#| export
ENCODERS = {"compare": "openSMILE ComParE low-level descriptors (a hand-crafted stand-in)",
            "whisper_base": "Whisper base, encoder layer 3 (a learned 50 Hz representation, 512 dims)",
            "emotion2vec_base": "emotion2vec base", "emotion2vec_plus_base": "emotion2vec+ base",
            "emotion2vec_plus_large": "emotion2vec+ large"}
FIGURE_TITLES = dict(f1="Weighted F1 against the achieved rate", confidence="Confidence and true-class probability",
                     recall="Per-emotion recall", precision="Per-emotion precision", true_prob="Per-emotion true-class probability",
                     confusion="Confusion matrices", rd="Rate and distortion", rate_control="Rate-control precision")

COLUMN_TITLES = dict(asked_bpf="asked BPF", target_bpf="target BPF", achieved_bpf="achieved BPF", off_pct="off by (%)",
                     f1_weighted="weighted F1", f1_weighted_lo="weighted F1 low", f1_weighted_hi="weighted F1 high",
                     f1_macro="macro F1", f1_macro_lo="macro F1 low", f1_macro_hi="macro F1 high",
                     mean_true_label_prob="true-class probability", median_abs_err="median |error| (BPF)",
                     p95_abs_err="95th percentile |error| (BPF)", within_1bpf="share within ±1 BPF",
                     max_set_err="largest |set mean − target| (BPF)", capped_targets="capped targets",
                     unquantised_f1="unquantised weighted F1", majority_f1="majority-class weighted F1",
                     best_decoded_f1="best decoded weighted F1", holds_ci_from_bpf="inside the unquantised interval from (BPF)",
                     holds_90pct_from_bpf="≥ 90% of unquantised from (BPF)", lowest_bpf="lowest BPF", highest_bpf="highest BPF",
                     fresh_bpf="achieved BPF now", committed_bpf="achieved BPF committed", fresh_f1="weighted F1 now",
                     committed_f1="weighted F1 committed", committed_lo="committed low", committed_hi="committed high",
                     f1_inside="F1 inside the interval", bpf_close="rate within 1 BPF",
                     bpf_without_at_mse="BPF without context at that MSE", saving="bits saved", f1_weighted_without="weighted F1 without context, same BPF")

def _title(c): return COLUMN_TITLES.get(c, c.replace("_", " ")) if isinstance(c, str) else c

class Table:
    "A styled table that scrolls sideways when it is wider than the page."
    def __init__(self, styler): self.styler = styler
    def _repr_html_(self):
        return f'<div class="eib-table" style="overflow-x: auto; font-size: 0.85em;">\n{self.styler.to_html()}\n</div>'

def fmt_table(df: pd.DataFrame, digits: int = 3) -> Table:
    """`df` for the page: readable column titles (`COLUMN_TITLES`), `digits` decimals (rates asked or targeted as
    `10`), a dash for a missing value, scrolling when wide."""
    df = df.rename(columns=_title)
    df.index.names = [_title(n) for n in df.index.names]
    df.columns.names = [_title(n) for n in df.columns.names]
    g = lambda v: f"{v:g}" if isinstance(v, float) else v
    st = df.style.format(precision=digits, na_rep="–").format_index(g).set_table_attributes('class="table table-sm"')
    whole = [c for c in df.columns if (c if isinstance(c, str) else c[-1]) in ("asked BPF", "target BPF")]
    return Table(st.format(g, subset=whole, na_rep="–") if whole else st)

def describe_run(label: str, r: dict) -> str:
    "A Markdown paragraph: corpus, encoder, classifier, test set, rate mode and when it ran, from the results file."
    cfg, n = r["config"], r["baselines"]["unquantised"]["n"]
    enc = ENCODERS.get(r["encoder"], r["encoder"])
    s = (f"**{label}**: encoder {enc}; classifier `{r['classifier']}` (label protocol `{r['label_protocol']}`, "
         f"{len(r['classes'])} classes: {', '.join(r['classes'])}); {n} test utterances; rate mode `{cfg.get('rate_mode')}`; "
         f"{len(r['rate_points'])} rate points, {len(r['layer_sweep'])} layer-sweep points; created {r['created']}.")
    if r.get("notes"): s += f"\n\n*Notes of the sweep:* {r['notes']}"
    return s

def show_dataset(label: str, r: dict, rates=BOOK_RATES, figures: bool = True, level: str = "###"):
    "Display one dataset's section (tables, landmarks and, with `figures`, every interactive figure)."
    display(Markdown(describe_run(label, r)))
    b = F.baseline_table([(label, r)]).set_index("curve")[["accuracy", "f1_weighted", "f1_weighted_lo", "f1_weighted_hi",
                                                           "f1_macro", "mean_true_label_prob"]]
    display(Markdown(f"{level} {label}: baselines"), fmt_table(b))
    if not r["rate_points"]:
        display(Markdown("No rate point has been measured yet: the tables wait for the sweep; the figures below show what the "
                         "baselines and the Gaussian R(D) curve allow."))
        if figures: show_figures([(label, r)], f"{level} {label}:")
        return
    display(Markdown(f"{level} {label}: at {', '.join(f'{x:g}' for x in rates)} BPF\n\nEach row is the rate point whose "
                     "achieved rate is nearest to the asked one (*off by*: how far, in per cent; *capped*: the controller "
                     "could not reach the target)."),
            fmt_table(at_rates([(label, r)], rates).drop(columns="dataset").set_index("asked_bpf"), 3))
    display(Markdown(describe_drop(label, drop_points(r))))
    display(Markdown(f"{level} {label}: per-class precision and recall\n\nColumns: the unquantised features, then the rate "
                     "point nearest to each asked rate (its achieved BPF in brackets). A dash: the class is never predicted."),
            fmt_table(class_grid([(label, r)], rates), 2))
    if figures: show_figures([(label, r)], f"{level} {label}:")

COMPARED_FIGURES = ("f1", "confidence", "rd", "rate_control")  # one panel for every file; the rest are on each file's page

def show_figures(named, heading: str, names=None):
    """Display every figure `named` supports (of `names`, default all), interactive, each under `heading` + its title;
    then say which are left out and why."""
    ok, why = F.figures_and_reasons(named, names)
    for k, ch in ok.items(): display(Markdown(f"{heading} {FIGURE_TITLES.get(k, k)}"), interactive(ch))
    s = f"{len(ok)} of the {len(names or F.FIGURES)} figures of `eib.figures` drawn"
    s += (": left out " + "; ".join(f"*{FIGURE_TITLES.get(k, k)}* ({w})" for k, w in why.items()) + ".") if why else "."
    display(Markdown(s))


# %%
#| export
def reader_command(cmd: str) -> str:
    """A results file's recorded command as a reader can run it: the corpus folder of the machine that ran it
    (`-p data_root` / `--root`) becomes `~/corpora/<its last part>`, the place the book's commands use."""
    return re.sub(r"(-p data_root |--root )(?!None\b)(\S*/)?([^/\s]+)/?(?=\s|$)", r"\1~/corpora/\3", cmd)


# %%
test_eq(reader_command("papermill nbs/sweep.ipynb -p dataset emodb -p data_root /mnt/lab/datasets/emodb -p rates 'full'"),
        "papermill nbs/sweep.ipynb -p dataset emodb -p data_root ~/corpora/emodb -p rates 'full'")
test_eq(reader_command("x -p data_root None -p y 1"), "x -p data_root None -p y 1")
test_eq(reader_command("eib-prepare --root /data/ravdess/"), "eib-prepare --root ~/corpora/ravdess")

# %%
#| code-fold: true
from IPython.utils.capture import capture_output
with capture_output() as _o: show_dataset("SYNTH", _small, rates=(10, 100))
_md = [o.data["text/markdown"] for o in _o.outputs if "text/markdown" in o.data]
assert any("SYNTH: per-class precision and recall" in m for m in _md)
test_eq(sum("eib-chart" in o.data.get("text/html", "") for o in _o.outputs), len(F.all_figures(_small)))
assert f"{len(F.FIGURES)} of the {len(F.FIGURES)} figures" in _md[-1], _md[-1]
with capture_output() as _o: show_dataset("SYNTH", _small | dict(rate_points=[]), figures=False)
assert "No rate point" in _o.outputs[-1].data["text/markdown"]
_ok, _why = F.figures_and_reasons([("SYNTH", _small | dict(rate_points=[]))])
test_eq(set(_ok) | set(_why), set(F.FIGURES)); assert "f1" in _why and "rate sweep" in _why["f1"]
_html = fmt_table(at_rates(_small, rates=(10,)).set_index("asked_bpf"))._repr_html_()
assert ">10</th>" in _html and "10.000000" not in _html and ">target BPF</th>" in _html and "overflow-x" in _html
