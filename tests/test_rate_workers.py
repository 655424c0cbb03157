"""Per-utterance rate control over worker processes (`eib.rate.solve_sharded`, what a sweep's rate points run on):
killed with SIGKILL mid-search, the process leaves no worker and no queue server behind (they get SIGTERM from the
kernel when their parent dies), so an interrupted sweep does not keep the cores busy for nobody."""
import os, subprocess, sys, time

from conftest import survivors_of_kill_9, wait_children
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


def test_kill_9_leaves_no_rate_workers():
    ck = str(repo_root() / "checkpoints" / "synth_cpu")
    p = subprocess.Popen([sys.executable, "-c", SCRIPT.format(ck=ck)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    try:
        kids = wait_children(p, 4)  # the queue server, the resource tracker and two workers
        time.sleep(2)  # the workers are searching
        assert survivors_of_kill_9(p, kids, match="multiprocessing.spawn") == []
    finally:
        if p.poll() is None: p.kill()
