"""Sweeps through the executor seam (eib.core.Jobs): the same jobs as local processes, and on a real one-node SLURM
(brought up by `.ci/slurm.sh up`, which needs root; otherwise that test is skipped and says why). A quick synthetic
sweep submitted as SLURM job arrays writes the same results files as the local jobs; the scheduler's job-completion
log records every task; a task cancelled with `scancel` is submitted again, the file ends complete and correct, and no
finished point is computed twice."""
import json, os, re, subprocess, sys, time
from pathlib import Path

import pytest

from eib.core import repo_root

ROOT = repo_root()
SLURM = ROOT / ".ci" / "slurm.sh"
RATES = [10.0, 50.0, 100.0]
SWEEP = dict(rates=RATES, samples_per_emotion=4, matched=True, matched_per_emotion=3, layer_sweep=True, layer_points=2,
             workers=1, command="test")
SCRIPT = """
import json, sys
from pathlib import Path
from eib.core import Jobs
from eib.sweep import run_sweep
ex, out, retries = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
run_sweep("synth", out_dir=out, progress=False, jobs=Jobs(ex, out / "jobs", time_min=10, parallel=2, retries=retries, poll_s=0.5),
          **json.loads(sys.argv[4]))
"""
FILES = ("rate_sweep_SYNTH.json", "rate_sweep_SYNTH_matched.json")


def sweep(executor: str, out: Path, retries: int = 1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, executor, str(out), str(retries), json.dumps(SWEEP)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def content(out: Path) -> dict:
    "The results files without what differs between runs of the same points (timing, dates, the command)."
    strip = lambda o: {k: v for k, v in o.items() if k not in ("timing", "created", "command")}
    return {f: strip(json.loads((out / f).read_text())) for f in FILES}


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    p = sweep("local", out)
    log = p.communicate(timeout=900)[0]
    assert p.returncode == 0, log
    return out


def test_local_jobs_write_every_point_and_resume(local):
    got = content(local)
    for f in FILES:
        assert [q["target_bpf"] for q in got[f]["rate_points"]] == RATES, f
        assert [q["layers"] for q in got[f]["layer_sweep"]] == [10, 30], f
    assert not (local / "rate_sweep_SYNTH.points").exists()  # every job's point merged
    before = sorted(p.name for p in (local / "jobs").iterdir())
    stale = local / "rate_sweep_SYNTH.points" / "rate_points_10.json"  # as if left by a killed sweep of another codec
    stale.parent.mkdir(); stale.write_text(json.dumps(dict(key="rate_points", value=10.0, secs=1.0, tag="another sweep", scored={})))
    (stale.parent / "layer_sweep_10.json").write_text(json.dumps(dict(key="layer_sweep", value=10, secs=1.0, tag="another sweep", scored={})))
    p = sweep("local", local)
    assert p.wait(timeout=300) == 0
    assert sorted(p.name for p in (local / "jobs").iterdir()) == before  # a rerun submits nothing
    assert content(local) == got
    assert not stale.parent.exists()  # the stale points were removed, not merged


def jobcomp() -> list[dict]:
    "The scheduler's job-completion records (jobcomp/filetxt), one dict of its fields per finished job."
    r = subprocess.run([SLURM, "jobcomp"], capture_output=True, text=True)
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in r.stdout.splitlines() if "JobState=" in line]


