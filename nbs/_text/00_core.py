# %% [markdown]
# # Shared foundations
#
# > Shared constants, errors, paths and atomic file writes used by every chapter of the book.

# %%
#| default_exp core

# %%
#| export
from __future__ import annotations
import hashlib, json, os, re, shutil, subprocess, sys, tempfile, time
from dataclasses import dataclass
from pathlib import Path
import numpy as np

# %%
import contextlib, io
from fastcore.test import test_eq, test_ne, test_fail, test_close

# %% [markdown]
# ## Numbers that hold throughout
#
# emotion2vec (and every encoder here) yields 50 frames per second, so a rate in bits per frame (BPF)
# times 50 is a rate in bits per second.

# %%
#| export
FRAME_RATE = 50  # frames per second, for every encoder
SAMPLE_RATE = 16_000  # Hz: every encoder resamples its input to this

def bpf_to_bps(bpf: float) -> float:
    "Bits per frame to bits per second at `FRAME_RATE`."
    return bpf * FRAME_RATE


# %%
test_eq(bpf_to_bps(10), 500)


# %% [markdown]
# ## Errors
#
# Every failure a user can cause (bad input, missing data or weights, a corrupt stream) raises an
# `EibError` with a message that says what went wrong and what to do; a bug is any other exception.

# %%
#| export
class EibError(Exception):
    "An error caused by the input or the environment, with a message meant for the user."


# %%
def _f(): raise EibError("no such dataset 'x'; known: ravdess, emodb")
test_fail(_f, contains="known: ravdess")


# %% [markdown]
# ## Where things are
#
# The repository root holds `settings.ini`; the shared, read-only corpora sit beside it in
# a folder named `shared` (its `datasets/` subfolder) unless `EIB_SHARED` names another folder.

# %%
#| export
def repo_root(start: str | Path | None = None) -> Path:
    "The folder holding `settings.ini`, searched upwards from `start` (default: the working directory)."
    p = Path(start or Path.cwd()).resolve()
    for q in (p, *p.parents):
        if (q / "settings.ini").exists(): return q
    raise EibError(f"not inside the eib repository (no settings.ini above {p})")

def shared_root() -> Path:
    "The shared folder: `$EIB_SHARED`, else the folder `shared` beside the repository."
    env = os.environ.get("EIB_SHARED")
    return Path(env) if env else repo_root().parent / "shared"

def datasets_root() -> Path:
    "The folder of the shared, read-only emotional-speech corpora."
    return shared_root() / "datasets"


# %%
assert (repo_root() / "settings.ini").exists(), repo_root()
test_eq(datasets_root().name, "datasets")


# %% [markdown]
# ## Atomic writes
#
# Results, features and checkpoints are written to a temporary file in the same folder and renamed into
# place, so an interrupted run never leaves a half-written file behind.

# %%
#| export
def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    "Write `data` to `path` atomically (temporary file in the same folder, then rename)."
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0); os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush(); os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

def atomic_write_text(path: str | Path, text: str) -> Path:
    "Write `text` (UTF-8; file-name bytes kept as surrogates are written back as those bytes) to `path` atomically."
    return atomic_write_bytes(path, text.encode("utf-8", errors="surrogateescape"))

def atomic_write_json(path: str | Path, obj, **kw) -> Path:
    "Write `obj` as indented JSON to `path` atomically."
    return atomic_write_text(path, json.dumps(obj, indent=kw.pop("indent", 1), **kw) + "\n")

