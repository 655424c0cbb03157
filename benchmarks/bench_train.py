"""Codec training, old recipe against new, side by side in one run; optionally the literal quick sweep's phase times.

For every feature store given, the real console script `eib-train --preset cpu` trains a codec on the TRAIN split:
  old   the recipe of an earlier commit (--old-ref, default 96c2070: before attention-fused, dropout-free cpu-preset
        training), run from a git worktree of that commit with this virtual environment;
  new   this checkout's recipe;
  4x    (--long) this checkout's recipe with `--budget 4`: four times the sampled frames and entropy-model steps.
Each arm's wall time and phases come from its checkpoint's config.json; its validation numbers are re-measured here
on the same validation frames: the entropy model's validation bits per token (meta) and the rate-distortion points
of `eib.train.evaluate_codec` at the old arm's λ grid, compared at equal rate by `eib.train.mse_at_rate` (MSE ratio,
negative = better than the reference, the old recipe).

--sweep also runs the literal quick sweep in a fresh clone of this checkout (`git clone`, `make setup`, then
`papermill nbs/sweep.ipynb out/sweep_ravdess.ipynb -p dataset ravdess -p data_root ../shared/datasets/ravdess`,
timed from papermill's start) and prints its phase times from the results file; --sweep-against REF runs the same on a
fresh clone of commit REF first, for a before-and-after on one machine (the speed of a shared machine drifts by tens
of percent between hours: compare only sweeps of one run).

    .venv/bin/python benchmarks/bench_train.py --features data_subset/ravdess data_subset/ravdess_whisper_base
    .venv/bin/python benchmarks/bench_train.py --features data_subset/ravdess --long
    .venv/bin/python benchmarks/bench_train.py --features data_subset/ravdess --sweep
    .venv/bin/python benchmarks/bench_train.py --sweep --no-train --sweep-against 0cb39a2

Run it on an otherwise idle machine: the arms run one after another and each uses every core.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(arm: str, features: Path, out: Path, src: Path | None, extra: list) -> float:
    "Run eib-train for one arm (src: a worktree whose eib replaces this checkout's); returns wall seconds."
    cmd = [sys.executable, "-c", "import sys; from eib.train import train_cli; sys.exit(train_cli())",
           "--features", str(features), "--preset", "cpu", "--out", str(out), "--quiet", *extra]
    env = dict(os.environ)
    if src is not None: env["PYTHONPATH"] = str(src)
    t = time.time()
    r = subprocess.run(cmd, env=env, cwd=src or ROOT, capture_output=True, text=True)
    if r.returncode: raise SystemExit(f"{arm} arm failed:\n{r.stderr[-2000:]}")
    return time.time() - t


def measure(ck: Path, xva, lams) -> dict:
    from eib.codec import load_codec
    from eib.train import evaluate_codec
    m = json.loads((ck / "config.json").read_text())["metrics"]
    codec = load_codec(ck)
    return dict(meta=m, rd=evaluate_codec(codec, xva, lams), cfg=str(codec.cfg))


def bench_store(features: Path, old_src: Path, tmp: Path, long: bool) -> None:
    name = features.name
    arms = [("old", old_src, []), ("new", None, [])] + ([("4x", None, ["--budget", "4"])] if long else [])
    res = {}
    for arm, src, extra in arms:
        ck = tmp / f"{name}_{arm}"
        wall = train(arm, features.resolve(), ck, src, extra)
        res[arm] = dict(wall=wall, ck=ck)
        print(f"  {name}: {arm} arm trained in {wall:.0f} s", flush=True)
    report(features, res)


def report(features: Path, res: dict) -> None:
    "Print the arms `res` ({arm: dict(wall=seconds, ck=checkpoint)}, the first one the reference) side by side."
    from eib.train import open_features, split_train_val, stack_frames, sample_frames, mse_at_rate, PRESETS
    man, frames_of, meta, _ = open_features(str(features))
    _, va_ids, _ = split_train_val(man, 0.1, 0)
    xva = sample_frames(stack_frames(va_ids, frames_of), PRESETS["cpu"]["max_val_frames"], 1)  # eib-train's, at seed 0
    ref_arm = next(iter(res))
    lams = json.loads((res[ref_arm]["ck"] / "config.json").read_text())["lams"]
    for arm in res: res[arm] |= measure(res[arm]["ck"], xva, lams)
    ref = res[ref_arm]
    print(f"\n{features.name} ({meta.get('encoder')}, {meta.get('dim')} dims), codec {ref['cfg']}; validation: {len(xva)} frames "
          f"of the held-out training speakers, λ grid of the {ref_arm} arm ({len(lams)} values)")
    print(f"{'arm':>4} {'wall_s':>7} {'rvq_s':>6} {'entropy_s':>9} {'val bits/token':>15} {'vs ' + ref_arm:>7} "
          f"{'MSE at equal rate vs ' + ref_arm:>25}  phases (s)")
    for arm, r in res.items():
        m = r["meta"]
        vb, vb0 = m.get("val_bits_per_token"), ref["meta"].get("val_bits_per_token")
        ratio = mse_at_rate(ref["rd"], r["rd"])
        ph = m.get("phases_s", {})
        print(f"{arm:>4} {r['wall']:7.0f} {m.get('rvq_fit_s', float('nan')):6.0f} {m.get('entropy_train_s', float('nan')):9.0f} "
              f"{vb:15.4f} {vb / vb0 - 1:+7.2%} {2 ** ratio - 1:+25.2%}  "
              + (" ".join(f"{k}={v:.0f}" for k, v in ph.items()) or "-"))
    print("  rate-distortion points (bpf, normalised MSE):")
    for arm, r in res.items():
        print(f"  {arm:>4}: " + " ".join(f"({b:.1f}, {e:.4f})" for b, e in zip(r["rd"].bpf, r["rd"].mse)))


def bench_sweep(tmp: Path, ref: str | None = None) -> float:
    """The literal quick RAVDESS sweep on a fresh clone of this checkout (or of commit `ref`); phase times from its results
    file; returns its wall seconds."""
    base = tmp / ("fresh" if ref is None else f"fresh_{ref}")
    base.mkdir()
    subprocess.run(["git", "clone", "-q", str(ROOT), str(base / "main")], check=True)
    repo = base / "main"
    if ref is not None: subprocess.run(["git", "checkout", "-q", ref], cwd=repo, check=True)
    head = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=repo, capture_output=True, text=True).stdout.strip()[:100]
    shared = (ROOT.parent / "shared").resolve()
    if not shared.exists(): raise SystemExit(f"--sweep needs ../shared beside the repository ({shared} missing)")
    (base / "shared").symlink_to(shared)
    t = time.time()
    subprocess.run(["make", "setup"], cwd=repo, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"\nfresh clone {repo} at {head}: make setup {time.time() - t:.0f} s (not counted)", flush=True)
    (repo / "out").mkdir(exist_ok=True)
    cmd = [str(repo / ".venv/bin/papermill"), "nbs/sweep.ipynb", "out/sweep_ravdess.ipynb", "-p", "dataset", "ravdess",
           "-p", "data_root", "../shared/datasets/ravdess", "--log-level", "WARNING", "--no-progress-bar"]
    t = time.time()
    subprocess.run(cmd, cwd=repo, check=True)
    wall = time.time() - t
    print(f"literal quick sweep: {' '.join(cmd[1:])}\n  {wall:.0f} s wall ({wall / 60:.1f} min; bar 15 min)")
    for f in sorted((repo / "evaluation_results").glob("rate_sweep_RAVDESS*.json")):
        if f.stat().st_mtime < t: continue
        tm = json.loads(f.read_text())["timing"]
        rp, lp = tm.get("rate_points_s", {}), tm.get("layer_points_s", {})
        print(f"  {f.name}: features {tm.get('features_s')} s, codec {tm.get('codec_s')} s, probes {tm.get('probe_s')} s, "
              f"rate points {sum(rp.values()):.0f} s ({len(rp)}: " + ", ".join(f"{k}={v:.0f}" for k, v in rp.items())
              + f"), layer model {tm.get('layer_model_s', 0):.0f} s, layer points {sum(lp.values()):.0f} s ({len(lp)})", flush=True)
    return wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--features", nargs="+", default=["data_subset/ravdess"], help="feature stores (eib-prepare)")
    ap.add_argument("--old-ref", default="96c2070", help="commit of the old recipe")
    ap.add_argument("--long", action="store_true", help="also the new recipe with --budget 4")
    ap.add_argument("--sweep", action="store_true", help="also the literal quick sweep on a fresh clone")
    ap.add_argument("--no-train", action="store_true", help="only the sweep")
    ap.add_argument("--sweep-against", metavar="REF", help="with --sweep: first the same sweep on a fresh clone of commit REF")
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} cpus, load average at start {os.getloadavg()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    old = tmp / "old"
    try:
        if not a.no_train:
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(old), a.old_ref], cwd=ROOT, check=True)
            for f in a.features:
                if not Path(f).exists(): raise SystemExit(f"no feature store at {f}; make one with eib-prepare")
                bench_store(Path(f), old, tmp, a.long)
        if a.sweep:
            old_wall = bench_sweep(tmp, a.sweep_against) if a.sweep_against else None
            wall = bench_sweep(tmp)
            if old_wall: print(f"\nliteral quick sweep, {a.sweep_against} against this checkout, one after the other: "
                               f"{old_wall:.0f} s against {wall:.0f} s ({old_wall / wall:.2f}x)")
    finally:
        if old.exists(): subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
