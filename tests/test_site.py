"The rendered website, opened page by page in headless Chromium: pages load, links resolve, figures show, nothing leaves 127.0.0.1."
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

from conftest import ARTIFACTS, serve

FIGURES = "main img, main svg, main canvas, main figure, main .vega-embed, main .cell-output-display > *"


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
    outside, failed = [], []
    page = browser.new_page()

    def on_request(req):
        host = urlparse(req.url).hostname
        if req.url.startswith(("data:", "blob:", "about:")): return
        if host != "127.0.0.1": outside.append(req.url)
    page.on("request", on_request)
    page.on("requestfailed", lambda r: failed.append(r.url) if urlparse(r.url).hostname == "127.0.0.1" else None)
    # Nothing may leave 127.0.0.1: such requests are recorded, then aborted.
    page.route("**/*", lambda route: route.continue_() if urlparse(route.request.url).hostname == "127.0.0.1"
               or route.request.url.startswith("data:") else route.abort())
    links = set()
    try:
        for rel in _pages(site):
            url = f"{base}/{rel}"
            resp = page.goto(url, wait_until="load")
            assert resp is not None and resp.status == 200, f"{rel}: HTTP {resp and resp.status}"
            page.wait_for_timeout(150)
            text = page.inner_text("body").strip()
            assert len(text) > 50, f"{rel}: page looks empty"
            assert page.title(), f"{rel}: no title"
            nav = page.eval_on_selector_all("nav a[href], #quarto-sidebar a[href], .sidebar a[href]",
                                            "els => els.map(e => e.getAttribute('href'))")
            assert nav, f"{rel}: no navigation links"
            for h in nav:
                if h and not h.startswith(("#", "mailto:", "javascript:")): links.add(urljoin(url, h).split("#")[0])
            # Every figure or chart in the page is visible and has a size.
            for el in page.query_selector_all(FIGURES):
                box = el.bounding_box()
                tag = el.evaluate("e => e.tagName.toLowerCase()")
                if tag in ("svg", "img", "canvas", "figure") or "vega-embed" in (el.get_attribute("class") or ""):
                    assert box and box["width"] > 0 and box["height"] > 0, f"{rel}: empty {tag}"
                if tag == "img":
                    assert el.evaluate("e => e.complete && e.naturalWidth > 0"), f"{rel}: image did not load"
            page.screenshot(path=str(shots / (rel.replace("/", "__").replace(".html", ".png"))), full_page=True)
        # Every navigation link resolves to a page of the site.
        for link in sorted(links):
            assert urlparse(link).hostname == "127.0.0.1", f"navigation leaves the site: {link}"
            r = page.request.get(link)
            assert r.status == 200, f"broken navigation link {link} ({r.status})"
    finally:
        page.close(); srv.shutdown()
    assert not outside, f"requests left 127.0.0.1: {outside[:5]}"
    assert not failed, f"local requests failed: {failed[:5]}"
