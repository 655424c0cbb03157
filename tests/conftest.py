"Shared fixtures: the rendered website served on 127.0.0.1, and a headless Chromium driven by Playwright."
import functools, http.server, os, shutil, threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = os.environ.get("EIB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


def serve(folder):
    "Serve `folder` on 127.0.0.1 at a free port; return (base url, server)."
    h = functools.partial(_Quiet, directory=str(folder))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), h)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}", srv


@pytest.fixture(scope="session")
def site():
    "The website, built as `make book` builds it (chapters executed), in artifacts/site."
    from eib.book import build_site
    out = ARTIFACTS / "site"
    build_site(out, execute=True, quiet=True)
    return out


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    "Headless Debian Chromium (no browser download), with a fresh profile."
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium (as root)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        prof = tmp_path_factory.mktemp("chromium-profile")
        ctx = p.chromium.launch_persistent_context(str(prof), executable_path=CHROMIUM, headless=True,
                                                   args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        yield ctx
        ctx.close()


def offline_page(browser):
    """A new page on which nothing may leave 127.0.0.1: such requests are recorded in the returned list, then aborted
    (data:, blob: and about: URLs are not network requests). -> (page, outside)."""
    from urllib.parse import urlparse
    outside = []
    local = lambda url: url.startswith(("data:", "blob:", "about:")) or urlparse(url).hostname == "127.0.0.1"
    page = browser.new_page()
    page.on("request", lambda req: None if local(req.url) else outside.append(req.url))
    page.route("**/*", lambda route: route.continue_() if local(route.request.url) else route.abort())
    return page, outside