def atomic_save_npy(path: str | Path, arr: np.ndarray) -> Path:
    "Save `arr` in `.npy` format to `path` atomically."
    import io
    buf = io.BytesIO(); np.save(buf, np.asarray(arr), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


# %%
with tempfile.TemporaryDirectory() as d:
    p = atomic_write_json(Path(d) / "sub" / "r.json", {"bpf": 10.5})
    test_eq(json.loads(p.read_text()), {"bpf": 10.5})
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    test_eq(np.load(atomic_save_npy(Path(d) / "a.npy", a)), a)
    test_eq(sorted(x.name for x in Path(d).iterdir()), ["a.npy", "sub"])  # no temporary files left
    um = os.umask(0); os.umask(um)
    test_eq(p.stat().st_mode & 0o777, 0o666 & ~um)  # the usual permissions, not mkstemp's 0600


# %% [markdown]
# Console scripts check where they will write before they start work: `check_output` refuses an empty name, a name
# longer than the file system allows, an existing folder, a folder that is a file or missing, a place it may not
# write, and an output that is one of the inputs (it would be replaced), each with one line that names the problem.
# Outputs that are folders (a checkpoint, a feature store) may exist, but may neither be an input nor hold one.

# %%
#| export
def check_output(path, *inputs, folder: bool = False) -> Path:
    """`path` as a `Path` a console script may write its result to (atomically), or an EibError saying why not.
    `folder`: the output is a folder (a checkpoint, a feature store), which may exist but may neither be an input nor hold one."""
    s = str(path) if path is not None else ""
    if not s.strip(): raise EibError("the output name is empty")
    p = Path(s).expanduser()
    if len(os.fsencode(p.name)) > 255: raise EibError(f"the output name is longer than 255 bytes: {p.name[:40]}...")
    if folder and p.exists() and not p.is_dir(): raise EibError(f"the output {p} is an existing file; give a folder name")
    if not folder and p.is_dir(): raise EibError(f"the output {p} is an existing folder; give a file name")
    for q in inputs:
        if q is None or not Path(q).exists(): continue
        if folder:
            a, b = p.resolve(), Path(q).resolve()
            if a == b or a in b.parents:  # its files would replace or mix with the input's
                raise EibError(f"the output folder {p} {'is' if a == b else 'holds'} the input {q}; write somewhere else")
        elif p.exists() and os.path.samefile(p, q):
            raise EibError(f"the output {p} is also an input; write to another file")
    parent = p.parent if str(p.parent) else Path(".")
    for a in (parent, *parent.parents):
        if a.exists():
            if not a.is_dir(): raise EibError(f"cannot write {p}: {a} is a file, not a folder")
            if not os.access(a, os.W_OK | os.X_OK): raise EibError(f"cannot write {p}: no permission to write in {a}")
            break
    return p


# %%
with tempfile.TemporaryDirectory() as d:
    d = Path(d); (d / "in.npy").write_bytes(b"x"); (d / "sub").mkdir()
    test_eq(check_output(d / "new" / "out.eib", d / "in.npy"), d / "new" / "out.eib")  # a folder to create is fine
    for bad, msg in ((d / "sub", "existing folder"), (d / "in.npy" / "o.eib", "is a file"), ("", "empty"),
                     (d / ("x" * 300), "longer than 255"), (d / "in.npy", "also an input")):
        test_fail(lambda: check_output(bad, d / "in.npy"), contains=msg)
    test_eq(check_output(d / "sub", d / "in.npy", folder=True), d / "sub")  # a folder output may exist
    test_eq(check_output(d / "sub" / "ck", d / "sub", folder=True), d / "sub" / "ck")  # beside the input's files: fine
    for bad, msg in ((d / "in.npy", "existing file"), (d / "sub", "is the input"), (d, "holds the input")):
        test_fail(lambda: check_output(bad, d / "sub", folder=True), contains=msg)


# %% [markdown]
# `run_cli` is how every console script ends: a user error (`EibError`), a file-system error, lack of memory and
# Ctrl-C each become one line on stderr naming the problem and an exit status (2, or 130 for Ctrl-C); an unexpected
# exception becomes one line too, exit 1, that says so. `--debug` (every script has it) shows the traceback instead.

# %%
#| export
def run_cli(prog: str, work, debug: bool = False, interrupted: str = "interrupted; nothing was written") -> int:
    "Run a console script's `work()` -> its exit status; every failure ends in one line on stderr (`debug`: re-raised)."
    try: return work()
    except (Exception, KeyboardInterrupt) as e:
        if debug: raise
        if isinstance(e, KeyboardInterrupt): msg, rc = interrupted, 130
        elif isinstance(e, EibError): msg, rc = f"error: {e}", 2
        elif isinstance(e, OSError): msg, rc = (f"error: {e.strerror or e} ({e.filename})" if e.filename else f"error: {e}"), 2
        elif isinstance(e, MemoryError): msg, rc = "error: out of memory (try a smaller input or batch)", 2
        else: msg, rc = f"internal error: {type(e).__name__}: {e} (run again with --debug for the traceback, and please report it)", 1
    print(f"{prog}: {msg}", file=sys.stderr)
    return rc


# %%
def _boom(e):
    def work(): raise e
    return work
with contextlib.redirect_stderr(io.StringIO()) as err:
    codes = [run_cli("x", w) for w in (lambda: 0, _boom(EibError("bad")), _boom(FileNotFoundError(2, "No such file", "f")),
                                        _boom(KeyboardInterrupt()), _boom(ValueError("oops")))]
test_eq(codes, [0, 2, 2, 130, 1])
test_eq(err.getvalue().splitlines(), ["x: error: bad", "x: error: No such file (f)", "x: interrupted; nothing was written",
                                      "x: internal error: ValueError: oops (run again with --debug for the traceback, and please report it)"])
test_fail(lambda: run_cli("x", _boom(EibError("bad")), debug=True), contains="bad")


# %% [markdown]
# Worker processes (the feature encoders of `eib-prepare`, the rate-control shards of a sweep) start with
# `die_with_parent`: on Linux the kernel then stops a worker when the process that started it dies, even by `kill -9`,
# so an interrupted run leaves no worker computing for nobody.

# %%
#| export
def die_with_parent():
    "Worker initializer (Linux): the kernel sends SIGTERM to this process when its parent dies, even by kill -9."
    import ctypes, signal
    try: ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError): pass  # not Linux: workers end when their task queue closes


