"""The audit for people: one self-contained HTML page (verdict first, plots, full digests to copy)."""

from __future__ import annotations

import os
from pathlib import Path

from fedchain.audit import AuditReport


def write_html(report: AuditReport, path: Path) -> Path:
    """Render ``report`` (its :meth:`AuditReport.to_json`) to ``path`` atomically; return the path."""
    from fedchain.audit._html import render_html

    page = render_html(report.to_json())
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


__all__ = ["write_html"]
