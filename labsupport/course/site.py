"""The course site: ``make site`` turns the notebooks into static web pages anyone can read.

``python -m labsupport site`` runs every lesson of ``notebooks/`` once, at real time
(``LAB_TIME_SCALE=1``), with dashboards in static mode (``LAB_STATIC=1``: each run leaves its
plot as a PNG and its summary line), into ``.lab/site/executed/``; then writes ``site/``:

* one page per lesson (``notebooks/NN_*.ipynb``) with what it measured;
* one page per exercise notebook (``exercises/``, shown as a learner gets it: not executed,
  and never a page from ``solutions/``);
* ``index.html`` (the modules, from each notebook's first heading) and ``run_it_live.html``.

Every page has the same nav bar (previous, index, next) and loads nothing from another host:
the ``lab`` template's require.js, MathJax and widget-manager scripts are left out, and
mermaid is copied from its npm package (fetched once with ``npm pack`` into
``.lab/site-cache/``) to ``site/assets/mermaid/``. Without npm the diagrams are shown as
their source with a note, and the build log says so.

``--from DIR`` builds from notebooks executed elsewhere (the nbval pass of `make test` leaves
them in ``tests/artifacts/executed/``) instead of running them again. A lesson with no executed copy
there is shown unexecuted, with a note on its page and a line in the build log.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labsupport.runtime.errors import LabError

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = Path(__file__).resolve().parent / "site_template"
SITE = ROOT / "site"
EXECUTED = ROOT / ".lab" / "site" / "executed"
CACHE = ROOT / ".lab" / "site-cache"
MERMAID_VERSION = "11.10.0"
MERMAID_URL = "./assets/mermaid/mermaid.esm.min.mjs"
LIVE_FILE = "run_it_live.html"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

Log = Callable[[str], None]


@dataclass(frozen=True)
class Page:
    """One page of the site: where it comes from, its file name and what the nav calls it."""

    kind: str  # "index", "lesson", "exercise" or "live"
    file: str
    title: str
    line: str = ""
    source: Path | None = None

    @property
    def label(self) -> str:
        return self.title


def lessons() -> list[Path]:
    """The module lessons, in course order."""
    return sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def exercises() -> list[Path]:
    """The exercise notebooks a learner starts from (never ``solutions/``)."""
    return sorted((ROOT / "exercises").glob("[0-9][0-9]_*.ipynb"))


def first_heading(nb: Any) -> str:
    """The text of the notebook's first markdown heading ("" if it has none)."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
    return ""


def split_heading(heading: str) -> tuple[str, str]:
    """``"01 · Blocking calls: why ...?"`` -> ``("01 · Blocking calls", "Why ...?")``."""
    title, _, line = heading.partition(": ")
    return title.strip(), line[:1].upper() + line[1:]


def plan() -> list[Page]:
    """Every page in reading order: index, each lesson followed by its exercises, live."""
    import nbformat

    by_stem = {path.stem: path for path in exercises()}
    pages = [Page("index", "index.html", "Latency Lab: all modules")]
    for path in lessons():
        title, line = split_heading(first_heading(nbformat.read(path, as_version=4)))
        pages.append(Page("lesson", f"{path.stem}.html", title or path.stem, line, path))
        exercise = by_stem.get(path.stem)
        if exercise is not None:
            heading = first_heading(nbformat.read(exercise, as_version=4))
            pages.append(Page("exercise", f"{path.stem}_exercises.html",
                              heading or f"{path.stem} exercises", "", exercise))
    pages.append(Page("live", LIVE_FILE, "Run it live"))
    return pages


def _nav(pages: list[Page], index: int) -> dict[str, Any]:
    def link(i: int) -> dict[str, str] | None:
        return {"file": pages[i].file, "label": pages[i].label} if 0 <= i < len(pages) else None

    return {"prev": link(index - 1), "next": link(index + 1)}


