"""The workbook in a real browser: JupyterLab under headless Chromium, every notebook run with
"Run All" as a student would (smoke mode), then checked:

* every code cell ran, once, in order, in this notebook's fresh kernel (the saved execution
  counts are exactly 1..N), and the run is called off as soon as Run All stops with cells left;
* no error output of any kind (a SyntaxError has no "Traceback" line: the saved outputs are read);
* the expected number of rendered figures, each a decodable image with content;
* every formula typeset by MathJax (no raw TeX left, no MathJax error nodes);
* notebook 03's layer and patch sliders each change its figure.

Each check is proved to catch what it is for: deliberately broken copies must fail it (a cell
that bumps the execution count; a figure cell that raises and a syntax error; a figure never shown;
a blank figure; broken LaTeX; a widget callback that ignores its sliders). Kernels are shut down after each notebook; on a failure a screenshot of the
whole notebook is kept.

Chromium is Debian's package (``.ci/run`` installs it), driven by Playwright from PyPI through
``executable_path`` (no browser download: never ``playwright install``). Screenshots go to the
test's temporary folder (``--basetemp`` to keep them). Skips, saying why, where no browser can
be had.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lape_lib.workbook import NOTEBOOK_DIR, NOTEBOOKS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The figures each notebook shows in smoke mode (static figures and 01's diagram; 03's explorer renders one more).
EXPECTED_IMAGES = {
    "00_setup.ipynb": 2, "01_affine_argument.ipynb": 4, "02_train_vitlite_cifar.ipynb": 1,
    "03_per_layer_pe.ipynb": 3, "04_pe_types_and_joins.ipynb": 2,
}
TOKEN = "lape-browser-test"
RUN_ALL_TIMEOUT_S = int(os.environ.get("LAPE_BROWSER_TIMEOUT_S", "600"))  # per notebook
HALTED_AFTER_S = 6.0  # Run All counts as stopped once the kernel has been idle this long with cells left unrun

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="module")
def lab(lab_root: Path) -> Iterator[str]:
    """A JupyterLab server on 127.0.0.1 over a copy of the notebooks, smoke mode in its kernels."""
    pytest.importorskip("playwright", reason="playwright is not installed (pip install playwright)")
    root = lab_root
    shutil.copytree(NOTEBOOK_DIR, root / "notebooks")
    settings = root / "settings"
    # Render every cell (JupyterLab 4 renders only what is on screen by default) and ask nothing:
    # without autoStartDefaultKernel, Lab sometimes asks "Select Kernel" on opening a notebook and
    # Run All then waits on that dialog forever (a CI run timed out so).
    for plugin, values in {"@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
                           "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}.items():
        target = settings / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    port = _free_port()
    env = {**os.environ, "LAPE_SMOKE": "1", "JUPYTERLAB_SETTINGS_DIR": str(settings)}
    env.pop("LAPE_NO_WIDGETS", None)  # a person's browser: notebook 03 shows its sliders, and the test moves them
    jupyter = Path(sys.executable).with_name("jupyter")
    server = subprocess.Popen(
        [str(jupyter), "lab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}", "--LabApp.news_url=",
         f"--LabApp.workspaces_dir={root / 'workspaces'}"],
        env=env, stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(120):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"JupyterLab did not start: {(root / 'server.log').read_text()[-2000:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(lab: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        yield browser
        browser.close()


def _api(lab: str, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(f"{lab}{path}", method=method, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body else None


def shut_down_kernels(lab: str) -> None:
    """End every session and its kernel: one notebook's kernel (2.6 GB for 00) never outlives its test."""
    for session in _api(lab, "/api/sessions"):
        _api(lab, f"/api/sessions/{session['id']}", "DELETE")


# What the page shows of the open notebook: its cells, each code cell's prompt, the kernel's status.
_STATE = """() => {
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')].map(p => p.innerText.trim());
  const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
  return {cells: cells.length, prompts, status: indicator ? indicator.getAttribute('data-status') : null,
          dialog: !!document.querySelector('.jp-Dialog')};
}"""


def _state(page) -> dict[str, Any]:
    state = page.evaluate(_STATE)
    numbers = [re.search(r"\[(\d+)\]", p) for p in state["prompts"]]
    state["numbers"] = [int(m.group(1)) if m else None for m in numbers]
    state["running"] = any("*" in p for p in state["prompts"])
    return state


