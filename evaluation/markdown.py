"""Markdown pieces shared by the single-run and the comparison reports."""
from collections.abc import Sequence


def table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> list[str]:
    """Lines of a markdown table, then an empty line; `|` inside a cell is escaped."""
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|")
    return ["| " + " | ".join(cell(h) for h in header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
            ""]
