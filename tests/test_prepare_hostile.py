"""eib-prepare under hostile conditions: killed with SIGKILL it leaves no worker behind (they get SIGTERM from the
kernel when their parent dies); a second writer of the same store is refused at once while the first holds it."""
import subprocess, sys
from pathlib import Path

from conftest import survivors_of_kill_9, wait_children
from eib.synth import ensure_corpus

BIN = Path(sys.executable).parent


def prepare(root, out, name="k"):
    return subprocess.Popen([BIN / "eib-prepare", "--dataset", "synth", "--root", root, "--encoder", "compare", "--out", out,
                             "--name", name, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_leaves_no_workers_and_a_second_writer_is_refused(tmp_path):
    root = ensure_corpus()
    p = prepare(root, tmp_path)
    try:
        kids = wait_children(p, 2, timeout=30)  # both workers run
        q = prepare(root, tmp_path)  # the same store while the first writes it
        out, err = q.communicate(timeout=120)
        assert (q.returncode, len(err.strip().splitlines())) == (2, 1), err
        assert "being written by another eib-prepare" in err, err
        assert survivors_of_kill_9(p, kids, timeout=10) == []
    finally:
        if p.poll() is None: p.kill()