# %%
_r = subprocess.run([sys.executable, "-c", "import ctypes; from eib.core import die_with_parent; die_with_parent(); "
                     "v = ctypes.c_int(); ctypes.CDLL('libc.so.6').prctl(2, ctypes.byref(v)); print(v.value)"],  # PR_GET_PDEATHSIG
                    capture_output=True, text=True, check=True)
test_eq(_r.stdout.strip(), "15")  # SIGTERM


# %% [markdown]
# ## Fingerprints
#
# A short, stable hash of bytes or of a JSON-able object identifies a model or a configuration
# (the bitstream stores the model's fingerprint, for instance).

# %%
#| export
def fingerprint(obj, n: int = 16) -> str:
    "Hex SHA-256 prefix (`n` chars) of bytes, or of `obj` as canonical JSON."
    b = obj if isinstance(obj, (bytes, bytearray)) else json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(b).hexdigest()[:n]


# %%
test_eq(fingerprint({"a": 1, "b": 2}), fingerprint({"b": 2, "a": 1}))
test_eq(len(fingerprint(b"x", 8)), 8)
test_ne(fingerprint({"a": 1}), fingerprint({"a": 2}))

# %% [markdown]
# ## Jobs: where heavy work runs
#
# Feature extraction, codec training, rate points and layer points can each run as a job instead of in this process.
# `Jobs` says where: `none` (here, as always), `local` (processes on this machine, started by
# [submitit](https://github.com/facebookincubator/submitit)'s local executor, `parallel` at a time) or `slurm` (submitit's
# SLURM executor: `sbatch`, one job array per batch of work, `parallel` array tasks at a time, on `partition`, with
# `cpus`, `gpus` and `time_min` per job). Each job writes its own output atomically; `run_jobs` skips the items whose
# output is already there (`done`), waits for the rest, and submits again those that ended without it (cancelled,
# killed or pre-empted), `retries` times (a job that raised is not: it would raise again); what is still missing is one `EibError` naming the items
# and the job logs, and running the same work again finishes it without redoing anything. Without the scheduler's
# accounting (`sacct`), a SLURM job has ended when `squeue` no longer lists it.

# %%
#| export
EXECUTORS = ("none", "local", "slurm")

