"""Inter-frame context, closed loop: rate at equal MSE of the intra-frame entropy model against models that also see the previous frame.

Issue 19 asks whether the entropy model should condition frame t's tokens on frame t-1. This benchmark answers it in
closed loop, on one feature store and one set of codebooks:

- plain grouped RVQ fitted as `eib-train --preset cpu` fits it (`RVQConfig.for_dim`, 60 000 sampled training frames,
  the preset's iterations and SKIP probability), and the training λ grid of `eib.ecvq.lambda_grid`;
- whole training utterances (frames in order) up to `--train-frames` frames, validation utterances of held-out
  training speakers (`eib.train.split_train_val`) up to `--val-frames`; each utterance coded at one λ of the grid;
- every arm is trained by the same loop with the same budget, seed and batches: round 1 on ECVQ tokens from the
  per-position unigram prior (as `train_entropy_model`'s round 1), round 2 on tokens re-encoded by ECVQ with the arm's
  own model (`--steps` steps each round, the best validation checkpoint kept);
- the arms: **intra** (`eib.entropy.EntropyModel`, the book's model), **frame** (the same plus a learned embedding of
  the previous frame's token at the same position, shared over positions, added to each position's input),
  **frame-pos** (that embedding per position: a table of positions x (vocab + 1) rows);
- closed loop: a context arm's ECVQ codes the frames of each utterance in order, frame t with the tokens it chose for
  frame t-1 (the first frame sees BOS): what its decoder would see. Frames at the same index of different utterances
  form one batch (`eib.ecvq.ecvq_encode` with the float model);
- on the TEST split (whole utterances, all at one λ) at `--eval-lams` values: ideal bits per frame (-log2 q of the
  float model; the exact coding model and the range coder add well under 1 % in this book's streams) and normalised
  MSE. For each intra point it prints the context arm's rate at the same MSE (log-log interpolation on the arm's own
  curve) and the saving;
- speed: each arm's ECVQ encode and its decoder's model steps (the given tokens fed position by position, as a decoder
  steps; no range coder), frames per second on `--speed-utts` test utterances, one torch thread.

    .venv/bin/python benchmarks/context_rd.py --features data_subset/ravdess_whisper_base
"""
import argparse, math, time
import numpy as np
import torch, torch.nn as nn, torch.nn.functional as F
from eib.entropy import EntropyModel


class Frame(EntropyModel):
    """`EntropyModel` whose position p also sees the previous frame's token at p (BOS for an utterance's first frame):
    an embedding shared over positions, or one per position. `self.context` (n, L) holds the previous frames' tokens
    for `start`/`step` (the ECVQ and decoder path)."""
    def __init__(self, cfg, per_position: bool):
        super().__init__(cfg)
        self.per_position = per_position
        self.ptok = nn.Embedding(cfg.n_inputs * (cfg.positions if per_position else 1), cfg.d_model)
        nn.init.normal_(self.ptok.weight, std=0.02)
        self.context = None

    def ctx(self, prev):
        if self.per_position: prev = prev + torch.arange(self.cfg.positions) * self.cfg.n_inputs
        return self.ptok(prev)

    def forward(self, t, prev=None):
        inp = torch.cat([torch.full_like(t[:, :1], self.cfg.bos), t[:, :-1]], 1)
        x = self.tok(inp) + self.position_table() + self.ctx(prev)
        for b in self.blocks: x = b(x)
        return self.head(self.ln_f(x))

    @torch.no_grad()
    def start(self, n):
        st = super().start(n)
        st["pos"] = st["pos"] + self.ctx(self.context)  # (n, L, d): position p's input gains its context row
        return st

    @torch.no_grad()
    def step(self, state, tok_in):
        p = state["p"]
        x = self.tok(torch.as_tensor(tok_in).long()) + state["pos"][:, p]
        for b, kc, vc in zip(self.blocks, state["k"], state["v"]): x = b.step(x, kc, vc, p)
        state["p"] = p + 1
        return self.head(self.ln_f(x))

