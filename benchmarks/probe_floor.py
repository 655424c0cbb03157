"""Is a fixed probe's collapse lost emotion or its own conditioning? Plain RVQ depth against the probe's scale floor.

For a feature store this fits plain grouped RVQ (the codec's `RVQConfig.for_dim` grouping, up to `--layers` layers per
group, codebooks fitted on at most 60 000 training frames) and codes the sweep's test subset with the nearest code at
each depth (no entropy model: the codec's λ = 0 point for that depth). It prints, side by side: the normalised MSE,
and the weighted F1 (95% interval) of the fixed probe, fitted on the unquantised training split, once with the scale
floor `eib.evaluate.SCALE_FLOOR` and once without one (`scale_floor=0`, the recipe before 2026-12-04). It also lists
the pooled features with the smallest spread over utterances, relative to their frame-level spread.

    .venv/bin/python benchmarks/probe_floor.py --features data_subset/ravdess --protocol ravdess --layers 16
"""
import argparse
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default="data_subset/ravdess")
    ap.add_argument("--protocol", default="ravdess")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--depths", default="3,6,8,10,16")
    a = ap.parse_args()
    import torch
    from eib.evaluate import SCALE_FLOOR, evaluate_predictions, fit_probe, pool_many, store_split
    from eib.features import get_encoder, load_store
    from eib.rvq import RVQConfig, fit_rvq
    from eib.sweep import test_subset
    from eib.train import sample_frames
    st = load_store(a.features)
    _, trf, ytr, spk = store_split(st, a.protocol, "train")
    _, fr, y = test_subset(st, a.protocol)
    spread = np.concatenate(trf).std(0)
    r = pool_many(trf, "mean").std(0) / spread
    names = get_encoder("compare").feature_names if st.encoder == "compare" else [f"dim {i}" for i in range(st.dim)]
    print(f"{a.features}: {len(trf)} training utterances, {len(fr)} test; pooled means with the smallest spread over utterances "
          f"(relative to the frame-level spread): " + ", ".join(f"{names[i]} {r[i]:.1e}" for i in np.argsort(r)[:5])
          + f"; {(r < SCALE_FLOOR).sum()} of {st.dim} below {SCALE_FLOOR}")
    probes = {f: fit_probe(trf, ytr, groups=spk, scale_floor=f) for f in (SCALE_FLOOR, 0.0)}
    f1 = lambda p, utts: (lambda e: f"{e['f1_weighted']:.3f} ({e['ci']['f1_weighted'][0]:.3f}-{e['ci']['f1_weighted'][1]:.3f})")(
        evaluate_predictions(y, p.predict_proba(utts), p.classes_))
    torch.manual_seed(0)
    rvq = fit_rvq(sample_frames(np.concatenate(trf), 60000, 0), RVQConfig.for_dim(st.dim, layers=a.layers), iters=12, progress=False)
    x = np.concatenate(fr); z = rvq.normalise(x)
    print(f"{'depth':>5} {'bits<=':>6} {'nMSE':>7}  {'fixed probe, floor ' + str(SCALE_FLOOR):>26}  {'fixed probe, no floor':>26}")
    print(f"{'none':>5} {'-':>6} {0:7.4f}  {f1(probes[SCALE_FLOOR], fr):>26}  {f1(probes[0.0], fr):>26}")
    for d in [int(v) for v in a.depths.split(",") if int(v) <= a.layers]:
        dec = rvq.decode(rvq.encode_nearest(x, d))
        nmse = float(((rvq.normalise(dec) - z) ** 2).mean())
        utts = np.split(dec.numpy(), np.cumsum([len(f) for f in fr])[:-1])
        bits = rvq.cfg.groups * d * int(np.ceil(np.log2(rvq.cfg.codes + 1)))
        print(f"{d:>5} {bits:>6} {nmse:7.4f}  {f1(probes[SCALE_FLOOR], utts):>26}  {f1(probes[0.0], utts):>26}")


if __name__ == "__main__":
    main()
