"""Result reports: Markdown and self-contained HTML with matplotlib figures, read from entries only."""

from robustdeq.report.build import write_report as write_report