class Intra(EntropyModel):
    "The book's model with the same call signature (the previous frame is ignored)."
    context = None
    def forward(self, t, prev=None): return super().forward(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default="data_subset/ravdess_whisper_base")
    ap.add_argument("--train-frames", type=int, default=60000, help="whole training utterances up to this many frames")
    ap.add_argument("--val-frames", type=int, default=8000)
    ap.add_argument("--steps", type=int, default=1200, help="training steps per round (the cpu preset's)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--eval-lams", type=int, default=15)
    ap.add_argument("--eval-span", default="-0.2,1.2", help="log10 of the evaluation λ's ends relative to the distortion scale")
    ap.add_argument("--test-utts", type=int, default=0, help="at most this many test utterances (0: all)")
    ap.add_argument("--speed-utts", type=int, default=40)
    ap.add_argument("--arms", default="intra,frame,frame-pos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the curves here")
    ap.add_argument("--cache", default=None, help="folder for the trained models: an arm found there (same store, "
                    "arguments and seed) is loaded, not retrained")
    a = ap.parse_args()
    import json
    from eib.ecvq import ecvq_encode, lambda_grid, distortion_scale
    from eib.entropy import EntropyConfig, UnigramModel
    from eib.rvq import RVQConfig, fit_rvq
    from eib.train import PRESETS, open_features, sample_frames, split_train_val, stack_frames

    torch.manual_seed(a.seed); torch.set_num_threads(2)
    t00 = time.time()
    man, frames_of, meta, _ = open_features(a.features)
    tr_ids, va_ids, how = split_train_val(man, seed=a.seed)
    te_ids = man.loc[man["split"].astype(str) == "test", "id"].tolist()
    if a.test_utts: te_ids = te_ids[:a.test_utts]
    rng = np.random.default_rng(a.seed)

    def take(ids, budget):
        out, n = [], 0
        for i in rng.permutation(len(ids)):
            if n >= budget: break
            u = np.asarray(frames_of(ids[i]), np.float32)
            if len(u): out.append(u); n += len(u)
        return out

    p = PRESETS["cpu"]
    x_fit = sample_frames(stack_frames(tr_ids, frames_of), p["max_frames"], a.seed)
    rvq = fit_rvq(x_fit, RVQConfig.for_dim(int(meta["dim"]), codes=p["codes"]), seed=a.seed, iters=p["rvq_iters"],
                  skip_prob=p["skip_prob"], progress=False)
    c = rvq.cfg
    lams = lambda_grid(rvq, x_fit)
    tr_utts, va_utts = take(tr_ids, a.train_frames), take(va_ids, a.val_frames)
    te_utts = [np.asarray(frames_of(i), np.float32) for i in te_ids]
    te_utts = [u for u in te_utts if len(u)]
    lam_tr = lams[rng.integers(len(lams), size=len(tr_utts))]
    lam_va = lams[np.arange(len(va_utts)) % len(lams)]
    print(f"{a.features}: {meta.get('encoder')} {c.dim} dims, codec {c.groups} x {c.layers} x {c.codes}; training "
          f"{len(tr_utts)} utterances ({sum(map(len, tr_utts))} frames), validation {how} ({len(va_utts)} utterances, "
          f"{sum(map(len, va_utts))} frames), test {len(te_utts)} utterances ({sum(map(len, te_utts))} frames); "
          f"RVQ fit {time.time() - t00:.0f} s", flush=True)

    def encode(model, utts, lam, closed: bool):
        """ECVQ of whole utterances with `model`: tokens, ideal bits (T,) and squared error (T,) per utterance. `closed`:
        frame by frame, each with the tokens chosen for the previous frame (batch: the utterances' frames at one index)."""
        lam = np.broadcast_to(np.asarray(lam, np.float64), (len(utts),))
        if not closed:
            r = ecvq_encode(rvq, model, np.concatenate(utts), np.repeat(lam, [len(u) for u in utts]), exact=False)
            cut = np.cumsum([len(u) for u in utts])[:-1]
            return list(zip(*(torch.tensor_split(v, torch.as_tensor(cut)) for v in (r.tokens, r.bits, r.distortion))))
        order = np.argsort([-len(u) for u in utts], kind="stable")
        T = max(len(u) for u in utts)
        tok = [torch.empty(len(u), c.positions, dtype=torch.long) for u in utts]
        bits = [torch.empty(len(u), dtype=torch.float64) for u in utts]
        dist = [torch.empty(len(u), dtype=torch.float32) for u in utts]
        prev = torch.full((len(utts), c.positions), c.bos, dtype=torch.long)
        lens = np.array([len(utts[i]) for i in order])
        for t in range(T):
            n = int((lens > t).sum())
            rows = order[:n]
            model.context = prev[:n]
            r = ecvq_encode(rvq, model, np.stack([utts[i][t] for i in rows]), lam[rows], exact=False, batch_size=n)
            prev[:n] = r.tokens
            for j, i in enumerate(rows): tok[i][t], bits[i][t], dist[i][t] = r.tokens[j], r.bits[j], r.distortion[j]
        model.context = None
        return list(zip(tok, bits, dist))

    def pairs(coded):
        "Tokens and previous-frame tokens (BOS first) of coded utterances, stacked."
        t = torch.cat([x[0] for x in coded])
        pv = torch.cat([torch.cat([torch.full((1, c.positions), c.bos), x[0][:-1]]) for x in coded])
        return t, pv

    def val_bits(model, t, pv):
        model.eval()
        with torch.no_grad():
            s = sum(float(F.cross_entropy(model(t[i:i + 2048], pv[i:i + 2048]).flatten(0, 1), t[i:i + 2048].flatten(), reduction="sum"))
                    for i in range(0, len(t), 2048))
        return s / t.numel() / math.log(2)

    def fit(model, tr, va, gen):
        t, pv = tr
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        best, best_sd, step = val_bits(model, *va), None, 0
        while step < a.steps:
            for idx in torch.randperm(len(t), generator=gen).split(a.batch):
                if step >= a.steps: break
                model.train()
                for g in opt.param_groups: g["lr"] = 1e-3 * min(1.0, (step + 1) / 100)
                loss = F.cross_entropy(model(t[idx], pv[idx]).flatten(0, 1), t[idx].flatten())
                opt.zero_grad(set_to_none=True); loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); step += 1
                if step % 200 == 0 or step == a.steps:
                    vb = val_bits(model, *va)
                    if vb < best: best, best_sd = vb, {k: v.clone() for k, v in model.state_dict().items()}
        if best_sd is not None: model.load_state_dict(best_sd)
        return model.eval(), best

    # round 1's tokens: the per-position unigram prior, as train_entropy_model's round 1 (no context: frames independent)
    sub = x_fit[::max(1, len(x_fit) // 20000)]
    prior = UnigramModel.with_skip(c.positions, c.vocab)
    prior = UnigramModel.fit(ecvq_encode(rvq, prior, sub, torch.as_tensor(lams)[torch.arange(len(sub)) % len(lams)]).tokens, c.vocab)
    t1 = time.time()
    r1 = {k: pairs(encode(prior, u, l, closed=False)) for k, u, l in (("tr", tr_utts, lam_tr), ("va", va_utts, lam_va))}
    print(f"round-1 tokens (unigram prior) {time.time() - t1:.0f} s", flush=True)

    cfg = EntropyConfig.for_rvq(c, "cpu")
    makers = {"intra": lambda: Intra(cfg), "frame": lambda: Frame(cfg, False), "frame-pos": lambda: Frame(cfg, True)}
    arms = [s for s in a.arms.split(",") if s]
    models, log = {}, {}
    from pathlib import Path
    key = f"{Path(a.features).name}-{a.train_frames}-{a.val_frames}-{a.steps}-{a.batch}-{a.seed}"
    for name in arms:
        cached = Path(a.cache) / f"{key}-{name}.pt" if a.cache else None
        if cached is not None and cached.exists():
            m = makers[name](); saved = torch.load(cached, weights_only=False)
            m.load_state_dict(saved["state"]); models[name] = m.eval(); log[name] = saved["log"]
            print(f"  {name}: loaded from {cached} (validation bits per token {saved['log']['round2_bits_per_token']:.4f})", flush=True)
            continue
        torch.manual_seed(a.seed)
        gen = torch.Generator().manual_seed(a.seed)
        m = makers[name]()
        closed = name != "intra"
        t1 = time.time()
        m, b1 = fit(m, r1["tr"], r1["va"], gen)
        t2 = time.time()
        r2 = {k: pairs(encode(m, u, l, closed)) for k, u, l in (("tr", tr_utts, lam_tr), ("va", va_utts, lam_va))}
        t3 = time.time()
        m, b2 = fit(m, r2["tr"], r2["va"], gen)
        models[name] = m
        log[name] = dict(round1_bits_per_token=b1, round2_bits_per_token=b2, train_s=round(t2 - t1 + time.time() - t3, 1),
                         reencode_s=round(t3 - t2, 1))
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True); torch.save(dict(state=m.state_dict(), log=log[name]), cached)
        print(f"  {name}: validation bits per token {b1:.4f} (round 1), {b2:.4f} (round 2, on its own closed-loop tokens); "
              f"training {log[name]['train_s']:.0f} s, re-encoding {log[name]['reencode_s']:.0f} s", flush=True)

    span = [float(v) for v in a.eval_span.split(",")]
    elams = distortion_scale(rvq, x_fit) * np.logspace(span[0], span[1], a.eval_lams)
    curves = {}
    for name, m in models.items():
        rows = []
        t1 = time.time()
        for lam in elams:
            coded = encode(m, te_utts, lam, closed=name != "intra")
            nf = sum(len(x[0]) for x in coded)
            rows.append(dict(lam=float(lam), bpf=sum(float(x[1].sum()) for x in coded) / nf,
                             mse=sum(float(x[2].double().sum()) for x in coded) / nf / c.dim))
        curves[name] = rows
        print(f"  {name}: {len(elams)} test points in {time.time() - t1:.0f} s", flush=True)

    print(f"\ntest split, closed loop: bits per frame (ideal, float model) and normalised MSE at each λ")
    print(f"{'λ':>9} " + " ".join(f"{n + ' bpf':>14} {'nMSE':>7}" for n in curves))
    for j, lam in enumerate(elams):
        print(f"{lam:9.4g} " + " ".join(f"{curves[n][j]['bpf']:14.1f} {curves[n][j]['mse']:7.4f}" for n in curves))

    def rate_at(rows, mse):
        "Rate of a curve at normalised MSE `mse` (log-log interpolation; None outside its MSE range)."
        r = sorted(rows, key=lambda d: d["mse"])
        ms, bs = np.log([d["mse"] for d in r]), np.log([d["bpf"] for d in r])
        if not ms[0] <= math.log(mse) <= ms[-1]: return None
        return float(np.exp(np.interp(math.log(mse), ms, bs)))

    saving = {}
    if "intra" in curves:
        print(f"\nrate at the intra points' MSE; saving against intra")
        print(f"{'intra bpf':>10} {'nMSE':>7} " + " ".join(f"{n:>22}" for n in curves if n != "intra"))
        for d in curves["intra"]:
            cells = []
            for n in curves:
                if n == "intra": continue
                r = rate_at(curves[n], d["mse"])
                cells.append(f"{'-':>22}" if r is None else f"{r:10.1f} ({100 * (1 - r / d['bpf']):+6.1f}%)")
                saving.setdefault(n, []).append(None if r is None else 1 - r / d["bpf"])
            print(f"{d['bpf']:10.1f} {d['mse']:7.4f} " + " ".join(f"{s:>22}" for s in cells))
        for n, s in saving.items():
            mid = [v for v, d in zip(s, curves["intra"]) if v is not None and 30 <= d["bpf"] <= 120]
            if mid: print(f"  {n}: saving in the 30-120 BPF middle (intra points there: {len(mid)}): "
                          f"min {100 * min(mid):.1f}%, mean {100 * np.mean(mid):.1f}%, max {100 * max(mid):.1f}% (issue 19's goal: 25%)")

    # speed: one torch thread, the first `speed_utts` test utterances, at the middle λ
    torch.set_num_threads(1)
    sp = te_utts[:a.speed_utts]
    nf = sum(map(len, sp))
    lam = float(elams[len(elams) // 2])
    speed = {}
    for name, m in models.items():
        closed = name != "intra"
        t1 = time.time(); coded = encode(m, sp, lam, closed); te = time.time() - t1
        t1 = time.time()
        with torch.no_grad():
            if not closed:
                tok = torch.cat([x[0] for x in coded])
                st, inp = m.start(len(tok)), torch.full((len(tok),), c.bos)
                for p in range(c.positions): m.step(st, inp); inp = tok[:, p]
            else:
                order = np.argsort([-len(x[0]) for x in coded], kind="stable")
                lens = np.array([len(coded[i][0]) for i in order])
                prev = torch.full((len(coded), c.positions), c.bos)
                for t in range(int(lens[0])):
                    n = int((lens > t).sum())
                    tok = torch.stack([coded[i][0][t] for i in order[:n]])
                    m.context = prev[:n]
                    st, inp = m.start(n), torch.full((n,), c.bos)
                    for p in range(c.positions): m.step(st, inp); inp = tok[:, p]
                    prev[:n] = tok
                m.context = None
        td = time.time() - t1
        speed[name] = dict(encode_fps=nf / te, decode_fps=nf / td)
        print(f"  {name}: encode {nf / te:8.0f} frames/s, decoder steps {nf / td:8.0f} frames/s "
              f"({len(sp)} utterances, {nf} frames, λ {lam:.4g}, 1 thread)", flush=True)
    print(f"total {time.time() - t00:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(features=a.features, args=vars(a), log=log, lams=[float(v) for v in elams], curves=curves,
                           saving=saving, speed=speed), f, indent=1)


if __name__ == "__main__":
    main()
