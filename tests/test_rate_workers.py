"""Per-utterance rate control over worker processes (`eib.rate.solve_sharded`, what a sweep's rate points run on):
killed with SIGKILL mid-search, the process leaves no worker and no queue server behind (they get SIGTERM from the
kernel when their parent dies), so an interrupted sweep does not keep the cores busy for nobody."""
import os, signal, subprocess, sys, time
from pathlib import Path

from eib.core import repo_root

SCRIPT = """
import numpy as np
from eib.codec import load_codec
from eib.rate import solve_sharded
codec = load_codec({ck!r})
rng = np.random.default_rng(0)
utts = [rng.normal(size=(400, codec.rvq.cfg.dim)).astype(np.float32) for _ in range(8)]
for _ in solve_sharded(codec, utts, [float(t) for t in range(10, 160, 5)], workers=2): pass
"""


def children(pid: int) -> list[str]:
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


def cmdline(pid: str) -> str:
    try: return Path(f"/proc/{pid}/cmdline").read_text(errors="replace").replace("\0", " ")
    except OSError: return ""  # gone


def test_kill_9_leaves_no_rate_workers():
    ck = str(repo_root() / "checkpoints" / "synth_cpu")
    p = subprocess.Popen([sys.executable, "-c", SCRIPT.format(ck=ck)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    try:
        kids = []
        for _ in range(600):  # the queue server, the resource tracker and two workers
            kids = children(p.pid)
            if len(kids) >= 4: break
            time.sleep(0.1)
        assert len(kids) >= 4, (kids, p.poll())
        time.sleep(2)  # the workers are searching
        os.kill(p.pid, signal.SIGKILL); p.wait(timeout=30)
        deadline = time.time() + 15
        alive = lambda: [k for k in kids if "multiprocessing.spawn" in cmdline(k)]
        while time.time() < deadline and alive(): time.sleep(0.1)
        assert alive() == []
    finally:
        if p.poll() is None: p.kill()
