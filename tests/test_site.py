"The rendered website, opened page by page in headless Chromium: pages load, links resolve, figures show, nothing leaves 127.0.0.1."
import json
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

from conftest import ARTIFACTS, offline_page, serve

FIGURES = "main img, main svg, main canvas, main figure, main .vega-embed, main .cell-output-display > *"
# Figures (inline SVG, images, charts drawn by vega-embed) that are wider than the column of the page that holds them,
# as "what: drawn width > column width". Icons inside text are left out (narrower than 40 px).
WIDE_FIGURES = """() => {
  const main = document.querySelector('main'); const col = main.getBoundingClientRect().width;
  const out = [];
  for (const e of main.querySelectorAll('img, svg, canvas')) {
    if (e.closest('svg') !== e && e.tagName.toLowerCase() === 'svg') continue;  // nested svg: its outer one counts
    const w = e.getBoundingClientRect().width, h = e.getBoundingClientRect().height;
    if (w < 40 || h < 40) continue;
    const natural = e.tagName.toLowerCase() === 'img' ? e.naturalWidth : w;
    const drawn = Math.max(w, e.scrollWidth || 0);
    if (drawn > col + 1) out.push(`${e.tagName} ${e.id || e.getAttribute('alt') || ''}`.slice(0, 60) + `: ${Math.round(drawn)} > ${Math.round(col)}`);
    let p = e.parentElement;  // a scroll box that hides part of the figure
    while (p && p !== main) { if (p.scrollWidth > p.clientWidth + 1 && getComputedStyle(p).overflowX !== 'visible' && p.contains(e) && w > p.clientWidth + 1)
      { out.push(`${e.tagName} in a scroll box: ${Math.round(w)} > ${p.clientWidth}`); break; } p = p.parentElement; }
  }
  return out;
}"""
MAX_PAGE_BYTES = 2_000_000


def _pages(site):
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))


def test_site_has_every_chapter(site):
    from eib.book import pages
    html = set(_pages(site))
    for src in pages():
        if "*" in src: continue
        assert str(Path(src).with_suffix(".html")) in html, f"{src} was not rendered"
    assert "index.html" in html and "api/index.html" in html


def test_every_page_in_browser(site, browser):
    base, srv = serve(site)
    shots = ARTIFACTS / "screenshots"; shots.mkdir(parents=True, exist_ok=True)
    failed = []
    page, outside = offline_page(browser)
    page.on("requestfailed", lambda r: failed.append(r.url) if urlparse(r.url).hostname == "127.0.0.1" else None)
    links, report = set(), {}
    try:
        for rel in _pages(site):
            url = f"{base}/{rel}"
            resp = page.goto(url, wait_until="load")
            assert resp is not None and resp.status == 200, f"{rel}: HTTP {resp and resp.status}"
            page.wait_for_timeout(150)
            text = page.inner_text("body").strip()
            assert len(text) > 50, f"{rel}: page looks empty"
            assert page.title(), f"{rel}: no title"
            hrefs = "els => els.map(e => e.getAttribute('href'))"
            nav = page.eval_on_selector_all("nav a[href], #quarto-sidebar a[href], .sidebar a[href]", hrefs)
            assert nav, f"{rel}: no navigation links"
            # Links inside a page's text that stay on the site (no scheme) must resolve too: a template page copied
            # into a subfolder once linked to a chapter beside it.
            text_links = [h for h in page.eval_on_selector_all("main a[href]", hrefs) if not urlparse(h or "").scheme]
            for h in nav + text_links:
                if h and not h.startswith(("#", "mailto:", "javascript:")): links.add(urljoin(url, h).split("#")[0])
            # Interactive charts (eib.results.interactive) are drawn by vega-embed from the inline bundle: wait for
            # them, then each must hold an SVG with marks in it (an empty chart, or an error message, fails).
            charts = page.query_selector_all("main .eib-chart")
            if charts:
                page.wait_for_function("() => [...document.querySelectorAll('main .eib-chart')].every("
                                       "e => e.querySelector('svg') || e.textContent.trim())", timeout=60_000)
                for ch in charts:
                    info = ch.evaluate("e => ({svg: !!e.querySelector('svg'), text: e.textContent.slice(0, 200), "
                                       "marks: e.querySelectorAll('svg g[class*=\"mark-\"] > *').length})")
                    assert info["svg"], f"{rel}: chart {ch.get_attribute('id')} not drawn: {info['text']}"
                    assert info["marks"] > 0, f"{rel}: chart {ch.get_attribute('id')} has no marks"
                    box = ch.query_selector("svg").bounding_box()
                    assert box and box["width"] > 100 and box["height"] > 100, f"{rel}: chart {ch.get_attribute('id')} is {box}"
            # Every figure or chart in the page is visible and has a size.
            for el in page.query_selector_all(FIGURES):
                box = el.bounding_box()
                tag = el.evaluate("e => e.tagName.toLowerCase()")
                if tag in ("svg", "img", "canvas", "figure") or "vega-embed" in (el.get_attribute("class") or ""):
                    assert box and box["width"] > 0 and box["height"] > 0, f"{rel}: empty {tag}"
                if tag == "img":
                    assert el.evaluate("e => e.complete && e.naturalWidth > 0"), f"{rel}: image did not load"
            # Every figure fits the column it is drawn in (the window is 1280 px wide): nothing is cut off or
            # hidden in a sideways scroll box.
            wide = page.evaluate(WIDE_FIGURES)
            assert not wide, f"{rel}: figures wider than their column: {wide[:5]}"
            outputs = " ".join(page.eval_on_selector_all("main .cell-output, main .cell-output-display", "els => els.map(e => e.textContent)"))
            assert not [t for t in ("VBox(children=", "HBox(children=", "FloatLogSlider(") if t in outputs], \
                f"{rel}: a widget's raw text is in a cell's output"
            assert "../shared" not in page.content(), f"{rel}: names ../shared, which a reader cannot open"
            shot = shots / (rel.replace("/", "__").replace(".html", ".png"))
            page.screenshot(path=str(shot), full_page=True)
            figs = page.eval_on_selector_all("main .eib-chart svg, main .cell-output-display > svg, main .cell-output-display img",
                                             "els => els.length")
            report[rel] = dict(screenshot=str(shot.relative_to(ARTIFACTS.parent)), figures=figs)
        # Every navigation link resolves to a page of the site.
        for link in sorted(links):
            assert urlparse(link).hostname == "127.0.0.1", f"navigation leaves the site: {link}"
            r = page.request.get(link)
            assert r.status == 200, f"broken navigation link {link} ({r.status})"
    finally:
        page.close(); srv.shutdown()
        # One screenshot per page (names from the page's path), and how many figures each page showed.
        (shots / "pages.json").write_text(json.dumps(report, indent=1) + "\n")
    assert len({v["screenshot"] for v in report.values()}) == len(report) == len(_pages(site))
    assert not outside, f"requests left 127.0.0.1: {outside[:5]}"
    assert not failed, f"local requests failed: {failed[:5]}"


