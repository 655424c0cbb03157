"Every figure of eib.figures, drawn by vl-convert for one dataset, several, and results files missing their optional parts."
import copy, struct, xml.etree.ElementTree as ET, zlib

import pytest

from eib.core import EibError
from eib.records import new_results, validate_results
import eib.figures as F

SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def demos():
    "Synthetic demonstration results: full, without layer sweep and bound, and without rate points."
    full = F.demo_results("SYNTH-A", rates=(10, 20, 100, 200), n_boot=50, seed=0)
    lean = F.demo_results("SYNTH-B", rates=(10, 50, 150), layer_bpf=None, rd_bound=False, n_boot=50, seed=1)
    empty = new_results(**{k: full[k] for k in ("dataset", "encoder", "classifier", "label_protocol", "classes",
                                                "config", "baselines", "rd_bound", "command")})
    return dict(full=full, lean=lean, empty=empty | dict(dataset="SYNTH-EMPTY"))


def _check_svg(svg: str, *texts):
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg" and float(root.get("width")) > 100 and float(root.get("height")) > 100
    words = " ".join(" ".join(t.itertext()) for t in root.iter(f"{SVG_NS}text"))
    for t in texts: assert t in words, (t, words[:300])
    assert "<script" not in svg and "http://" not in svg.replace("http://www.w3.org/", "")
    return root


def _png_size(data: bytes):
    "Width and height of a PNG after checking its signature, every chunk's CRC and that its pixels decompress."
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    i, idat, kinds = 8, b"", []
    while i < len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        body = data[i + 8:i + 8 + n]
        assert struct.unpack(">I", data[i + 8 + n:i + 12 + n])[0] == zlib.crc32(kind + body), kind
        kinds.append(kind)
        if kind == b"IHDR": w, h = struct.unpack(">II", body[:8])
        if kind == b"IDAT": idat += body
        i += 12 + n
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    assert len(zlib.decompress(idat)) >= h * w  # at least a byte per pixel
    return w, h


CASES = {"one": ["full"], "several": ["full", "lean"], "lean only": ["lean"], "with empty": ["full", "empty"]}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", ["f1", "confidence", "recall", "precision", "true_prob", "confusion", "rd", "rate_control"])
def test_figure_renders(demos, name, case):
    rs = [demos[k] for k in CASES[case]]
    before = copy.deepcopy(rs)
    chart = F.FIGURES[name](rs)
    labels = [r["dataset"] for r in rs if r["rate_points"] or name in ("rd",)]
    texts = {"f1": ["Weighted F1", "majority class", "unquantised features"],
             "confidence": ["Confidence = probability of the predicted class", "Probability given to the true class"],
             "recall": ["Recall"], "precision": ["Precision"], "true_prob": ["Per-emotion probability given to the true class"],
             "confusion": ["unquantised features", "BPF"], "rd": ["MSE per dimension", "ECVQ"], "rate_control": ["y = x"]}[name]
    _check_svg(F.show(chart).svg, *texts, *(labels if name != "rate_control" else []))
    assert rs == before  # drawing changes no results object


def test_rd_curves_follow_what_the_file_holds(demos):
    words = lambda rs: " ".join(" ".join(t.itertext()) for t in ET.fromstring(F.show(F.fig_rd(rs)).svg).iter(f"{SVG_NS}text"))
    assert F.LAYER_SWEEP in words([demos["full"]]) and "Gaussian R(D) (upper bound for this covariance)" in words([demos["full"]])
    assert set(F.rd_table([demos["lean"]]).curve) == {"ECVQ"}
    only_bound = demos["empty"]  # no rate points, no layer sweep: the bound alone is still a figure
    assert set(F.rd_table([only_bound]).curve) == {F.GAUSSIAN_RD}
    _check_svg(F.show(F.fig_rd([only_bound])).svg, F.GAUSSIAN_RD)


def test_nothing_to_draw_is_a_clear_error(demos):
    e = demos["empty"]
    for f in (F.fig_f1, F.fig_confidence, F.fig_recall, F.fig_true_prob):
        with pytest.raises(EibError, match="no rate points"): f(e)
    with pytest.raises(EibError, match="per-utterance rates"): F.rate_control_records(e)
    with pytest.raises(EibError, match="nothing to draw"): F.fig_rd(e | dict(rd_bound=[]))
    assert F.confusion_layout(F.fig_confusion(e)) == [[[["unquantised features"]]]]  # the unquantised baseline alone
    with pytest.raises(EibError, match="no rate points"): F.fig_confusion(e, unquantised=False)
    bad = copy.deepcopy(demos["full"]); bad["rate_points"][0]["metrics"]["accuracy"] = 2.0
    with pytest.raises(EibError, match=r"results\[0\] \(SYNTH-A\).*accuracy"): F.fig_f1([bad])


