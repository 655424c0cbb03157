# %% [markdown]
# # Scale out: sweeps as jobs, on SLURM or on this machine
#
# > Run the heavy steps of a sweep as jobs: a SLURM job array on a cluster, or local processes, through submitit.

# %% [markdown]
# A sweep is datasets × encoders × 44 rate targets × classifiers, and training wants GPUs. Every heavy step can run as
# a job instead of in the notebook's process, through one seam, `eib.core.Jobs` and `eib.core.run_jobs`
# ([submitit](https://github.com/facebookincubator/submitit) underneath), chosen by a parameter:
#
# ```sh
# # on a SLURM cluster: features and training on a GPU, every rate and layer point a task of a job array
# papermill nbs/sweep.ipynb out/sweep_ravdess.ipynb -p dataset ravdess -p data_root ~/corpora/ravdess -p rates full \
#     -p executor slurm -p partition gpu -p gpus 1 -p device cuda -p parallel 16 -p time_min 120
# # the same jobs as processes on this machine
# papermill nbs/sweep.ipynb out/sweep_ravdess.ipynb -p dataset ravdess -p data_root ~/corpora/ravdess -p executor local
# # one console script's work as one job
# eib-prepare --dataset ravdess --root ~/corpora/ravdess --encoder whisper_base --executor slurm --gpus 1 --device cuda
# eib-train --features data_subset/ravdess_whisper_base --out checkpoints/ravdess_cpu_whisper_base --executor slurm --cpus 8
# ```
#
# `make slurm` (as root, on Debian) installs and starts a one-node SLURM on this machine to try it (`.ci/slurm.sh`;
# `make slurm-stop` stops it); `tests/test_slurm.py` runs a sweep against it.

# %% [markdown]
# ## What runs where
#
# | step | jobs | resources per job | output, written atomically |
# |---|---|---|---|
# | features (`prepare_features`) | `parallel` shards, each a share of the files still to encode | `cpus` (as many worker processes), `gpus` with `-p device cuda` | feature files; then the notebook writes the store's manifest |
# | codec training (`sweep_codec`), when the checkpoint is missing | 1 | `cpus`, `gpus` with `-p device cuda` (RVQ fit and entropy-model training) | the checkpoint |
# | layer-sweep entropy model, when missing | 1 | as above | its checkpoint |
# | rate points (`point_job`) | 1 per target: one job array | `cpus`, no GPU: the exact coding model and the rate controller run on CPUs, where streams are bit-exact | `<results file>.points/rate_points_<target>.json` |
# | layer points (`point_job`) | 1 per depth: one job array | `cpus` | `<results file>.points/layer_sweep_<depth>.json` |
#
# The notebook's process does the light steps (subsets, classifiers, baselines), waits for the jobs, and merges each
# point into every classifier's results file (`Sweep.merge_job_points`), then removes the point file. A job reads
# the frames it needs from the feature store itself; what is sent to it is the codec, the subset's ids and labels and
# the fitted classifiers (`Sweep.for_jobs`; emotion2vec_plus's own head is loaded again inside the job).
#
# **Resuming.** A point already in the results files, or written by a job but not merged yet, is never computed again.
# A job that ends without its point (cancelled, killed, timed out, pre-empted: under SLURM without accounting it has
# ended when `squeue` stops listing it) is submitted again, `retries` times (default 1); a job that raised is not (it
# would raise again). What is still missing after that is one line naming the point, the job's error and its log, and the
# same command run again computes only the missing points. Each point file carries a tag of the sweep's configuration
# (codec, subsets, classifiers, rate mode): one left by a sweep of another configuration is removed, not merged.
# Interrupting the notebook leaves submitted SLURM tasks running; their points are merged by the next run (or
# `scancel` them).
#
# **One difference.** In the notebook's process the rate controller solves the targets one after another, each search
# starting from the previous target's λ; a job solves its target alone. Both stop within the controller's tolerance,
# so a point's achieved rate can differ by a fraction of that tolerance between the two (measured below); runs through
# jobs reproduce each other exactly, on SLURM or locally (`tests/test_slurm.py`).

# %%
import tempfile, time
from pathlib import Path
from fastcore.test import test_eq, test
from eib.core import Jobs, run_jobs
from eib.sweep import run_sweep
from eib.records import load_results
_tmp = Path(tempfile.mkdtemp())


# %% [markdown]
# ## Measured here
#
# The cost of a job itself: empty jobs through the local executor, two at a time, on this machine.

# %%
def _nothing(i): return i
t0 = time.time()
test_eq(run_jobs(_nothing, range(8), Jobs("local", _tmp / "jobs", time_min=5, parallel=2, poll_s=0.2), progress=False), list(range(8)))
_dt = time.time() - t0
print(f"8 empty local jobs, 2 at a time: {_dt:.1f} s, {8 / _dt * 60:.0f} jobs/min, {2 * _dt / 8:.2f} s per job slot")

# %% [markdown]
# The same two rate points of the synthetic set swept in this process and as local jobs (the store and the committed
# codec exist, so only the points are jobs): the work in a point against the job's overhead, and the achieved rates of
# the two ways.

# %%
_kw = dict(rates=[20.0, 60.0], samples_per_emotion=3, matched=False, layer_sweep=False, progress=False, command="scale-out chapter", workers=1)
_here = load_results(run_sweep("synth", out_dir=_tmp / "here", **_kw))
t0 = time.time()
_jobs = load_results(run_sweep("synth", out_dir=_tmp / "jobs_out", jobs=Jobs("local", _tmp / "j2", time_min=10, parallel=2, poll_s=0.2), **_kw))
_wall = time.time() - t0
for a, b in zip(_here["rate_points"], _jobs["rate_points"]):
    t = a["target_bpf"]
    print(f"target {t:g} BPF: achieved {a['achieved_bpf_mean']:.3f} here, {b['achieved_bpf_mean']:.3f} as a job; "
          f"point {_here['timing']['rate_points_s'][str(t)]:.1f} s here, {_jobs['timing']['rate_points_s'][str(t)]:.1f} s of work in its job")
    test(abs(a["achieved_bpf_mean"] - b["achieved_bpf_mean"]), 0.25, lambda x, y: x <= y, "within the controller's tolerance")
print(f"sweep through local jobs: {_wall:.1f} s wall in all (probe, 2 point jobs, merging)")
test_eq([p["target_bpf"] for p in _jobs["rate_points"]], [20.0, 60.0])

# %% [markdown]
# ## On SLURM
#
# Measured on this 2-core machine with the one-node SLURM of `make slurm` (Debian's Slurm 22.05, one partition,
# `cpus=1` per job, so two jobs at a time), 2026-12-04:
#
# - empty jobs through `Jobs("slurm", parallel=2)` (`run_jobs` of 8 items): 11.8–12.3 s, 39–41 jobs/min, about 3 s per
#   job slot (the local executor: 166 jobs/min, 0.72 s) — scheduling, `srun` and a Python start per job;
# - `tests/test_slurm.py`: a synthetic sweep (3 targets, 2 layer depths, fixed and matched probes, 4 test utterances
#   per class) as two job arrays gives results files equal to the same jobs run locally; one rate-point task is
#   cancelled with `scancel` while it runs, submitted again, and the scheduler's job-completion log shows
#   `CANCELLED` once and `COMPLETED` once per rate point and layer depth.
#
# A point of a real corpus takes minutes of work (the RAVDESS test subset: tens of seconds to minutes per target on
# one core), so a few seconds of job overhead is small beside it; for the synthetic set's sub-second points it is not,
# and `executor none` stays the default.