def _answer_kernel_dialog(page) -> None:
    """Lab has asked "Select Kernel" at random, with the notebook's kernel already idle, and Run
    All waits on that dialog forever: answer it as a student would, with the preferred kernel."""
    dialog = page.locator(".jp-Dialog").filter(has_text="Select Kernel")
    if dialog.count():
        print("browser test: Lab asked 'Select Kernel'; answered with the preferred kernel")
        dialog.get_by_role("button", name="Select", exact=True).click()


def _poll(page, done, seconds: float, what: str) -> dict[str, Any]:
    """Poll the notebook's state until ``done(state)``; answers the kernel dialog meanwhile."""
    deadline = time.monotonic() + seconds
    while True:
        state = _state(page)
        if state["dialog"]:
            _answer_kernel_dialog(page)
        elif done(state):
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {seconds:.0f} s (last seen: {state})")
        time.sleep(0.5)


def kernel_of(lab: str, name: str) -> dict[str, Any] | None:
    """The server's view of this notebook's kernel (id, execution_state), or None before it has one."""
    for session in _api(lab, "/api/sessions"):
        if session.get("path", "").endswith(f"notebooks/{name}") and session.get("kernel"):
            return session["kernel"]
    return None


def wait_ready(page, lab: str, name: str, n_cells: int) -> str:
    """Until this notebook's cells are all rendered with their prompts, its toolbar says idle, and
    the server has had one kernel for it, idle, for two polls in a row (Lab has swapped a kernel
    just after opening a notebook, dropping the Run All it had queued). Returns the kernel's id."""
    deadline, last = time.monotonic() + 180, None
    while True:
        state = _state(page)
        if state["dialog"]:
            _answer_kernel_dialog(page)
        kernel = kernel_of(lab, name)
        rendered = state["cells"] == n_cells and all(re.fullmatch(r"\[.*\]:?", p) for p in state["prompts"])
        ok = rendered and state["status"] == "idle" and kernel is not None and kernel.get("execution_state") == "idle"
        if ok and last == kernel["id"]:
            return kernel["id"]
        last = kernel["id"] if ok else None
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: not ready in 180 s (page: {state}; kernel: {kernel})")
        time.sleep(1.0)


def _click_run_all(page, restart: bool) -> None:
    page.keyboard.press("Escape")  # a menu left open by the last try would swallow the click
    if restart:  # a fresh kernel, so the saved execution counts are again 1..N
        page.get_by_role("menuitem", name="Kernel", exact=True).click(timeout=15_000)
        page.get_by_text("Restart Kernel and Run All Cells…", exact=True).click(timeout=15_000)
        page.locator(".jp-Dialog .jp-mod-accept").click(timeout=15_000)  # "Restart"
    else:
        page.get_by_role("menuitem", name="Run", exact=True).click(timeout=15_000)
        page.get_by_text("Run All Cells", exact=True).click(timeout=15_000)


# Whether the page shows an error (a traceback, or "SomeError: ..." as a SyntaxError prints) in an output.
_ERROR_SHOWN = r"""() => [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
  .some(o => /Traceback|\w+(Error|Exception|Interrupt)\s*:/.test(o.innerText))"""


