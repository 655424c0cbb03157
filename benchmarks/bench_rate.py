"""Rate control on actual bits: precision, encoder passes and speed of `eib.rate`, against the thesis scheme.

1. A codec (cpu preset) trained on the TRAIN split of the store with the real console script
   `eib-train --features <store> --preset cpu --out <checkpoint>` unless the checkpoint exists (it is gitignored:
   a codec trained on a licensed corpus is never committed).
2. Per-utterance rate control (`RateController.solve_many`, clamp=True) on the TEST split at every target of
   10, 15, ..., 200, 220, 240 BPF, counting the whole stream. Prints, per target, the set error, the per-utterance
   error spread, the passes and the re-encoded frames, then the summary against the issue's bars:
   per set |achieved - target| <= 0.25 BPF, per utterance |error| <= 1 BPF for >= 98%, median passes <= 6.
3. With `--against REV`: the same search (step 2) run again by the library of git revision REV (a temporary
   worktree on PYTHONPATH), then both side by side: wall and CPU time, their ratio, and whether every target's
   answer is the same.
4. The thesis scheme on a sample of utterances x targets: bisection on a linear λ in [1e-4, 32], tolerance 1 BPF,
   up to 50 iterations, one utterance at a time, each iteration a real `eib.bitstream.compress`. Time per
   utterance-target, side by side with ours.

    .venv/bin/python benchmarks/bench_rate.py                          # ravdess test split, all utterances
    .venv/bin/python benchmarks/bench_rate.py --limit 60               # a seeded sample of 60 test utterances
    .venv/bin/python benchmarks/bench_rate.py --features data_subset/synth --checkpoint checkpoints/synth_cpu
    .venv/bin/python benchmarks/bench_rate.py --limit 60 --thesis-utts 0 --against 69634bc   # against an earlier library
    .venv/bin/python benchmarks/bench_rate.py --limit 20 --thesis-utts 0 --profile 25        # where the time goes
"""
import argparse, json, os, resource, subprocess, sys, time
from pathlib import Path

import numpy as np

TARGETS = list(range(10, 201, 5)) + [220, 240]


def cpu_now() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def thesis_search(rvq, model, x, target, lo=1e-4, hi=32.0, tol=1.0, max_iter=50):
    "The thesis scheme: bisection on a linear λ scale, one utterance, real streams. -> (λ, bpf, iterations)."
    from eib.bitstream import compress, stream_bpf
    for it in range(1, max_iter + 1):
        lam = (lo + hi) / 2
        bpf = stream_bpf(compress((rvq, model), x, lam), len(x))
        if abs(bpf - target) <= tol: break
        if bpf > target: lo = lam
        else: hi = lam
    return lam, bpf, it


