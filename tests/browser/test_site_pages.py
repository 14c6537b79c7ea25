"""Open every page of the course site (`make site`) in headless Chromium, served by a local
http.server on 127.0.0.1, and check what a reader gets: no console error, no failed or
off-site request (every request to another host is blocked and reported), every link and
image of the page answers, each dashboard run's plot decodes as an image next to its summary
line, and the mermaid diagrams are drawn as SVG from the site's own copy of mermaid.

The site is built from tests/artifacts/executed/ (left by the nbval pass of `make test`);
lessons with no executed copy there are built unexecuted and only their structure is checked.
Run:  .venv/bin/python -m pytest tests/browser/test_site_pages.py -q
Env:  SITE_TEST_EXECUTED  folder of executed lessons to build from (default
                          tests/artifacts/executed; e.g. .lab/site/executed after make site)
"""
from __future__ import annotations

import functools
import http.server
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from course.test_site import FROM_TESTS, has_dashboard, mermaid_fences

from labsupport.course import site

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

MERMAID_TIMEOUT_MS = 30_000

PAGE_FACTS_JS = """() => {
  const ok = (img) => img.complete && img.naturalWidth > 0;
  const imgs = [...document.images];
  return {
    links: [...document.querySelectorAll('a[href]')].map((a) => a.href),
    sources: [...document.querySelectorAll('[src]')].map((e) => e.src)
      .concat([...document.querySelectorAll('link[href]')].map((e) => e.href)),
    // As a browser resolves a fragment: the id as written, else percent-decoded.
    fragments: [...document.querySelectorAll('a[href^="#"]')]
      .map((a) => a.getAttribute('href').slice(1))
      .filter((id) => id && !document.getElementById(id)
              && !document.getElementById(decodeURIComponent(id))),
    broken_images: imgs.filter((img) => !ok(img)).map((img) => img.src.slice(0, 80)),
    png_plots: imgs.filter((img) => img.src.startsWith('data:image/png') && ok(img)).length,
    summaries: document.querySelectorAll('p.lab-summary').length,
    navs: document.querySelectorAll('nav.lab-nav').length,
    mermaid_sources: document.querySelectorAll('pre.mermaid').length,
    mermaid_svgs: document.querySelectorAll(
      '.jp-RenderedMermaid:not(.jp-mod-warning) figure img[src^="data:image/svg+xml"]').length,
    mermaid_errors: document.querySelectorAll('.jp-RenderedMermaid.jp-mod-warning').length,
  };
}"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a tab closed mid-download (BrokenPipe) is not the page's fault


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, site folder, build report): the site built and served on 127.0.0.1."""
    source = Path(os.environ.get("SITE_TEST_EXECUTED", FROM_TESTS))
    if not source.is_dir():
        source = tmp_path_factory.mktemp("none")
    out = tmp_path_factory.mktemp("site")
    report = site.build(source, out, log=lambda _: None)
    server = _Server(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", out, report
    server.shutdown()
    server.server_close()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.parametrize("file", [page.file for page in site.plan()])
def test_page_loads_offline_with_working_links_plots_and_diagrams(file, served, browser):
    base, out, report = served
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    def route(r):
        if r.request.url.startswith(base):
            r.continue_()
        else:
            problems.append(f"request to another host blocked: {r.request.url}")
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 else None)
    try:
        page.goto(base + file, wait_until="load")
        facts = page.evaluate(PAGE_FACTS_JS)
        if facts["mermaid_sources"] and report.mermaid:
            page.wait_for_function(
                "n => document.querySelectorAll('.jp-RenderedMermaid').length >= n",
                arg=facts["mermaid_sources"], timeout=MERMAID_TIMEOUT_MS)
            facts = page.evaluate(PAGE_FACTS_JS)
        page.wait_for_timeout(200)  # late console errors
    finally:
        context.close()

    assert facts["navs"] == 2, f"{file}: {facts['navs']} nav bars"
    for url in sorted(set(facts["links"] + facts["sources"])):
        if url.startswith(base) and _status(url.split("#")[0]) != 200:
            problems.append(f"broken internal link: {url}")
    problems += [f"link to a missing anchor: #{f}" for f in facts["fragments"]]
    problems += [f"image does not decode: {src}" for src in facts["broken_images"]]
    lesson = Path(site.ROOT / "notebooks" / file.replace(".html", ".ipynb"))
    if lesson.is_file():
        built_executed = lesson.name not in report.unexecuted
        if built_executed and has_dashboard(lesson) and not (
                facts["png_plots"] and facts["summaries"]):
            problems.append(f"dashboard runs: {facts['png_plots']} decoded plots, "
                            f"{facts['summaries']} summary lines")
        assert facts["mermaid_sources"] == mermaid_fences(lesson), facts
        if report.mermaid and (facts["mermaid_svgs"] != facts["mermaid_sources"]
                               or facts["mermaid_errors"]):
            problems.append(f"mermaid: {facts['mermaid_svgs']} of {facts['mermaid_sources']} "
                            f"diagrams drawn as SVG, {facts['mermaid_errors']} errors")
    assert not problems, f"{file}:\n" + "\n".join(problems)