def run_all(page, lab: str, name: str, n_cells: int) -> tuple[str, dict[str, Any]]:
    """Run All on an open notebook and wait: returns ("finished" | "halted", last state).

    Ready first (``wait_ready``). Run All counts as started only when a prompt turns [*] or shows
    a number it did not show before (a committed [1] is not a start); a student clicks again when
    nothing starts, and so does this. It is over when every code cell is numbered and nothing
    runs, or as soon as the kernel has sat idle for HALTED_AFTER_S with cells left unrun: no
    waiting out the timeout. A run that stopped with no error shown (a kernel swapped under it,
    as Lab does now and then on a loaded machine) is restarted once, as a student would, with
    "Restart Kernel and Run All"; one that stopped on an error is reported as it is.
    """
    wait_ready(page, lab, name, n_cells)
    before = _state(page)["numbers"]

    def started(s: dict[str, Any]) -> bool:
        return s["running"] or any(n is not None and n != b for n, b in zip(s["numbers"], before))

    for restart in (False, True):
        for attempt in range(4):
            _click_run_all(page, restart)
            try:
                _poll(page, started, 30, "Run All started")
                break
            except TimeoutError:
                if attempt == 3:
                    raise
                print(f"browser test: {name}: Run All ran nothing within 30 s (try {attempt + 1}); clicking it again")
        deadline, idle_since = time.monotonic() + RUN_ALL_TIMEOUT_S, None
        while True:
            state = _state(page)
            if state["dialog"]:
                _answer_kernel_dialog(page)
            quiet = not state["running"] and state["status"] == "idle"
            if quiet and all(n is not None for n in state["numbers"]):
                return "finished", state
            idle_since = (idle_since or time.monotonic()) if quiet else None
            if idle_since is not None and time.monotonic() - idle_since > HALTED_AFTER_S:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"Run All still going after {RUN_ALL_TIMEOUT_S} s: {state}")
            time.sleep(0.5)
        if restart or page.evaluate(_ERROR_SHOWN):
            return "halted", state
        unrun = next(i for i, n in enumerate(state["numbers"]) if n is None)
        print(f"browser test: {name}: Run All stopped at code cell {unrun} with no error shown; restarting the kernel and running all again")
        before = [None] * len(state["numbers"])
    return "halted", state


def save_and_read(page, path: Path) -> dict[str, Any]:
    """Save the notebook from the browser (its toolbar's save button) and read what was saved."""
    before = path.stat().st_mtime_ns
    page.locator(".jp-NotebookPanel-toolbar [data-command='docmanager:save']").first.click()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.stat().st_mtime_ns != before:
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass  # caught mid-write
        time.sleep(0.25)
    raise TimeoutError(f"{path.name} was not saved within 60 s")


def _image_problem(mime: str, data: Any) -> str | None:
    """Why an image output is not a real figure (None if it is)."""
    import numpy as np
    from PIL import Image

    blob = data if isinstance(data, str) else "".join(data)
    if mime == "image/svg+xml":
        try:
            root = ET.fromstring(blob)
        except ET.ParseError as err:
            return f"an SVG that does not parse ({err})"
        return None if len(list(root.iter())) > 5 else "an SVG with nothing drawn"
    try:
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(blob))).convert("RGB"))
    except Exception as err:  # noqa: BLE001 - any decoding failure is the finding
        return f"a {mime} that does not decode ({err})"
    if min(pixels.shape[:2]) < 20 or pixels.std() < 1.0:
        return f"a {mime} of {pixels.shape[1]}x{pixels.shape[0]} pixels with no content (std {pixels.std():.2f})"
    return None


def saved_problems(nb: dict[str, Any]) -> list[str]:
    """What the saved notebook shows went wrong: cells not run once each in order, error outputs
    (of any kind), images that are not figures."""
    problems = []
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code]
    if counts != list(range(1, len(code) + 1)):
        first = next((i for i, (c, want) in enumerate(zip(counts, range(1, len(code) + 1))) if c != want), 0)
        problems.append(f"code cells did not each run once, in order, in a fresh kernel: execution counts {counts} "
                        f"(first off at code cell {first}: {''.join(code[first]['source'])[:80]!r})")
    for i, cell in enumerate(code):
        for out in cell.get("outputs", []):
            if out["output_type"] == "error":
                problems.append(f"code cell {i} raised {out['ename']}: {out['evalue'][:300]}")
            for mime, data in out.get("data", {}).items():
                if mime.startswith("image/") and (why := _image_problem(mime, data)):
                    problems.append(f"code cell {i} shows {why}")
    return problems


# Per cell in order: is it markdown, how many typeset formulas it holds; and MathJax error nodes anywhere.
_MATH = """() => ({
  cells: [...document.querySelectorAll('.jp-Notebook .jp-Cell')].map(c => ({
    markdown: c.classList.contains('jp-MarkdownCell'),
    typeset: c.querySelectorAll('mjx-container').length,
    text: c.classList.contains('jp-MarkdownCell') ? (c.querySelector('.jp-RenderedMarkdown') || {innerText: ''}).innerText : ''})),
  errors: document.querySelectorAll('mjx-merror, .MathJax_Error').length,
})"""


