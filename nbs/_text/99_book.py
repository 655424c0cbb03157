# %% [markdown]
# # Building this website
#
# > Building the website: run the chapters on the embedded default, then render them with Quarto or smalldocs.

# %%
#| default_exp book

# %%
#| export
from __future__ import annotations
import argparse, filecmp, os, re, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import nbformat, yaml
from eib.core import EibError, repo_root, run_cli
from eib import figures as F, results as R

# %%
from fastcore.test import test_eq, test_fail
from eib.records import write_results


# %% [markdown]
# ## The chapters
#
# `_quarto.yml` at the top of the repository is a real Quarto website project; its `project.render` list
# names the pages in reading order, and the sidebar shows them in that order.

# %%
#| export
def quarto_config(root: str | Path | None = None) -> dict:
    "The parsed `_quarto.yml` of the repository."
    p = Path(root or repo_root()) / "_quarto.yml"
    if not p.exists(): raise EibError(f"{p} is missing: the website project needs it")
    return yaml.safe_load(p.read_text())

def pages(root: str | Path | None = None) -> list[str]:
    "The page sources of the website, in reading order, relative to the repository root."
    return [str(x) for x in quarto_config(root)["project"]["render"]]


# %%
ps = pages()
test_eq(ps[0], "index.qmd")
test_eq([p for p in ps if "*" not in p and not (repo_root() / p).exists()], [])  # api/*.qmd is written at build time


# %% [markdown]
# ## Running a chapter
#
# A chapter notebook runs as `nbdev_test` runs it: in its own folder, skipping cells marked with a test flag
# from `settings.ini` (e.g. `#| slow`) and cells marked `#| eval: false`; the outputs are kept for the website.
# A failing cell stops the build with the notebook's name and the error.

# %%
#| export
def _directives(source: str) -> dict:
    "The `#| key: value` lines at the top of a cell's source."
    out = {}
    for line in source.splitlines():
        s = line.strip()
        if not s.startswith("#|"): break
        k, *v = s[2:].strip().split(maxsplit=1)
        out[k.rstrip(":")] = v[0].strip() if v else ""
    return out

def skipped(cell, flags=("slow",)) -> bool:
    "Whether a book build (like `nbdev_test`) leaves `cell` unexecuted."
    if cell.get("cell_type") != "code": return True
    d = _directives(cell.get("source", ""))
    return d.get("eval", "").lower() == "false" or any(f in d for f in flags)


# %%
test_eq(_directives("#| export\n#| eval: false\nx = 1"), {"export": "", "eval": "false"})
test_eq(skipped({"cell_type": "code", "source": "#| slow\ntrain()"}), True)
test_eq(skipped({"cell_type": "code", "source": "x = 1"}), False)
test_eq(skipped({"cell_type": "markdown", "source": "# title"}), True)


# %%
#| export
def execute_notebook(src: str | Path, dst: str | Path, flags=("slow",)) -> float:
    "Run notebook `src` in its own folder, write it with outputs to `dst`; return the seconds it took."
    import traceback
    from execnb.shell import CaptureShell
    from execnb.nbio import read_nb, write_nb
    src, dst = Path(src).resolve(), Path(dst)
    nb = read_nb(src)
    t0, cwd = time.time(), os.getcwd()
    sh = CaptureShell(src)
    try:
        os.chdir(src.parent)
        sh.run_all(nb, exc_stop=True, preproc=lambda c: skipped(c, flags))
    except Exception as e:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__)[-12:])
        raise EibError(f"running {src.name} failed:\n{tb}") from e
    finally: os.chdir(cwd)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, dst)
    return time.time() - t0


# %%
with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)"),
                                         nbformat.v4.new_code_cell("#| slow\nraise SystemExit"),
                                         nbformat.v4.new_code_cell("import os; os.getcwd()")])
    nbformat.write(nb, d / "a.ipynb")
    execute_notebook(d / "a.ipynb", d / "out" / "a.ipynb")
    out = nbformat.read(d / "out" / "a.ipynb", as_version=4)
    test_eq(out.cells[0].outputs[0]["text"], "42\n")
    test_eq(out.cells[1].get("outputs"), [])
    test_eq(Path(eval(out.cells[2].outputs[0]["data"]["text/plain"])).resolve(), d.resolve())
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1/0")]), d / "b.ipynb")
    test_fail(lambda: execute_notebook(d / "b.ipynb", d / "out" / "b.ipynb"), contains="b.ipynb")


