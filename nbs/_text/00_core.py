# %% [markdown]
# # core
#
# > Shared constants, errors, paths and atomic file writes used by every chapter of the book.

# %%
#| default_exp core

# %%
#| export
from __future__ import annotations
import hashlib, json, os, tempfile
from pathlib import Path
import numpy as np

# %%
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
# `../shared/datasets` unless `EIB_SHARED` says otherwise.

# %%
#| export
def repo_root(start: str | Path | None = None) -> Path:
    "The folder holding `settings.ini`, searched upwards from `start` (default: the working directory)."
    p = Path(start or Path.cwd()).resolve()
    for q in (p, *p.parents):
        if (q / "settings.ini").exists(): return q
    raise EibError(f"not inside the eib repository (no settings.ini above {p})")

def shared_root() -> Path:
    "The shared folder (`$EIB_SHARED`, else `../shared` beside the repository)."
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
    "Write `text` (UTF-8) to `path` atomically."
    return atomic_write_bytes(path, text.encode("utf-8"))

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

# %%
#| export
def check_output(path, *inputs) -> Path:
    "`path` as a `Path` a console script may write its result to (atomically), or an EibError saying why not."
    s = str(path) if path is not None else ""
    if not s.strip(): raise EibError("the output name is empty")
    p = Path(s).expanduser()
    if len(os.fsencode(p.name)) > 255: raise EibError(f"the output name is longer than 255 bytes: {p.name[:40]}...")
    if p.is_dir(): raise EibError(f"the output {p} is an existing folder; give a file name")
    for q in inputs:
        if q is not None and Path(q).exists() and p.exists() and os.path.samefile(p, q):
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
