"""The audit report as one self-contained HTML page (``fedchain audit ... --html FILE``).

The page is rendered from the audit's JSON (the ``--json`` output), nothing else: it needs no
chain, no store and no network to be read. Charts are plotly figures; the plotly.js bundle is
embedded once, inline, so the file opens offline. Every string in the report came from the
chain or from another organisation's blobs, so every one is escaped before it reaches the page,
and the strings handed to plotly (which reads a subset of HTML in labels) are escaped too.

The page reads top to bottom in the order a reviewer asks: did it verify, what failed (round,
participant, reason), then how the federation ran (timeline, who took part in which round,
update norms, how alike the updates were, reported metrics, gas, privacy spent), then the
lineage with every digest and CID in full, to copy.
"""

from __future__ import annotations

import datetime as _dt
import html
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

logger = logging.getLogger(__name__)

# colours of a round's or an update's state, used alike in charts and tables
_GREEN = "#1b7f3b"
_RED = "#b3261e"
_AMBER = "#c77700"
_GREY = "#8a8f98"
_BLUE = "#2b6cb0"
_STATUS_COLOURS = {
    "verified": _GREEN,
    "failed verification": _RED,
    "open": _BLUE,
    "closed": "#6b46c1",
    "abandoned": _GREY,
}
_UPDATE_CLASSES = {"included": "inc", "excluded": "exc", "discarded": "dis", "missing": "mis"}
# a figure's look: quiet, readable, no plotly logo or links
_CONFIG = {"displaylogo": False, "responsive": True, "displayModeBar": False}
_FONT = "-apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
# heatmaps of the cosine similarity: all rounds when few, otherwise the last ones and the worst
_COSINE_LAST = 3


def render_html(report: Mapping[str, Any]) -> str:
    """Render an audit report (the audit's JSON, as a dict) as one self-contained HTML page.

    Parameters
    ----------
    report:
        The dict ``fedchain audit --json`` prints. Fields may be missing or null; a section
        whose data is absent says so instead of drawing an empty chart.

    Returns
    -------
    str
        The whole page. It loads nothing from the network: the plotly.js bundle is inline.
    """
    page = _Page(report)
    return page.render()


# --------------------------------------------------------------------------- small helpers