# %% [markdown]
# ## Rendering
#
# The site is built in a staging folder `_book/`: a copy of the website project in which each chapter notebook
# is replaced by its executed copy (with `execute=True`) and the API reference pages are written from the
# docstrings of `eib` (`smalldocs api build`). `quarto render` builds it when Quarto is on `PATH`; otherwise
# `smalldocs render`, which reads the same `_quarto.yml`. The finished site replaces `out` in one move.

# %%
#| export
def renderer() -> list[str]:
    "The command that renders the website: Quarto when installed, else smalldocs."
    q = shutil.which("quarto")
    if q: return [q, "render"]
    sd = Path(sys.executable).parent / "smalldocs"
    return [str(sd) if sd.exists() else "smalldocs", "render"]


# %%
_rd = renderer(); assert Path(_rd[0]).name in ("quarto", "smalldocs"), _rd


# %%
#| export
def write_api_pages(stage: str | Path, quiet: bool = False) -> list[Path]:
    "Write the API reference pages of `eib` into `stage/api/` (with `smalldocs api build`) and their index."
    stage = Path(stage)
    sd = Path(sys.executable).parent / "smalldocs"
    subprocess.run([str(sd) if sd.exists() else "smalldocs", "api", "build", "--dir", str(stage)],
                   check=True, capture_output=quiet)
    mods = sorted(p for p in (stage / "api").glob("*.qmd") if p.name != "index.qmd")
    lines = ["---", "title: API reference", "---", "",
             "Every public function and class of the `eib` package, from its docstrings. "
             "Each module is exported from the chapter notebook of the same name.", ""]
    lines += [f"- [`eib.{p.stem}`]({p.name})" for p in mods]
    (stage / "api" / "index.qmd").write_text("\n".join(lines) + "\n")
    return mods


# %% [markdown]
# ## The first page
#
# `index.qmd` holds the line `<!-- eib:headline -->` where the book's answer goes: `write_landing` replaces it, in the
# staged copy, with the lines of `eib.results.headline` and the chart of `eib.results.headline_chart` (an SVG file
# beside the page), both read from the results files of the build. The committed `index.qmd` keeps the marker.

# %%
#| export
LANDING_MARK = "<!-- eib:headline -->"

def write_landing(stage: str | Path, results_dir: str | Path | None = None) -> str:
    "Put the book's answer and its chart into `stage/index.qmd` at `LANDING_MARK`; return the Markdown put there."
    stage = Path(stage); idx = stage / "index.qmd"
    text = idx.read_text()
    if LANDING_MARK not in text: raise EibError(f"{idx} has no line {LANDING_MARK!r} for the book's answer")
    named, _ = R.load_all(Path(results_dir) if results_dir else stage / "evaluation_results")
    md = "\n".join(R.headline(named))
    chart = R.headline_chart(named)
    if chart is not None:
        (stage / "figures").mkdir(exist_ok=True)
        (stage / "figures" / "headline.svg").write_text(F.to_svg(chart))
        md += ('\n\n![Weighted F1 of emotion recognition on decoded features against the achieved rate (log axis); '
               'bands: 95% bootstrap intervals.](figures/headline.svg){#fig-headline .eib-headline}')
    idx.write_text(text.replace(LANDING_MARK, md, 1))
    return md


# %%
with tempfile.TemporaryDirectory() as d:
    d = Path(d); (d / "evaluation_results").mkdir()
    _r = F.demo_results("SYNTH", rates=(10, 100), layer_bpf=None, n_boot=30); _r["encoder"] = "whisper_base"
    write_results(d / "evaluation_results" / "rate_sweep_SYNTH_whisper_base.json", _r)
    (d / "index.qmd").write_text(f"# Home\n\n{LANDING_MARK}\n\nMore.\n")
    _md = write_landing(d)
    test_eq(_md.startswith("- **SYNTH** (synthetic speech"), True)
    test_eq(LANDING_MARK in (d / "index.qmd").read_text(), False)
    test_eq((d / "figures" / "headline.svg").read_text()[:4], "<svg")
    test_fail(lambda: write_landing(d), contains="eib:headline")  # the marker is gone now