# -- executing the lessons -----------------------------------------------------------------
def _kernel_env(scale: str) -> dict[str, str]:
    env = {**os.environ, "LAB_STATIC": "1", "LAB_TIME_SCALE": scale}
    env.pop("LAB_HEADLESS", None)
    return env


def execute(paths: Iterable[Path], into: Path, scale: str = "1",
            log: Log = print) -> list[Path]:
    """Run each notebook top to bottom in a fresh kernel (cwd: its folder), keep the copy.

    A failing cell stops the build with the notebook's name and the cell's number."""
    into.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        start = time.monotonic()
        written.append(_execute_one(path, into, scale))
        log(f"executed {path.name} in {time.monotonic() - start:.0f} s "
            f"(LAB_TIME_SCALE={scale})")
    return written


def _execute_one(path: Path, into: Path, scale: str) -> Path:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    running = {"index": -1}
    client.on_cell_execute = lambda cell, cell_index: running.update(index=cell_index)
    try:
        client.execute(env=_kernel_env(scale))
    except Exception as exc:
        raise LabError(f"{path.name}: cell {running['index'] + 1} failed while building the "
                       f"site: {type(exc).__name__}: {_first_line(exc)}",
                       f"run {_shown(path)} in JupyterLab and fix that cell, "
                       "then run make site again") from exc
    target = into / path.name
    nbformat.write(nb, target)
    return target


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def executed_copy(lesson: Path, folder: Path) -> Path | None:
    """The executed copy of ``lesson`` in ``folder``: ``NAME.ipynb`` (``make site``) or
    ``notebooks__NAME.ipynb`` (the nbval pass's ``tests/artifacts/executed/``)."""
    for name in (lesson.name, f"{lesson.parent.name}__{lesson.name}"):
        if (folder / name).is_file():
            return folder / name
    return None


# -- mermaid -------------------------------------------------------------------------------
def vendor_mermaid(assets: Path, cache: Path = CACHE, npm: str = "npm",
                   log: Log = print) -> str | None:
    """Copy mermaid's ESM build under ``assets/mermaid/``; return its URL from a page.

    The package comes from the npm registry once (``npm pack``) and is kept in ``cache``.
    Returns None (and says why in the log) when it cannot be had."""
    tarball = cache / f"mermaid-{MERMAID_VERSION}.tgz"
    if not tarball.is_file() and not _npm_pack(cache, npm, log):
        return None
    prefix = "package/dist/"
    wanted = re.compile(r"package/dist/(mermaid\.esm\.min\.mjs|chunks/mermaid\.esm\.min/[^/]+)$")
    copied = 0
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            if not member.isfile() or not wanted.match(member.name):
                continue
            target = assets / "mermaid" / member.name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
            copied += 1
    if not (assets / "mermaid" / "mermaid.esm.min.mjs").is_file():
        log(f"mermaid: {tarball} has no dist/mermaid.esm.min.mjs: diagrams shown as source")
        return None
    log(f"mermaid {MERMAID_VERSION}: {copied} files copied to {assets / 'mermaid'} "
        f"(package cached in {cache})")
    return MERMAID_URL


def _npm_pack(cache: Path, npm: str, log: Log) -> bool:
    exe = shutil.which(npm)
    why = f"{npm} not found"
    if exe is not None:
        cache.mkdir(parents=True, exist_ok=True)
        name = f"mermaid-{MERMAID_VERSION}.tgz"
        try:
            # Packed in a folder of its own, then moved: a build running at the same time
            # never reads half a tarball.
            with tempfile.TemporaryDirectory(dir=cache) as work:
                subprocess.run([exe, "pack", f"mermaid@{MERMAID_VERSION}", "--silent"],
                               cwd=work, check=True, capture_output=True, text=True,
                               timeout=300)
                os.replace(Path(work) / name, cache / name)
            return True
        except (OSError, subprocess.SubprocessError) as exc:
            stderr = getattr(exc, "stderr", "") or ""
            why = f"npm pack mermaid@{MERMAID_VERSION} failed: {_first_line(exc)} {stderr[-300:]}"
    log(f"mermaid: NOT vendored ({why.strip()}): diagrams are shown as their mermaid source "
        "with a note. Install Node.js/npm and run make site again to draw them.")
    return False


