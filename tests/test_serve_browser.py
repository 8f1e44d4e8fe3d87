"""The search page at / in a real browser: headless Chromium (Debian's `chromium` package, which
.ci/run installs) loads `/?q=...` from a real `sbert serve` process, runs the page's script, and
the rendered DOM must hold the hits, with any markup in the texts shown as text, never run."""

from __future__ import annotations

import html
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlencode

import pytest
from serve_support import SAMPLE_CORPUS, make_store, running_server

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium; .ci/run does)"
)
MARKED_UP = 'marmoset <b id="injected">bold</b> <img src=x onerror="document.title=\'pwned\'"> tail'
PLAIN = "the quiet marmoset counts lanterns along the canal every evening"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",  # let the page's fetch and rendering finish before the dump
]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    extra = folder / "marmosets.txt"
    extra.write_text(f"{PLAIN}\n{MARKED_UP}\n", encoding="utf-8")
    return make_store(folder / "store", SAMPLE_CORPUS, extra)


@pytest.fixture(scope="module")
def server(store):
    with running_server(store) as running:
        yield running


def rendered(url: str, tmp_path: Path) -> str:
    """The DOM after the page's scripts ran, as Chromium serializes it."""
    profile = tmp_path / "chromium-profile"
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_page_shows_the_hits_of_the_query_in_its_url(server, tmp_path):
    query = {"q": "marmoset lanterns canal", "k": "2", "mode": "keyword"}
    dom = rendered(f"{server.url}/?{urlencode(query)}", tmp_path)
    assert "2 hits (keyword) from 502 rows" in dom
    hits = dom.split('<li class="hit">')[1:]
    assert len(hits) == 2
    assert f'<div class="text">{PLAIN}</div>' in hits[0]
    assert "marmosets.txt, line 1</span>" in hits[0] and '<span class="score">score ' in hits[0]


def test_markup_in_a_text_is_shown_never_run(server, tmp_path):
    dom = rendered(f"{server.url}/?{urlencode({'q': 'marmoset injected bold tail', 'mode': 'keyword'})}", tmp_path)
    assert html.escape(MARKED_UP, quote=False) in dom  # the text, escaped as text
    assert 'id="injected"' not in dom.replace(html.escape('id="injected"', quote=False), "")
    assert "<title>sbert search</title>" in dom  # the onerror handler never ran


def test_the_page_asks_for_the_key_where_one_is_required(store, tmp_path):
    with running_server(store, "--api-key-env", "SBERT_BROWSER_KEY", env={"SBERT_BROWSER_KEY": "k3y"}) as keyed:
        dom = rendered(f"{keyed.url}/?q=marmoset", tmp_path)
    assert "a valid API key is required" in dom
    assert '<div id="keybox" style="display: block;">' in dom and '<li class="hit">' not in dom