def math_problems(page, nb: dict[str, Any], seconds: float = 30) -> list[str]:
    """Every markdown cell that has TeX must show typeset formulas and no raw $...$ left; no
    MathJax error nodes. Typesetting is asynchronous: waits up to ``seconds`` for it."""
    # TeX outside code spans (`$LAPE_DATA` is a shell variable, not a formula)
    wants = [c["cell_type"] == "markdown" and "$" in re.sub(r"`[^`]*`", "", "".join(c["source"])) for c in nb["cells"]]
    deadline = time.monotonic() + seconds
    while True:
        seen = page.evaluate(_MATH)
        problems = [f"{seen['errors']} MathJax error node(s)"] if seen["errors"] else []
        for i, (want, cell) in enumerate(zip(wants, seen["cells"])):
            if want and (cell["typeset"] == 0 or re.search(r"\$[^$\s][^$]*\$", cell["text"])):
                problems.append(f"markdown cell {i} shows raw TeX: {cell['text'][:120]!r}")
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(1.0)


def slider_problems(page) -> list[str]:
    """Notebook 03's explorer: moving the layer slider and the patch slider each changes the figure."""
    problems = []
    sliders = page.locator(".jp-OutputArea-output .widget-slider")
    if sliders.count() != 2:
        return [f"the explorer shows {sliders.count()} slider(s), expected 2 (layer, patch)"]
    for index, what in ((0, "layer"), (1, "patch")):
        before = page.locator(".jp-OutputArea-output img").last.get_attribute("src")
        handle = sliders.nth(index).locator(".noUi-handle")
        handle.focus()
        handle.press("ArrowRight")
        try:
            page.wait_for_function("([src]) => { const imgs = [...document.querySelectorAll('.jp-OutputArea-output img')];"
                                   " return imgs.length && imgs[imgs.length - 1].getAttribute('src') !== src; }",
                                   arg=[before], timeout=60_000)
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: the finding
            problems.append(f"moving the {what} slider did not change the figure within 60 s")
    return problems


def screenshot_whole(page, path: Path) -> None:
    """The whole notebook, not the visible part: the viewport grown to the notebook's height."""
    height = page.evaluate("() => Math.max(...[...document.querySelectorAll('.jp-WindowedPanel-outer, .jp-Notebook')]"
                           ".map(e => e.scrollHeight), 1000)")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 200, 30_000)})
    page.evaluate("() => document.querySelectorAll('.jp-WindowedPanel-outer, .jp-Notebook').forEach(e => { e.scrollTop = 0; })")
    page.screenshot(path=str(path), full_page=True)