def pct(a, q): return float(np.percentile(a, q)) if len(a) else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--features", default="data_subset/ravdess")
    ap.add_argument("--checkpoint", default="checkpoints/ravdess_cpu")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None, help="a seeded random sample of this many utterances")
    ap.add_argument("--targets", type=float, nargs="+", default=TARGETS)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (the bar is 2 cores)")
    ap.add_argument("--workers", type=int, default=2, help="processes sharing the utterances (eib.rate.solve_sharded); 1: one controller")
    ap.add_argument("--thesis-utts", type=int, default=4, help="utterances in the thesis-scheme arm (0: skip)")
    ap.add_argument("--thesis-targets", type=float, nargs="+", default=[20, 100, 180])
    ap.add_argument("--out", default="artifacts/bench_rate.json")
    ap.add_argument("--profile", type=int, default=0, help="run the search in this process under cProfile and print its top N functions")
    ap.add_argument("--against", default=None, help="a git revision whose library runs the same search afterwards, side by side")
    a = ap.parse_args()

    import torch
    torch.set_num_threads(a.threads)
    from eib.features import load_store
    from eib.codec import load_codec
    from eib.rate import RateController

    ck = Path(a.checkpoint)
    if not (ck / "config.json").exists():
        print(f"training the codec: eib-train --features {a.features} --preset cpu --out {ck}", flush=True)
        t = time.time()
        subprocess.run([str(Path(sys.executable).parent / "eib-train"), "--features", a.features, "--preset", "cpu",
                        "--out", str(ck), "--quiet"], check=True)
        print(f"  trained in {time.time() - t:.0f} s", flush=True)
    codec = load_codec(ck)
    st = load_store(a.features)
    man = st.manifest
    ok = man.error.isna() | (man.error.astype(str).str.strip() == "")
    man = man[(man.split.astype(str) == a.split) & ok]
    full = int(man.frames.sum())
    if a.limit: man = man.sample(n=min(a.limit, len(man)), random_state=0).sort_values("id")
    ids = list(man.id)
    utts = [st.frames(i) for i in ids]
    frames = int(sum(len(u) for u in utts))
    print(f"store {a.features} split {a.split}: {len(ids)} utterances, {frames} frames "
          f"({frames / 50:.0f} s of audio); codec {ck} {codec.cfg} fingerprint {codec.fingerprint}")
    print(f"torch threads {torch.get_num_threads()}, os cpus {os.cpu_count()}, load average at start {os.getloadavg()}")

    # -- ours
    t0, c0 = time.time(), cpu_now()
    ranges = []
    prof = None
    if a.profile:  # one process, so that the profile sees the search itself
        import cProfile
        a.workers, prof = 1, cProfile.Profile()
        prof.enable()
    if a.workers > 1:
        from eib.rate import solve_sharded
        solved = solve_sharded(codec, utts, a.targets, workers=a.workers, ids=ids, on_range=ranges.append)
        engine = None
    else:
        rc = RateController(codec, utts, ids=ids)
        ranges.append(rc.achievable_range())
        solved = ((tg, rc.solve(tg, clamp=True)) for tg in a.targets)
        engine = rc.engine
    rows, errs = [], []
    hdr = f"{'target':>6} {'set_bpf':>8} {'set_err':>8} {'passes':>6} {'ok':>4} {'clamp':>5} {'<=1BPF':>7} " \
          f"{'med|e|':>7} {'p98|e|':>7} {'max|e|':>7} {'re-enc':>7} {'wall_s':>7}"
    t_last = time.time()
    for tg, r in solved:
        if not rows:  # the first target: the range is known now
            rg = ranges[0]
            print(f"\nachievable range (whole stream): set {rg.attrs['set_min']:.2f} .. {rg.attrs['set_max']:.2f} BPF; "
                  f"per utterance min {rg.min_bpf.min():.2f}..{rg.min_bpf.max():.2f}, max {rg.max_bpf.min():.2f}..{rg.max_bpf.max():.2f}")
            print("\n" + hdr)
        wall_t = time.time() - t_last; t_last = time.time()
        inr = ~r.clamped
        e = np.abs(r.error[inr])
        in_range = bool(inr.all())
        row = dict(target=tg, set_bpf=r.set_bpf, set_error=r.set_error, set_error_unclamped=float(
                       (r.bits[inr].sum() / r.frames[inr].sum()) - tg) if inr.any() else float("nan"),
                   passes=r.passes, ok=int(r.converged.sum()), clamped=int(r.clamped.sum()), in_range=in_range,
                   within_1=float((e <= 1).mean()) if len(e) else float("nan"), median_abs=pct(e, 50), p98_abs=pct(e, 98),
                   max_abs=float(e.max()) if len(e) else float("nan"), frames_encoded=r.frames_encoded,
                   seconds=wall_t, status={s: int(n) for s, n in zip(*np.unique(r.status, return_counts=True))},
                   evals=np.bincount(r.evals).tolist())
        rows.append(row); errs.append(r.error[inr])
        print(f"{tg:6.0f} {r.set_bpf:8.3f} {r.set_error:+8.3f} {r.passes:6d} {row['ok']:4d} {row['clamped']:5d} "
              f"{row['within_1']:7.1%} {row['median_abs']:7.3f} {row['p98_abs']:7.3f} {row['max_abs']:7.3f} "
              f"{r.frames_encoded / frames:7.2f} {wall_t:7.1f}", flush=True)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(dict(rows=rows), indent=1, default=str))
    wall, cpu = time.time() - t0, cpu_now() - c0
    if prof is not None:
        import pstats
        prof.disable()
        print(f"\nprofile of the search (one process, cProfile's own overhead included), top {a.profile} by own time:")
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(a.profile)
    n_ut = len(ids) * len(a.targets)

    inr_rows = [r for r in rows if r["in_range"]]
    allerr = np.abs(np.concatenate(errs)) if errs else np.zeros(0)
    passes = [r["passes"] for r in rows]
    print(f"\nsummary (ours): {len(a.targets)} targets x {len(ids)} utterances in {wall:.0f} s wall, {cpu:.0f} s CPU "
          f"(range and calibration included; {a.workers} process(es) x {a.threads} torch thread(s)); {wall / n_ut * 1e3:.1f} ms wall "
          f"per utterance-target; frames re-encoded for the targets {sum(r['frames_encoded'] for r in rows)} = "
          f"{sum(r['frames_encoded'] for r in rows) / frames:.1f} x the set")
    print(f"  targets inside every utterance's range: {len(inr_rows)} of {len(rows)} "
          f"({', '.join('%.0f' % r['target'] for r in rows if not r['in_range']) or 'none'} clamped for some utterances)")
    if inr_rows:
        print(f"  per set |achieved - target| over those: max {max(abs(r['set_error']) for r in inr_rows):.3f} BPF (bar 0.25)")
        print(f"  per utterance |error| <= 1 BPF: worst target {min(r['within_1'] for r in inr_rows):.1%} (bar 98%)")
    print(f"  passes per target: median {np.median(passes):.1f} (bar 6), min {min(passes)}, max {max(passes)}; "
          f"histogram {dict(zip(*np.unique(passes, return_counts=True)))}")
    if len(allerr):
        print(f"  per-utterance |error| over all unclamped (utterance, target) pairs ({len(allerr)}): "
              f"median {pct(allerr, 50):.3f}, p90 {pct(allerr, 90):.3f}, p98 {pct(allerr, 98):.3f}, p99.9 {pct(allerr, 99.9):.3f}, "
              f"max {allerr.max():.3f}; <= 0.25: {(allerr <= 0.25).mean():.2%}, <= 1: {(allerr <= 1).mean():.2%}")
    if engine is not None:
        pc = getattr(engine, "positions_coded", None)  # earlier libraries (--against) did not count them
        print(f"  engine: {engine.passes} passes in all, cache check mismatches {engine.mismatch}"
              + (f", token positions coded {pc} = {pc / max(1, engine.frames_encoded * engine.L):.0%} of all positions of the re-encoded frames" if pc is not None else ""))
    print(f"  projected to the whole {a.split} split ({full} frames) at this rate: {wall / frames * full / 60:.1f} min wall "
          f"(issue 14's bar: 5 min on 2 cores)")

    # -- the thesis scheme
    res = dict(rows=rows, wall_s=wall, cpu_s=cpu, utterances=len(ids), frames=frames, workers=a.workers, threads=a.threads)
    if a.thesis_utts:
        rng = np.random.default_rng(0)
        pick = sorted(rng.choice(len(ids), size=min(a.thesis_utts, len(ids)), replace=False).tolist())
        print(f"\nthesis scheme (linear λ bisection in [1e-4, 32], tol 1 BPF, <= 50 iterations, one utterance at a time) on "
              f"{len(pick)} utterances x targets {a.thesis_targets}:")
        th = []
        for i in pick:
            for tg in a.thesis_targets:
                t = time.time()
                lam, bpf, it = thesis_search(codec.rvq, codec.model, utts[i], tg)
                dt = time.time() - t
                th.append(dict(utt=ids[i], frames=len(utts[i]), target=tg, lam=lam, bpf=bpf, iterations=it, seconds=dt))
                print(f"  {ids[i]} ({len(utts[i])} frames) target {tg:.0f}: {it} iterations, {bpf:.2f} BPF "
                      f"(error {bpf - tg:+.2f}), λ {lam:.4g}, {dt:.1f} s", flush=True)
        per_frame_thesis = sum(x["seconds"] for x in th) / sum(x["frames"] for x in th)
        per_frame_ours = wall / (frames * len(a.targets))
        fail = sum(abs(x["bpf"] - x["target"]) > 1 for x in th)
        print(f"  thesis: {np.mean([x['seconds'] for x in th]):.2f} s per utterance-target "
              f"({per_frame_thesis * 1e3:.2f} ms per frame-target), median {np.median([x['iterations'] for x in th]):.0f} "
              f"iterations, {fail} of {len(th)} outside 1 BPF")
        print(f"  ours:   {wall / n_ut:.3f} s per utterance-target ({per_frame_ours * 1e3:.3f} ms per frame-target, "
              f"range and calibration included), tolerance 0.25 BPF")
        print(f"  speed-up (time per frame-target, thesis / ours): {per_frame_thesis / per_frame_ours:.1f}x")
        res["thesis"] = th
    if a.against: res["against"] = against(a, res)
    Path(a.out).write_text(json.dumps(res, indent=1, default=str))
    print(f"\nwrote {a.out}")