@pytest.fixture(scope="module")
def slurm():
    "A running one-node SLURM: started by `.ci/slurm.sh up` (installed first if missing), stopped again if this test started it."
    if os.geteuid() != 0: pytest.skip("a real SLURM is installed and started by .ci/slurm.sh, which needs root (not root here)")
    was_up = subprocess.run([SLURM, "status"], capture_output=True).returncode == 0
    r = subprocess.run([SLURM, "up"], capture_output=True, text=True, timeout=900)
    if r.returncode == 4: pytest.skip(f"SLURM is not installed and could not be: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stdout + r.stderr
    print(r.stdout)
    yield
    if not was_up: subprocess.run([SLURM, "down"], capture_output=True, timeout=120)


def test_slurm_array_sweep_equals_local_and_survives_scancel(slurm, local, tmp_path):
    print(subprocess.run(["sinfo"], capture_output=True, text=True).stdout)
    seen = len(jobcomp())
    p = sweep("slurm", tmp_path)
    cancelled, t0 = None, time.time()
    while cancelled is None and p.poll() is None and time.time() - t0 < 300:  # cancel the first rate-point task that runs
        q = subprocess.run(["squeue", "-h", "-r", "-o", "%i %j %T"], capture_output=True, text=True).stdout.split("\n")
        running = [l.split()[0] for l in q if "eib-synth-rate-points" in l and l.endswith("RUNNING")]
        if running:
            cancelled = running[0]
            subprocess.run(["scancel", cancelled], check=True)
        time.sleep(0.2)
    log = p.communicate(timeout=900)[0]
    assert p.returncode == 0, log
    assert cancelled is not None, log
    assert "ended without their output; submitting them again" in log, log
    assert content(tmp_path) == content(local)  # the same achieved rates, metrics and layer points as the local jobs
    recs = jobcomp()[seen:]
    print("\n".join(f"{j.get('JobId')} {j.get('Name')} {j.get('JobState')}" for j in recs))
    rate = [j for j in recs if j.get("Name") == "eib-synth-rate-points"]
    layer = [j for j in recs if j.get("Name") == "eib-synth-layer-sweep"]
    assert sorted(j["JobState"] for j in rate) == ["CANCELLED"] + ["COMPLETED"] * len(RATES), recs  # no point computed twice
    assert [j["JobState"] for j in layer] == ["COMPLETED"] * 2, recs


def tiny_corpus(d: Path) -> Path:
    "Six short noise and tone clips with a manifest.csv: a corpus `eib-prepare --dataset manifest` reads."
    import numpy as np, pandas as pd, soundfile as sf
    rng, rows = np.random.default_rng(0), []
    (d / "wav").mkdir(parents=True)
    for i, emo in enumerate(["angry", "sad", "happy", "neutral", "angry", "sad"]):
        t = np.arange(16000) / 16000
        sf.write(d / "wav" / f"u{i}.wav", 0.1 * np.sin(2 * np.pi * (150 + 40 * i) * t) + rng.normal(0, 0.01, len(t)), 16000)
        rows.append(dict(path=f"wav/u{i}.wav", speaker=f"s{i % 3}", emotion=emo, split="test" if i % 3 == 0 else "train"))
    pd.DataFrame(rows).to_csv(d / "manifest.csv", index=False)
    return d


def prepare(tmp: Path, name: str, *flags) -> subprocess.CompletedProcess:
    return subprocess.run([Path(sys.executable).parent / "eib-prepare", "--dataset", "manifest", "--root", tmp / "corpus",
                           "--out", tmp / "stores", "--name", name, "--workers", "1", *flags], capture_output=True, text=True, timeout=600)


def same_store(a: Path, b: Path) -> bool:
    from eib.features import load_store
    sa, sb = load_store(a), load_store(b)
    return sa.ids() == sb.ids() and all((sa.frames(u) == sb.frames(u)).all() for u in sa.ids())


def test_prepare_shards_as_local_jobs(tmp_path):
    tiny_corpus(tmp_path / "corpus")
    r = prepare(tmp_path, "here"); assert r.returncode == 0, r.stderr
    r = prepare(tmp_path, "jobs", "--executor", "local", "--shards", "2", "--cpus", "1", "--jobs-dir", str(tmp_path / "jobs"))
    assert r.returncode == 0, r.stderr
    assert "6 already encoded, 0 to encode" in r.stdout, r.stdout  # the two shard jobs encoded every file
    assert same_store(tmp_path / "stores" / "here", tmp_path / "stores" / "jobs")


def test_prepare_shards_on_slurm(slurm, tmp_path):
    tiny_corpus(tmp_path / "corpus")
    seen = len(jobcomp())
    r = prepare(tmp_path, "here"); assert r.returncode == 0, r.stderr
    r = prepare(tmp_path, "slurm", "--executor", "slurm", "--shards", "2", "--cpus", "1", "--jobs-dir", str(tmp_path / "jobs"))
    assert r.returncode == 0, r.stderr
    assert "6 already encoded, 0 to encode" in r.stdout, r.stdout
    assert same_store(tmp_path / "stores" / "here", tmp_path / "stores" / "slurm")
    assert [j["JobState"] for j in jobcomp()[seen:] if j.get("Name") == "eib-prepare"] == ["COMPLETED"] * 2
