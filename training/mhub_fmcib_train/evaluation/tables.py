"""Writing result tables as CSV and GitHub-flavoured Markdown side by side."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd


def format_cell(value: object, digits: int = 3) -> str:
    """One table cell as text: floats rounded to ``digits`` (tiny ones in e-notation), NaN ``–``."""
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (index dropped), floats rounded."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        cells = [format_cell(v, digits).replace("|", "\\|") for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, stem: Path, title: str | None = None) -> tuple[Path, Path]:
    """Write ``stem.csv`` (full precision) and ``stem.md`` (rounded); return both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path = stem.with_suffix(".csv")
    md_path = stem.with_suffix(".md")
    df.to_csv(csv_path, index=False)
    text = (f"## {title}\n\n" if title else "") + to_markdown(df)
    md_path.write_text(text, encoding="utf-8")
    return csv_path, md_path


def save_figure(fig: Any, stem: Path) -> tuple[Path, Path]:
    """Write a matplotlib figure as ``stem.png`` (150 dpi) and ``stem.svg``, then close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    fig.savefig(png, dpi=150)
    fig.savefig(svg)
    plt.close(fig)
    return png, svg