def exercise(browser: Any, lab: str, lab_root: Path, name: str, shots: Path, expected_images: int | None,
             sliders: bool = False) -> list[str]:
    """Open ``notebooks/name`` in its own workspace, Run All, and return every problem found."""
    path = lab_root / "notebooks" / name
    n_cells = len(json.loads(path.read_text())["cells"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    try:
        # A workspace of its own, reset: only this notebook is open, so every query is about it.
        page.goto(f"{lab}/lab/workspaces/{Path(name).stem}/tree/notebooks/{name}?reset&token={TOKEN}")
        outcome, state = run_all(page, lab, name, n_cells)
        if outcome == "halted":
            unrun = next(i for i, n in enumerate(state["numbers"]) if n is None)
            problems.append(f"Run All stopped with code cell {unrun} and later ones unrun")
        nb = save_and_read(page, path)
        problems += saved_problems(nb)
        images = page.locator(".jp-OutputArea-output img").count()
        if expected_images is not None and images != expected_images:
            problems.append(f"{images} rendered images, expected {expected_images}")
        problems += math_problems(page, nb)
        if sliders and outcome == "finished":
            problems += slider_problems(page)
    except Exception as err:  # noqa: BLE001 - a timeout is a problem to report with its screenshot
        problems.append(f"{type(err).__name__}: {err}")
    finally:
        if problems:
            screenshot_whole(page, shots / f"{Path(name).stem}.png")
            print(f"browser test: {name}: screenshot {shots / (Path(name).stem + '.png')}")
        page.close()
        shut_down_kernels(lab)
    return problems


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_run_all_in_jupyterlab_runs_every_cell_and_shows_every_figure(name: str, lab: str, lab_root: Path, browser: object,
                                                                      tmp_path: Path) -> None:
    problems = exercise(browser, lab, lab_root, name, tmp_path, EXPECTED_IMAGES[name], sliders=name.startswith("03"))
    assert not problems, f"{name}: " + "\n".join(problems)


def broken_copy(lab_root: Path, source: str, target: str, edit) -> str:
    """A copy of ``source`` with ``edit(cells)`` applied, next to the real notebooks."""
    import nbformat

    nb = nbformat.read(lab_root / "notebooks" / source, as_version=4)
    edit(nb.cells)
    nbformat.write(nb, lab_root / "notebooks" / target)
    return target


def _after_check(cells: list, new: Any) -> None:
    """Insert ``new`` right after the parameters' check cell (early: a failure there stops the run soon)."""
    i = next(i for i, c in enumerate(cells) if "check(globals()" in c.source)
    cells.insert(i + 1, new)


def _figure_raises(cells: list) -> None:
    cell = next(c for c in cells if "plot_layer_similarity(models" in c.source)
    cell.source = "raise RuntimeError('figure broken on purpose')\n" + cell.source


def _figure_unshown(cells: list) -> None:
    cell = next(c for c in cells if "plot_layer_similarity(models" in c.source)
    cell.source += "\nplt.close(fig)  # broken on purpose: the figure is never shown"


def _syntax_error(cells: list) -> None:
    import nbformat

    _after_check(cells, nbformat.v4.new_code_cell("x = (1,  # broken on purpose"))


def _broken_latex(cells: list) -> None:
    import nbformat

    _after_check(cells, nbformat.v4.new_markdown_cell(r"Broken on purpose: $\frac{1}{2$ and $\mathrm{LN}(x$"))


def _blank_figure(cells: list) -> None:
    cell = next(c for c in cells if "plot_layer_similarity(models" in c.source)
    cell.source += "\nblank = plt.figure(figsize=(2, 2)); blank.gca().axis('off'); plt.show()  # broken on purpose: an empty figure"


def _counts_off(cells: list) -> None:
    import nbformat

    _after_check(cells, nbformat.v4.new_code_cell(
        "get_ipython().run_cell('pass', store_history=True)  # broken on purpose: a second execution in one cell"))


def _dead_callback(cells: list) -> None:
    cell = next(c for c in cells if "explore_similarity(models" in c.source)
    cell.source = ("import ipywidgets\n_interact = ipywidgets.interact\n"
                   "ipywidgets.interact = lambda f, **sliders: _interact(lambda layer=1, patch=0: f(), **sliders)"
                   "  # broken on purpose: the figure ignores the sliders\n" + cell.source)


@pytest.mark.parametrize(("source", "edit", "expected", "needle"), [
    ("01_affine_argument.ipynb", _figure_raises, None, "raised RuntimeError: figure broken on purpose"),
    ("01_affine_argument.ipynb", _figure_unshown, EXPECTED_IMAGES["01_affine_argument.ipynb"], "rendered images, expected"),
    ("01_affine_argument.ipynb", _syntax_error, None, "raised SyntaxError"),
    ("01_affine_argument.ipynb", _broken_latex, None, ("shows raw TeX", "MathJax error node")),
    ("03_per_layer_pe.ipynb", _dead_callback, None, "slider did not change the figure"),
    ("01_affine_argument.ipynb", _blank_figure, None, "with no content"),
    ("01_affine_argument.ipynb", _counts_off, None, "did not each run once, in order"),
], ids=["figure-raises", "figure-never-shown", "syntax-error", "broken-latex", "dead-widget-callback", "blank-figure",
        "execution-counts-off"])
def test_each_check_catches_what_it_is_for(source: str, edit, expected: int | None, needle: str, lab: str, lab_root: Path,
                                           browser: object, tmp_path: Path) -> None:
    """The checks are not vacuous: each deliberately broken copy fails the one meant to catch it."""
    name = broken_copy(lab_root, source, f"broken_{edit.__name__.strip('_')}.ipynb", edit)
    problems = exercise(browser, lab, lab_root, name, tmp_path, expected, sliders=source.startswith("03"))
    needles = needle if isinstance(needle, tuple) else (needle,)
    assert any(n in p for p in problems for n in needles), f"{name}: the check did not fire; problems seen: {problems}"
    if edit in (_figure_raises, _syntax_error):
        assert any("Run All stopped with code cell" in p for p in problems)  # and it said so without waiting out the timeout
