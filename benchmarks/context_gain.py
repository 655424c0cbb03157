"""Would the entropy model gain from the previous frame? Intra-frame against previous-frame context, on the same tokens.

An open-loop estimate for inter-frame context (issue 19), before any change to the coding path. For a feature store it
fits plain grouped RVQ (the codec's `RVQConfig.for_dim` grouping, codebooks on at most `--frames` training frames),
codes every utterance with ECVQ at one λ per utterance (a grid of `--lams` values from `eib.ecvq.lambda_grid`, wider
than the entropy-model training's grid so that it reaches the middle of the rate range; tokens from the per-position unigram prior, as in round 1 of `train_entropy_model`), and
trains, on exactly these tokens and with the same step budget, seed and batches:

- **intra**: `eib.entropy.EntropyModel` (the book's model: q(token_p | tokens_<p of the same frame));
- **prev-tokens**: the same, plus a learned embedding of the previous frame's token at the same position added to
  each position's input;
- **prev-vector**: the same, plus a linear map of the previous frame's decoded vector (normalised space) added to every
  position's input;
- **both**: the two added together.

The first frame of an utterance sees an empty previous frame (BOS tokens, a zero vector). It prints validation bits per
frame at each λ (held-out training speakers, `eib.train.split_train_val`) and the saving against intra. The tokens are
the same for all models, so the distortion is the same: a saving is bits saved at equal MSE, open loop (an ECVQ that
knows the context model would choose its tokens with it and could only do better on its own objective).

    .venv/bin/python benchmarks/context_gain.py --features data_subset/ravdess_whisper_base

Measured on RAVDESS's Whisper-base store (2026-12-07, 2 cores shared with other jobs: the bits do not depend on it, the
times do), on a share of the training split to keep it short:

    .venv/bin/python benchmarks/context_gain.py --features data_subset/ravdess_whisper_base --max-utts 240 \
        --frames 30000 --steps 1500 --lams 5 --span 0.4,1.2

set-up 133 s (240 training utterances, 43 649 frames; validation: Actor_03 and Actor_11, 21 593 frames); validation
bits per frame, intra against prev-tokens: 99.2 -> 87.5 (-11.7%), 53.0 -> 43.1 (-18.7%), 36.2 -> 27.2 (-24.8%),
27.9 -> 20.0 (-28.4%), 24.6 -> 17.3 (-29.6%); prev-vector and both save less (4.8-19.5%, 7.6-20.6%). So the
previous frame's tokens save about 12-25% in the 30-120 BPF middle of the range, open loop: short of issue 19's 25%
goal except near 30 BPF. The default span (-1,3) gave 3-8% above 180 BPF and 25-27% at 41 and 6 BPF (800 steps).
"""
import argparse, math, time
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default="data_subset/ravdess_whisper_base")
    ap.add_argument("--frames", type=int, default=60000, help="training frames for the RVQ fit")
    ap.add_argument("--lams", type=int, default=7)
    ap.add_argument("--span", default="-1,3", help="log10 of the λ grid's ends relative to the distortion scale (the "
                    "training grid's is -2,1.5; this one reaches the 30-120 BPF middle of the curves)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--max-utts", type=int, default=0, help="at most this many training utterances (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import torch, torch.nn as nn, torch.nn.functional as F
    from eib.ecvq import ecvq_encode, lambda_grid
    from eib.entropy import EntropyConfig, EntropyModel, UnigramModel
    from eib.rvq import RVQConfig, fit_rvq
    from eib.train import open_features, sample_frames, split_train_val, stack_frames

    torch.manual_seed(a.seed); torch.set_num_threads(2)
    man, frames_of, meta, _ = open_features(a.features)
    tr_ids, va_ids, how = split_train_val(man, seed=a.seed)
    if a.max_utts: tr_ids = tr_ids[:a.max_utts]
    t0 = time.time()
    x_fit = sample_frames(stack_frames(tr_ids, frames_of), a.frames, a.seed)
    rvq = fit_rvq(x_fit, RVQConfig.for_dim(int(meta["dim"])), seed=a.seed, iters=12, progress=False)
    c = rvq.cfg
    lams = lambda_grid(rvq, x_fit, n=a.lams, span=tuple(float(v) for v in a.span.split(",")))
    sub = x_fit[::max(1, len(x_fit) // 20000)]
    prior = UnigramModel.with_skip(c.positions, c.vocab)
    prior = UnigramModel.fit(ecvq_encode(rvq, prior, sub, torch.as_tensor(lams)[torch.arange(len(sub)) % len(lams)]).tokens, c.vocab)

    def code(ids, offset):
        """Tokens (N, L), previous-frame tokens (N, L), previous decoded vectors (N, D), λ index (N,) and squared
        error (N,) in normalised space, of utterances `ids`."""
        utts = [np.asarray(frames_of(u), np.float32) for u in ids]
        li = np.repeat((np.arange(len(utts)) + offset) % len(lams), [len(u) for u in utts])
        x = np.concatenate(utts)
        coded = ecvq_encode(rvq, prior, x, torch.as_tensor(lams[li]))
        tok = coded.tokens
        zr = rvq.decode_normalised(tok)
        first = np.concatenate([[0], np.cumsum([len(u) for u in utts])[:-1]])
        prev = torch.cat([tok[:1], tok[:-1]]); prev[first] = c.bos
        pvec = torch.cat([zr[:1], zr[:-1]]); pvec[first] = 0.0
        return tok, prev, pvec.float(), torch.as_tensor(li), coded.distortion

    data = {"train": code(tr_ids, 0), "val": code(va_ids, 1)}
    print(f"{a.features}: {meta.get('encoder')} {c.dim} dims, codec {c.groups} x {c.layers} x {c.codes}; "
          f"{len(tr_ids)} training utterances ({len(data['train'][0])} frames), validation {how} ({len(data['val'][0])} frames); "
          f"λ grid {', '.join(f'{v:.3g}' for v in lams)}; set-up {time.time() - t0:.0f} s")

    class Context(EntropyModel):
        "EntropyModel plus the previous frame: its token at each position and/or its decoded vector."
        def __init__(self, cfg, tokens: bool, vector: bool, dim: int):
            super().__init__(cfg)
            self.ptok = nn.Embedding(cfg.n_inputs, cfg.d_model) if tokens else None
            self.pvec = nn.Linear(dim, cfg.d_model) if vector else None
            for m in (self.ptok, self.pvec):
                if m is not None: nn.init.normal_(m.weight, std=0.02)
            if vector: nn.init.zeros_(self.pvec.bias)

        def forward(self, t, prev=None, pvec=None):
            inp = torch.cat([torch.full_like(t[:, :1], self.cfg.bos), t[:, :-1]], 1)
            x = self.tok(inp) + self.position_table()
            if self.ptok is not None: x = x + self.ptok(prev)
            if self.pvec is not None: x = x + self.pvec(pvec)[:, None]
            for b in self.blocks: x = b(x)
            return self.head(self.ln_f(x))

    cfg = EntropyConfig.for_rvq(c, "cpu")
    arms = {"intra": (False, False), "prev-tokens": (True, False), "prev-vector": (False, True), "both": (True, True)}
    res = {}
    for name, (pt, pv) in arms.items():
        torch.manual_seed(a.seed)
        m = Context(cfg, pt, pv, c.dim)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)
        tok, prev, pvec, _, _ = data["train"]
        gen = torch.Generator().manual_seed(a.seed)
        t1, step = time.time(), 0
        while step < a.steps:
            for idx in torch.randperm(len(tok), generator=gen).split(a.batch):
                if step >= a.steps: break
                for g in opt.param_groups: g["lr"] = 1e-3 * min(1.0, (step + 1) / 100)
                loss = F.cross_entropy(m(tok[idx], prev[idx], pvec[idx]).flatten(0, 1), tok[idx].flatten())
                opt.zero_grad(set_to_none=True); loss.backward()
                nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); step += 1
        m.eval()
        vt, vp, vv, vl, _ = data["val"]
        with torch.no_grad():
            bits = torch.cat([-(m(vt[i:i + 2048], vp[i:i + 2048], vv[i:i + 2048]).log_softmax(-1)
                               .gather(-1, vt[i:i + 2048, :, None]).squeeze(-1)).sum(1) / math.log(2)
                              for i in range(0, len(vt), 2048)])
        res[name] = np.array([float(bits[vl == j].mean()) for j in range(len(lams))])
        print(f"  {name}: {a.steps} steps in {time.time() - t1:.0f} s", flush=True)

    print(f"\nvalidation bits per frame (same tokens, so the same MSE), by λ; saving against intra")
    _, _, _, vl, dist = data["val"]
    mse = [float(dist[vl == j].mean()) / c.dim for j in range(len(lams))]
    print(f"{'λ':>8} {'nMSE':>7} " + " ".join(f"{n:>18}" for n in arms))
    for j in range(len(lams)):
        row = [f"{res['intra'][j]:7.1f}"] + [f"{res[n][j]:7.1f} ({100 * (1 - res[n][j] / res['intra'][j]):+5.1f}%)" for n in list(arms)[1:]]
        print(f"{lams[j]:8.3g} {mse[j]:7.4f} " + " ".join(f"{s:>18}" for s in row))


if __name__ == "__main__":
    main()