MERMAID_NOTE = ('<div class="jp-Mermaid lab-mermaid-source"><p class="lab-mermaid-note">'
                "Diagram source: mermaid was not available when this site was built, so the "
                "diagram is shown as text (open the notebook in JupyterLab to see it drawn)."
                "</p>")


# -- pages ---------------------------------------------------------------------------------
def _exporter(mermaid_url: str | None) -> Any:
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    config = Config()
    config.HTMLExporter.extra_template_basedirs = [str(TEMPLATE_DIR.parent)]
    config.HTMLExporter.template_name = TEMPLATE_DIR.name
    config.HTMLExporter.theme = "light"
    # The template leaves these scripts out; empty URLs make sure nothing falls back to a CDN.
    for trait in ("require_js_url", "mathjax_url", "jupyter_widgets_base_url",
                  "widget_renderer_url"):
        setattr(config.HTMLExporter, trait, "")
    exporter = HTMLExporter(config=config)
    # nbconvert 7.17 does not take these two from config (they are not config traits).
    exporter.mermaid_js_url = mermaid_url or ""
    exporter.mermaid_layout_elk_js_url = ""
    return exporter


def _note(page: Page, executed: bool) -> str:
    if page.kind == "exercise":
        return ("Exercise notebook, shown as you get it (not run). In the lab, each "
                "question's check() says what is right or wrong, hint() helps and "
                "solution() shows the answer.")
    if not executed:
        return ("This lesson is shown without its outputs: it was not run when the site "
                "was built. Run it live to see what it measures.")
    return ""


def _link_notebooks(text: str, pages: list[Page]) -> str:
    """Links between notebooks (``../exercises/01_x.ipynb``) point at their pages."""
    files = {(p.source.parent.name, p.source.name): p.file for p in pages if p.source}

    def swap(match: re.Match[str]) -> str:
        target = match.group(2)
        folder = "exercises" if "exercises/" in target else "notebooks"
        name = target.rsplit("/", 1)[-1]
        return f'{match.group(1)}"{files.get((folder, name), target)}"'

    return re.sub(r'(href=)"((?:\.\./)?(?:notebooks/|exercises/)?[0-9]{2}_\w+\.ipynb)"',
                  swap, text)


def _drop_widget_views(nb: Any) -> None:
    """A widget (a progress bar, say) is live state a static page cannot show: its text
    fallback would be a frozen "0%", so the output is left out."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs
                            if WIDGET_VIEW not in o.get("data", {})]


def render_notebook(page: Page, nb: Any, pages: list[Page], exporter: Any,
                    executed: bool) -> str:
    """The HTML page of one notebook, with the nav bar and the page's note."""
    nb.metadata["title"] = page.title
    _drop_widget_views(nb)
    resources = {"metadata": {"name": page.title},
                 "site": {"nav": _nav(pages, pages.index(page)),
                          "note": _note(page, executed),
                          "mermaid_url": exporter.mermaid_js_url or None}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    if not exporter.mermaid_js_url:
        body = body.replace('<div class="jp-Mermaid">', MERMAID_NOTE)
    return _link_notebooks(body, pages)


def _jinja() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
                              autoescape=False, keep_trailing_newline=True)


def render_plain(page: Page, pages: list[Page]) -> str:
    """The index or the "Run it live" page."""
    env = _jinja()
    modules = []
    for item in pages:
        if item.kind == "lesson":
            modules.append({"lesson": item, "exercise": None})
        elif item.kind == "exercise":
            modules[-1]["exercise"] = item
    body = env.get_template(f"{page.kind}_body.html.j2").render(modules=modules)
    resources = {"site": {"title": page.title, "nav": _nav(pages, pages.index(page))}}
    return env.get_template("page.html.j2").render(resources=resources, body=body)


