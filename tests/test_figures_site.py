"""A figure saved in a notebook's outputs shows in a website rendered by smalldocs: as inline SVG, visible in headless
Chromium, with no request leaving 127.0.0.1. A throwaway project in a temporary folder; the repository's _quarto.yml
is not touched."""
import subprocess, sys
from pathlib import Path

import nbformat
import pytest

from conftest import offline_page, serve
import eib.figures as F

QUARTO = """project:
  type: website
  output-dir: _site
  render:
    - index.qmd
    - figs.ipynb
    - live.ipynb
website:
  title: "figures check"
format:
  html:
    theme: default  # as the book's _quarto.yml: smalldocs's fallback theme (cosmo) imports Google Fonts
"""


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory):
    "A two-page website whose notebook holds the stored output of a figure displayed with the offline renderer."
    root = tmp_path_factory.mktemp("figsite")
    (root / "_quarto.yml").write_text(QUARTO)
    (root / "index.qmd").write_text("---\ntitle: Home\n---\n\nSee [the figures](figs.ipynb).\n")
    demo = F.demo_results("SYNTH-SITE", rates=(10, 100), layer_bpf=None, n_boot=30)
    F.use_offline_renderer()
    bundle = F.fig_f1(demo)._repr_mimebundle_()  # what Jupyter stores for a chart shown as the last line of a cell
    bundle = bundle[0] if isinstance(bundle, tuple) else bundle
    assert list(bundle) == ["image/svg+xml"]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Figures\n\nA demonstration on synthetic blobs."),
                nbformat.v4.new_code_cell("fig_f1(demo)", outputs=[nbformat.v4.new_output("display_data", data=bundle)])]
    nbformat.write(nb, root / "figs.ipynb")
    # The interactive form the book's Results and Findings pages use: vega-embed from an inline bundle (eib.results).
    import eib.results as R
    outs = [nbformat.v4.new_output("display_data", data=o._repr_mimebundle_())
            for o in (R.vega_script(), R.interactive(F.fig_f1(demo)))]
    live = nbformat.v4.new_notebook()
    live.cells = [nbformat.v4.new_markdown_cell("# Live\n\nAn interactive chart, drawn in the browser."),
                  nbformat.v4.new_code_cell("vega_script()\ninteractive(fig_f1(demo))", outputs=outs)]
    nbformat.write(live, root / "live.ipynb")
    smalldocs = Path(sys.executable).parent / "smalldocs"
    r = subprocess.run([str(smalldocs), "render", "--quiet", str(root)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return root / "_site"


def test_svg_output_is_inline_in_the_page(tiny_site):
    html = (tiny_site / "figs.html").read_text()
    assert "Weighted F1 of emotion recognition" in html and '<svg xmlns="http://www.w3.org/2000/svg"' in html
    assert "vega-embed" not in html and "cdn.jsdelivr" not in html


def test_figure_visible_offline_in_browser(tiny_site, browser):
    base, srv = serve(tiny_site)
    page, outside = offline_page(browser)
    try:
        page.goto(f"{base}/figs.html", wait_until="networkidle")
        svg = page.locator("main .cell-output-display svg").first
        box = svg.bounding_box()
        assert svg.is_visible() and box["width"] > 200 and box["height"] > 150, box
        assert page.locator("main svg text", has_text="Weighted F1").count() >= 1
    finally:
        page.close(); srv.shutdown()
    assert not [u for u in outside if not u.startswith("data:")], outside


def test_interactive_chart_offline_with_tooltips(tiny_site, browser):
    "The vega-embed chart draws from the inline bundle with no request leaving 127.0.0.1, and shows a tooltip on hover."
    html = (tiny_site / "live.html").read_text()
    assert html.count('class="eib-vega-bundle"') == 1 and "<script src=\"http" not in html
    base, srv = serve(tiny_site)
    page, outside = offline_page(browser)
    try:
        page.goto(f"{base}/live.html", wait_until="load")
        page.wait_for_selector("main .eib-chart svg g.mark-symbol path", timeout=60_000)
        box = page.locator("main .eib-chart svg").first.bounding_box()
        assert box["width"] > 200 and box["height"] > 150, box
        assert page.locator("main .eib-chart svg text", has_text="Weighted F1").count() >= 1
        pt = page.locator("main .eib-chart svg g.mark-symbol path").first.bounding_box()
        page.mouse.move(pt["x"] + pt["width"] / 2, pt["y"] + pt["height"] / 2)
        tip = page.locator("#vg-tooltip-element")
        tip.wait_for(state="visible", timeout=10_000)
        assert "achieved BPF" in tip.inner_text()
    finally:
        page.close(); srv.shutdown()
    assert not [u for u in outside if not u.startswith("data:")], outside