def test_results_pages_follow_the_results_files(site):
    """Results and Findings name every dataset whose results file is present and every expected one that is missing,
    and Results shows every figure each dataset supports (plus the compared ones with two datasets or more, and both
    figures of each sweep with inter-frame context beside its twin)."""
    import eib.figures as F
    from eib.records import results_files
    from eib.results import load_all, missing_datasets
    page = site / "nbs/21_results.html"
    html = page.read_text()
    assert html.count('class="eib-vega-bundle"') == 1 and "cdn.jsdelivr" not in html
    # The checks below compare the pages with the results files now, so they need the files the pages were built
    # from: a sweep may be writing one while the tests run (then only the structure above is checked).
    if any(p.stat().st_mtime >= page.stat().st_mtime for p in results_files().values()):
        assert "Results present:" in html or "No results file is present yet" in html
        return
    named, _ = load_all()
    for p in ("nbs/21_results.html", "nbs/20_findings.html"):
        h = (site / p).read_text()
        for lab, _r in named:
            assert f"<strong>{lab}</strong>" in h, f"{p}: no section for {lab}"
        for d in missing_datasets(named):
            assert f"<strong>{d}</strong> (" in h and "Missing:" in h, f"{p}: {d} not named as missing"
    from eib.book import result_page
    from eib.results import COMPARED_FIGURES, context_pairs, context_figures
    compared = len(F.all_figures(named).keys() & set(COMPARED_FIGURES)) if len(named) > 1 else 0
    context = sum(len(context_figures(*pair)) for pair in context_pairs())  # each sweep with inter-frame context and its twin
    assert html.count('class="eib-chart"') == compared + context, "the results page should show every compared and context figure"
    for lab, r in named:
        sub = site / Path(result_page(lab)).with_suffix(".html")
        assert sub.exists(), f"no page for {lab}"
        assert f'href="results/{sub.name}"' in html, f"the results page does not link {sub.name}"
        h = sub.read_text()
        assert h.count('class="eib-chart"') == len(F.all_figures([(lab, r)])), f"{sub.name} should show every figure {lab} supports"
        assert h.count(f" of the {len(F.FIGURES)} figures of <code>eib.figures</code> drawn") == 1, sub.name


def test_pages_are_light(site):
    "No page weighs over 2 MB: charts, their data and the chart library are inline in the page, so its HTML is its weight."
    heavy = {}
    for p in site.rglob("*.html"):
        size = p.stat().st_size
        if size > MAX_PAGE_BYTES: heavy[p.relative_to(site).as_posix()] = size
    assert not heavy, f"pages over {MAX_PAGE_BYTES} bytes: {heavy}"


def test_landing_page_gives_the_answer(site, browser):
    "The first page states what the book found, read from the results files, beside the headline chart."
    from eib.results import headline, load_all
    html = (site / "index.html").read_text()
    named, _ = load_all()
    first = headline(named)[0]
    ds = first.split("**")[1]  # the first corpus named in the answer
    assert "<!-- eib:headline -->" not in html and "eib:headline" not in html
    base, srv = serve(site)
    page, outside = offline_page(browser)
    try:
        page.goto(f"{base}/index.html", wait_until="load")
        found = page.locator("main h2", has_text="What the book found")
        assert found.count() == 1
        items = page.locator("main li", has_text="transparent").all_inner_texts() + page.locator("main li", has_text="probe").all_inner_texts()
        assert any(ds in t and "BPF" in t for t in items), items[:3]
        img = page.locator("main img.eib-headline, main .eib-headline img, main img[src$='headline.svg']").first
        assert img.count() == 1 and img.evaluate("e => e.complete && e.naturalWidth > 200"), "no headline chart"
        box, col = img.bounding_box(), page.locator("main").bounding_box()
        assert box["width"] <= col["width"] + 1 and box["y"] < 2000, (box, col)
    finally:
        page.close(); srv.shutdown()
    assert not outside, outside