# %% [markdown]
# ## A page per results file
#
# Every sweep's tables and charts on one page would weigh tens of megabytes (a chart carries its data), so the
# Results page compares the sweeps and links one page per results file. `write_result_pages` makes them in the staged
# copy from the template chapter `22_dataset.ipynb`, with its parameter `label` set to each file's label, runs them,
# and lists them in the staged `_quarto.yml`, after the Results page and under it in the sidebar.

# %%
#| export
RESULT_TEMPLATE = "nbs/22_dataset.ipynb"

def result_page(label: str) -> str:
    "The page (relative to the repository root) of the results file labelled `label`."
    return f"nbs/results/{R.safe_name(label)}.ipynb"

_LINK = re.compile(r"\]\((?![a-zA-Z][a-zA-Z0-9+.-]*:|/|#)([^)\s]+)\)")

def relink(md: str, prefix: str = "../") -> str:
    "Markdown `md` with every relative link target prefixed by `prefix`: the template's links, from a page one folder down."
    return _LINK.sub(lambda m: f"]({prefix}{m.group(1)})", md)

def write_result_pages(stage: str | Path, flags=("slow",), quiet: bool = False) -> list[str]:
    "Make, run and list one page per results file of `stage/evaluation_results` from `RESULT_TEMPLATE`; return the pages."
    stage = Path(stage)
    named, _ = R.load_all(stage / "evaluation_results")
    tmpl, made = nbformat.read(stage / RESULT_TEMPLATE, as_version=4), []
    for c in tmpl.cells:  # the pages live in nbs/results/, one folder below the chapters they link to
        if c.cell_type == "markdown": c.source = relink(c.source)
    for lab, r in named:
        nb = nbformat.from_dict(tmpl)
        nb.cells[0].source = f"# {lab}\n\n> {R.ENCODERS.get(r['encoder'], r['encoder'])}; classifier `{r['classifier']}`: the whole results file."
        par = [c for c in nb.cells if c.source.startswith("label = None")]
        if len(par) != 1: raise EibError(f"{RESULT_TEMPLATE} needs one cell starting with 'label = None'")
        par[0].source = f"label = {lab!r}"
        page = result_page(lab)
        (stage / page).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, stage / page)
        secs = execute_notebook(stage / page, stage / page, flags)
        if not quiet: print(f"ran {page} in {secs:.1f} s", flush=True)
        made.append(page)
    cfg = quarto_config(stage)
    render = cfg["project"]["render"]
    at = render.index("nbs/21_results.ipynb") + 1
    cfg["project"]["render"] = render[:at] + made + render[at:]
    for sec in cfg["website"]["sidebar"]["contents"]:
        if isinstance(sec, dict) and "nbs/21_results.ipynb" in sec.get("contents", []):
            sec["contents"] = ["nbs/21_results.ipynb", dict(section="Per results file", contents=made)] if made else sec["contents"]
    (stage / "_quarto.yml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return made


# %%
test_eq(result_page("RAVDESS (compare, linear_probe)"), "nbs/results/RAVDESS_compare_linear_probe.ipynb")
test_eq(relink("on [Results](21_results.ipynb), [the code](https://x.org/a), [below](#top), [up](/x) and ![a](fig.svg)"),
        "on [Results](../21_results.ipynb), [the code](https://x.org/a), [below](#top), [up](/x) and ![a](../fig.svg)")

# %%
#| export
_STAGED = ("_quarto.yml", "index.qmd", "favicon.svg", "styles.css", "nbs", "api", "figures", "evaluation_results")

def build_site(out: str | Path = "_site", execute: bool = False, root: str | Path | None = None,
               flags=("slow",), quiet: bool = False) -> Path:
    "Stage the website project, optionally run its chapters, render it, and move the site to `out`."
    root = Path(root or repo_root()).resolve()
    quarto_config(root)  # fails early, with a clear message, when the project file is missing
    out = (root / out).resolve() if not Path(out).is_absolute() else Path(out)
    stage = root / "_book"
    shutil.rmtree(stage, ignore_errors=True); stage.mkdir()
    for name in _STAGED:
        p = root / name
        if p.is_dir(): shutil.copytree(p, stage / name, ignore=shutil.ignore_patterns("_text", ".ipynb_checkpoints", "__pycache__"))
        elif p.exists(): shutil.copy2(p, stage / name)
    if execute:
        for page in pages(root):
            if not page.endswith(".ipynb"): continue
            secs = execute_notebook(root / page, stage / page, flags)
            if not quiet: print(f"ran {page} in {secs:.1f} s", flush=True)
        write_result_pages(stage, flags, quiet)
    write_landing(stage)
    write_api_pages(stage, quiet)
    cmd = renderer()
    subprocess.run([*cmd, str(stage)] + (["--quiet"] if quiet and cmd[0].endswith("smalldocs") else []), check=True)
    site = stage / quarto_config(stage)["project"].get("output-dir", "_site")
    if not (site / "index.html").exists(): raise EibError(f"rendering gave no {site}/index.html")
    tmp = out.with_name(out.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    if out.exists(): out.rename(tmp)
    shutil.move(str(site), str(out))
    shutil.rmtree(tmp, ignore_errors=True)
    return out


# %% [markdown]
# ## Is the library in step with its notebooks?
#
# `check_sync` repeats `nbdev_export`, `nbdev_clean` and the jupytext twins (`nbs/_text/*.py`) in a
# scratch copy and lists every tracked file that they would change. CI fails when the list is not empty.

# %%
#| export
def check_sync(root: str | Path | None = None) -> list[str]:
    "Files that `nbdev_export`, `nbdev_clean` or `make text` would change (empty when all is in step)."
    root = Path(root or repo_root()).resolve()
    bin_ = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for name in ("settings.ini", "jupytext.toml", "nbs", "eib"):
            (shutil.copytree if (root / name).is_dir() else shutil.copy2)(root / name, d / name)
        env = {**os.environ, "PYTHONPATH": ""}
        subprocess.run([bin_ / "nbdev_export"], cwd=d, check=True, env=env)
        subprocess.run([bin_ / "nbdev_clean"], cwd=d, check=True, env=env)
        for nb in sorted((d / "nbs").glob("*.ipynb")):
            subprocess.run([bin_ / "jupytext", "-q", "--to", "py:percent", str(nb), "-o",
                            str(d / "nbs" / "_text" / (nb.stem + ".py"))], check=True)
        changed = []
        for sub in ("eib", "nbs"):
            for p in sorted((d / sub).rglob("*")):
                if p.is_dir() or "__pycache__" in p.parts or ".ipynb_checkpoints" in p.parts: continue
                rel = p.relative_to(d)
                if not (root / rel).exists() or not filecmp.cmp(p, root / rel, shallow=False): changed.append(str(rel))
        return changed


# %%
with tempfile.TemporaryDirectory() as d:
    (Path(d) / "settings.ini").write_text("[DEFAULT]\n")
    test_fail(lambda: build_site(root=d), contains="_quarto.yml")


# %% [markdown]
# ## Command line
#
# `eib-book --execute --out _site` is what `make book` runs; `--check-sync` is what `make test` runs first.

# %%
#| export
def main(argv=None):
    "Build the website (`--execute` runs the chapters first), or check that the library matches its notebooks."
    ap = argparse.ArgumentParser(prog="eib-book", description=main.__doc__)
    ap.add_argument("--out", default="_site", help="site folder (default: _site)")
    ap.add_argument("--execute", action="store_true", help="run the chapter notebooks first (skipping slow cells)")
    ap.add_argument("--check-sync", action="store_true", help="only check eib/, notebooks and text twins are in step")
    ap.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    a = ap.parse_args(argv)
    def work():
        if a.check_sync:
            changed = check_sync()
            if changed:
                print("out of step with the notebooks (run `make export clean-nbs text` and commit):\n  " + "\n  ".join(changed))
                return 1
            print("eib/, notebooks and nbs/_text/ are in step"); return 0
        print(f"site written to {build_site(a.out, execute=a.execute)}"); return 0
    return run_cli("eib-book", work, a.debug)

def book_cli(argv=None):
    "Console script `eib-book`."
    sys.exit(main(argv))
