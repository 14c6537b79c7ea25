"""Open every course notebook in JupyterLab (headless Chromium), run all cells,
and check that nothing failed and that the widgets really rendered.

Run:  .venv/bin/python -m pytest tests/browser -q
Env:  BROWSER_TEST_NOTEBOOKS  globs of notebooks separated by spaces, relative to
                              the repo root or absolute (default: the lessons
                              and the solutions, "notebooks/*.ipynb solutions/*.ipynb")
      BROWSER_TEST_ROOT_DIR   JupyterLab root_dir (default: the repo root, or
                              the notebooks' common folder if outside the repo)
      LAB_TIME_SCALE          passed to the kernels (default "0.2")
      BROWSER_TEST_CHROMIUM   browser binary (default /usr/bin/chromium)
      CI                      if set, a missing chromium is a failure, not a skip
LAB_HEADLESS is removed from the server's environment (dashboards must draw).
      BROWSER_TEST_SCREENSHOTS  "1": a full-page screenshot of every notebook (default:
                              only of a notebook with a problem; one costs about 4 s of
                              Chromium's CPU, 80 s over the 21 notebooks)
Artifacts: tests/artifacts/jupyter.log (jupyter-gwN.log per xdist worker),
           tests/artifacts/screenshots/<name>.png
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from .jupyter_server import REPO_ROOT, JupyterServer

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"

KERNEL_START_TIMEOUT = 90.0  # s: page load + kernel start
EXECUTION_TIMEOUT = 240.0  # s: "Run All Cells" until no [*] prompt is left
WIDGET_SETTLE_TIMEOUT = 30.0  # s: widget views render asynchronously
VIEWPORT = {"width": 1400, "height": 900}
MAX_SCREENSHOT_HEIGHT = 12000  # px
ALL_SCREENSHOTS = os.environ.get("BROWSER_TEST_SCREENSHOTS") == "1"
CONSOLE_ERRORS: list[str] = []  # browser console errors of the current test

# What makes a notebook "use widgets" / "use ipympl" (searched in code cells).
WIDGETS_RE = re.compile(
    r"\bipywidgets\b|\blabsupport\.(?:dashboard|explorer)\b|\b(?:Dashboard|\w*Explorer)\s*\("
)
IPYMPL_RE = re.compile(r"^\s*%matplotlib\s+(?:widget|ipympl)\b", re.M)

# Error outputs: JupyterLab 4 renders an `error` output (traceback) as
# <div class="jp-RenderedText jp-OutputArea-output"
#      data-mime-type="application/vnd.jupyter.stderr"> - the same mime type as
# stderr stream output; the vnd.jupyter.error selector is kept for safety.
STDERR_SEL = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
ERROR_SEL = '[data-mime-type="application/vnd.jupyter.error"]'
STDERR_ERROR_RE = re.compile(r"Traceback|Error")
WIDGET_FALLBACK_TEXTS = ("Error displaying widget", "Loading widget...")

# One JS round trip collecting everything the assertions need, per cell. The
# server runs with --LabApp.expose_app_in_browser, so window.jupyterapp gives
# the cell models (source, tags, outputs' mime types) next to their DOM nodes.
COLLECT_CELLS_JS = """
({stderrSel, errorSel}) => {
  const panel = window.jupyterapp?.shell.currentWidget;
  if (!panel?.content?.widgets) return null;
  const FIGURE_REPR = /^<Figure size [\\d.]+x[\\d.]+ with \\d+ Axes>$/;
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  return panel.content.widgets.map((cell) => {
    const node = cell.node;
    const code = cell.model.type === 'code';
    const outputs = code ? cell.model.outputs.toJSON() : [];
    return {
      code,
      source: cell.model.sharedModel.getSource(),
      tags: cell.model.getMetadata('tags') ?? [],
      prompt: (code ? node.querySelector('.jp-InputArea-prompt')?.innerText ?? '' : '').trim(),
      widgetOutputs: outputs.filter(
        (o) => o.data && 'application/vnd.jupyter.widget-view+json' in o.data).length,
      stderr: [...node.querySelectorAll(stderrSel)].map((e) => e.innerText),
      errors: [...node.querySelectorAll(errorSel)].map((e) => e.innerText),
      outputText: [...node.querySelectorAll('.jp-OutputArea-output')]
        .map((e) => e.innerText).join('\\n'),
      widgets: [...node.querySelectorAll('.jp-OutputArea-output .jupyter-widgets')]
        .filter((e) => visible(e) && !e.querySelector('.jupyter-widgets-error-widget'))
        .length,
      errorWidgets: node.querySelectorAll('.jupyter-widgets-error-widget').length,
      figureTexts: [...node.querySelectorAll('.jp-OutputArea-output')]
        .map((e) => e.innerText.trim()).filter((t) => FIGURE_REPR.test(t)),
      canvases: [...node.querySelectorAll('.jp-OutputArea-output canvas')].filter(visible).length,
    };
  });
}
"""

# While the notebook runs, only the prompts are read (collecting every output's text twice a
# second took CPU from the kernel under test).
PROMPTS_JS = """
() => {
  const panel = window.jupyterapp?.shell.currentWidget;
  if (!panel?.content?.widgets) return null;
  return panel.content.widgets.filter((cell) => cell.model.type === 'code')
    .map((cell) => (cell.node.querySelector('.jp-InputArea-prompt')?.innerText ?? '').trim());
}
"""


# -- which notebooks ----------------------------------------------------------
DEFAULT_NOTEBOOKS = "notebooks/*.ipynb solutions/*.ipynb"


def _notebook_paths() -> list[Path]:
    found = set()
    for pattern in os.environ.get("BROWSER_TEST_NOTEBOOKS", DEFAULT_NOTEBOOKS).split():
        if not os.path.isabs(pattern):
            pattern = str(REPO_ROOT / pattern)
        found |= {Path(p).resolve() for p in glob.glob(pattern, recursive=True)
                  if ".ipynb_checkpoints" not in Path(p).parts}
    return sorted(found)


def _root_dir(notebooks: list[Path]) -> Path:
    if os.environ.get("BROWSER_TEST_ROOT_DIR"):
        return Path(os.environ["BROWSER_TEST_ROOT_DIR"]).resolve()
    if all(nb.is_relative_to(REPO_ROOT) for nb in notebooks):
        return REPO_ROOT
    return Path(os.path.commonpath([nb.parent for nb in notebooks]))


NOTEBOOKS = _notebook_paths()
ROOT_DIR = _root_dir(NOTEBOOKS) if NOTEBOOKS else REPO_ROOT


def _params() -> list:
    if not NOTEBOOKS:
        reason = (
            f"no notebook matches {os.environ.get('BROWSER_TEST_NOTEBOOKS', DEFAULT_NOTEBOOKS)}"
        )
        return [pytest.param(None, id="no-notebooks", marks=pytest.mark.skip(reason=reason))]
    return [pytest.param(nb, id=_rel(nb)) for nb in NOTEBOOKS]


def _rel(nb: Path) -> str:
    try:
        return nb.relative_to(ROOT_DIR).as_posix()
    except ValueError:
        return nb.name


# -- fixtures -----------------------------------------------------------------
@pytest.fixture(scope="session")
def jupyter_server(request, chromium_path):
    """A JupyterLab server for the whole session; always terminated at the end."""
    for nb in NOTEBOOKS:
        if not nb.is_relative_to(ROOT_DIR):
            pytest.fail(
                f"{nb} is outside the server root_dir {ROOT_DIR} (set BROWSER_TEST_ROOT_DIR)",
                pytrace=False,
            )
    worker = os.environ.get("PYTEST_XDIST_WORKER")   # one server (and log) per xdist worker
    server = JupyterServer(ROOT_DIR, ARTIFACTS / (f"jupyter-{worker}.log" if worker
                                                  else "jupyter.log"))
    request.addfinalizer(server.stop)
    server.start()
    # Guard the "never write to notebooks/" promise: autosave must really be off.
    setting = server.request_json("lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    assert setting["settings"].get("autosave") is False, (  # type: ignore[index]
        f"autosave override not applied: {setting}"
    )
    return server


@pytest.fixture
def page(browser, jupyter_server):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    CONSOLE_ERRORS.clear()
    page.on("console", lambda msg: CONSOLE_ERRORS.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()  # never triggers a save: autosave is off, beforeunload is not run
    jupyter_server.shutdown_kernels()  # also if the test failed before closing the tab


# -- helpers ------------------------------------------------------------------
def _git_status(path: Path) -> str | None:
    if shutil.which("git") is None or not path.is_relative_to(REPO_ROOT):
        return None
    result = subprocess.run(
        ["git", "status", "--porcelain", "--", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout if result.returncode == 0 else None


def _accept_kernel_dialog(page) -> bool:
    """JupyterLab 4 may ask "Select Kernel": accept the default (Python 3)."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count() and dialog.first.is_visible():
        text = dialog.first.inner_text()
        if "Kernel" in text:
            dialog.first.locator(".jp-Dialog-button.jp-mod-accept").click()
            return True
    return False


