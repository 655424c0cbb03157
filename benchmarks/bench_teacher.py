"""Teacher forcing, whole-frame passes against compiled steps, side by side in one run (the layer sweep's cost).

The layer-sweep baseline codes given plain-RVQ tokens, so its coder intervals come from teacher forcing
(`eib.bitstream.token_intervals`, `CodingModel.teacher`): whole frames at once, every position's linear layers in one
product and each frame's causal attention fused per head (`eib.entropy._attend_frames`). The reference arm steps the
same model position by position (`CodingModel.start`/`step`, what ECVQ and the decoder run) and takes the intervals of
the given tokens from each step's frequencies. Both arms code the same tokens: the first `--frames` frames of a feature
store's TRAIN split, plain RVQ at `--layers` layers spread over the groups. The intervals must be identical.

    .venv/bin/python benchmarks/bench_teacher.py --features data_subset/ravdess --checkpoint checkpoints/ravdess_cpu

Run it on an otherwise idle machine; each arm runs with one torch thread, then whole frames also with 2 worker threads;
the arms alternate for `--rounds` rounds and the best time of each is compared.
"""
import argparse, time
import numpy as np
import torch


def stepped_intervals(cm, tokens, batch: int = 512):
    "Coder intervals of `tokens` (N, L) from `step`, position by position (the reference arm)."
    from eib.bitstream import coder_intervals
    ck, fk = np.empty(tokens.shape, np.int64), np.empty(tokens.shape, np.int64)
    for a in range(0, len(tokens), batch):
        tb = tokens[a:a + batch]
        st, inp = cm.start(len(tb)), torch.full((len(tb),), cm.cfg.bos)
        for p in range(tokens.shape[1]):
            c, f = coder_intervals(cm.step(st, inp), tb[:, p])
            ck[a:a + len(tb), p], fk[a:a + len(tb), p] = c.numpy(), f.numpy()
            inp = tb[:, p]
    return ck, fk


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", required=True, help="feature store folder")
    ap.add_argument("--checkpoint", required=True, help="codec folder (its entropy model codes the tokens)")
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--layers", type=int, default=51, help="plain-RVQ layers in all (spread over the groups)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the three arms (the best of each is compared)")
    a = ap.parse_args()
    from eib.bitstream import token_intervals
    from eib.codec import load_codec
    from eib.rvq import spread_layers
    from eib.train import open_features
    codec = load_codec(a.checkpoint)
    man, frames_of, _, _ = open_features(a.features)
    ids, x, n = list(man[man.split == "train"].id), [], 0
    for u in ids:
        if n >= a.frames: break
        x.append(frames_of(u)); n += len(x[-1])
    x = torch.from_numpy(np.concatenate(x)[:a.frames])
    c = codec.rvq.cfg
    tok = codec.rvq.encode_nearest(x, spread_layers(a.layers, c.groups, c.layers))
    cm = codec.coding_model
    torch.set_num_threads(1)
    token_intervals(cm, tok[:64]); stepped_intervals(cm, tok[:64])  # compiled kernels loaded before timing
    print(f"{a.features}: {len(tok)} frames x {c.positions} positions, {a.layers} layers; codec {a.checkpoint}; 1 torch thread")
    def timed(f):
        t = time.time(); r = f(); return time.time() - t, r
    ts, t1, t2 = [], [], []
    for _ in range(a.rounds):  # the arms interleaved, best of each: the machine's speed drifts between minutes
        s_, ref = timed(lambda: stepped_intervals(cm, tok)); ts.append(s_)
        s_, one = timed(lambda: token_intervals(cm, tok)); t1.append(s_)
        s_, two = timed(lambda: token_intervals(cm, tok, workers=2)); t2.append(s_)
    print(f"  rounds {a.rounds}, seconds per arm: steps {ts}, whole frames {t1}, whole frames on 2 workers {t2}".replace("[", "").replace("]", ""))
    ts, t1, t2 = min(ts), min(t1), min(t2)
    pos = tok.numel()
    same = all(np.array_equal(u, v) for r in (one, two) for u, v in zip(r, ref))
    print(f"  steps (start/step)        {ts:7.2f} s  {ts / pos * 1e6:5.2f} us per position")
    print(f"  whole frames, 1 worker    {t1:7.2f} s  {t1 / pos * 1e6:5.2f} us per position   {ts / t1:4.2f}x the steps")
    print(f"  whole frames, 2 workers   {t2:7.2f} s  {t2 / pos * 1e6:5.2f} us per position   {ts / t2:4.2f}x the steps")
    print(f"  the same intervals in all three: {same}")
    if not same: raise SystemExit("the arms disagree")


if __name__ == "__main__":
    main()
