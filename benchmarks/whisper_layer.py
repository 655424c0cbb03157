"""Which Whisper-base layer carries the most emotion? Chosen by speaker-grouped cross-validation on RAVDESS's TRAINING split.

Every clip of the corpus goes through the Whisper-base encoder once (clip-length input) and all 7 hidden states
(0 = input of the first layer ... 6 = the encoder's output) are kept. For each layer, `eib.evaluate.fit_probe` fits the
book's linear probe on the training split with 5 folds grouped by speaker; the layer with the best mean CV weighted F1
is the choice (`eib.features.WHISPER_LAYER`). The test split is never used for the choice: its weighted F1 per layer
(probe fitted on the whole training split) is printed afterwards, for information only.

    .venv/bin/python benchmarks/whisper_layer.py                      # RAVDESS from the shared datasets folder
    .venv/bin/python benchmarks/whisper_layer.py --dataset emodb      # the same table for another corpus
"""
import argparse, time
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ravdess")
    ap.add_argument("--root", default=None, help="corpus folder (default: the shared datasets folder)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="at most this many clips per split (a quick look)")
    a = ap.parse_args()
    import torch
    from tqdm import tqdm
    from eib.data import LABEL_PROTOCOLS, apply_protocol, load_audio, read_dataset
    from eib.evaluate import evaluate_predictions, fit_probe
    from eib.features import WHISPER_LAYER, WhisperBaseEncoder, prepare_wave
    from eib.core import SAMPLE_RATE
    torch.set_num_threads(a.threads)
    t0 = time.time()
    table = apply_protocol(read_dataset(a.dataset, a.root), a.dataset if a.dataset in LABEL_PROTOCOLS else "identity", verbose=False)
    enc = WhisperBaseEncoder(threads=a.threads)
    layers = {}
    for split in ("train", "test"):
        m = table[table["split"] == split]
        if a.limit: m = m.groupby("label", group_keys=False).apply(lambda g: g.head(max(1, a.limit // 7)))
        hs = [enc.layers(prepare_wave(load_audio(p, SAMPLE_RATE), SAMPLE_RATE)) for p in tqdm(m["path"], desc=f"{a.dataset} {split}", mininterval=10)]
        layers[split] = ([[h[l].astype(np.float32) for h in hs] for l in range(len(hs[0]))], m["label"].to_numpy(str), m["speaker"].to_numpy(str))
    t_enc = time.time() - t0
    (Ltr, ytr, spk), (Lte, yte, _) = layers["train"], layers["test"]
    print(f"{a.dataset}: {len(ytr)} training clips ({len(set(spk))} speakers), {len(yte)} test clips; encoded in {t_enc:.0f} s")
    print("layer | CV weighted F1 (train, 5 folds by speaker) | pooling | test weighted F1 (information only)")
    rows = []
    for l in range(len(Ltr)):
        p = fit_probe(Ltr[l], ytr, groups=spk, seed=42)
        te = evaluate_predictions(yte, p.predict_proba(Lte[l]), p.classes_, seed=42)["f1_weighted"]
        rows.append((l, p.cv["best"], p.pooling, te))
        print(f"{l} | {p.cv['best']:.3f} | {p.pooling} | {te:.3f}", flush=True)
    best = max(rows, key=lambda r: r[1])
    print(f"chosen layer {best[0]} (CV {best[1]:.3f}); eib.features.WHISPER_LAYER = {WHISPER_LAYER}; {time.time() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
