"""``REPORT.md`` from run files (see :func:`build_report`)."""

from .builder import build_report

__all__ = ["build_report"]
