"""The audit's HTML report: one self-contained page, every string escaped, and it renders in a real browser.

The reports are the two hand-written fixtures beside this file (the audit's JSON of a clean
federation and of a tampered one). The browser is headless Chromium from Debian's ``chromium``
package, with every host name unresolvable: a page that needed the network would not draw its
charts, and the DOM would show it.
"""

from __future__ import annotations

import copy
import json
import re
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest
from plotly.offline import get_plotlyjs

from fedchain.audit._html import render_html

FIXTURES = Path(__file__).parent / "fixtures"
CHROMIUM = Path("/usr/bin/chromium")
NORTHGATE = "0xEfE4dE6013BB14A23F8fC74501324496C86d7207"
# the verdict banner's background (the page's CSS): one of them must be on the screenshot
PASS_BACKGROUND = (0xEE, 0xF8, 0xF1)
FAIL_BACKGROUND = (0xFD, 0xF0, 0xEF)


def load(name: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((FIXTURES / f"report_{name}.json").read_text())
    return report


def markup(page: str) -> str:
    """The page without the contents of its inline scripts (the plotly bundle and the figures' data)."""
    return re.sub(r"(<script[^>]*>).*?(</script>)", r"\1\2", page, flags=re.DOTALL)


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return {name: render_html(load(name)) for name in ("clean", "tampered")}


# --------------------------------------------------------------------------- the page itself


def test_the_page_embeds_plotly_once_and_loads_nothing_from_elsewhere(pages: dict[str, str]) -> None:
    bundle = get_plotlyjs()
    for page in pages.values():
        assert page.count(bundle) == 1
        tags = markup(page)
        assert re.findall(r"<(?:script|link|img|iframe)[^>]*\b(?:src|href)\s*=", tags, flags=re.IGNORECASE) == []
        assert re.findall(r"\b(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//", tags, flags=re.IGNORECASE) == []
        assert "@import" not in tags


def test_the_verdict_comes_first_and_the_failures_right_after_it(pages: dict[str, str]) -> None:
    for page in pages.values():
        body = page[page.index("<body>") :]
        ids = re.findall(r'<section id="([a-z]+)"', body)
        assert ids[:3] == ["verdict", "failures", "overview"]
        assert ids[-1] == "lineage"


def test_the_clean_report_says_passed_and_counts_its_rounds(pages: dict[str, str]) -> None:
    tags = markup(pages["clean"])
    assert '<div class="verdict-word">PASSED</div>' in tags
    assert "5 rounds finalized" in tags
    assert "5 of 5 expected rounds verified" in tags
    assert "FAILED" not in tags
    assert "None. Every check the audit made passed." in tags


def test_the_tampered_report_says_failed_and_names_the_round_and_the_participant(pages: dict[str, str]) -> None:
    tags = markup(pages["tampered"])
    assert '<div class="verdict-word">FAILED</div>' in tags
    assert "2 problems found in round 2" in tags
    assert "round 5 open" in tags
    assert "4 of 6 expected rounds verified" in tags
    failures = tags[tags.index('<section id="failures"') : tags.index('<section id="overview"')]
    assert failures.count('<td class="round">round 2</td>') == 2
    assert f'<span class="who" title="{NORTHGATE}">northgate' in failures
    assert "0x15afcfbf300f62b44894bc3cde2f55945401f6c0c510c9a54b00872819ce4423" in failures  # expected, in full
    assert "0xf4a2175b58fabea9d0fc00ff2c57f28361cddd033b1035098fe0dbe9e1fe5677" in failures  # actual, in full


def test_the_matrix_shows_the_excluded_update_with_its_reason_and_the_missing_participant(
    pages: dict[str, str],
) -> None:
    tags = markup(pages["tampered"])
    matrix = tags[tags.index('<section id="participation"') : tags.index('<section id="norms"')]
    assert matrix.count('<th class="badcol">') == 1
    assert '<th class="badcol">round 2<br>failed</th>' in matrix
    assert matrix.count('<td class="cell exc"') == 1
    assert ">excluded: norm_bound</td>" in matrix
    assert "update norm 14.2071 exceeds the bound 10.0" in matrix  # the detail, on hover
    assert matrix.count('<td class="cell mis"') == 2  # st-mary in round 4, the unnamed one in open round 5
    assert matrix.count('<td class="cell inc"') == 6 * 3 - 1 - 2  # every other cell: included


def test_the_lineage_holds_every_digest_and_cid_in_full(pages: dict[str, str]) -> None:
    report = load("clean")
    lineage = markup(pages["clean"]).split('<section id="lineage"', 1)[1]
    digests = [report["manifest"]["hash"], report["manifest"]["cid"], report["genesis"]["hash"]]
    for rnd in report["rounds"]:
        digests += [rnd["base"]["hash"], rnd["base"]["cid"], rnd["aggregate"]["hash"], rnd["aggregate"]["cid"]]
        digests += [x for u in rnd["updates"] for x in (u["hash"], u["cid"])]
    assert len(digests) == 3 + 5 * 4 + 5 * 3 * 2
    for d in digests:
        assert f'<code class="digest">{d}</code>' in lineage


def test_names_are_shown_where_the_deployment_gives_them_and_addresses_otherwise(pages: dict[str, str]) -> None:
    tags = markup(pages["tampered"])
    assert f'<span class="who" title="{NORTHGATE}">northgate <span class="muted">(0xEfE4…)</span></span>' in tags
    unnamed = "0x66Cc2C368293cdA0A84cA9035750a61004299700"  # riverside has no name in this deployment
    assert f'<span class="who" title="{unnamed}"><code>{unnamed}</code></span>' in tags


def test_strings_from_the_chain_are_escaped_everywhere() -> None:
    report = copy.deepcopy(load("tampered"))
    report["participants"][2]["name"] = "<script>alert('name')</script>\" onmouseover=\"alert(3)"
    report["rounds"][1]["failures"] = [
        {
            "round": 1,
            "check": "<img src=x onerror=alert(2)>",
            "participant": report["participants"][2]["address"],
            "expected": None,
            "actual": None,
            "message": "<script>alert(1)</script>",
        }
    ]
    report["rounds"][3]["updates"][0]["metrics"]["<b>loss</b>"] = 0.5
    page = render_html(report)
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert "<b>loss" not in page
    assert '" onmouseover="' not in page
    tags = markup(page)
    assert "&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;&quot; onmouseover=&quot;alert(3)" in tags
    assert '<div class="msg">&lt;script&gt;alert(1)&lt;/script&gt;</div>' in tags
    assert "<strong>&lt;img src=x onerror=alert(2)&gt;</strong>" in tags
    assert "<h3>&lt;b&gt;loss&lt;/b&gt;</h3>" in tags


def test_a_report_with_nothing_in_it_still_renders_as_failed() -> None:
    tags = markup(render_html({}))
    assert '<div class="verdict-word">FAILED</div>' in tags
    assert "0 rounds finalized" in tags
    assert "No round was opened." in tags
    sparse = markup(render_html({"ok": True, "rounds": [{"round": 0, "status": "open"}], "participants": None}))
    assert '<div class="verdict-word">PASSED</div>' in sparse
    assert "No update norm was recorded." in sparse


def test_the_page_is_the_same_for_the_same_report(pages: dict[str, str]) -> None:
    assert render_html(load("tampered")) == pages["tampered"]


# --------------------------------------------------------------------------- in a real browser


def png_colours(path: Path, rows: int) -> set[tuple[int, ...]]:
    """The distinct pixel colours of the first ``rows`` rows of an 8-bit RGB or RGBA PNG (no decoder is installed)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = depth = colour = interlace = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert (depth, colour in (2, 6), interlace) == (8, True, 0)
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompressobj().decompress(idat, (stride + 1) * min(rows, height))
    colours: set[tuple[int, ...]] = set()
    prev = bytearray(stride)
    for y in range(min(rows, height)):
        filt, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if filt == 1:
                line[i] = (line[i] + a) & 0xFF
            elif filt == 2:
                line[i] = (line[i] + b) & 0xFF
            elif filt == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif filt == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        colours.update(tuple(line[i : i + 3]) for i in range(0, stride, bpp))
        prev = line
    return colours


@pytest.fixture(scope="module")
def browsed(pages: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    """Each page opened in headless Chromium, with no host name resolving: its DOM after the scripts ran, and a
    screenshot. Both browsers run at once (each takes seconds, mostly compiling plotly.js)."""
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed: apt-get install chromium (the test command does)")
    runs: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    for name, page in pages.items():
        tmp = tmp_path_factory.mktemp(f"chromium-{name}")
        html_file, shot = tmp / "report.html", tmp / "report.png"
        html_file.write_text(page, encoding="utf-8")
        # fmt: off
        argv = [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
            f"--user-data-dir={tmp / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
            "--window-size=1280,2000", f"--screenshot={shot}", "--dump-dom", html_file.as_uri(),
        ]
        # fmt: on
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        runs[name] = (proc, shot)
    out: dict[str, tuple[str, Path]] = {}
    try:
        for name, (proc, shot) in runs.items():
            dom, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, err[-2000:]
            out[name] = (dom, shot)
    finally:
        for proc, _ in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out


@pytest.mark.parametrize(
    ("name", "verdict", "texts", "banner"),
    [
        ("clean", "PASSED", ["5 rounds finalized", "5 of 5 expected rounds verified"], PASS_BACKGROUND),
        (
            "tampered",
            "FAILED",
            ["5 rounds finalized", "round 5 open", "failed: round 2", '<td class="round">round 2</td>'],
            FAIL_BACKGROUND,
        ),
    ],
)
def test_the_report_renders_in_headless_chromium_with_its_verdict_and_charts(
    pages: dict[str, str],
    browsed: dict[str, tuple[str, Path]],
    name: str,
    verdict: str,
    texts: list[str],
    banner: tuple[int, int, int],
) -> None:
    dom, shot = browsed[name]
    assert f'<div class="verdict-word">{verdict}</div>' in dom
    for text in texts:
        assert text in dom
    # plotly drew every figure offline: one svg root per figure div
    figures = len(re.findall(r'<div id="fig-[a-z0-9-]+"', pages[name]))
    assert figures >= 6
    assert dom.count('class="main-svg"') >= figures
    colours = png_colours(shot, rows=120)  # the top of the verdict banner
    assert banner in colours
    assert len(colours) > 50