@dataclass
class Jobs:
    "Where heavy work runs, and with what per job (see above). `folder` holds submitit's pickles and the job logs."
    executor: str = "none"
    folder: str | Path = "_jobs"
    partition: str | None = None
    time_min: int = 120
    cpus: int = 1
    gpus: int = 0
    mem_gb: float | None = None
    parallel: int = 2
    retries: int = 1
    poll_s: float | None = None  # seconds between looks at the jobs (None: 1 locally, 10 on SLURM)

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise EibError(f"unknown executor {self.executor!r}; use one of {', '.join(EXECUTORS)}")
        for k in ("time_min", "cpus", "parallel"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1: raise EibError(f"{k} must be a whole number >= 1, got {v!r}")
        for k in ("gpus", "retries"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0: raise EibError(f"{k} must be a whole number >= 0, got {v!r}")
        if self.poll_s is not None and not self.poll_s > 0: raise EibError(f"poll_s must be positive, got {self.poll_s!r}")
        if self.executor == "slurm" and not shutil.which("sbatch"):
            raise EibError("executor 'slurm' needs SLURM's sbatch and squeue on the PATH (none found); use executor 'local' on one machine")

    @property
    def away(self) -> bool:
        "Whether the work leaves this process (any executor but 'none')."
        return self.executor != "none"



# %%
test_eq((Jobs().away, Jobs("local").away), (False, True))
test_fail(lambda: Jobs("cloud"), contains="unknown executor 'cloud'")
test_fail(lambda: Jobs("local", parallel=0), contains="parallel must be a whole number >= 1")


# %%
#| export
def _executor(jobs: Jobs, name: str):
    import logging, submitit
    logging.getLogger("submitit").setLevel(logging.ERROR)  # without SLURM accounting its sacct calls fail; squeue tells (below)
    ex = submitit.AutoExecutor(folder=Path(jobs.folder) / "%j", cluster=jobs.executor)
    threads = [f"export OMP_NUM_THREADS={jobs.cpus} MKL_NUM_THREADS={jobs.cpus}"]  # torch uses the CPUs the job was given
    ex.update_parameters(name=name, timeout_min=int(jobs.time_min), cpus_per_task=int(jobs.cpus), gpus_per_node=int(jobs.gpus),
                         **({"mem_gb": jobs.mem_gb} if jobs.mem_gb else {}), slurm_array_parallelism=int(jobs.parallel),
                         **({"slurm_partition": jobs.partition} if jobs.partition else {}), slurm_setup=threads, local_setup=threads)
    return ex

def _squeue() -> set:
    "Ids of this user's SLURM jobs (array tasks expanded, e.g. 123_4, every partition) the scheduler still lists."
    for attempt in range(5):  # a busy controller may time out now and then
        r = subprocess.run(["squeue", "--me", "-a", "-h", "-r", "-o", "%i"], capture_output=True, text=True)
        if r.returncode == 0: return set(r.stdout.split())
        time.sleep(2 ** attempt)
    raise EibError(f"squeue failed five times: {r.stderr.strip() or r.returncode}")

def _outcome(job) -> tuple[str, object]:
    "('ok', its result), ('failed', the reason: it raised) or ('lost', the reason: it ended without a result) of an ended job."
    if not job.paths.result_pickle.exists():
        return "lost", f"ended without a result (cancelled, killed, timed out or pre-empted); log {job.paths.stderr}"
    try: return "ok", job.result()
    except Exception as e:  # submitit's message holds the job's traceback: keep its last line, the exception
        last = re.findall(r"(?m)^(\w[\w.]*(?:Error|Exception|Interrupt|Exit)\b.*)$", str(e))
        return "failed", f"failed: {last[-1] if last else type(e).__name__}; log {job.paths.stderr}"

def run_jobs(fn, items, jobs: Jobs | None = None, done=None, name: str = "eib", progress: bool = True) -> list:
    """`fn(item)` for every item of `items` whose output is not there yet (`done(item)` false) as jobs of `jobs` (in
    this process when `jobs.executor == 'none'`); returns their results in order (None for the items skipped). A job that
    ended without a result is submitted again (`jobs.retries`); one that raised is not."""
    from tqdm.auto import tqdm
    jobs, items = jobs or Jobs(), list(items)
    done = done or (lambda item: False)
    results, todo = [None] * len(items), [i for i, it in enumerate(items) if not done(it)]
    if not jobs.away:
        for i in todo: results[i] = fn(items[i])
        return results
    reasons, finished, failed = {}, set(), set()
    poll = jobs.poll_s if jobs.poll_s is not None else (10.0 if jobs.executor == "slurm" else 1.0)
    bar = tqdm(total=len(todo), desc=f"{name} ({jobs.executor} jobs)", unit="job", disable=not progress)
    for attempt in range(1 + jobs.retries):
        if not todo: break
        ex, running, queue, unlisted = _executor(jobs, name), {}, list(todo), {}
        if jobs.executor == "slurm":  # one job array; the scheduler runs `parallel` of its tasks at a time
            try: running = dict(zip(ex.map_array(fn, [items[i] for i in queue]), queue)); queue = []
            except Exception as e:  # sbatch refused (no controller, a bad partition, ...): its own words
                msg = " ".join(str(e).split())[:300]
                raise EibError(f"SLURM did not take the {name} jobs: {msg}") from None
            bar.write(f"{name}: submitted SLURM job array {next(iter(running)).job_id.split('_')[0]} ({len(running)} task{'s' if len(running) > 1 else ''}); "
                      f"logs in {jobs.folder}")
        while running or queue:
            while queue and len(running) < jobs.parallel:  # local: at most `parallel` processes at once
                i = queue.pop(0); running[ex.submit(fn, items[i])] = i
            time.sleep(poll)
            listed = _squeue() if jobs.executor == "slurm" else None
            for j in running:  # a job SLURM no longer lists has ended once it stays unlisted for two looks (files may lag)
                unlisted[j] = unlisted.get(j, 0) + 1 if listed is not None and j.job_id not in listed else 0
            for job in [j for j in running if j.paths.result_pickle.exists() or (unlisted[j] >= 2 if listed is not None else j.done())]:
                i = running.pop(job)
                state, out = _outcome(job)
                if state == "ok": results[i] = out; finished.add(i); bar.update(1); reasons.pop(i, None)
                else: reasons[i] = out
                if state == "failed": failed.add(i)  # it raised: running it again would raise again
        todo = [i for i in todo if i not in finished and i not in failed and not done(items[i])]  # its output may be there
        if todo and attempt < jobs.retries: bar.write(f"{name}: {len(todo)} job(s) ended without their output; submitting them again")
    bar.close()
    todo = sorted(set(todo) | failed)
    if todo:
        first = reasons.get(todo[0], "its output is missing")
        raise EibError(f"{len(todo)} of {len(items)} {name} job(s) did not finish (first: {items[todo[0]]!r} {first}); "
                       "run the same command again to finish them (finished ones are kept)")
    return results

def call(work):
    "`work()`: `run_jobs`'s function for work given as a `functools.partial` of a function and its arguments."
    return work()



# %%
from functools import partial
def _square(x): return x * x
with tempfile.TemporaryDirectory() as d:
    test_eq(run_jobs(call, [partial(divmod, 7, 2)], Jobs("local", Path(d) / "j3", time_min=5), progress=False), [(3, 1)])  # work with arguments
    test_eq(run_jobs(_square, [1, 2, 3]), [1, 4, 9])  # executor 'none': here, in order
    test_eq(run_jobs(_square, [1, 2, 3], Jobs("local", Path(d) / "jobs", time_min=5), done=lambda x: x == 2, progress=False), [1, None, 9])
    test_eq(len(list((Path(d) / "jobs").glob("*/*_log.out"))), 2)  # each job left its log
    with contextlib.redirect_stderr(io.StringIO()):
        test_fail(lambda: run_jobs(_square, [1, "a"], Jobs("local", Path(d) / "j2", time_min=5), progress=False),
                  contains="1 of 2 eib job(s) did not finish (first: 'a' failed: TypeError")
    test_eq(len(list((Path(d) / "j2").glob("*/*_log.out"))), 2)  # the job that raised was not submitted again


# %% [markdown]
# Console scripts whose work is heavy (`eib-prepare`, `eib-train`) take the same choices as flags and then run their work
# as one job and wait for it: `--executor slurm --partition gpu --gpus 1 --time-min 240`.

# %%
#| export
def add_job_args(parser):
    "Add `Jobs`'s choices to a console script's `argparse` parser (read them back with `jobs_from_args`)."
    g = parser.add_argument_group("jobs", "run the work as a job, on SLURM (through submitit) or as a local process, and wait for it")
    g.add_argument("--executor", default="none", choices=EXECUTORS, help="none: in this process (default)")
    g.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's)")
    g.add_argument("--time-min", type=int, default=240, help="minutes the job may run")
    g.add_argument("--cpus", type=int, default=2, help="CPUs of the job")
    g.add_argument("--gpus", type=int, default=0, help="GPUs of the job (with --device cuda)")
    g.add_argument("--jobs-dir", default="_jobs", help="folder of the job's log and submitit's files")

def jobs_from_args(a) -> Jobs:
    "The `Jobs` that `add_job_args`'s flags name."
    return Jobs(a.executor, a.jobs_dir, partition=a.partition, time_min=a.time_min, cpus=a.cpus, gpus=a.gpus)


# %%
import argparse
_p = argparse.ArgumentParser(); add_job_args(_p)
test_eq(jobs_from_args(_p.parse_args(["--executor", "local", "--gpus", "1"])), Jobs("local", "_jobs", time_min=240, cpus=2, gpus=1))
test_eq(jobs_from_args(_p.parse_args([])).executor, "none")
