"""Benchmark of the codec's heart: ECVQ encode throughput (cached + batched vs the thesis's naive scheme),
arithmetic rate against this machine's matmul rate, actual coded bits vs ideal -log2 q, decode throughput
and peak memory for both entropy-model presets.

    .venv/bin/python benchmarks/bench_codec.py                       # synthetic 768-dim features
    .venv/bin/python benchmarks/bench_codec.py --features data_subset/ravdess
    .venv/bin/python benchmarks/bench_codec.py --checkpoint DIR      # a trained codec (eib-train) for the bit counts
    .venv/bin/python benchmarks/bench_codec.py --threads 2           # both arms on 2 threads (only on an idle machine)

Every number printed is measured in this run; the machine, thread count and input are printed with them.

How the encode throughput is compared: the cached arm encodes one full batch of frames (`eib.ecvq.auto_batch`, the
library's default batch: ~446 frames for the paper preset), the naive arm one utterance of --naive-frames frames
(its per-frame rate barely depends on the length: its matrix products already have 30 x (p + 1) rows). The two arms
alternate --repeats times and the ratio printed is the median of the paired ratios, because on a shared machine the
speed of either arm drifts by 10-20% between runs. The default is one torch thread: with two threads on two cores
that other jobs also use, every parallel region waits for a time slice, which slows the cached arm's many small
operations far more than the naive arm's few large ones (measured 20-30x slower on this machine at load 6-8).
The profile line splits the cached arm's time by operation: the matrix products of the linear layers, the
attention over the key/value cache (36 x n_heads x frames tiny matrix-vector products per layer), and the rest.
"""
from __future__ import annotations
import argparse, contextlib, math, os, platform, statistics, sys, time
from pathlib import Path
import numpy as np
import torch
from eib.core import EibError
from eib.rvq import RVQConfig, fit_rvq
from eib.entropy import EntropyConfig, EntropyModel, CodingModel, MODEL_SIZES
from eib.ecvq import train_entropy_model, lambda_grid
from eib.ecvq import ecvq_encode, auto_batch
from eib.bitstream import compress_with_result, decompress, stream_info


def synthetic(n: int, dim: int = 768, seed: int = 0) -> np.ndarray:
    "Correlated synthetic frames (low-rank signal, a nonlinearity, noise), for when no features are given."
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(48, dim, generator=torch.Generator().manual_seed(7))
    h = torch.randn(n, 48, generator=g)
    return (h @ basis + torch.tanh(h[:, :8] @ basis[:8]) + 0.5 * torch.randn(n, dim, generator=g)).numpy()


def load_input(spec: str | None, n_fit: int, seed: int):
    "-> (fit frames, list of utterances (T, D), description)."
    if spec and spec != "synth":
        p = Path(spec)
        if p.suffix == ".npy":
            x = np.load(p).astype(np.float32)
            utts = [x[i:i + 150] for i in range(0, len(x), 150)]
            return x[:n_fit], utts, f"{p} ({x.shape[0]} frames x {x.shape[1]} dims)"
        from eib.features import load_store
        st = load_store(p)
        ids = st.ids()
        rng = np.random.default_rng(seed)
        utts = [st.frames(u) for u in rng.permutation(ids)[:400]]
        fit = np.concatenate(utts)[:n_fit]
        return fit, utts, f"{p} ({st.encoder}, {st.dim} dims, {len(ids)} utterances; {len(utts)} sampled)"
    x = synthetic(n_fit + 3000, seed=seed)
    utts = [x[n_fit + i:n_fit + i + 150] for i in range(0, 3000, 150)]
    return x[:n_fit], utts, "synthetic 768-dim frames (no --features given: a fallback, not emotion2vec)"


def naive_encode(rvq, model, x, lam: float):
    "The thesis scheme: for each of the L positions a full float Transformer pass over the prefix; one utterance."
    c = rvq.cfg
    z = rvq.normalise(x)
    r = z.view(-1, c.groups, c.group_dim).clone()
    n = len(r)
    toks = torch.full((n, 0), 0, dtype=torch.long)
    cbz = torch.cat([rvq.codebooks, rvq.codebooks.new_zeros(c.groups, c.layers, 1, c.group_dim)], 2)
    with torch.no_grad():
        for p in range(c.positions):
            g, m = divmod(p, c.layers)
            inp = torch.cat([torch.full((n, 1), c.bos, dtype=torch.long), toks], 1)
            h = model.tok(inp) + model.position_table()[:p + 1]
            for b in model.blocks: h = b(h, model._mask[:p + 1, :p + 1])
            bits = -model.head(model.ln_f(h[:, -1])).log_softmax(-1) / math.log(2)
            d = ((r[:, g, None, :] - cbz[g, m][None]) ** 2).sum(-1)
            k = (d + lam * bits).argmin(-1)
            r[:, g] -= cbz[g, m][k]
            toks = torch.cat([toks, k[:, None]], 1)
    return toks


