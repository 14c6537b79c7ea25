"""The course site (`make site`): every page is there, loads nothing from another host, links
only to pages that exist, shows each dashboard run's plot and summary, draws its diagrams
from the site's own copy of mermaid, and never shows a solution on an exercise page.

The site is built from the executed notebooks the nbval pass leaves in
tests/artifacts/executed/ (it runs before this file in `make test`), so no lesson runs twice.
Lessons without an executed copy are built unexecuted (their page says so); when no lesson
with a dashboard has one (this file run alone), the test runs 08_sagas, the quickest
lesson with a dashboard, at LAB_TIME_SCALE=0.2. The browser checks of the same pages are
in tests/browser/test_site_pages.py.
"""
from __future__ import annotations

import json
import re
import shutil
from html import escape as html_escape
from html import unescape as html_unescape
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from labsupport.course import site
from labsupport.runtime.errors import LabError

ROOT = Path(__file__).resolve().parents[2]
FROM_TESTS = ROOT / "tests" / "artifacts" / "executed"
QUICK_DASHBOARD_LESSON = "08_sagas.ipynb"
DASHBOARD_CODE = re.compile(r"\.dashboard\(|\bDashboard\(|\.press_run\(|matrix_dashboard\(")
#: Where a page could load something from: these attributes, and dynamic imports in scripts.
LOADS = {("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src"),
         ("source", "src"), ("video", "src"), ("audio", "src"), ("object", "data")}
CDN_HOSTS = re.compile(r"cdnjs|jsdelivr|unpkg|cdn\.|mathjax|requirejs|require\.js", re.I)


