# %% [markdown]
# # Shared foundations
#
# > Shared constants, errors, paths and atomic file writes used by every chapter of the book.

# %%
#| default_exp core

# %%
#| export
from __future__ import annotations
import hashlib, json, os, sys, tempfile
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
