"""eib-prepare under hostile conditions: killed with SIGKILL it leaves no worker behind (they get SIGTERM from the
kernel when their parent dies); a second writer of the same store is refused at once while the first holds it."""
import os, signal, subprocess, sys, time
from pathlib import Path

from eib.synth import ensure_corpus

BIN = Path(sys.executable).parent


def prepare(root, out, name="k"):
    return subprocess.Popen([BIN / "eib-prepare", "--dataset", "synth", "--root", root, "--encoder", "compare", "--out", out,
                             "--name", name, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def children(pid: int) -> list[str]:
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


def test_kill_9_leaves_no_workers_and_a_second_writer_is_refused(tmp_path):
    root = ensure_corpus()
    p = prepare(root, tmp_path)
    try:
        for _ in range(300):  # wait until both workers run
            kids = children(p.pid)
            if len(kids) >= 2: break
            time.sleep(0.1)
        assert len(kids) >= 2, kids
        q = prepare(root, tmp_path)  # the same store while the first writes it
        out, err = q.communicate(timeout=120)
        assert (q.returncode, len(err.strip().splitlines())) == (2, 1), err
        assert "being written by another eib-prepare" in err, err
        os.kill(p.pid, signal.SIGKILL); p.wait(timeout=30)
        deadline = time.time() + 10
        while time.time() < deadline and any(Path(f"/proc/{k}").exists() for k in kids): time.sleep(0.1)
        assert [k for k in kids if Path(f"/proc/{k}").exists()] == []
    finally:
        if p.poll() is None: p.kill()