def _kernel_state(server: JupyterServer, rel: str) -> str | None:
    try:
        sessions = server.api("sessions")
    except OSError:
        return None
    for session in sessions:  # type: ignore[union-attr]
        if session.get("path") == rel and session.get("kernel"):
            return session["kernel"].get("execution_state")
    return None


def _wait_for_idle_kernel(page, server: JupyterServer, rel: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _accept_kernel_dialog(page)
        indicator = page.locator(
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator"
        ).first
        dom_idle = indicator.count() and indicator.get_attribute("data-status") == "idle"
        if dom_idle and _kernel_state(server, rel) == "idle":
            return
        time.sleep(0.25)
    raise AssertionError(
        f"{rel}: no idle kernel after {timeout:.0f} s "
        f"(REST state: {_kernel_state(server, rel)}); see {server.log_path}"
    )


def _menu(page, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-item", has_text=re.compile(rf"^{re.escape(menu)}$")).first.click()
    entry = page.locator(
        ".lm-Menu-item:not(.lm-mod-disabled)",
        has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$")),
    )
    entry.first.click()


def _collect(page) -> list[dict]:
    cells = page.evaluate(COLLECT_CELLS_JS, {"stderrSel": STDERR_SEL, "errorSel": ERROR_SEL})
    assert cells is not None, "window.jupyterapp has no notebook panel (expose_app_in_browser?)"
    return cells


def _prompts(page) -> list[str]:
    prompts = page.evaluate(PROMPTS_JS)
    assert prompts is not None, "window.jupyterapp has no notebook panel (expose_app_in_browser?)"
    return prompts


def _wait_for_execution(page, server: JupyterServer, rel: str, timeout: float) -> float:
    """Poll until no code cell shows [*] and the kernel is idle (twice in a row)."""
    start = time.monotonic()
    stable = 0
    while time.monotonic() - start < timeout:
        _accept_kernel_dialog(page)
        running = any("*" in prompt for prompt in _prompts(page))
        status = page.locator(
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator"
        ).first.get_attribute("data-status")
        if not running and status == "idle" and _kernel_state(server, rel) == "idle":
            stable += 1
            if stable >= 2:
                return time.monotonic() - start
        else:
            stable = 0
        time.sleep(0.5)
    raise AssertionError(f"{rel}: execution not finished after {timeout:.0f} s; "
                         f"prompts: {_prompts(page)}")


# JupyterLab's page never scrolls, the notebook does: the height the notebook
# needs to show all cells (up to the last one, not the "scroll past end" padding).
NOTEBOOK_EXTRA_HEIGHT_JS = """() => {
  const s = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
  const cells = s ? s.querySelectorAll('.jp-Cell') : [];
  if (!cells.length) return 0;
  const bottom = cells[cells.length - 1].getBoundingClientRect().bottom;
  const content = bottom - s.getBoundingClientRect().top + s.scrollTop + 24;
  s.scrollTop = 0;
  return Math.max(0, content - s.clientHeight);
}"""
SCROLL_TOP_JS = """() => {
  const s = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
  if (s) s.scrollTop = 0;
}"""


def _screenshot(page, name: str) -> Path:
    """Grow the viewport to the notebook's height so the full page shows every cell."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    extra = page.evaluate(NOTEBOOK_EXTRA_HEIGHT_JS)
    height = min(MAX_SCREENSHOT_HEIGHT, VIEWPORT["height"] + int(extra))
    if height != VIEWPORT["height"]:
        page.set_viewport_size({"width": VIEWPORT["width"], "height": height})
    page.wait_for_timeout(500)
    page.evaluate(SCROLL_TOP_JS)
    page.wait_for_timeout(200)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)
    return path


def _close_without_saving(page) -> None:
    _menu(page, "File", "Close Tab")
    dialog = page.locator(".jp-Dialog")
    try:
        dialog.first.wait_for(state="visible", timeout=5_000)
    except Exception:  # not dirty: no dialog
        page.locator(".jp-NotebookPanel").first.wait_for(state="detached", timeout=10_000)
        return
    buttons = dialog.first.locator(".jp-Dialog-button", has_text=re.compile(r"Discard|Don.t Save"))
    buttons.first.click()
    dialog.first.wait_for(state="detached", timeout=10_000)
    page.locator(".jp-NotebookPanel").first.wait_for(state="detached", timeout=10_000)


def _short(text: str, limit: int = 3000) -> str:
    return text if len(text) <= limit else text[:limit] + "\n[... truncated]"


# -- the test -----------------------------------------------------------------
@pytest.mark.parametrize("notebook", _params())
def test_notebook_runs_and_widgets_render(notebook: Path, jupyter_server: JupyterServer, page):
    server = jupyter_server
    rel = notebook.relative_to(ROOT_DIR).as_posix()
    stems = [nb.stem for nb in NOTEBOOKS]
    name = notebook.stem if stems.count(notebook.stem) == 1 else rel[:-6].replace("/", "__")
    git_before = _git_status(notebook)
    saves_before = server.log_text().count(f"Saving file at /{rel}")

    t0 = time.monotonic()
    # ?reset: ignore the workspace saved by the previous test's page.
    page.goto(server.url(f"lab/tree/{urllib.parse.quote(rel)}?reset"))
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    _wait_for_idle_kernel(page, server, rel, KERNEL_START_TIMEOUT)
    t_open = time.monotonic() - t0

    # Start from a clean slate (stored outputs/counts would fake "finished"),
    # then run everything.
    _menu(page, "Edit", "Clear Outputs of All Cells")
    _menu(page, "Run", "Run All Cells")
    t_exec = _wait_for_execution(page, server, rel, EXECUTION_TIMEOUT)

    # Widgets are expected when the code mentions them or a cell output is a widget view.
    cells = _collect(page)
    all_code = "\n".join(c["source"] for c in cells if c["code"])
    needs_widgets = bool(WIDGETS_RE.search(all_code)) or any(c["widgetOutputs"] for c in cells)
    needs_canvas = bool(IPYMPL_RE.search(all_code))

    # Widget views render asynchronously after the comm messages: let them settle.
    deadline = time.monotonic() + (WIDGET_SETTLE_TIMEOUT if needs_widgets or needs_canvas else 2)
    while True:
        cells = _collect(page)
        settled = not any("Loading widget..." in c["outputText"] for c in cells)
        if needs_widgets:
            settled = settled and sum(c["widgets"] for c in cells) > 0
        if needs_canvas:
            settled = settled and sum(c["canvases"] for c in cells) > 0
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    problems = _problems(cells, needs_widgets, needs_canvas)
    shot = _screenshot(page, name) if problems or ALL_SCREENSHOTS else "not taken (no problem)"
    print(f"\n{rel}: open+kernel {t_open:.1f} s, run all {t_exec:.1f} s, screenshot {shot}")

    _close_without_saving(page)
    server.shutdown_kernels()

    saves_after = server.log_text().count(f"Saving file at /{rel}")
    assert saves_after == saves_before, f"{rel} was saved by JupyterLab during the test"
    git_after = _git_status(notebook)
    assert git_after == git_before, (
        f"git status of {rel} changed during the test: {git_before!r} -> {git_after!r}"
    )

    if problems:
        console = "\n".join(CONSOLE_ERRORS[-10:])
        pytest.fail(
            f"{rel}: {len(problems)} problem(s) (screenshot: {shot}):\n\n"
            + "\n\n".join(problems)
            + (f"\n\nbrowser console errors (last 10):\n{_short(console)}" if console else ""),
            pytrace=False,
        )


def _problems(cells: list[dict], needs_widgets: bool, needs_canvas: bool) -> list[str]:
    problems: list[str] = []
    for index, cell in enumerate(cells):
        if not cell["code"]:
            continue
        label = f"cell #{index} {cell['prompt'].rstrip(':') or '[?]'}"
        # Cells tagged raises-exception may show a traceback (Run All goes on after them).
        if "raises-exception" not in cell["tags"]:
            for err in cell["errors"]:
                problems.append(f"{label}: error output:\n{_short(err)}")
            for err in cell["stderr"]:
                if STDERR_ERROR_RE.search(err):
                    problems.append(f"{label}: error on stderr:\n{_short(err)}")
        for fallback in WIDGET_FALLBACK_TEXTS:
            if fallback in cell["outputText"]:
                problems.append(f"{label}: widget did not render: {fallback!r}")
        # A figure shown only as its text repr: no renderer for the active backend
        # (e.g. display(fig) after the backend switched to ipympl).
        for figure in cell["figureTexts"]:
            problems.append(f"{label}: matplotlib figure not drawn, only its repr {figure!r}")
        if cell["errorWidgets"]:
            problems.append(
                f"{label}: {cell['errorWidgets']} widget error view(s) "
                "(model/view class failed to load)"
            )
        # Empty code cells are never executed by JupyterLab.
        if cell["source"].strip() and not re.fullmatch(r"\[\d+\]:?", cell["prompt"]):
            problems.append(f"{label}: not executed (prompt {cell['prompt']!r})")
    if needs_widgets and not sum(c["widgets"] for c in cells):
        problems.append(
            "notebook uses ipywidgets/dashboards but no visible .jupyter-widgets element rendered"
        )
    if needs_canvas and not sum(c["canvases"] for c in cells):
        problems.append("notebook uses %matplotlib widget but no ipympl <canvas> rendered")
    return problems
