"""Write a partial run's sections into docs/benchmarks.md, keeping the rest.

``python -m benchmarks --only copy,pipeline --write`` replaces those
sections of the page (matched by title), or adds them before the memory
section, which is renumbered; the other sections, the targets and the chart
stay those of the last full run.
"""

from __future__ import annotations

import re

from benchmarks import report
from benchmarks.common import SectionResult
from benchmarks.notes import NOTES

__all__ = ["write"]

HEADING = re.compile(r"^## (?:(\d+)\. )?(.+)$", re.MULTILINE)


def write(run: report.Run) -> None:
    text = report.DOC.read_text()
    for section in run.sections:
        text = splice(text, section, run.started)
    report.DOC.write_text(text)


def splice(text: str, section: SectionResult, started: str) -> str:
    """``text`` with ``section`` in place of its namesake, or added."""
    headings = list(HEADING.finditer(text))
    numbered = [h for h in headings if h.group(1)]
    for index, heading in enumerate(headings):
        if heading.group(1) and heading.group(2) == section.title:
            end = headings[index + 1].start() if index + 1 < len(headings) else None
            block = _block(int(heading.group(1)), section, started)
            return text[: heading.start()] + block + (text[end:] if end else "")
    memory = next((h for h in numbered if h.group(2) == "Memory"), None)
    if memory is not None:
        number = int(memory.group(1))
        renumbered = f"## {number + 1}. Memory"
        rest = renumbered + text[memory.end() :]
        return text[: memory.start()] + _block(number, section, started) + rest
    number = int(numbered[-1].group(1)) + 1 if numbered else 1
    after = numbered[-1].end() if numbered else 0
    tail = next((h for h in headings if not h.group(1) and h.start() > after), None)
    at = tail.start() if tail is not None else len(text)
    return text[:at] + _block(number, section, started) + text[at:]


def _block(number: int, section: SectionResult, started: str) -> str:
    lines = report.section_markdown(number, section)
    # The page's date is the full run's: say when this section was measured.
    lines[3] += f" Measured on {started} (`--only {section.key}`)."
    if section.key in NOTES:
        lines += [NOTES[section.key], ""]
    return "\n".join(lines) + "\n"
