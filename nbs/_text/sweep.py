# ---
# skip_exec: true
# ---

# %% [markdown]
# # Rate sweep
#
# *Not run by `nbdev_test` (`skip_exec`): on 2 CPU cores the rate controller's start-up and each rate point take
# minutes with the exact coding model, so even the default quick sweep is far too slow for a test run. Run it
# with papermill; the sweep's logic is tested in `16_sweep.ipynb`.*
#
# > The parameterised sweep: emotion recognition on decoded features across the rate axis, for one dataset.
#
# Run it for any dataset with papermill, from the repository root:
#
# ```sh
# papermill nbs/sweep.ipynb out/sweep_ravdess.ipynb -p dataset ravdess -p data_root ../shared/datasets/ravdess
# papermill nbs/sweep.ipynb out/sweep_emodb.ipynb -p dataset emodb -p rates full
# papermill nbs/sweep.ipynb out/sweep_rw.ipynb -p dataset ravdess -p data_root ../shared/datasets/ravdess -p encoder whisper_base
# papermill nbs/sweep.ipynb out/x.ipynb -p dataset manifest -p data_root DIR -p name NAME -p encoder whisper_base
# papermill nbs/sweep.ipynb out/sweep_rw_context.ipynb -p dataset ravdess -p encoder whisper_base -p context frame
# ```
#
# The last line takes **any corpus**: a folder `DIR` with a `manifest.csv` (columns `path`, `speaker`, `emotion`, and
# `split` with `train`/`test`; see `eib.data.read_manifest`), its store and results named `NAME`.
#
# It prepares the features if missing (`data_subset/<dataset>[_<encoder>]`), loads the codec
# `checkpoints/<dataset>_<preset>[_<encoder>][_context_frame]` (trains it if missing), sweeps (`eib.sweep.run_sweep`) and writes
# `evaluation_results/rate_sweep_<DATASET>[_<encoder>][_context_frame].json` (the fixed probe) and `..._matched.json` (the probe
# fitted on decoded training features at each point) after every point; an interrupted run resumes where it stopped. A relative `data_root` is taken from the
# working directory, else from the repository root. `rates` is `quick` (10, 100, 200, 300 BPF), `full` (the
# thesis's 44 points) or a list such as `[10, 20, 50]`. With `encoder` an emotion2vec_plus model and its weights
# present (`model_dir`), the model's own head scores the same decoded frames into
# `rate_sweep_<DATASET>_<encoder>_head.json` beside the probe's file.
#
# `context frame` gives the codec an entropy model that also sees the previous frame's tokens (trained on whole
# utterances; see the chapter "Entropy model"): its checkpoint and results files carry `_context_frame` in their names, beside
# the intra-frame sweep's, and it has no layer sweep (that baseline, plain RVQ on the same codebooks, is the intra sweep's).
#
# With no parameters it sweeps the committed synthetic set with the committed codec at the quick rates; when
# `evaluation_results/rate_sweep_SYNTH.json` already holds those points (the committed full sweep does) the run
# only refits the probe, checks the file and draws the figures.
#
# **On a cluster** (see the chapter "Scale out"): `-p executor slurm` runs the feature extraction and the codec's
# training as one job each (`-p gpus 1` gives them a GPU, with `-p device cuda`), and every rate point and layer point
# as a task of a SLURM job array (`-p parallel 8` at a time, `-p partition NAME`, `-p time_min 60`); each task writes its
# point, the notebook merges them into the results files as they come. A killed or pre-empted task is submitted again
# (`-p retries 1`); a rerun of the same command computes only what is missing. `-p executor local` runs the same jobs
# as processes on this machine.

# %% tags=["parameters"]
dataset = "synth"  # ravdess, emodb, esd, iemocap, synth, or manifest (any folder with a manifest.csv: data_root, name)
data_root = None  # corpus folder (None: ../shared/datasets/<dataset>, or the embedded synthetic corpus)
name = None  # manifest corpora: the name of the store and results (None: the folder's name)
encoder = "compare"  # compare, whisper_base, emotion2vec_base, emotion2vec_plus_base, emotion2vec_plus_large
rates = "quick"  # "quick", "full" or a list of target BPF
rate_mode = "utterance"  # λ per utterance, or "set": one λ for the whole test set
preset = "cpu"  # codec preset (when a codec must be trained)
context = "none"  # the entropy model's inter-frame context: "none", or "frame" (it also sees the previous frame's tokens)
device = "cpu"
seed = 42  # subsets, classifiers, bootstrap intervals
codec_seed = 0  # training of a missing codec or layer-sweep model (0: as the committed checkpoints were trained)
samples_per_emotion = 100  # test utterances per class (select_subset of the TEST split)
out_dir = "../evaluation_results"  # relative to nbs/ (whatever the working directory)
checkpoint = None  # codec folder (None: checkpoints/<dataset>_<preset>)
layer_sweep = True  # also sweep the plain-RVQ layer baseline
layer_points = 12  # at most this many depths in the layer sweep, spread from 1 layer to all of them (the book's RAVDESS and EmoDB sweeps: 12)
force = False  # start afresh even when the results file holds this configuration (the old file is kept in superseded/)
workers = 2  # processes for per-utterance rate control (utterances split between them)
model_dir = None  # the encoder's weights folder (None: the default places); a plus model's own head is scored too
matched = True  # also score every point with a probe fitted on the decoded training subset
matched_per_emotion = 20  # training utterances per class coded for the matched probe (the committed results' 20)
executor = "none"  # where the heavy work runs: "none" (here), "local" (processes) or "slurm" (a SLURM cluster, via submitit)
partition = None  # SLURM partition (None: the cluster's default)
time_min = 120  # minutes per job
cpus = 1  # CPUs per job (its torch threads)
gpus = 0  # GPUs per feature-extraction and training job (rate and layer points run on CPUs: exact coding)
parallel = 2  # jobs (SLURM array tasks) at a time
retries = 1  # resubmissions of a job that ended without its point (cancelled, killed, pre-empted)
jobs_dir = "../_jobs"  # job logs and submitit's files, relative to nbs/