def against(a, ours: dict) -> dict:
    "Step 3: the same search by the library of revision `a.against`, in a temporary worktree; both printed side by side."
    import shutil, tempfile
    root = Path(__file__).resolve().parent.parent
    tmp = Path(tempfile.mkdtemp(prefix="bench_rate_"))
    wt, out = tmp / "wt", tmp / "theirs.json"
    subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", "-q", str(wt), a.against], check=True)
    try:
        rev = subprocess.run(["git", "-C", str(wt), "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()
        print(f"\nthe same search by the library of {rev[:90]}:", flush=True)
        argv = [sys.executable, str(Path(__file__).resolve()), "--features", a.features, "--checkpoint", a.checkpoint,
                "--split", a.split, "--threads", str(a.threads), "--workers", str(a.workers), "--thesis-utts", "0", "--out", str(out),
                "--targets", *map(str, a.targets)] + (["--limit", str(a.limit)] if a.limit else [])
        subprocess.run(argv, check=True, env={**os.environ, "PYTHONPATH": str(wt)}, stdout=subprocess.DEVNULL)
        theirs = json.loads(out.read_text())
    finally:
        subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(wt)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    same = all(abs(x["set_bpf"] - y["set_bpf"]) < 1e-9 and x["passes"] == y["passes"] for x, y in zip(ours["rows"], theirs["rows"]))
    print(f"  {'':14} {'wall_s':>8} {'cpu_s':>8}\n  {'this tree':14} {ours['wall_s']:8.0f} {ours['cpu_s']:8.0f}\n"
          f"  {a.against[:14]:14} {theirs['wall_s']:8.0f} {theirs['cpu_s']:8.0f}")
    print(f"  speed-up (their wall / ours): {theirs['wall_s'] / ours['wall_s']:.2f}x, CPU {theirs['cpu_s'] / ours['cpu_s']:.2f}x; "
          f"the same answer (set rate and passes) at every target: {same}")
    return dict(rev=a.against, wall_s=theirs["wall_s"], cpu_s=theirs["cpu_s"], same_answers=same)


if __name__ == "__main__":
    main()
