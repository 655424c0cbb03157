"""Is emotion lost in coding, or does the probe just not know the decoded features? A side-by-side check.

The sweep's classifier (issue protocol) is a linear probe fitted on UNQUANTISED training features. On decoded
features it can fail because information is gone, or because the decoded features sit elsewhere than the ones it
was fitted on. For plain RVQ with n layers (the layer-sweep tokens, no entropy model needed), this prints, side by
side on the same test subset as the sweep: the frame MSE, how far the pooled features move (in units of the probe's
own standardisation), weighted F1 of the clean-trained probe, and weighted F1 of a probe fitted the same way on
DECODED training features (matched condition).

    .venv/bin/python benchmarks/probe_mismatch.py                                   # RAVDESS: data_subset/ravdess, checkpoints/ravdess_cpu
    .venv/bin/python benchmarks/probe_mismatch.py --dataset synth                   # the committed synthetic store and codec
"""
import argparse, time
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ravdess")
    ap.add_argument("--features", default=None, help="feature store (default data_subset/<dataset>)")
    ap.add_argument("--checkpoint", default=None, help="codec (default checkpoints/<dataset>_cpu)")
    ap.add_argument("--layers", default="30,20,10")
    ap.add_argument("--samples-per-emotion", type=int, default=100)
    a = ap.parse_args()
    from eib.core import repo_root
    from eib.evaluate import evaluate_predictions, fit_probe, pool_many, store_split
    from eib.features import load_store
    from eib.sweep import fit_classifier, layer_tokens, test_subset
    from eib.codec import load_codec
    t0 = time.time()
    st = load_store(a.features or repo_root() / "data_subset" / a.dataset)
    rvq = load_codec(a.checkpoint or repo_root() / "checkpoints" / f"{a.dataset}_cpu").rvq
    probe, _ = fit_classifier(st, a.dataset, 42)
    ids, fr, y = test_subset(st, a.dataset, a.samples_per_emotion, 42)
    _, trf, ytr, spk = store_split(st, a.dataset, "train")
    f1 = lambda p, utts: evaluate_predictions(y, p.predict_proba(utts), p.classes_, seed=42)["f1_weighted"]
    rec = lambda f, n: rvq.denormalise(rvq.decode_normalised(layer_tokens(rvq, f, n))).numpy()
    z = lambda fs: np.concatenate([rvq.normalise(f).numpy() for f in fs])
    Xc, D, zc = pool_many(fr, probe.pooling), st.dim, z(fr)
    print(f"{st.path.name}: {len(fr)} test utterances, {len(trf)} training; {probe} ({probe.cv.get('scheme')})")
    print(f"unquantised: weighted F1 {f1(probe, fr):.3f}")
    print(" layers  frame_mse  shift_mean  shift_std  clean_probe_wF1  matched_probe_wF1")
    for n in [int(x) for x in a.layers.split(",")]:
        te = [rec(f, n) for f in fr]
        shift = np.abs(pool_many(te, probe.pooling) - Xc) / probe.scale_
        matched = fit_probe([rec(f, n) for f in trf], ytr, groups=spk, seed=42)
        print(f" {n:6d}  {((zc - z(te)) ** 2).mean():9.3f}  {shift[:, :D].mean():10.2f}  "
              f"{shift[:, D:].mean() if shift.shape[1] > D else float('nan'):9.2f}  {f1(probe, te):15.3f}  {f1(matched, te):17.3f}")
    print(f"shift: mean |pooled decoded - pooled clean| / probe scaler, over utterances and dims (mean part, std part); {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