# %%
import time
from pathlib import Path
from eib.core import Jobs, repo_root
from eib.sweep import run_sweep, resolve_rates, results_path
from eib.records import load_results
from eib import figures as F
F.use_offline_renderer()
_cmd = (f"papermill nbs/sweep.ipynb -p dataset {dataset} -p data_root {data_root} -p encoder {encoder} -p rates {rates!r} "
        f"-p rate_mode {rate_mode} -p preset {preset} -p device {device} -p seed {seed} "
        f"-p samples_per_emotion {samples_per_emotion} -p layer_sweep {layer_sweep} -p workers {workers}"
        + f" -p layer_points {layer_points}"
        + (f" -p model_dir {model_dir}" if model_dir else "") + (f" -p name {name}" if name else "") + (f" -p codec_seed {codec_seed}" if codec_seed else "")
        + f" -p matched {matched} -p matched_per_emotion {matched_per_emotion}" + (f" -p executor {executor}" if executor != "none" else "")
        + (f" -p context {context}" if context != "none" else "") + (f" -p checkpoint {checkpoint}" if checkpoint else "")
        + (f" -p out_dir {out_dir}" if out_dir != "../evaluation_results" else ""))
_out = Path(out_dir) if Path(out_dir).is_absolute() else repo_root() / "nbs" / out_dir  # relative to nbs/ from any working directory
_jobs = Jobs(executor, Path(jobs_dir) if Path(jobs_dir).is_absolute() else repo_root() / "nbs" / jobs_dir, partition=partition,
             time_min=time_min, cpus=cpus, gpus=gpus, parallel=parallel, retries=retries)
t0 = time.time()
path = run_sweep(dataset, data_root=data_root, encoder=encoder, rates=resolve_rates(rates), rate_mode=rate_mode,
                 preset=preset, device=device, seed=seed, samples_per_emotion=samples_per_emotion, out_dir=_out,
                 checkpoint=checkpoint, layer_sweep=layer_sweep, force=force, progress=False, command=_cmd,
                 workers=workers, model_dir=model_dir, matched=matched, matched_per_emotion=matched_per_emotion, name=name,
                 codec_seed=codec_seed, layer_points=layer_points, jobs=_jobs, context=context)
res = load_results(path)
print(f"{path}: {len(res['rate_points'])} rate points, {len(res['layer_sweep'])} layer points; this run {time.time() - t0:.0f} s")
_label = res["dataset"].lower()
for _kind, _what in (("matched_linear_probe", "the probe fitted on decoded training features"), ("emotion2vec_plus_head", f"{encoder}'s own head")):
    if (_f := results_path(_label, _out, encoder, _kind, context)).exists(): print(f"{_f}: the same points scored by {_what}")

# %% [markdown]
# ## Baselines and rate points

# %%
F.baseline_table(res)[["curve", "accuracy", "f1_weighted", "f1_macro", "mean_true_label_prob"]].round(3)

# %%
_cols = ["target_bpf", "bpf", "bpf_std", "capped", "mse", "accuracy", "f1_weighted", "f1_weighted_lo", "f1_weighted_hi", "f1_macro"]
F.rate_table(res)[_cols].round(3)

# %% [markdown]
# Per-class precision and recall at the lowest target rate (a class that keeps its recall only because the
# classifier says it for everything shows it in its precision).

# %%
_ct = F.class_table(res)
_ct[_ct.point == _ct.point.min()][["point", "bpf", "emotion", "precision", "recall", "support", "mean_true_label_prob"]].round(3)

# %% [markdown]
# ## Figures

# %%
_figs = F.all_figures(res)
F.show(_figs["f1"])

# %%
F.show(_figs["rd"])

# %%
F.show(_figs["recall"]) if "recall" in _figs else None

# %%
F.show(_figs["precision"]) if "precision" in _figs else None
