"""Feature-extraction throughput: utterances/s and audio seconds per wall second, 1 vs 2 workers.

1. A sample of the corpus (every k-th utterance by id) is encoded into temporary stores with 1 worker
   (in-process) and with `--workers` worker processes; the two stores must hold identical arrays.
2. The whole corpus is encoded by the real console script, `eib-prepare --dataset <ds> --encoder <enc>
   --out <full-out>`, timed from outside (process start-up included). Point --full-out at `data_subset` to
   build the real store at the same time; frames already there are reused and reported as such.

    .venv/bin/python benchmarks/bench_extract.py                       # ravdess, compare, full run into a temp dir
    .venv/bin/python benchmarks/bench_extract.py --full-out data_subset  # ... and keep the store
"""
import argparse, os, re, resource, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np


def cpu_now() -> float:
    "CPU seconds of this process plus its finished (joined) child processes."
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def timed_store(table, dataset, encoder, out, workers):
    from eib.features import build_store, load_store
    t0, c0 = time.perf_counter(), cpu_now()
    p = build_store(dataset, None, encoder, out=out, name="bench", workers=workers, table=table, progress=False, verbose=False)
    return time.perf_counter() - t0, cpu_now() - c0, load_store(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ravdess")
    ap.add_argument("--root", default=None)
    ap.add_argument("--encoder", default="compare")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sample", type=int, default=120, help="utterances in the 1-vs-N-worker comparison")
    ap.add_argument("--full-out", default=None, help="folder of stores for the full run (default: a temp dir)")
    ap.add_argument("--no-full", action="store_true", help="only the sample comparison")
    a = ap.parse_args()
    from eib.data import read_dataset
    df = read_dataset(a.dataset, a.root)
    k = max(1, len(df) // a.sample)
    sample = df.sort_values("id").iloc[::k].head(a.sample).reset_index(drop=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (shared with other jobs)")
    print(f"{a.dataset}: {len(df)} utterances, {df['duration'].sum() / 60:.1f} min of audio; encoder {a.encoder}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        w1, c1, s1 = timed_store(sample, a.dataset, a.encoder, Path(tmp) / "w1", 1)
        wn, cn, sn = timed_store(sample, a.dataset, a.encoder, Path(tmp) / "wn", a.workers)
        same = all(np.array_equal(s1.frames(u), sn.frames(u)) for u in s1.ids()) and s1.ids() == sn.ids()
        audio = float(s1.manifest["duration"].sum())
        rows += [("sample, in-process", 1, len(s1), audio, w1, c1), (f"sample, {a.workers} processes", a.workers, len(sn), audio, wn, cn)]
        if not a.no_full:
            out = Path(a.full_out) if a.full_out else Path(tmp) / "full"
            cmd = [str(Path(sys.executable).parent / "eib-prepare"), "--dataset", a.dataset, "--encoder", a.encoder,
                   "--out", str(out), "--workers", str(a.workers)] + (["--root", a.root] if a.root else [])
            print("$", " ".join(cmd), flush=True)
            t0, c0 = time.perf_counter(), cpu_now()
            r = subprocess.run(cmd, capture_output=True, text=True)
            wf, cf = time.perf_counter() - t0, cpu_now() - c0
            if r.returncode: sys.exit(f"eib-prepare failed ({r.returncode}): {r.stderr[-2000:]}")
            m = re.search(r"(\d+) already encoded, (\d+) to encode", r.stdout)
            reused, encoded = int(m[1]), int(m[2])
            print(r.stdout[r.stdout.find("ok,") - 40:].strip() if "ok," in r.stdout else r.stdout[-1500:])
            from eib.features import load_store
            st = load_store(out / a.dataset)
            enc_audio = float(st.manifest["duration"].sum()) * encoded / max(len(st), 1)
            rows.append((f"full: eib-prepare ({reused} reused)", a.workers, encoded, enc_audio, wf, cf))
    print(f"\n{'run':34s} {'workers':>7s} {'utts':>5s} {'audio s':>8s} {'wall s':>7s} {'utt/s':>6s} {'x real time':>11s} "
          f"{'CPU s':>6s} {'CPU s/utt':>9s}")
    for name, w, n, au, wall, cpu in rows:
        print(f"{name:34s} {w:7d} {n:5d} {au:8.1f} {wall:7.1f} {n / wall:6.2f} {au / wall:11.1f} {cpu:6.1f} {cpu / max(n, 1):9.3f}")
    print(f"\nspeed-up of {a.workers} worker processes over 1 (sample): {w1 / wn:.2f}x wall; identical arrays: {same}")
    print(f"CPU-bound estimate on {a.workers} idle cores for all {len(df)} files: {c1 / len(s1) * len(df) / a.workers:.0f} s "
          f"(sample's in-process CPU s/utt x files / workers; the wall times above depend on the load)")
    if not a.no_full:
        print(f"full corpus: {rows[-1][4]:.1f} s wall for {rows[-1][2]} utterances "
              f"(target: all {len(df)} in under 240 s: {'met' if rows[-1][4] < 240 else 'NOT met'})")


if __name__ == "__main__":
    main()
