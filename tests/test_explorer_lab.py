"""The λ explorer in a real JupyterLab: start it on 127.0.0.1, open nbs/17_explorer.ipynb (it must start its kernel
without asking), run every cell, find the panel near the top, move the λ slider with the keyboard and read the new
achieved BPF from the page, then time λ and target-rate updates as a user sees them (reported in
artifacts/explorer_timing.json, not asserted). No request may leave 127.0.0.1."""
import json, os, re, secrets, signal, socket, subprocess, sys, time, urllib.request

import pytest

from conftest import ARTIFACTS, ROOT, offline_page

NOTEBOOK = "nbs/17_explorer.ipynb"
RUN_TIMEOUT_S = float(os.environ.get("EIB_LAB_RUN_TIMEOUT", 600))  # the whole notebook, its tests included
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")

PANEL_NEAR_TOP = 10  # the panel must be in one of the notebook's first cells ("Try it")
TIMED_PRESSES = 6  # λ updates timed in the browser (slider key presses)
TIMED_TARGETS = (60, 100, 40, 80, 120, 50)  # target rates typed into the target slider's readout, timed in the browser

# JupyterLab settings for the test: no autosave (the notebook in the repository stays as it is), no news or update
# checks. JupyterLab's defaults otherwise: the notebook's kernelspec alone must spare the "Select Kernel" dialog.
SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server on 127.0.0.1 serving the repository: (base url, token). Killed, with its kernels, at the end."
    port, token = _free_port(), secrets.token_hex(16)
    settings = tmp_path / "lab-settings"
    for rel, obj in SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(obj))
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"), IPYTHONDIR=str(tmp_path / "ipython"), JUPYTER_PLATFORM_DIRS="1",
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"))
    cmd = [_python(), "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
           f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly", "--ServerApp.open_browser=False",
           f"--FileCheckpoints.checkpoint_dir={tmp_path / 'checkpoints'}"]  # not nbs/.ipynb_checkpoints
    if os.geteuid() == 0: cmd.append("--allow-root")
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    nb = ROOT / NOTEBOOK
    before = nb.read_bytes()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200: break
            except OSError: pass
            if time.time() > deadline:
                pytest.fail(f"jupyter lab did not answer within 90 s:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, token
    finally:
        try: os.killpg(proc.pid, signal.SIGTERM)  # the server and the kernels it started (its own session)
        except ProcessLookupError: pass
        try: proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(10)
        log.close()
        if nb.read_bytes() != before: nb.write_bytes(before)  # never leave outputs in the repository's notebook


def _wait(fn, timeout: float, what: str, page=None, every: float = 0.5):
    "Poll `fn` until it returns something truthy, at most `timeout` seconds."
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v: return v
        (page.wait_for_timeout(every * 1000) if page else time.sleep(every))
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _text(page, sel: str) -> str:
    "The text of the first element matching `sel` (textContent: JupyterLab skips rendering cells off screen, innerText is empty there)."
    el = page.query_selector(sel)
    return (el.text_content() or "").strip() if el else ""


def _number(page, sel: str):
    t = _text(page, sel)
    return float(t) if NUMBER.match(t) else None


def test_explorer_in_jupyterlab(lab, browser):
    base, token = lab
    shots = ARTIFACTS / "screenshots"; shots.mkdir(parents=True, exist_ok=True)
    page, outside = offline_page(browser)
    try:
        page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}", wait_until="domcontentloaded", timeout=90_000)
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
        # The notebook names the python3 kernel: it must start without a "Select Kernel" dialog.
        _wait(lambda: _kernel_ready(page), 120, "the kernel to start", page)
        page.wait_for_timeout(1000)
        _wait(lambda: _kernel_ready(page), 60, "the kernel to settle", page)
        page.screenshot(path=str(shots / "explorer_opened.png"))
        kernel = _text(page, ".jp-NotebookPanel .jp-Toolbar-kernelName")
        assert "python" in kernel.lower(), f"the notebook started on {kernel!r}, not the python3 kernel"
        for attempt in range(2):  # Run > Run All Cells, from the menu bar (once more if nothing started)
            page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).first.click()
            page.locator(".lm-Menu-item:visible", has_text=re.compile(r"^Run All Cells")).first.click()
            try:
                _wait(lambda: _started(page), 60, "the cells to start running", page)
                break
            except AssertionError:
                if attempt: raise
        bpf_sel = ".eib-explorer .eib-bpf"
        _wait(lambda: _failed_cell(page) or _number(page, bpf_sel) is not None, RUN_TIMEOUT_S, "the explorer panel", page, 1.0)
        assert not _failed_cell(page), f"a cell failed in JupyterLab:\n{_failed_cell(page)}"
        # the cells after the panel (timing) move it while they run: wait until the whole notebook has run
        _wait(lambda: _failed_cell(page) or _idle(page), RUN_TIMEOUT_S, "every cell to finish", page, 1.0)
        assert not _failed_cell(page), f"a cell failed in JupyterLab:\n{_failed_cell(page)}"
        where = page.evaluate("""() => {
            const cells = [...document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')];
            const at = c => c ? (c.dataset.windowedListIndex !== undefined ? +c.dataset.windowedListIndex : cells.indexOf(c)) : -1;
            const panel = cells.find(c => c.querySelector('.eib-explorer'));
            const head = cells.find(c => [...c.querySelectorAll('h2')].some(e => /^Try it/.test(e.textContent.trim())));
            return [at(panel), at(head), cells.length]; }""")
        assert 0 <= where[1] < where[0] < PANEL_NEAR_TOP, f"the panel is not near the top, under 'Try it': (cell, heading, cells) = {where}"
        panel = page.locator(".eib-explorer").last
        panel.scroll_into_view_if_needed()
        before = _number(page, bpf_sel)
        lam_before = _text(page, ".eib-explorer .eib-lam")
        panel.screenshot(path=str(shots / "explorer_before.png"))
        # Move the λ slider with the keyboard (noUiSlider handle: PageUp = 5 steps of 0.05 decades).
        handle = page.locator(".eib-explorer .eib-lam-slider .noUi-handle").last
        handle.focus()
        handle.press("PageUp")
        after = _wait(lambda: (lambda v: v if v is not None and v != before else None)(_number(page, bpf_sel)),
                      120, "the BPF readout to change after moving λ", page)
        lam_after = _text(page, ".eib-explorer .eib-lam")
        panel.screenshot(path=str(shots / "explorer_after.png"))
        page.screenshot(path=str(shots / "explorer_page.png"), full_page=True)
        assert lam_after != lam_before, (lam_before, lam_after)
        assert after < before, f"a larger λ must spend fewer bits: {before} -> {after} BPF"
        status = _text(page, ".eib-explorer .eib-status")
        assert "set on the λ slider" in status, status
        target = float(_text(page, ".eib-explorer .eib-bpf-slider .widget-readout"))
        assert abs(target - after) <= 0.5, f"the target slider shows {target} after λ reached {after} BPF"
        img = page.locator(".eib-explorer .eib-map svg image").last
        assert img.evaluate("e => e.getBBox().width > 100 && e.getAttribute('href').startsWith('data:image/png')"), \
            "the code/SKIP map did not draw"
        axes = _text(page, ".eib-explorer .eib-map")
        assert "G1" in axes and "time (s)" in axes, axes
        for sel in (".eib-rd .eib-point", ".eib-f1 .eib-rule"):
            assert page.locator(f".eib-explorer {sel}").count() == 1, f"no {sel} marks the current setting"
        timing = dict(lam=_time_presses(page, ".eib-lam-slider"), target_bpf=_time_targets(page, TIMED_TARGETS),
                      load_average=os.getloadavg()[0])
        med = {k: sorted(v)[len(v) // 2] for k, v in timing.items() if isinstance(v, list)}
        (ARTIFACTS / "explorer_timing.json").write_text(json.dumps(dict(timing, median=med), indent=1))
        assert not _failed_cell(page), f"a cell failed in JupyterLab:\n{_failed_cell(page)}"
        # The context toggle: the same target, coded by the twin whose entropy model also sees the previous frame; at that
        # rate it spends its bits elsewhere, so the λ the rate controller finds moves.
        lam_none = _text(page, ".eib-explorer .eib-lam")
        frame = page.locator(".eib-explorer .eib-codec button", has_text=re.compile(r"^frame$")).last
        assert frame.is_visible(), "the panel has no context toggle"
        frame.click()
        lam_frame = _wait(lambda: (lambda v: v if v and v != lam_none and "loading" not in _text(page, STATUS) else None)(
            _text(page, ".eib-explorer .eib-lam")), 120, "the λ readout to change after switching to context 'frame'", page)
        panel.screenshot(path=str(shots / "explorer_context.png"))
        assert _text(page, STATUS).startswith("Target"), _text(page, STATUS)
        assert not _failed_cell(page), f"a cell failed in JupyterLab:\n{_failed_cell(page)}"
        print(f"JupyterLab explorer: context none -> frame at the same target: λ {lam_none} -> {lam_frame}")
        print(f"JupyterLab explorer: λ {lam_before} -> {lam_after}, BPF {before} -> {after}; updates seen in the browser: "
              f"λ median {med['lam']:.3f} s, target BPF median {med['target_bpf']:.3f} s (load {timing['load_average']:.1f})")
    except BaseException:
        page.screenshot(path=str(shots / "explorer_failure.png"), full_page=True)
        raise
    finally:
        page.close()
    assert not outside, f"requests left 127.0.0.1: {outside[:5]}"


def _kernel_ready(page) -> bool:
    "The notebook's kernel is started and idle (the toolbar names it; the execution indicator says idle)."
    dlg = page.query_selector(".jp-Dialog")
    assert dlg is None, f"JupyterLab asked before starting the kernel (the notebook needs a python3 kernelspec): {dlg.inner_text()[:300]!r}"
    name = _text(page, ".jp-NotebookPanel .jp-Toolbar-kernelName")
    return bool(name) and name != "No Kernel" and _idle(page)


def _idle(page) -> bool:
    "The kernel's execution indicator says idle and no cell is queued or running."
    st = page.query_selector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status]")
    if not st or st.get_attribute("data-status") != "idle": return False
    prompts = page.eval_on_selector_all(".jp-NotebookPanel .jp-InputPrompt", "els => els.map(e => e.textContent.trim())")
    return not any("*" in p for p in prompts)


STATUS = ".eib-explorer .eib-status"


def _until_status_changes(page, before: str, t0: float) -> float:
    "Seconds since `t0` when the panel's status line no longer reads `before` (the update's result is shown)."
    page.wait_for_function("""([sel, old]) => { const e = document.querySelectorAll(sel);
        const t = e.length ? e[e.length - 1].textContent.trim() : '';
        return t && t !== old && !t.includes('loading'); }""", arg=[STATUS, before], timeout=60_000, polling="raf")
    return round(time.perf_counter() - t0, 3)


def _time_presses(page, slider: str, n: int = TIMED_PRESSES) -> list:
    """Seconds from a key press on `slider`'s handle (PageUp, PageDown, alternately: 0.25 decades of λ each way)
    until the panel shows the new update."""
    handle = page.locator(f".eib-explorer {slider} .noUi-handle").last
    out = []
    for i in range(n):
        before = _text(page, STATUS)
        handle.focus()
        t0 = time.perf_counter()
        handle.press("PageUp" if i % 2 == 0 else "PageDown")
        out.append(_until_status_changes(page, before, t0))
    return out


def _time_targets(page, targets) -> list:
    "Seconds from typing each target rate into the target slider's readout (Enter) until the panel shows the answer."
    readout = page.locator(".eib-explorer .eib-bpf-slider .widget-readout").last
    out = []
    for t in targets:
        before = _text(page, STATUS)
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type(str(t))
        t0 = time.perf_counter()
        page.keyboard.press("Enter")
        out.append(_until_status_changes(page, before, t0))
        assert f"Target {float(t):.1f} BPF" in _text(page, STATUS), _text(page, STATUS)
    return out


def _started(page) -> bool:
    "Some code cell has run or is running."
    prompts = page.eval_on_selector_all(".jp-NotebookPanel .jp-InputPrompt", "els => els.map(e => e.textContent.trim())")
    return any(re.match(r"^\[(\*|\d+)\]:?$", p) for p in prompts)


def _failed_cell(page) -> str:
    "The text of the first error shown in an output area ('' if none)."
    for el in page.query_selector_all(".jp-NotebookPanel .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], "
                                      ".jp-NotebookPanel .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"):
        t = el.text_content() or ""
        if "Error" in t or "Traceback" in t: return t
    return ""