class Parsed(HTMLParser):
    """A page's tags with their attributes, its visible text, its scripts and nav bars."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self.navs: list[list[tuple[str, str]]] = []
        self._in: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attributes))
        if tag == "nav":
            self.navs.append([])
        if tag == "a" and "nav" in self._in and self.navs:
            self.navs[-1].append((attributes.get("class", ""), attributes.get("href", "")))
        if tag not in ("img", "br", "meta", "link", "input", "hr"):
            self._in.append(tag)

    def handle_endtag(self, tag):
        if tag in self._in:
            while self._in and self._in.pop() != tag:
                pass

    def handle_data(self, data):
        if self._in and self._in[-1] == "script":
            self.scripts.append(data)
        elif not (self._in and self._in[-1] == "style"):
            self.text.append(data)

    def all_text(self) -> str:
        return "".join(self.text)


def page_of(out: Path, file: str) -> Parsed:
    return Parsed((out / file).read_text(encoding="utf-8"))


def has_dashboard(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    return any(DASHBOARD_CODE.search(c.source) for c in nb.cells if c.cell_type == "code")


def mermaid_fences(path: Path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum(c.source.count("```mermaid") for c in nb.cells if c.cell_type == "markdown")


def external_loads(parsed: Parsed) -> list[str]:
    """Everything the page would fetch from another host (a plain <a href> link is not a load)."""
    found = [f"<{tag} {attr}={attrs[attr]}>" for tag, attrs in parsed.tags
             for (kind, attr) in LOADS if kind == tag and attr in attrs
             and re.match(r"(https?:)?//", attrs[attr])]
    for script in parsed.scripts:
        found += [f"import({url})" for url in re.findall(r"import\(\s*[\"'`]([^\"'`]+)", script)
                  if re.match(r"(https?:)?//", url)]
        found += [f"script mentions {m}" for m in CDN_HOSTS.findall(script)]
    return found


def solution_lines() -> dict[str, list[str]]:
    """Per solutions notebook, each line between the solution markers longer than 20 chars."""
    found = {}
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        lines, inside = [], False
        for cell in nbformat.read(path, as_version=4).cells:
            for line in cell.source.splitlines():
                if "### BEGIN SOLUTION" in line:
                    inside = True
                elif "### END SOLUTION" in line:
                    inside = False
                elif inside and len(line.strip()) > 20:
                    lines.append(line.strip())
        found[path.name] = lines
    return found


def leaks(page_text: str, lines: list[str]) -> list[str]:
    squeezed = re.sub(r"\s+", " ", page_text)
    return [line for line in lines if re.sub(r"\s+", " ", line) in squeezed]


# -- the build -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory, request):
    """(site folder, build report, build log, {lesson name: its executed copy})."""
    executed = tmp_path_factory.mktemp("executed")
    for lesson in site.lessons():
        copy = site.executed_copy(lesson, FROM_TESTS) if FROM_TESTS.is_dir() else None
        if copy is not None:
            shutil.copy(copy, executed / lesson.name)
    if not any(has_dashboard(lesson) for lesson in site.lessons()
               if (executed / lesson.name).exists()):
        request.getfixturevalue("lab_broker")
        site.execute([ROOT / "notebooks" / QUICK_DASHBOARD_LESSON], executed, scale="0.2")
    out = tmp_path_factory.mktemp("site")
    log: list[str] = []
    report = site.build(executed, out, log=log.append)
    return out, report, log, {p.name: p for p in executed.glob("*.ipynb")}


def test_one_page_per_lesson_and_exercise_notebook_plus_index_and_live_page(built):
    out, report, log, _ = built
    expected = {"index.html", "run_it_live.html"}
    expected |= {f"{p.stem}.html" for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    expected |= {f"{p.stem}_exercises.html" for p in (ROOT / "exercises").glob("*.ipynb")}
    assert {p.name for p in out.glob("*.html")} == expected
    manifest = json.loads((out / "assets" / "pages.json").read_text())
    sources = [row["source"] for row in manifest if row["source"]]
    assert not [s for s in sources if s.startswith("solutions")], sources
    assert str(report).startswith(f"site: {len(expected)} pages"), str(report)


def test_index_lists_every_module_with_its_heading(built):
    out = built[0]
    index = page_of(out, "index.html")
    links = {attrs.get("href") for tag, attrs in index.tags if tag == "a"}
    text = re.sub(r"\s+", " ", index.all_text())
    for lesson in site.lessons():
        heading = site.first_heading(nbformat.read(lesson, as_version=4))
        title, line = heading.split(": ", 1)
        assert title in text and line[1:] in text, f"index lacks {heading!r}"
        assert f"{lesson.stem}.html" in links
        if (ROOT / "exercises" / lesson.name).exists():
            assert f"{lesson.stem}_exercises.html" in links


def test_every_page_has_the_same_nav_bar_and_next_links_visit_every_page_once(built):
    out = built[0]
    pages = {p.name: page_of(out, p.name) for p in out.glob("*.html")}
    for name, parsed in pages.items():
        assert len(parsed.navs) == 2 and parsed.navs[0] == parsed.navs[1], name
        assert ("lab-nav-index", "index.html") in parsed.navs[0], name

    def follow(name: str, rel: str) -> str | None:
        hrefs = [href for cls, href in pages[name].navs[0] if cls == f"lab-nav-{rel}"]
        return hrefs[0] if hrefs else None

    order, name = [], "index.html"
    while name is not None:
        assert name not in order, f"the next links loop back to {name}"
        order.append(name)
        name = follow(name, "next")
    assert sorted(order) == sorted(pages), f"not reached by next links: {set(pages) - set(order)}"
    assert order[-1] == "run_it_live.html"
    for before, after in zip(order, order[1:], strict=False):
        assert follow(after, "prev") == before


def test_no_page_loads_anything_from_another_host(built):
    out = built[0]
    found = {p.name: external_loads(page_of(out, p.name)) for p in out.glob("*.html")}
    assert not {k: v for k, v in found.items() if v}, found
    for path in out.glob("*.html"):
        text = re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+", "", path.read_text("utf-8"))
        assert not CDN_HOSTS.search(text), (path.name, CDN_HOSTS.search(text))


def test_the_cdn_check_catches_the_stock_lab_template(tmp_path):
    """Control arm: nbconvert's own `lab` template loads require.js, MathJax and mermaid
    from CDNs; the check above must see it."""
    from nbconvert import HTMLExporter

    nb = nbformat.read(ROOT / "notebooks" / "00_start_here.ipynb", as_version=4)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    assert len(external_loads(Parsed(body))) >= 3, external_loads(Parsed(body))


def test_every_internal_link_and_source_exists(built):
    out = built[0]
    broken = []
    for path in out.glob("*.html"):
        for tag, attrs in page_of(out, path.name).tags:
            for attr in ("href", "src"):
                url = attrs.get(attr, "")
                if not url or re.match(r"(https?:|data:|mailto:|#)", url):
                    continue
                target = (out / url.split("#")[0].split("?")[0]).resolve()
                if not target.is_file() or not target.is_relative_to(out.resolve()):
                    broken.append(f"{path.name}: <{tag} {attr}={url}>")
    assert not broken, broken


def test_each_dashboard_run_shows_its_plot_image_and_summary_line(built):
    out, _, _, executed = built
    checked = 0
    for lesson in site.lessons():
        if lesson.name not in executed or not has_dashboard(lesson):
            continue
        html = (out / f"{lesson.stem}.html").read_text(encoding="utf-8")
        images = re.findall(r'<img[^>]+src="data:image/png;base64,([A-Za-z0-9+/=]{200,})"', html)
        summaries = re.findall(r'<p class="lab-summary"', html)
        assert images and summaries, f"{lesson.name}: {len(images)} plots, {len(summaries)} lines"
        outputs = [o for c in nbformat.read(executed[lesson.name], as_version=4).cells
                   for o in c.get("outputs", []) if "data" in o]
        plots = sum("image/png" in o.data for o in outputs)
        lines = sum("lab-summary" in o.data.get("text/html", "") for o in outputs)
        assert (len(images), len(summaries)) == (plots, lines), f"{lesson.name}: every run shown"
        checked += 1
    assert checked, "no lesson with a dashboard was built executed"


def test_widget_outputs_are_left_out_not_shown_frozen(built):
    out, _, _, executed = built
    for name, copy in executed.items():
        html = (out / name.replace(".ipynb", ".html")).read_text(encoding="utf-8")
        for cell in nbformat.read(copy, as_version=4).cells:
            for output in cell.get("outputs", []):
                if site.WIDGET_VIEW in output.get("data", {}):
                    frozen = output["data"].get("text/plain", "")
                    assert not frozen or html_escape(frozen) not in html, (name, frozen)


def test_a_lesson_without_an_executed_copy_says_so(built):
    out, report, log, executed = built
    for name in report.unexecuted:
        assert name not in executed
        assert "shown without its outputs" in (out / name.replace(".ipynb", ".html")).read_text()
    assert len([line for line in log if "no executed copy" in line]) == len(report.unexecuted)


def test_mermaid_diagrams_are_drawn_from_the_sites_own_copy(built):
    out, report, _, _ = built
    if not report.mermaid:
        pytest.skip("npm could not fetch mermaid: the fallback is tested below")
    main = out / "assets" / "mermaid" / "mermaid.esm.min.mjs"
    chunks = re.findall(r"\./chunks/mermaid\.esm\.min/[\w.-]+\.mjs", main.read_text())
    assert chunks and all((main.parent / c).is_file() for c in chunks)
    for lesson in site.lessons():
        html = (out / f"{lesson.stem}.html").read_text(encoding="utf-8")
        assert html.count('<pre class="mermaid">') == mermaid_fences(lesson), lesson.name
        if mermaid_fences(lesson):
            assert f'import("{site.MERMAID_URL}")' in html, lesson.name


def test_without_npm_diagrams_are_shown_as_source_with_a_note(tmp_path):
    log: list[str] = []
    assert site.vendor_mermaid(tmp_path / "assets", tmp_path / "cache", npm="no-such-npm",
                               log=log.append) is None
    assert any("NOT vendored" in line for line in log), log
    pages = site.plan()
    page = next(p for p in pages if p.kind == "lesson")
    nb = nbformat.read(page.source, as_version=4)
    html = site.render_notebook(page, nb, pages, site._exporter(None), executed=False)
    assert html.count("lab-mermaid-note") == mermaid_fences(page.source) > 0
    assert "mermaid.esm" not in html and 'type="module"' not in html
    assert "shown without its outputs" in html


def hidden_lines(name: str, lines: list[str]) -> list[str]:
    """The solution lines the exercise notebook itself does not show: a few are given to the
    learner on purpose (a signature in the instructions, a line of scaffolding)."""
    exercise = nbformat.read(ROOT / "exercises" / name, as_version=4)
    given = re.sub(r"\s+", " ", "\n".join(cell.source for cell in exercise.cells))
    return [line for line in lines if re.sub(r"\s+", " ", line) not in given]


def test_no_solution_text_on_any_exercise_page(built):
    out = built[0]
    found, hidden = {}, 0
    for name, lines in solution_lines().items():
        page = out / name.replace(".ipynb", "_exercises.html")
        if page.exists():
            secret = hidden_lines(name, lines)
            hidden += len(secret)
            raw = html_unescape((out / page.name).read_text(encoding="utf-8"))
            found[name] = leaks(page_of(out, page.name).all_text(), secret) + leaks(raw, secret)
    assert hidden > 20, "too few solution lines to make this check mean anything"
    assert not {k: v for k, v in found.items() if v}, found


def test_the_solution_check_finds_solutions_on_a_solutions_page():
    """Control arm: the same check on a page made from solutions/ finds the solution lines."""
    lines = solution_lines()
    name = max(lines, key=lambda n: len(lines[n]))
    pages = site.plan()
    page = site.Page("exercise", "x.html", "solutions", "", ROOT / "solutions" / name)
    html = site.render_notebook(page, nbformat.read(page.source, as_version=4), [*pages, page],
                                site._exporter(None), executed=False)
    secret = hidden_lines(name, lines[name])
    assert len(leaks(Parsed(html).all_text(), secret)) >= len(secret) // 2 > 0


def test_a_failing_cell_names_the_notebook_and_the_cell(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# x"),
                                         nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("raise ValueError('boom')")])
    path = tmp_path / "broken_lesson.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(LabError, match=r"broken_lesson\.ipynb: cell 3 failed.*boom"):
        site.execute([path], tmp_path / "out", scale="0.2", log=lambda _: None)


def test_from_a_missing_folder_names_the_fix(tmp_path):
    with pytest.raises(LabError, match="no such folder"):
        site.main(str(tmp_path / "nowhere"), str(tmp_path / "site"))


def test_links_between_notebooks_point_at_their_pages():
    pages = site.plan()
    text = ('<a href="../exercises/01_blocking_calls.ipynb">x</a>'
            '<a href="02_cascading_failures.ipynb">y</a>'
            '<a href="../solutions/01_blocking_calls.ipynb">z</a>')
    linked = site._link_notebooks(text, pages)
    assert 'href="01_blocking_calls_exercises.html"' in linked
    assert 'href="02_cascading_failures.html"' in linked
    assert 'href="../solutions/01_blocking_calls.ipynb"' in linked  # no page: the link check fails