@dataclass
class BuildReport:
    """What a build wrote, and what it could not do."""

    out: Path
    pages: list[Page]
    unexecuted: list[str]
    mermaid: bool
    seconds: float

    def __str__(self) -> str:
        size = sum(f.stat().st_size for f in self.out.rglob("*") if f.is_file())
        lines = [f"site: {len(self.pages)} pages in {self.out} ({size / 1e6:.1f} MB) "
                 f"in {self.seconds:.0f} s",
                 "mermaid: " + ("drawn from assets/mermaid/" if self.mermaid
                                else "NOT vendored, diagrams shown as source")]
        if self.unexecuted:
            lines.append("lessons shown without outputs (no executed copy): "
                         + ", ".join(self.unexecuted))
        return "\n".join(lines)


def _execute_lessons(into: Path, log: Log) -> None:
    """Every lesson at real time; a broker the notebooks had to start is stopped after."""
    from labsupport import broker

    _, answering = broker.status()
    try:
        execute(lessons(), into, scale="1", log=log)
    finally:
        if not answering:
            broker.down()
            log("broker: stopped the one the notebooks started")


def _clear(out: Path) -> None:
    """Remove what an earlier build wrote (its pages and assets), nothing else."""
    for old in out.glob("*.html"):
        old.unlink()
    shutil.rmtree(out / "assets", ignore_errors=True)


def build(executed: Path | None = None, out: Path = SITE, cache: Path = CACHE,
          npm: str = "npm", log: Log = print) -> BuildReport:
    """Write the site into ``out`` from the executed lessons in ``executed``.

    With ``executed=None`` every lesson is run first (real time) into ``.lab/site/executed/``."""
    import nbformat

    start = time.monotonic()
    if executed is None:
        executed = EXECUTED
        _execute_lessons(executed, log)
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    (out / "assets").mkdir()
    shutil.copy(TEMPLATE_DIR / "site.css", out / "assets" / "site.css")
    mermaid_url = vendor_mermaid(out / "assets", cache, npm, log)
    exporter = _exporter(mermaid_url)
    pages = plan()
    unexecuted = []
    for page in pages:
        if page.source is None:
            text = render_plain(page, pages)
        else:
            copy = executed_copy(page.source, executed) if page.kind == "lesson" else None
            if page.kind == "lesson" and copy is None:
                unexecuted.append(page.source.name)
                log(f"{page.source.name}: no executed copy in {executed}: shown without "
                    "outputs")
            nb = nbformat.read(copy or page.source, as_version=4)
            text = render_notebook(page, nb, pages, exporter, executed=copy is not None)
        (out / page.file).write_text(text, encoding="utf-8")
    _write_manifest(out, pages, unexecuted)
    return BuildReport(out, pages, unexecuted, mermaid_url is not None,
                       time.monotonic() - start)


def _write_manifest(out: Path, pages: list[Page], unexecuted: list[str]) -> None:
    """``assets/pages.json``: each page's file, kind, title and source notebook."""
    rows = [{"file": p.file, "kind": p.kind, "title": p.title, "line": p.line,
             "source": _shown(p.source) if p.source else None,
             "executed": p.kind == "lesson" and p.source.name not in unexecuted}
            for p in pages]
    (out / "assets" / "pages.json").write_text(json.dumps(rows, indent=1) + "\n")


def main(source: str | None = None, out: str | None = None) -> int:
    """``python -m labsupport site [--from DIR] [--out DIR]``."""
    executed = Path(source).resolve() if source else None
    if executed is not None and not executed.is_dir():
        raise LabError(f"--from {source}: no such folder of executed notebooks.",
                       "run make test first (its nbval pass writes tests/artifacts/executed/), "
                       "or leave --from out to execute the notebooks")
    report = build(executed, Path(out).resolve() if out else SITE)
    print(report)
    print(f"read it: python -m http.server -d {report.out}, then open http://127.0.0.1:8000 "
          "(opened from disk, the diagrams show as source)")
    return 0