def test_save_figure_writes_valid_png_and_svg(demos, tmp_path):
    paths = F.save_figure(F.fig_f1([demos["full"], demos["lean"]]), "fig_f1", tmp_path / "figures", scale=1.5)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["fig_f1.png", "fig_f1.svg"]
    root = _check_svg(paths["svg"].read_text(), "Weighted F1")
    w, h = _png_size(paths["png"].read_bytes())
    assert (w, h) == (round(1.5 * float(root.get("width"))), round(1.5 * float(root.get("height"))))
    assert oct(paths["png"].stat().st_mode & 0o777) == "0o644"


def test_saved_results_files_are_figure_input(demos, tmp_path):
    from eib.records import write_results
    for k in ("full", "lean"): write_results(tmp_path / f"rate_sweep_{demos[k]['dataset']}.json", demos[k])
    ix = F.figure_index(tmp_path)
    assert [e["dataset"] for e in ix] == ["SYNTH-A", "SYNTH-B"] and all(e["error"] is None for e in ix)
    assert F.fig_f1([e["path"] for e in ix]).to_dict() == F.fig_f1([demos["full"], demos["lean"]]).to_dict()
    validate_results(demos["full"])


@pytest.fixture(scope="module")
def page_demos():
    "Realistic sizes: 6 and 7 classes (long emotion names), long dataset labels (one dataset, two classifiers)."
    six = F.demo_results("SYNTH-DEMO", classes=("neutral", "happy", "sad", "angry", "fear", "surprise"), n_per_class=(3,) * 6,
                         n_boot=20, seed=0)
    seven = F.demo_results("EMODB-LIKE", classes=("angry", "boredom", "disgust", "fear", "happy", "neutral", "surprise"),
                           n_per_class=(3,) * 7, n_boot=20, seed=1) | dict(encoder="whisper_base", classifier="linear_probe")
    matched = seven | dict(classifier="matched_linear_probe")
    return dict(two=[six, seven], three=[six, seven, matched], one=[matched])


@pytest.mark.parametrize("case", ["one", "two", "three"])
def test_every_figure_fits_the_page(page_demos, case):
    "Every figure of FIGURES, drawn at its default arguments, is at most PAGE_WIDTH (640 px) wide, legend and titles included."
    rs = page_demos[case]
    assert F.PAGE_WIDTH <= 654  # the text column of the website in a 1280 px window
    sizes = {k: F.svg_size(f(rs)) for k, f in F.FIGURES.items()}
    wide = {k: w for k, (w, h) in sizes.items() if w > F.PAGE_WIDTH}
    assert not wide, f"figures wider than {F.PAGE_WIDTH} px ({case}): {wide}"
    assert all(w > 300 and h > 200 for w, h in sizes.values()), sizes  # drawn, not collapsed
    words = " ".join(" ".join(t.itertext()) for t in ET.fromstring(F.to_svg(F.fig_recall(rs))).iter(f"{SVG_NS}text"))
    for emotion in {c for r in rs for c in r["classes"]}: assert f" {emotion} " in f" {words} ", (emotion, words)  # names in full
    labels = [lab for lab, _ in F.named_results(rs)]
    words = " ".join(" ".join(t.itertext()) for t in ET.fromstring(F.to_svg(F.fig_f1(rs))).iter(f"{SVG_NS}text"))
    for lab in labels: assert lab in words, (lab, words)  # dataset labels in full, however long
    if case == "three": assert "EMODB-LIKE (whisper_base, matched_linear_probe)" in labels


def test_confusion_wraps_into_rows(page_demos):
    lay = F.confusion_layout(F.fig_confusion(page_demos["two"]))
    assert [[len(row) for row in block] for block in lay] == [[2, 2, 1], [2, 2, 1]]  # 6 and 7 classes at 24 px: 2 to a row
    assert [t[0] for row in lay[1] for t in row] == ["unquantised features"] + [
        f"{F.nearest_point(page_demos['two'][1], r)['achieved_bpf_mean']:.1f} BPF" for r in (10, 20, 100, 200)]