def flops_per_frame(c: EntropyConfig) -> float:
    "Multiply-add FLOPs (x2) of one frame's L cached steps: projections, FFN, attention, head."
    d, L = c.d_model, c.positions
    per_pos = c.n_layers * 2 * (4 * d * d + 2 * d * c.d_ff) + 2 * d * c.vocab
    attn = c.n_layers * 2 * 2 * d * sum(p + 1 for p in range(L))
    return L * per_pos + attn


def matmul_rate(c: EntropyConfig, n: int, dtype) -> float:
    "This machine's torch.matmul rate (FLOP/s) at the model's shapes with n rows."
    shapes = [(c.d_model, 3 * c.d_model), (c.d_model, c.d_model), (c.d_model, c.d_ff), (c.d_ff, c.d_model)]
    mats = [(torch.randn(n, a, dtype=dtype), torch.randn(a, b, dtype=dtype)) for a, b in shapes]
    for a, b in mats: a @ b
    t0, reps, fl = time.perf_counter(), 0, 0.0
    while time.perf_counter() - t0 < 1.0:
        for a, b in mats: a @ b; fl += 2 * a.shape[0] * a.shape[1] * b.shape[1]
        reps += 1
    return fl / (time.perf_counter() - t0)


@contextlib.contextmanager
def quiet_fds():
    "Silence C-level writes to stdout/stderr (torch.profiler's own 'USDT ... profiler_start' lines)."
    sys.stdout.flush(); sys.stderr.flush()
    saved, null = (os.dup(1), os.dup(2)), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1); os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1); os.dup2(saved[1], 2)
        for fd in (*saved, null): os.close(fd)


