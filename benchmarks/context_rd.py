"""Inter-frame context, closed loop: rate at equal MSE of the intra-frame entropy model against the one that also sees the previous frame.

Issue 19 asks whether the entropy model should condition frame t's tokens on frame t-1. This benchmark answers it in
closed loop, on one feature store and one set of codebooks:

- plain grouped RVQ fitted as `eib-train --preset cpu` fits it (`RVQConfig.for_dim`, 60 000 sampled training frames,
  the preset's iterations and SKIP probability), and the training λ grid of `eib.ecvq.lambda_grid`;
- whole training utterances (frames in order) up to `--train-frames` frames, validation utterances of held-out
  training speakers (`eib.train.split_train_val`) up to `--val-frames` (`eib.train.sample_utterances`); each utterance
  coded at one λ of the grid;
- both arms are trained by the library's `eib.ecvq.train_entropy_model` on those whole utterances (what `eib-train
  --context` does), with the same budget and seed: round 1 on ECVQ tokens from the per-position unigram prior, round 2
  on tokens re-encoded by ECVQ with the arm's own model, closed loop (`--steps` steps each round, the best validation
  checkpoint kept);
- the arms are `eib.entropy.EntropyModel` with `EntropyConfig.context` **none** (the book's intra-frame model) and
  **frame** (the previous frame's token at each position, an embedding per position and token, added to that
  position's input);
- closed loop: the context arm's ECVQ codes the frames of each utterance in order, frame t with the tokens it chose for
  frame t-1 (the first frame sees BOS): what its decoder sees (`eib.ecvq.ecvq_encode_utterances`, the float model);
- on the TEST split (whole utterances, all at one λ) at `--eval-lams` values: ideal bits per frame (-log2 q of the
  float model) and normalised MSE. For each intra point it prints the context arm's rate at the same MSE (log-log
  interpolation on the arm's own curve) and the saving;
- real streams: on `--speed-utts` test utterances at the middle λ, each arm's codec (`eib.codec.Codec`) compresses
  every utterance into a stream (`eib.bitstream.compress`: the exact coding model, the range coder) and decompresses
  it: frames per second both ways (one torch thread), whether every round trip gave the encoder's tokens back, and
  the streams' bits per frame (header and checksum included) against the ideal bits of the exact coding model.

    .venv/bin/python benchmarks/context_rd.py --features data_subset/ravdess_whisper_base
"""
import argparse, json, math, time
from pathlib import Path
import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default="data_subset/ravdess_whisper_base")
    ap.add_argument("--train-frames", type=int, default=60000, help="whole training utterances up to this many frames")
    ap.add_argument("--val-frames", type=int, default=8000)
    ap.add_argument("--steps", type=int, default=1200, help="training steps per round (the cpu preset's)")
    ap.add_argument("--eval-lams", type=int, default=15)
    ap.add_argument("--eval-span", default="-0.2,1.2", help="log10 of the evaluation λ's ends relative to the distortion scale")
    ap.add_argument("--test-utts", type=int, default=0, help="at most this many test utterances (0: all)")
    ap.add_argument("--speed-utts", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the curves here")
    ap.add_argument("--cache", default=None, help="folder for the trained models: an arm found there (same store, "
                    "arguments and seed) is loaded, not retrained")
    a = ap.parse_args()
    from eib.bitstream import compress_with_result, decompress, stream_bpf
    from eib.codec import Codec
    from eib.ecvq import ecvq_encode_utterances, lambda_grid, distortion_scale, train_entropy_model
    from eib.entropy import EntropyConfig, EntropyModel
    from eib.rvq import RVQConfig, fit_rvq
    from eib.train import PRESETS, open_features, sample_frames, sample_utterances, split_train_val, stack_frames

    torch.manual_seed(a.seed); torch.set_num_threads(2)
    t00 = time.time()
    man, frames_of, meta, _ = open_features(a.features)
    tr_ids, va_ids, how = split_train_val(man, seed=a.seed)
    te_ids = man.loc[man["split"].astype(str) == "test", "id"].tolist()
    if a.test_utts: te_ids = te_ids[:a.test_utts]

    p = PRESETS["cpu"]
    x_fit = sample_frames(stack_frames(tr_ids, frames_of), p["max_frames"], a.seed)
    rvq = fit_rvq(x_fit, RVQConfig.for_dim(int(meta["dim"]), codes=p["codes"]), seed=a.seed, iters=p["rvq_iters"],
                  skip_prob=p["skip_prob"], progress=False)
    c = rvq.cfg
    lams = lambda_grid(rvq, x_fit)
    tr_utts, va_utts = sample_utterances(tr_ids, frames_of, a.train_frames, a.seed), sample_utterances(va_ids, frames_of, a.val_frames, a.seed + 1)
    te_utts = [np.asarray(frames_of(i), np.float32) for i in te_ids]
    te_utts = [u for u in te_utts if len(u)]
    print(f"{a.features}: {meta.get('encoder')} {c.dim} dims, codec {c.groups} x {c.layers} x {c.codes}; training "
          f"{len(tr_utts)} utterances ({sum(map(len, tr_utts))} frames), validation {how} ({len(va_utts)} utterances, "
          f"{sum(map(len, va_utts))} frames), test {len(te_utts)} utterances ({sum(map(len, te_utts))} frames); "
          f"RVQ fit {time.time() - t00:.0f} s", flush=True)

    models, log = {}, {}
    key = f"{Path(a.features).name}-{a.train_frames}-{a.val_frames}-{a.steps}-{a.seed}-library"
    for name in ("none", "frame"):
        cfg = EntropyConfig.for_rvq(c, "cpu", context=name)
        cached = Path(a.cache) / f"{key}-context-{name}.pt" if a.cache else None
        if cached is not None and cached.exists():
            m = EntropyModel(cfg); saved = torch.load(cached, weights_only=False)
            m.load_state_dict(saved["state"]); models[name] = m.eval(); log[name] = saved["log"]
            print(f"  context {name}: loaded from {cached} (validation bits per token {saved['log']['val_bits_per_token']})", flush=True)
            continue
        t1 = time.time()
        m, hist = train_entropy_model(rvq, tr_utts, va_utts, lams=lams, max_steps=a.steps, seed=a.seed,
                                      config=dict(context=name), progress=False)
        models[name] = m
        best = [min(h["val_bits"] for h in hist if h["round"] == r) for r in sorted({h["round"] for h in hist})]
        log[name] = dict(val_bits_per_token=[round(v, 4) for v in best], train_s=round(time.time() - t1, 1),
                         encode_s=[h["encode_s"] for h in hist if h["epoch"] == 0])
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True); torch.save(dict(state=m.state_dict(), log=log[name]), cached)
        print(f"  context {name}: validation bits per token {', '.join(f'{v:.4f}' for v in best)} (rounds 1, 2: the second on "
              f"its own closed-loop tokens); {log[name]['train_s']:.0f} s, of which ECVQ tokens {sum(log[name]['encode_s']):.0f} s", flush=True)

    span = [float(v) for v in a.eval_span.split(",")]
    elams = distortion_scale(rvq, x_fit) * np.logspace(span[0], span[1], a.eval_lams)
    curves = {}
    for name, m in models.items():
        rows, t1 = [], time.time()
        for lam in elams:
            coded = ecvq_encode_utterances(rvq, m, te_utts, float(lam), exact=False)
            nf = sum(len(r.tokens) for r in coded)
            rows.append(dict(lam=float(lam), bpf=sum(float(r.bits.sum()) for r in coded) / nf,
                             mse=sum(float(r.distortion.double().sum()) for r in coded) / nf / c.dim))
        curves[name] = rows
        print(f"  context {name}: {len(elams)} test points in {time.time() - t1:.0f} s", flush=True)

    print(f"\ntest split, closed loop: bits per frame (ideal, float model) and normalised MSE at each λ")
    print(f"{'λ':>9} " + " ".join(f"{n + ' bpf':>12} {'nMSE':>7}" for n in curves))
    for j, lam in enumerate(elams):
        print(f"{lam:9.4g} " + " ".join(f"{curves[n][j]['bpf']:12.1f} {curves[n][j]['mse']:7.4f}" for n in curves))

    def rate_at(rows, mse):
        "Rate of a curve at normalised MSE `mse` (log-log interpolation; None outside its MSE range)."
        r = sorted(rows, key=lambda d: d["mse"])
        ms, bs = np.log([d["mse"] for d in r]), np.log([d["bpf"] for d in r])
        if not ms[0] <= math.log(mse) <= ms[-1]: return None
        return float(np.exp(np.interp(math.log(mse), ms, bs)))

    print(f"\nrate of context frame at the intra points' MSE; saving against intra")
    print(f"{'intra bpf':>10} {'nMSE':>7} {'frame bpf':>10} {'saving':>8}")
    saving = []
    for d in curves["none"]:
        r = rate_at(curves["frame"], d["mse"])
        saving.append(None if r is None else 1 - r / d["bpf"])
        print(f"{d['bpf']:10.1f} {d['mse']:7.4f} " + (f"{'-':>10} {'-':>8}" if r is None else f"{r:10.1f} {100 * (1 - r / d['bpf']):+7.1f}%"))
    mid = [v for v, d in zip(saving, curves["none"]) if v is not None and 30 <= d["bpf"] <= 120]
    if mid: print(f"saving in the 30-120 BPF middle ({len(mid)} intra points there): min {100 * min(mid):.1f}%, "
                  f"mean {100 * np.mean(mid):.1f}%, max {100 * max(mid):.1f}% (issue 19's goal: 25%)")

    # real streams: compress and decompress each speed utterance with each arm's codec, one torch thread
    torch.set_num_threads(1)
    sp = te_utts[:a.speed_utts]
    nf = sum(map(len, sp))
    lam = float(elams[len(elams) // 2])
    speed = {}
    for name, m in models.items():
        codec = Codec(rvq, m)
        codec.coding_model  # built once, outside the timings
        t1 = time.time(); coded = [compress_with_result(codec, u, lam) for u in sp]; te = time.time() - t1
        t1 = time.time(); back = [decompress(codec, d) for d, _ in coded]; td = time.time() - t1
        same = all(torch.equal(t, r.tokens) and np.array_equal(y, r.recon.numpy()) for (t, y), (_, r) in zip(back, coded))
        bpf = sum(len(d) * 8 for d, _ in coded) / nf
        ideal = sum(float(r.bits.sum()) for _, r in coded) / nf  # the exact coding model's -log2 of its frequencies
        speed[name] = dict(encode_fps=nf / te, decode_fps=nf / td, round_trips_exact=same, stream_bpf=bpf, ideal_bpf=ideal)
        print(f"  context {name}: compress {nf / te:7.0f} frames/s, decompress {nf / td:7.0f} frames/s, round trips exact: "
              f"{same}; streams {bpf:.2f} BPF (header and checksum included) against {ideal:.2f} ideal "
              f"({len(sp)} utterances, {nf} frames, λ {lam:.4g}, 1 thread)", flush=True)
    if {"none", "frame"} <= set(speed):
        print(f"  context frame against none: compress {speed['frame']['encode_fps'] / speed['none']['encode_fps']:.2f}x, "
              f"decompress {speed['frame']['decode_fps'] / speed['none']['decode_fps']:.2f}x the frames per second")
    print(f"total {time.time() - t00:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(features=a.features, args=vars(a), log=log, lams=[float(v) for v in elams], curves=curves,
                           saving=saving, speed=speed), f, indent=1)


if __name__ == "__main__":
    main()
