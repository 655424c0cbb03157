# %% [markdown]
# # How to reproduce
#
# > The commands behind every number and page of this book, and where their results land.

# %% [markdown]
# Everything runs on a machine with Python 3.11 and access to the package registries (PyPI and Debian) only;
# after the set-up, nothing needs a network. Run the commands from the top of the repository.
#
# ## The two commands
#
# ```bash
# make book   # set up (.venv from the pinned files, Debian packages when root), run the chapters, render the website into _site/
# make test   # set up, then every test: the notebooks (nbdev_test) and pytest (papermill, the website in headless Chromium, ...)
# ```
#
# Each prints how long its set-up and its work took. `make book` first re-runs the synthetic sweeps at the quick
# targets (10, 100, 200, 300 BPF), with both encoders (ComParE, and Whisper base, whose store it makes from the
# rendered corpus first) and the fixed probe, without the layer sweep, from the committed codecs into
# `_cache/book_results/` (`make book BOOK_RATES=full` re-runs all 44), and the [Results](21_results.ipynb) chapter
# checks each fresh run against the committed results file of the same dataset, encoder and classifier. Then it runs every chapter notebook listed in `_quarto.yml`
# (skipping cells marked `#| slow`, as `nbdev_test` does), writes the API reference from the docstrings, and renders
# the site with Quarto when `quarto` is on `PATH`, otherwise with smalldocs (pure Python, the same `_quarto.yml`).
# Open `_site/index.html`, or serve it: `python -m http.server -d _site 8000 --bind 127.0.0.1`. The same build,
# without the set-up: `.venv/bin/eib-book --execute --out _site` ([book](99_book.ipynb)).
#
# ## The dataset sweeps
#
# A sweep codes the test utterances of one dataset at every target rate, runs the classifier on the decoded
# features, and writes `evaluation_results/rate_sweep_<DATASET>.json` after every rate point (an interrupted run
# resumes where it stopped). It is the parameterised notebook `nbs/sweep.ipynb`, run with papermill:
#
# ```bash
# .venv/bin/papermill nbs/sweep.ipynb out/sweep_ravdess.ipynb -k python3 --cwd nbs \
#     -p dataset ravdess -p data_root ~/corpora/ravdess -p rates full
# .venv/bin/papermill nbs/sweep.ipynb out/sweep_emodb.ipynb -k python3 --cwd nbs -p dataset emodb -p rates full
# .venv/bin/papermill nbs/sweep.ipynb out/sweep_synth.ipynb -k python3 --cwd nbs -p dataset synth -p rates full
# # the learned encoder (Whisper base, layer 3); its deep codec reaches far above 300 BPF, hence the `span` targets
# .venv/bin/papermill nbs/sweep.ipynb out/sweep_ravdess_w.ipynb -k python3 --cwd nbs \
#     -p dataset ravdess -p data_root ~/corpora/ravdess -p encoder whisper_base -p rates span
# .venv/bin/papermill nbs/sweep.ipynb out/sweep_emodb_w.ipynb -k python3 --cwd nbs -p dataset emodb -p encoder whisper_base -p rates span
# # any folder with a manifest.csv (path, speaker, emotion, split)
# .venv/bin/papermill nbs/sweep.ipynb out/x.ipynb -k python3 --cwd nbs -p dataset manifest -p data_root DIR -p name NAME -p encoder whisper_base
# ```
#
# `data_root` is where your copy of the corpus lies (`~/corpora/ravdess` above stands for it); without it the sweep
# looks in the datasets folder of `eib.core.datasets_root()` (`$EIB_SHARED/datasets`). The short form `papermill
# nbs/sweep.ipynb out/sweep_ravdess.ipynb -p dataset ravdess -p data_root ~/corpora/ravdess` works too (a relative
# `data_root` is taken from the working directory, else from the repository root). Parameters: `rates` is `quick` (10, 100, 200, 300 BPF), `full` (the thesis's 44 targets: 10 to 200
# in steps of 5, then 220 to 300 in steps of 20) or a list such as `"[10, 20, 50]"`; `encoder` is `compare` (the
# offline default) or an emotion2vec model when its weights are present; `rate_mode` is `utterance` (λ per
# utterance) or `set`; `samples_per_emotion` sizes the test subset; `layer_sweep` adds the plain-RVQ baseline, at `layer_points` depths (12 by default). The
# features (`data_subset/<dataset>`) and the codec (`checkpoints/<dataset>_cpu`) are made on first use. Those of a
# licensed corpus stay out of git; its results file may be committed.
#
# The [Results](21_results.ipynb) and [Findings](20_findings.ipynb) chapters read every results file present the
# next time the book is built.
#
# ## Step by step, with the console scripts
#
# The sweep calls the library; the same steps exist as console scripts (each has `--help`):
#
# ```bash
# # 1. features: a feature store data_subset/<name>/ (features/<id>.npy, manifest.csv, meta.json)
# .venv/bin/eib-prepare --dataset ravdess --root ~/corpora/ravdess --encoder compare
# .venv/bin/eib-prepare --dataset synth                      # the embedded synthetic corpus
# # 2. a codec: grouped RVQ + entropy model, trained on the store's training split
# .venv/bin/eib-train --features data_subset/ravdess --preset cpu --out checkpoints/ravdess_cpu
# # 3. compress one utterance's (T, D) features to a target rate (the whole stream counted), or at a given λ
# .venv/bin/eib-compress --checkpoint checkpoints/synth_cpu --bpf 50 data_subset/synth/features/en-029-f1_angry_s04.npy /tmp/u.eib
# .venv/bin/eib-compress --checkpoint checkpoints/synth_cpu --lam 0.5 data_subset/synth/features/en-029-f1_angry_s04.npy /tmp/u.eib
# # 4. decode it back to a (T, D) float32 array
# .venv/bin/eib-decompress --checkpoint checkpoints/synth_cpu /tmp/u.eib /tmp/u.npy
# ```
#
# ## Benchmarks
#
# Scripts in `benchmarks/` print what they measure, with the machine and thread count, and ratios side by side:
#
# ```bash
# .venv/bin/python benchmarks/bench_extract.py        # feature extraction: utterances/s and audio s per wall s, 1 vs 2 workers
# .venv/bin/python benchmarks/bench_codec.py          # ECVQ encode (cached + batched vs the thesis's scheme), coded vs ideal bits, decode
# .venv/bin/python benchmarks/bench_rate.py --limit 60  # rate control: precision, encoder passes, speed vs linear-λ bisection
# .venv/bin/python benchmarks/bench_train.py --features data_subset/ravdess data_subset/ravdess_whisper_base  # eib-train: old recipe vs new (time, validation)
# .venv/bin/python benchmarks/bench_train.py --no-train --sweep  # the literal quick RAVDESS sweep on a fresh clone, with its phase times
# .venv/bin/python benchmarks/bench_rate.py --features data_subset/synth --checkpoint checkpoints/synth_cpu
# .venv/bin/python benchmarks/probe_mismatch.py          # clean-trained probe vs one fitted on decoded features (RAVDESS)
# .venv/bin/python benchmarks/whisper_layer.py           # which Whisper-base layer: speaker-grouped CV on RAVDESS's training split
# ```
#
# ## The λ explorer
#
# ```bash
# make lab    # = .venv/bin/jupyter lab --ip 127.0.0.1 --no-browser [--allow-root when root] nbs
# ```
#
# then open `17_explorer.ipynb` and run it: sliders for λ (log scale) and for a target rate, and an utterance picker
# ([the λ explorer](17_explorer.ipynb)).
#
# ## Tests
#
# ```bash
# .venv/bin/nbdev_test --n_workers 2 --timing          # every notebook, skipping cells marked #| slow
# .venv/bin/nbdev_test --path nbs/21_results.ipynb     # one notebook
# .venv/bin/nbdev_test --flags slow                    # the slow cells too
# .venv/bin/python -m pytest -q tests                  # papermill, round trips, the website in headless Chromium, ...
# .venv/bin/eib-book --check-sync                      # eib/, the notebooks and their nbs/_text twins in step
# ```
#
# After editing a notebook: `make export` (nbdev_export), `make clean-nbs` (nbdev_clean), `make text` (the jupytext
# twins in `nbs/_text/`). `.ci/run` runs `make test` and then fails if `nbdev_export` or `nbdev_clean` would change a
# tracked file.
#
# ## Where things land
#
# | path | what |
# |---|---|
# | `_site/` | the website (`make book`); `artifacts/site/` is the copy the browser test builds |
# | `evaluation_results/rate_sweep_<DATASET>.json` | one results file per sweep (schema `eib.records.RESULTS_SCHEMA`) |
# | `evaluation_results/rate_sweep_<DATASET>_<encoder>[_head].json` | a sweep on emotion2vec features; `_head`: the same points scored by an emotion2vec_plus model's own head |
# | `evaluation_results/superseded/` | a results file of another configuration, set aside when a sweep starts afresh (a fresh clone retrains a licensed corpus's codec, so its sweep does not resume the committed file but keeps it here) |
# | `artifacts/figures/<DATASET>/fig_*.png`, `.svg` | every figure as a file, written when the Results chapter runs |
# | `artifacts/screenshots/` | a screenshot of every page, from the browser test |
# | `data_subset/<dataset>/` | feature stores (only the synthetic one is committed) |
# | `checkpoints/<dataset>_<preset>/` | codecs (only the synthetic ones are committed) |
# | `_cache/book_results/` | the synthetic sweep `make book` has just re-run, and its executed notebook |
# | `out/` | executed copies of papermill runs |
#
# ## How the results files present were made
#
# Each results file records the command that made it (its corpus folder shown as `~/corpora/<name>`, as in the commands
# above) and how long its parts took:

# %%
#| code-fold: true
import pandas as pd
from eib.results import load_all, fmt_table, reader_command

named, bad = load_all()
_rows = [dict(dataset=lab, created=r["created"], command=reader_command(r["command"]), total_s=r["timing"].get("total_s"),
              threads=r["timing"].get("threads"), torch=r["timing"].get("torch")) for lab, r in named]
fmt_table(pd.DataFrame(_rows).set_index("dataset"), 1) if _rows else "no results file yet: run a sweep (above)"
