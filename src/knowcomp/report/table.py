"""A report table (rows of labels and cells) and its renderings: Markdown, CSV, LaTeX and HTML.

Each cell is a `Cell` (a number in percent, with its spread over seeds or its interval over
items), text a table formatted itself, or None for a missing score, shown as "–" (an empty CSV
cell), never as zero. A drop measured adaptively (`--precision`) is marked `†` with the items it
rests on (`12.0 [4.1, 19.9]† n=412`; CSV: an `items` column), and its interval is the
anytime-valid confidence sequence; the table's note then says so.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

from knowcomp.report.stats import Cell

MISSING = "–"
ADAPTIVE = "†"
ADAPTIVE_NOTE = (
    "† adaptive evaluation (--precision): the drop was measured on the n items scored (in a "
    "seeded random order, until its interval was narrow enough), paired with the baseline's "
    "scores of the same items; its interval is the betting confidence sequence, valid where the "
    "scoring stopped on it (no p-value), not the fixed-sample interval."
)


@dataclass
class Table:
    name: str  # file stem
    title: str
    labels: list[str]  # header of the row-label columns
    probes: list[str]  # header of the value columns
    rows: list[tuple[list[str], list[Cell | str | None]]] = field(default_factory=list)
    note: str = ""

    @property
    def has_spread(self) -> bool:
        return any(isinstance(c, Cell) and c.n > 1 for _, cells in self.rows for c in cells)

    @property
    def has_interval(self) -> bool:
        return any(isinstance(c, Cell) and c.has_interval for _, cells in self.rows for c in cells)

    @property
    def has_adaptive(self) -> bool:
        return any(isinstance(c, Cell) and c.adaptive for _, cells in self.rows for c in cells)

    @property
    def full_note(self) -> str:
        """The note, with what `†` means where a cell is adaptive."""
        if not self.has_adaptive:
            return self.note
        return f"{self.note} {ADAPTIVE_NOTE}".strip()


def fmt(value: Cell | str | None, *, latex: bool = False, interval: bool = True) -> str:
    """`45.0`, `45.0 ± 1.2` (several seeds), `45.0 [40.1, 49.9]` (one seed, with its 95%
    interval over items; `interval=False` leaves it out, for formats that give it columns),
    `12.0 [4.1, 19.9]† n=412` (an adaptive drop: its confidence sequence and items)."""
    if value is None:
        return "--" if latex else MISSING
    if isinstance(value, str):
        return tex_escape(value) if latex else value
    if value.n > 1:
        pm = r" $\pm$ " if latex else " ± "
        return f"{value.mean:.1f}{pm}{value.std:.1f}"
    mark = ""
    if value.adaptive:
        mark = r"$^\dagger$" if latex else f"{ADAPTIVE} n={value.items}"
    if interval and value.has_interval:
        return f"{value.mean:.1f} [{value.low:.1f}, {value.high:.1f}]{mark}"
    return f"{value.mean:.1f}{mark}"


def to_markdown(table: Table) -> str:
    header = table.labels + table.probes
    lines = [
        f"**{table.title}**",
        "",
        "| " + " | ".join(header) + " |",
        "|"
        + "|".join("---" for _ in table.labels)
        + "|"
        + "|".join("--:" for _ in table.probes)
        + "|",
    ]
    for labels, cells in table.rows:
        lines.append("| " + " | ".join([*(_md(x) for x in labels), *map(fmt, cells)]) + " |")
    if table.full_note:
        lines += ["", table.full_note]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", r"\|")


def to_csv(table: Table) -> str:
    """Numbers in percent at full precision; with several seeds, `std` and `n` columns too
    (`std` empty for a single seed, every cell empty for a missing probe); with intervals,
    `low` and `high` columns (and `p` for drops); with an adaptive drop, an `items` column
    (the items it rests on; empty for a fixed-sample one)."""
    spread, interval, adaptive = table.has_spread, table.has_interval, table.has_adaptive
    tested = any(isinstance(c, Cell) and c.p_value is not None
                 for _, cells in table.rows for c in cells)  # fmt: skip
    header = list(table.labels)
    for probe in table.probes:
        header.append(probe)
        header += [f"{probe} std", f"{probe} n"] if spread else []
        header += [f"{probe} low", f"{probe} high"] if interval else []
        header += [f"{probe} p"] if tested else []
        header += [f"{probe} items"] if adaptive else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for labels, cells in table.rows:
        row: list[object] = list(labels)
        for c in cells:
            number = isinstance(c, Cell)
            row.append(c if isinstance(c, str) else f"{c.mean:.6g}" if number else "")
            if spread:
                std = f"{c.std:.6g}" if number and c.n > 1 else ""
                row += [std, c.n if number else (1 if isinstance(c, str) else 0)]
            if interval:
                has = number and c.has_interval
                row += [f"{c.low:.6g}", f"{c.high:.6g}"] if has else ["", ""]
            if tested:
                row.append(f"{c.p_value:.4g}" if number and c.p_value is not None else "")
            if adaptive:
                row.append(c.items if number and c.adaptive else "")
        writer.writerow(row)
    return buffer.getvalue()


_TEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "\\": r"\textbackslash{}", "→": r"$\rightarrow$", "±": r"$\pm$"}  # fmt: skip


def tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs `table` environment; missing cells are `--`; intervals in their own `low`
    and `high` columns after each value."""
    interval = table.has_interval
    per_probe = 3 if interval else 1
    spec = "l" * len(table.labels) + "r" * len(table.probes) * per_probe
    heads = [tex_escape(h) for h in table.labels]
    for probe in table.probes:
        heads += [tex_escape(probe), "low", "high"] if interval else [tex_escape(probe)]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(heads) + r" \\",
        r"\midrule",
    ]
    for labels, cells in table.rows:
        values = [tex_escape(x) for x in labels]
        for c in cells:
            values.append(fmt(c, latex=True, interval=False))
            if interval:
                has = isinstance(c, Cell) and c.has_interval
                values += [f"{c.low:.1f}", f"{c.high:.1f}"] if has else ["", ""]
        lines.append(" & ".join(values) + r" \\")
    note = table.full_note.replace(ADAPTIVE, "DAGGER")  # escaped, then the LaTeX dagger
    caption = tex_escape(table.title + (f". {note}" if note else ""))
    caption = caption.replace("DAGGER", r"$\dagger$")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}",
              rf"\label{{tab:{table.name}}}", r"\end{table}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in table.labels)
    head += "".join(f'<th class="num">{esc(h)}</th>' for h in table.probes)
    body = []
    for labels, cells in table.rows:
        tds = "".join(f"<td>{esc(x)}</td>" for x in labels)
        tds += "".join(
            f'<td class="num{" missing" if c is None else ""}">{esc(fmt(c))}</td>' for c in cells
        )
        body.append(f"<tr>{tds}</tr>")
    note = f"<p class='note'>{esc(table.full_note)}</p>" if table.full_note else ""
    return (
        f"<h3 id='{esc(table.name)}'>{esc(table.title)}</h3>\n<table><thead><tr>{head}</tr>"
        f"</thead><tbody>\n" + "\n".join(body) + f"\n</tbody></table>{note}\n"
    )


def write_tables(tables: list[Table], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for table in tables:
        for suffix, render in ((".md", to_markdown), (".csv", to_csv), (".tex", to_latex)):
            path = folder / f"{table.name}{suffix}"
            path.write_text(render(table), encoding="utf-8")
            written.append(path)
    return written