def peak_rss_mib(fn):
    "Run fn(); return (result, seconds, peak RSS MiB during it) using VmHWM reset via /proc/self/clear_refs."
    def hwm():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"): return int(line.split()[1]) / 1024
        return float("nan")
    try: Path("/proc/self/clear_refs").write_text("5")
    except OSError: pass
    t0 = time.perf_counter(); out = fn(); dt = time.perf_counter() - t0
    return out, dt, hwm()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", default=None, help="a feature store folder (data_subset/<DS>), a .npy (T, D) file, or 'synth'")
    ap.add_argument("--checkpoint", default=None, help="trained codec folder; default: RVQ fitted here, cpu model trained briefly")
    ap.add_argument("--train-steps", type=int, default=15, help="training steps of the cpu model when no --checkpoint")
    ap.add_argument("--frames", type=int, default=None, help="frames for the cached paper-preset arm (default: one full batch, auto_batch)")
    ap.add_argument("--exact-frames", type=int, default=160, help="frames for the exact-coding-model arm and the decode runs")
    ap.add_argument("--naive-frames", type=int, default=30, help="frames of one utterance for the naive arm")
    ap.add_argument("--repeats", type=int, default=3, help="paired (cached, naive) runs; the median ratio is reported")
    ap.add_argument("--no-profile", action="store_true", help="skip the per-operation split of the cached arm")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for every arm (default 1: see above)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t_all = time.time()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f} at start")

    if a.checkpoint:
        from eib.codec import load_codec
        codec = load_codec(a.checkpoint); rvq, trained = codec.rvq, codec.model
        fit, utts, desc = load_input(a.features, 4000, a.seed)
        desc += f"; codec {a.checkpoint}"
    else:
        fit, utts, desc = load_input(a.features, 4000, a.seed)
        rvq = fit_rvq(fit, RVQConfig.for_dim(fit.shape[1], layers=3), iters=6, refine=0, progress=False, seed=a.seed)
        t0 = time.time()
        trained, hist = train_entropy_model(rvq, fit[:2000], fit[3500:], preset="cpu", rounds=1, epochs=1,
                                            max_steps=a.train_steps, batch_size=128, progress=False, seed=a.seed)
        desc += f"; RVQ fitted here, cpu model trained {hist[-1]['steps']} steps in {time.time() - t0:.0f} s"
    c = rvq.cfg
    print(f"input: {desc}")
    print(f"RVQ: {c.groups} groups x {c.layers} layers x {c.codes} codes, {c.positions} tokens/frame")
    test = np.concatenate(utts)
    lam = float(lambda_grid(rvq, fit)[4])
    print(f"λ = {lam:.4g} (middle of the lambda_grid)\n")

    # 1. ECVQ encode throughput, paper preset: cached + batched vs naive, paired runs
    paper = EntropyModel(EntropyConfig.for_rvq(c, "paper")).eval()
    if trained is not None and trained.cfg.d_model == 256 and trained.cfg.n_layers == 6: paper = trained
    n_fast = a.frames or auto_batch(paper)
    x = test[:n_fast]
    if len(x) < n_fast: print(f"note: only {len(x)} test frames available for the cached arm (asked {n_fast})")
    u = utts[0][:a.naive_frames]
    fast, naive = [], []
    for _ in range(max(1, a.repeats)):
        t0 = time.perf_counter(); ecvq_encode(rvq, paper, x, lam, exact=False, batch_size=len(x)); fast.append(len(x) / (time.perf_counter() - t0))
        t0 = time.perf_counter(); naive_encode(rvq, paper, u, lam); naive.append(len(u) / (time.perf_counter() - t0))
    xe = test[:a.exact_frames]
    t0 = time.perf_counter(); ecvq_encode(rvq, paper, xe, lam, exact=True); fps_exact = len(xe) / (time.perf_counter() - t0)
    fps_fast, fps_naive = statistics.median(fast), statistics.median(naive)
    ratios = sorted(f / n for f, n in zip(fast, naive))
    fmt = lambda v: ", ".join(f"{r:.1f}" for r in v)
    print("ECVQ encode throughput, paper preset (6 layers, d 256, 8 heads, FFN 1024):")
    print(f"  naive thesis scheme (L full passes over the prefix, one utterance of {len(u)} frames): {fps_naive:8.2f} frames/s  (runs: {fmt(naive)})")
    print(f"  cached + batched, float model ({len(x)} frames in one batch):              {fps_fast:8.2f} frames/s  (runs: {fmt(fast)})")
    print(f"    = {statistics.median(ratios):.1f}x naive (median of {len(ratios)} paired runs; paired ratios {fmt(ratios)}; target >= 15x)")
    print(f"  cached + batched, exact coding model (what streams use, {len(xe)} frames):      {fps_exact:8.2f} frames/s  = {fps_exact / fps_naive:5.1f}x naive")
    if not a.no_profile:
        from torch.profiler import profile, ProfilerActivity
        with quiet_fds(), profile(activities=[ProfilerActivity.CPU]) as prof: ecvq_encode(rvq, paper, x, lam, exact=False, batch_size=len(x))
        ev = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
        tot = sum(ev.values()) or 1
        lin, att = ev.get("aten::addmm", 0) + ev.get("aten::mm", 0), ev.get("aten::bmm", 0) + sum(v for k, v in ev.items() if "attention" in k)
        print(f"  where the cached float arm spends its time (torch.profiler, self CPU): linear-layer matmuls {lin / tot:.0%}, "
              f"attention over the KV cache {att / tot:.0%}, everything else {(tot - lin - att) / tot:.0%}")

    # 2. arithmetic rate vs matmul rate
    fl = flops_per_frame(paper.cfg)
    n_rows = len(x)
    r32, r64 = matmul_rate(paper.cfg, n_rows, torch.float32), matmul_rate(paper.cfg, min(len(xe), n_rows), torch.float64)
    print(f"\nArithmetic rate ({fl / 1e6:.0f} MFLOP per frame, paper preset):")
    print(f"  float path: {fl * fps_fast / 1e9:6.2f} GFLOP/s of {r32 / 1e9:6.2f} GFLOP/s float32 matmul at its shapes ({n_rows} rows) = {fl * fps_fast / r32:5.1%}")
    print(f"  exact path: {fl * fps_exact / 1e9:6.2f} GFLOP/s of {r64 / 1e9:6.2f} GFLOP/s float64 matmul at its shapes ({min(len(xe), n_rows)} rows) = {fl * fps_exact / r64:5.1%}")

    # 3. actual coded bits vs ideal, per utterance streams (cpu-preset model)
    ideal = payload = stream = frames = 0
    for utt in utts[:20]:
        data, res = compress_with_result((rvq, trained), utt, lam)
        ideal += float(res.bits.sum()); payload += stream_info(data).payload_len * 8; stream += len(data) * 8; frames += len(utt)
    print(f"\nCoded bits vs ideal (-log2 q), cpu-preset model, {min(len(utts), 20)} utterances, {frames} frames:")
    print(f"  ideal {ideal / frames:7.2f} BPF | payload {payload / frames:7.2f} BPF ({(payload - ideal) / ideal:+.3%}, coder termination included) "
          f"| stream {stream / frames:7.2f} BPF ({(stream - ideal) / ideal:+.3%}, container included)")

    # 4. decode throughput and peak memory, both presets
    print("\nDecode (one stream, all frames batched), exact coding model:")
    for name, mdl in (("cpu", trained), ("paper", paper)):
        xs = test[:a.exact_frames]
        data, res = compress_with_result((rvq, mdl), xs, lam)
        (tok, _), dt, peak = peak_rss_mib(lambda: decompress((rvq, mdl), data))
        assert torch.equal(tok, res.tokens), "round trip failed"
        print(f"  {name:5s} preset ({sum(p.numel() for p in mdl.parameters()) / 1e6:5.2f} M params): {len(xs) / dt:8.1f} frames/s, "
              f"peak RSS {peak:7.0f} MiB (process), round trip exact")
    print(f"\ntotal {time.time() - t_all:.0f} s; load average {os.getloadavg()[0]:.1f} at the end (other jobs share the cores)")


if __name__ == "__main__":
    try: main()
    except EibError as e: raise SystemExit(f"bench_codec: error: {e}")