def _e(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute; ``None`` becomes a dash."""
    if value is None:
        return "—"
    return html.escape(str(value), quote=True)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _when(ts: int | None) -> str | None:
    if ts is None:
        return None
    try:
        return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return None


def _iso(ts: int) -> str:
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _code(value: Any) -> str:
    """A digest, CID or address in full, monospace, selected whole by one click."""
    if value is None or value == "":
        return '<span class="muted">—</span>'
    return f'<code class="digest">{_e(value)}</code>'


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


class _Names:
    """How participants are shown: ``name (0x12ab…)`` where the deployment names them."""

    def __init__(self, participants: Iterable[Any]) -> None:
        self._names: dict[str, str] = {}
        for p in participants:
            p = _map(p)
            address, name = p.get("address"), p.get("name")
            if isinstance(address, str) and isinstance(name, str) and name:
                self._names[address.lower()] = name

    def name(self, address: Any) -> str | None:
        return self._names.get(address.lower()) if isinstance(address, str) else None

    def text(self, address: Any) -> str:
        """Plain text (not escaped): the name and a short address, or the full address."""
        if not isinstance(address, str) or not address:
            return "—"
        name = self.name(address)
        return f"{name} ({address[:6]}…)" if name else address

    def html(self, address: Any) -> str:
        """HTML: the name and a short address, the full address on hover."""
        if not isinstance(address, str) or not address:
            return '<span class="muted">—</span>'
        name = self.name(address)
        if name is None:
            return f'<span class="who" title="{_e(address)}"><code>{_e(address)}</code></span>'
        return (
            f'<span class="who" title="{_e(address)}">{_e(name)} <span class="muted">({_e(address[:6])}…)</span></span>'
        )

    def chart(self, address: Any) -> str:
        """For plotly labels, short (an unnamed participant's address cut to its ends).

        Plotly reads a subset of HTML in labels, so the text is escaped.
        """
        if isinstance(address, str) and self.name(address) is None and len(address) > 14:
            return html.escape(f"{address[:6]}…{address[-4:]}", quote=False)
        return html.escape(self.text(address), quote=False)


# --------------------------------------------------------------------------- the page


class _Page:
    def __init__(self, report: Mapping[str, Any]) -> None:
        self.r = report
        self.rounds = [_map(x) for x in _list(report.get("rounds"))]
        self.rounds.sort(key=_round_key)
        self.participants = [
            p["address"] for p in map(_map, _list(report.get("participants"))) if isinstance(p.get("address"), str)
        ]
        # participants seen only in the rounds (absent from the list) still get a row
        for rnd in self.rounds:
            for a in [_map(u).get("participant") for u in _list(rnd.get("updates"))] + _list(rnd.get("missing")):
                if isinstance(a, str) and a not in self.participants:
                    self.participants.append(a)
        self.names = _Names(_list(report.get("participants")))
        self.failures = self._all_failures()
        self._figures = 0

    # ---- facts

    def _all_failures(self) -> list[Mapping[str, Any]]:
        """The report's failures and every round's, once each, in round order."""
        seen: set[tuple[Any, ...]] = set()
        out: list[Mapping[str, Any]] = []
        for f in [*_list(self.r.get("failures")), *(f for rnd in self.rounds for f in _list(rnd.get("failures")))]:
            f = _map(f)
            key = tuple(str(f.get(k)) for k in ("round", "check", "participant", "expected", "actual", "message"))
            if key not in seen:
                seen.add(key)
                out.append(f)
        out.sort(key=lambda f: (_int(f.get("round")) is not None, _int(f.get("round")) or 0))
        return out

    @property
    def ok(self) -> bool:
        return self.r.get("ok") is True and not self.failures

    def _round_ok(self, rnd: Mapping[str, Any]) -> bool:
        rid = _int(rnd.get("round"))
        return rnd.get("ok") is not False and not any(_int(f.get("round")) == rid for f in self.failures)

    def _round_state(self, rnd: Mapping[str, Any]) -> str:
        """A round's state as the timeline shows it: verification first, then the chain's status."""
        status = str(rnd.get("status") or "unknown")
        if not self._round_ok(rnd):
            return "failed verification"
        if status == "finalized":
            return "verified"
        return status

    # ---- figures

    def _figure(self, fig: Any, div_id: str, height: int, margin: Mapping[str, int] | None = None) -> str:
        fig.update_layout(
            template="plotly_white",
            height=height,
            margin={"l": 60, "r": 20, "t": 30, "b": 45, **(margin or {})},
            font={"family": _FONT, "size": 13, "color": "#1f2328"},
            legend={"orientation": "h", "y": -0.22, "x": 0},
            hoverlabel={"font": {"family": "ui-monospace, Menlo, Consolas, monospace"}},
        )
        self._figures += 1
        out: str = pio.to_html(
            fig, full_html=False, include_plotlyjs=False, config=_CONFIG, div_id=div_id, validate=True
        )
        return f'<div class="fig">{out}</div>'

    # ---- sections

    def render(self) -> str:
        sections = [
            self._verdict(),
            self._failures(),
            self._overview(),
            self._timeline(),
            self._matrix(),
            self._norms(),
            self._cosine(),
            self._metrics(),
            self._gas(),
            self._privacy(),
            self._lineage(),
        ]
        title = f"fedchain audit: {'PASSED' if self.ok else 'FAILED'}"
        return "".join(
            [
                "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
                "<meta name='viewport' content='width=device-width, initial-scale=1'>",
                f"<title>{_e(title)} {_e(self.r.get('ledger') or '')}</title>",
                f"<style>{_CSS}</style>",
                f'<script type="text/javascript">{get_plotlyjs()}</script>',
                "</head><body><main>",
                *sections,
                (
                    "<footer>Rendered by <code>fedchain audit --html</code> from the audit's JSON. "
                    "Digests are sha256 of the blobs' bytes: each can be checked with <code>sha256sum</code>.</footer>"
                ),
                "</main></body></html>\n",
            ]
        )

    def _verdict(self) -> str:
        r = self.r
        n_final = _int(r.get("rounds_finalized"))
        if n_final is None:
            n_final = sum(1 for rnd in self.rounds if rnd.get("status") == "finalized")
        open_round = _int(r.get("open_round"))
        expected = _int(r.get("expected_rounds"))
        verified = sum(1 for rnd in self.rounds if rnd.get("status") == "finalized" and self._round_ok(rnd))
        failed_rounds = sorted({x for x in (_int(f.get("round")) for f in self.failures) if x is not None})
        if self.ok:
            cls, word = "pass", "PASSED"
            sentence = (
                f"Every finalized round verified: {_plural(verified, 'round')} checked against the ledger, "
                "each aggregate recomputed from the recorded updates and found equal."
            )
        else:
            cls, word = "fail", "FAILED"
            where = (
                ("in round " if len(failed_rounds) == 1 else "in rounds ") + ", ".join(map(str, failed_rounds))
                if failed_rounds
                else "in the ledger's setup"
            )
            n = len(self.failures)
            sentence = (
                f"The history does not verify: {_plural(n, 'problem')} found {where}. "
                "Do not use a model from this federation until this is explained."
                if n
                else "The history does not verify."
            )
        counts = [f'<span class="count">{_plural(n_final, "round")} finalized</span>']
        if open_round is not None:
            counts.append(f'<span class="count">round {open_round} open</span>')
        if expected is not None:
            short = " short" if verified < expected else ""
            counts.append(f'<span class="count{short}">{verified} of {expected} expected rounds verified</span>')
        if failed_rounds:
            counts.append(
                '<span class="count short">failed: ' + ", ".join(f"round {x}" for x in failed_rounds) + "</span>"
            )
        head = _map(r.get("head"))
        task = _map(_map(r.get("manifest")).get("task"))
        chain_id = _int(r.get("chain_id"))
        facts = [
            (
                "Ledger",
                _code(r.get("ledger")) + (f' <span class="muted">on chain {chain_id}</span>' if chain_id else ""),
            ),
            ("Coordinator", _code(r.get("coordinator"))),
            (
                "Checked up to",
                f"block {_e(_int(head.get('block')))} " + _code(head.get("hash"))
                if head
                else '<span class="muted">—</span>',
            ),
        ]
        if task:
            facts.insert(
                0, ("Task", f"{_e(task.get('name'))} <span class='muted'>version {_e(task.get('version'))}</span>")
            )
        rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
        return (
            f'<section id="verdict" class="verdict {cls}">'
            f'<div class="verdict-word">{word}</div>'
            f'<p class="verdict-text">{_e(sentence)}</p>'
            f'<div class="counts">{"".join(counts)}</div>'
            f'<table class="facts">{rows}</table></section>'
        )

    def _failures(self) -> str:
        if not self.failures:
            return (
                '<section id="failures"><h2>Problems found</h2>'
                '<p class="ok-note">None. Every check the audit made passed.</p></section>'
            )
        rows = []
        for f in self.failures:
            rid = _int(f.get("round"))
            # the message repeats expected and actual; shown only when it is all there is
            bare = f.get("expected") is None and f.get("actual") is None and f.get("message")
            msg = f'<div class="msg">{_e(f.get("message"))}</div>' if bare else ""
            rows.append(
                "<tr>"
                f'<td class="round">{"round " + str(rid) if rid is not None else "ledger"}</td>'
                f"<td>{self.names.html(f.get('participant'))}</td>"
                f'<td title="{_e(f.get("message") or "")}"><strong>{_e(f.get("check"))}</strong>{msg}</td>'
                f"<td>{_code(f.get('expected'))}</td>"
                f"<td>{_code(f.get('actual'))}</td>"
                "</tr>"
            )
        return (
            '<section id="failures" class="bad"><h2>Problems found</h2>'
            "<p>Each line is one check that failed: where, who, what was expected and what the ledger "
            "and the store actually hold.</p>"
            '<table class="grid failures"><thead><tr><th>Round</th><th>Participant</th><th>Check</th>'
            "<th>Expected</th><th>Actual</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></section>"
        )

    def _overview(self) -> str:
        m = _map(self.r.get("manifest"))
        agg = _map(m.get("aggregation"))
        privacy = _map(m.get("privacy"))
        rule = ", ".join(f"{k} = {v}" for k, v in agg.items() if k != "rule")
        items = [
            ("Participants", str(len(self.participants))),
            ("Aggregation", f"{agg.get('rule', '—')}" + (f" ({rule})" if rule else "")),
            ("Update norm bound", m.get("max_update_norm")),
            ("Minimum updates per round", m.get("min_updates")),
            ("Round length", f"{m['round_seconds']} s" if _int(m.get("round_seconds")) is not None else None),
            ("Privacy mode", privacy.get("mode")),
        ]
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
        people = "".join(
            f"<li>{_e(self.names.name(a))}<br><code class='digest'>{_e(a)}</code></li>"
            if self.names.name(a)
            else f"<li><code class='digest'>{_e(a)}</code></li>"
            for a in self.participants
        )
        return (
            '<section id="overview"><h2>The federation</h2><div class="two">'
            f'<div><h3>Rules (from the manifest)</h3><table class="facts">{rows}</table></div>'
            f'<div><h3>Participants</h3><ul class="people">{people or "<li>none recorded</li>"}</ul></div>'
            "</div></section>"
        )

    def _timeline(self) -> str:
        if not self.rounds:
            return _empty("timeline", "Rounds", "No round was opened.")
        use_time = all(_int(x.get("opened_time")) is not None for x in self.rounds)
        head_block = _int(_map(self.r.get("head")).get("block"))
        by_state: dict[str, tuple[list[str], list[Any], list[float], list[str]]] = {}
        for rnd in self.rounds:
            rid = _int(rnd.get("round"))
            state = self._round_state(rnd)
            if use_time:
                start = _int(rnd.get("opened_time")) or 0
                end = _int(rnd.get("end_time")) or _int(rnd.get("deadline")) or start + 1
                base: Any = _iso(start)
                length = float(max(end - start, 1) * 1000)  # a date axis counts milliseconds
            else:
                start = _int(rnd.get("opened_block")) or 0
                end = _int(rnd.get("end_block")) or _int(rnd.get("closed_block")) or head_block or start + 1
                base, length = start, float(max(end - start, 1))
            hover = "<br>".join(
                html.escape(s, quote=False)
                for s in (
                    f"round {rid}: {state}",
                    f"opened: block {_int(rnd.get('opened_block'))}, {_when(_int(rnd.get('opened_time'))) or '—'}",
                    f"closed: block {_int(rnd.get('closed_block')) or '—'}",
                    f"ended: block {_int(rnd.get('end_block')) or '—'}, {_when(_int(rnd.get('end_time'))) or '—'}",
                    f"updates: {_int(rnd.get('recorded'))} recorded, {_int(rnd.get('valid'))} valid",
                )
            )
            ys, bases, xs, hovers = by_state.setdefault(state, ([], [], [], []))
            ys.append(f"round {rid}")
            bases.append(base)
            xs.append(length)
            hovers.append(hover)
        fig = go.Figure()
        for state, (ys, bases, xs, hovers) in by_state.items():
            fig.add_trace(
                go.Bar(
                    y=ys,
                    x=xs,
                    base=bases,
                    orientation="h",
                    name=state,
                    marker={"color": _STATUS_COLOURS.get(state, _GREY)},
                    hovertext=hovers,
                    hoverinfo="text",
                )
            )
        order = [f"round {_int(x.get('round'))}" for x in self.rounds]
        fig.update_yaxes(categoryorder="array", categoryarray=order[::-1])
        fig.update_xaxes(type="date" if use_time else "linear", title="time (UTC)" if use_time else "block")
        height = 140 + 28 * len(self.rounds)
        return (
            '<section id="timeline"><h2>Rounds</h2>'
            "<p>Each bar is one round, from the block that opened it to the block that ended it "
            "(an open round: to its deadline).</p>" + self._figure(fig, "fig-timeline", height) + "</section>"
        )

    def _cells(self) -> dict[tuple[str, int], tuple[str, str, str]]:
        """(participant, round) -> (state, cell text, tooltip)."""
        cells: dict[tuple[str, int], tuple[str, str, str]] = {}
        for rnd in self.rounds:
            rid = _int(rnd.get("round"))
            if rid is None:
                continue
            for u in map(_map, _list(rnd.get("updates"))):
                a = u.get("participant")
                if not isinstance(a, str):
                    continue
                state = str(u.get("status") or "included")
                reason, detail = u.get("reason"), u.get("detail")
                text = state if state == "included" or not reason else f"{state}: {reason}"
                norm = _float(u.get("norm"))
                tip = [f"round {rid}, {self.names.text(a)}", f"{state}" + (f" ({reason})" if reason else "")]
                if detail:
                    tip.append(str(detail))
                if norm is not None:
                    tip.append(f"norm {norm:.4g}")
                if _int(u.get("samples")) is not None:
                    tip.append(f"{_int(u.get('samples'))} samples")
                if u.get("hash"):
                    tip.append(f"update {u.get('hash')}")
                cells[(a, rid)] = (state, text, "\n".join(tip))
            for a in _list(rnd.get("missing")):
                if isinstance(a, str):
                    cells[(a, rid)] = ("missing", "missing", f"round {rid}, {self.names.text(a)}: no update recorded")
        return cells

    def _matrix(self) -> str:
        if not self.rounds or not self.participants:
            return _empty("participation", "Who took part", "No participant or round recorded.")
        cells = self._cells()
        head = "".join(
            f"<th>round {_int(x.get('round'))}</th>"
            if self._round_ok(x)
            else f'<th class="badcol">round {_int(x.get("round"))}<br>failed</th>'
            for x in self.rounds
        )
        rows = []
        for a in self.participants:
            tds = []
            for rnd in self.rounds:
                rid = _int(rnd.get("round"))
                state, text, tip = (
                    cells.get((a, rid), ("none", "—", "no record")) if rid is not None else ("none", "—", "")
                )
                tds.append(f'<td class="cell {_UPDATE_CLASSES.get(state, "none")}" title="{_e(tip)}">{_e(text)}</td>')
            rows.append(f"<tr><th>{self.names.html(a)}</th>{''.join(tds)}</tr>")
        legend = (
            '<span class="cell inc">included</span> in the aggregate · '
            '<span class="cell exc">excluded</span> by the rules (reason shown) · '
            '<span class="cell dis">discarded</span> valid but not selected by the robust rule · '
            '<span class="cell mis">missing</span> no update recorded'
        )
        return (
            '<section id="participation"><h2>Who took part</h2>'
            f'<p class="legend">{legend}</p><div class="scroll"><table class="grid matrix"><thead><tr>'
            f"<th>participant</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div></section>"
        )

    def _series(self, value: Any) -> dict[str, tuple[list[int], list[float], list[str]]]:
        """participant -> (rounds, values, update states) for a number taken from each update."""
        out: dict[str, tuple[list[int], list[float], list[str]]] = {}
        for rnd in self.rounds:
            rid = _int(rnd.get("round"))
            if rid is None:
                continue
            for u in map(_map, _list(rnd.get("updates"))):
                v = _float(value(u))
                a = u.get("participant")
                if v is not None and isinstance(a, str):
                    xs, ys, states = out.setdefault(a, ([], [], []))
                    xs.append(rid)
                    ys.append(v)
                    states.append(str(u.get("status") or "included"))
        return out

    def _lines(self, series: Mapping[str, tuple[list[int], list[float], list[str]]], ytitle: str) -> Any:
        fig = go.Figure()
        for a in [p for p in self.participants if p in series]:
            xs, ys, states = series[a]
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines+markers",
                    name=self.names.chart(a),
                    text=states,
                    hovertemplate="round %{x}: %{y:.4g} (%{text})<extra>%{fullData.name}</extra>",
                )
            )
        fig.update_xaxes(title="round", dtick=1)
        fig.update_yaxes(title=html.escape(ytitle, quote=False))
        return fig

    def _norms(self) -> str:
        series = self._series(lambda u: u.get("norm"))
        if not series:
            return _empty("norms", "Update norms", "No update norm was recorded.")
        fig = self._lines(series, "L2 norm of the update")
        bad = [
            (rid, v, a)
            for a, (xs, ys, states) in series.items()
            for rid, v, s in zip(xs, ys, states, strict=True)
            if s == "excluded"
        ]
        if bad:
            fig.add_trace(
                go.Scatter(
                    x=[b[0] for b in bad],
                    y=[b[1] for b in bad],
                    mode="markers",
                    name="excluded",
                    marker={"symbol": "x", "size": 14, "color": _RED, "line": {"width": 2}},
                    text=[self.names.chart(b[2]) for b in bad],
                    hovertemplate="round %{x}: %{y:.4g}, excluded<extra>%{text}</extra>",
                )
            )
        bound = _float(_map(self.r.get("manifest")).get("max_update_norm"))
        if bound is not None:
            fig.add_hline(
                y=bound,
                line={"dash": "dash", "color": _RED, "width": 1},
                annotation_text=f"bound {bound:g}",
                annotation_position="top left",
            )
        return (
            '<section id="norms"><h2>Update norms</h2>'
            "<p>The size of each participant's update, per round. An update far from the others "
            "(or above the dashed bound) stands out here.</p>" + self._figure(fig, "fig-norms", 360) + "</section>"
        )

    def _cosine(self) -> str:
        found: list[tuple[int, list[str], list[list[float | None]], float, str]] = []
        for rnd in self.rounds:
            rid = _int(rnd.get("round"))
            cos = _map(rnd.get("cosine"))
            who = [a for a in _list(cos.get("participants")) if isinstance(a, str)]
            matrix = [[_float(v) for v in _list(row)] for row in _list(cos.get("matrix"))]
            if rid is None or not who or len(matrix) != len(who) or any(len(row) != len(who) for row in matrix):
                continue
            pairs = [
                (v, f"{self.names.text(who[i])} and {self.names.text(who[j])}")
                for i, row in enumerate(matrix)
                for j, v in enumerate(row)
                if j > i and v is not None
            ]
            low, pair = min(pairs) if pairs else (1.0, "")
            found.append((rid, who, matrix, low, pair))
        if not found:
            return _empty("cosine", "How alike the updates were", "No pairwise similarity was recorded.")
        worst = min(found, key=lambda x: x[3])
        shown = found if len(found) <= _COSINE_LAST + 1 else [*found[-_COSINE_LAST:]]
        if worst not in shown:
            shown = [worst, *shown]
        figs = []
        for rid, who, matrix, _low, _pair in shown:
            labels = [self.names.chart(a) for a in who]
            fig = go.Figure(
                go.Heatmap(
                    z=matrix,
                    x=labels,
                    y=labels,
                    zmin=-1,
                    zmax=1,
                    colorscale="RdBu",
                    texttemplate="%{z:.2f}",
                    hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>",
                    showscale=False,
                )
            )
            fig.update_yaxes(autorange="reversed")
            fig.update_xaxes(tickangle=-20)
            title = f"round {rid}" + (" (lowest similarity)" if rid == worst[0] and len(found) > 1 else "")
            figs.append(
                f"<div class='cos'><h3>{_e(title)}</h3>{self._figure(fig, f'fig-cosine-{rid}', 320, {'l': 130, 't': 10, 'b': 70})}</div>"
            )
        note = (
            f"Lowest similarity: {worst[3]:.2f}, in round {worst[0]}, between {worst[4]}."
            if worst[4]
            else "Only one update per round: nothing to compare."
        )
        more = f" Showing {len(shown)} of {len(found)} rounds." if len(shown) < len(found) else ""
        return (
            '<section id="cosine"><h2>How alike the updates were</h2>'
            "<p>Cosine similarity of each pair of updates in a round: 1 means the same direction, 0 unrelated, "
            f"below 0 opposite. An outlier shows as a row of pale or red cells. {_e(note)}{_e(more)}</p>"
            f'<div class="cosgrid">{"".join(figs)}</div></section>'
        )

    def _metrics(self) -> str:
        keys: list[str] = []
        for rnd in self.rounds:
            for u in map(_map, _list(rnd.get("updates"))):
                for k, v in _map(u.get("metrics")).items():
                    if isinstance(k, str) and k not in keys and _float(v) is not None:
                        keys.append(k)
        if not keys:
            return _empty("metrics", "What participants reported", "No participant reported a metric.")
        figs = []
        for i, k in enumerate(keys):
            series = self._series(lambda u, k=k: _map(u.get("metrics")).get(k))
            fig = self._lines(series, k)
            figs.append(f"<div><h3>{_e(k)}</h3>{self._figure(fig, f'fig-metric-{i}', 300)}</div>")
        return (
            '<section id="metrics"><h2>What participants reported</h2>'
            "<p>Metrics each participant reported with its update, as it reported them: the audit "
            "cannot check numbers computed on private data.</p>"
            f'<div class="figgrid">{"".join(figs)}</div></section>'
        )

    def _gas(self) -> str:
        pts: list[tuple[int, int]] = []
        for x in self.rounds:
            rid, gas = _int(x.get("round")), _int(x.get("gas"))
            if rid is not None and gas is not None:
                pts.append((rid, gas))
        if not pts:
            return _empty("gas", "Gas per round", "No gas figure was recorded.")
        fig = go.Figure(
            go.Bar(
                x=[f"round {r}" for r, _ in pts],
                y=[g for _, g in pts],
                marker={"color": _BLUE},
                hovertemplate="%{x}: %{y:,} gas<extra></extra>",
                name="gas",
            )
        )
        fig.update_yaxes(title="gas", tickformat=",")
        total = sum(g for _, g in pts)
        return (
            '<section id="gas"><h2>Gas per round</h2>'
            f"<p>Gas of every transaction of the round (open, updates, close, finalize). Total: {total:,} gas.</p>"
            + self._figure(fig, "fig-gas", 300)
            + "</section>"
        )

    def _privacy(self) -> str:
        priv = _map(self.r.get("privacy"))
        per = _map(priv.get("per_participant"))
        if not per:
            return ""
        series: dict[str, tuple[list[int], list[float], list[str]]] = {}
        for a, p in per.items():
            for pt in map(_map, _list(_map(p).get("rounds"))):
                rid, eps = _int(pt.get("round")), _float(pt.get("epsilon"))
                if rid is not None and eps is not None:
                    xs, ys, st = series.setdefault(str(a), ([], [], []))
                    xs.append(rid)
                    ys.append(eps)
                    st.append("spent so far")
        delta = _float(priv.get("delta"))
        rows = "".join(
            f"<tr><th>{self.names.html(a)}</th><td>ε = {_e(_float(_map(p).get('epsilon')))}</td></tr>"
            for a, p in per.items()
        )
        fig_html = self._figure(self._lines(series, "ε spent"), "fig-privacy", 320) if series else ""
        return (
            '<section id="privacy"><h2>Privacy spent</h2>'
            f"<p>Differential-privacy budget each participant has spent so far (ε, with δ = {_e(delta)}): "
            "the lower, the less its data can be told from the models.</p>"
            f'<table class="facts">{rows}</table>{fig_html}</section>'
        )

    def _lineage(self) -> str:
        m = _map(self.r.get("manifest"))
        g = _map(self.r.get("genesis"))
        rows = [
            (
                f"<tr><td>manifest</td><td>the federation's rules</td><td>{_code(m.get('hash'))}</td>"
                f"<td>{_code(m.get('cid'))}</td></tr>"
            ),
            (
                f"<tr><td>genesis</td><td>the starting model</td><td>{_code(g.get('hash'))}</td>"
                f"<td>{_code(g.get('cid'))}</td></tr>"
            ),
        ]
        details = []
        for rnd in self.rounds:
            rid = _int(rnd.get("round"))
            base, agg = _map(rnd.get("base")), _map(rnd.get("aggregate"))
            state = self._round_state(rnd)
            cls = " class='badrow'" if state == "failed verification" else ""
            rows.append(
                f"<tr{cls}><td>round {_e(rid)}</td><td>{_e(state)}<br><span class='muted'>base</span></td>"
                f"<td>{_code(base.get('hash'))}</td><td>{_code(base.get('cid'))}</td></tr>"
                f"<tr{cls}><td></td><td><span class='muted'>aggregate</span>"
                f"<br><span class='muted'>{_e(rnd.get('rule') or '')}</span></td>"
                f"<td>{_code(agg.get('hash'))}</td><td>{_code(agg.get('cid'))}</td></tr>"
            )
            ups = [_map(u) for u in _list(rnd.get("updates"))]
            if ups:
                lines = "".join(
                    f"<tr><td>{self.names.html(u.get('participant'))}</td><td>{_e(u.get('status'))}</td>"
                    f"<td>{_e(_int(u.get('samples')))}</td><td>{_e(_int(u.get('block')))}</td>"
                    f"<td>{_code(u.get('hash'))}</td><td>{_code(u.get('cid'))}</td></tr>"
                    for u in ups
                )
                details.append(
                    f"<details><summary>round {_e(rid)}: {_plural(len(ups), 'update')}</summary>"
                    '<table class="grid lineage"><thead><tr><th>participant</th><th>status</th><th>samples</th>'
                    f"<th>block</th><th>sha256</th><th>CID</th></tr></thead><tbody>{lines}</tbody></table></details>"
                )
        return (
            '<section id="lineage"><h2>Lineage</h2>'
            "<p>Every model in order, each round's base being the previous round's aggregate. "
            "Click a digest to select it whole.</p>"
            '<table class="grid lineage"><thead><tr><th>step</th><th>what</th><th>sha256</th><th>CID</th></tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table>"
            f"<h3>Updates</h3>{''.join(details) or '<p class=muted>none recorded</p>'}</section>"
        )


def _round_key(rnd: Mapping[str, Any]) -> int:
    rid = _int(rnd.get("round"))
    return -1 if rid is None else rid


def _empty(section_id: str, title: str, text: str) -> str:
    return f'<section id="{section_id}"><h2>{_e(title)}</h2><p class="muted">{_e(text)}</p></section>'


_CSS = """
:root { --fg:#1f2328; --muted:#5f6670; --line:#d9dde3; --green:#1b7f3b; --red:#b3261e; --amber:#c77700; }
* { box-sizing: border-box; }
body { margin:0; background:#f4f5f7; color:var(--fg);
  font:15px/1.5 -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif; }
main { max-width:1200px; margin:0 auto; padding:24px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:18px 22px; margin:0 0 18px; }
h2 { margin:0 0 8px; font-size:20px; } h3 { margin:10px 0 4px; font-size:15px; }
p { margin:4px 0 10px; }
code { font-family: ui-monospace, Menlo, Consolas, 'DejaVu Sans Mono', monospace; font-size:13px; }
code.digest { user-select:all; word-break:break-all; background:#f0f2f5; padding:1px 4px; border-radius:3px; }
.muted { color:var(--muted); }
.verdict { border-width:0 0 0 10px; border-style:solid; }
.verdict.pass { border-color:var(--green); background:#eef8f1; }
.verdict.fail { border-color:var(--red); background:#fdf0ef; }
.verdict-word { font-size:44px; font-weight:800; letter-spacing:1px; line-height:1.1; }
.pass .verdict-word { color:var(--green); } .fail .verdict-word { color:var(--red); }
.verdict-text { font-size:18px; margin:6px 0 12px; }
.counts { display:flex; flex-wrap:wrap; gap:8px; margin-bottom:10px; }
.count { background:#fff; border:1px solid var(--line); border-radius:14px; padding:2px 12px; font-weight:600; }
.count.short { border-color:var(--red); color:var(--red); }
table { border-collapse:collapse; }
table.facts th { text-align:left; padding:2px 16px 2px 0; color:var(--muted); font-weight:600; vertical-align:top;
  white-space:nowrap; }
table.facts td { padding:2px 0; }
table.grid { width:100%; }
table.grid th, table.grid td { border:1px solid var(--line); padding:5px 8px; text-align:left; vertical-align:top; }
table.grid thead th { background:#f0f2f5; }
#failures.bad { border-color:var(--red); }
#failures .round { font-weight:700; color:var(--red); white-space:nowrap; }
#failures td { max-width:320px; }
.msg { color:var(--muted); font-size:13px; word-break:break-word; }
.ok-note { color:var(--green); font-weight:600; }
.two { display:grid; grid-template-columns: 1fr 1fr; gap:24px; }
ul.people { margin:0; padding-left:18px; } ul.people li { margin-bottom:6px; }
.scroll { overflow-x:auto; }
table.matrix td.cell { text-align:center; white-space:nowrap; }
.cell { border-radius:3px; padding:1px 6px; }
.cell.inc { background:#dff3e4; color:#14532d; }
.cell.exc { background:#fbdcd9; color:#7f1d1d; font-weight:600; }
.cell.dis { background:#fdecc8; color:#7a4a00; }
.cell.mis { background:#e6e8eb; color:#3c4149; font-style:italic; }
.cell.none { color:var(--muted); }
.legend { font-size:14px; }
.figgrid { display:grid; grid-template-columns: 1fr 1fr; gap:12px; }
.cosgrid { display:grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap:12px; }
table.lineage td:nth-child(3), table.lineage td:nth-child(4) { width:40%; }
tr.badrow td { background:#fdf0ef; }
table.grid thead th.badcol { background:#fbdcd9; color:#7f1d1d; }
details { margin:4px 0; } summary { cursor:pointer; font-weight:600; }
footer { color:var(--muted); font-size:13px; text-align:center; padding:8px; }
@media print { body { background:#fff; } section { break-inside:avoid; } }
"""
