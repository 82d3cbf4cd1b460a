"""One self-contained `report.html`: tables inline, plots as base64 PNG, no external asset."""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from knowcomp.report.findings import Finding
from knowcomp.report.forgetting import Forgetting
from knowcomp.report.frame import Frame
from knowcomp.report.plots import Plot
from knowcomp.report.table import Table, to_html

T = TypeVar("T")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 72em; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
th { background: #f4f4f4; } td.num, th.num { text-align: right; }
td.missing { color: #aaa; text-align: center; }
.note, figcaption { color: #555; font-size: .85em; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; height: auto; }
.verdict { font-weight: bold; padding: .1em .4em; border-radius: .3em; }
.holds { background: #d9f2d9; } .fails { background: #f8d7d7; } .nodata { background: #eee; }
.open { background: #fdf1c7; }
code { background: #f4f4f4; padding: 0 .2em; }
"""
_VERDICT_CLASS = {"holds": "holds", "does not hold": "fails", "inconclusive": "open",
                  "not enough data": "nodata", "saturated": "nodata"}  # fmt: skip


@dataclass
class ReportContent:
    db: Path
    frame: Frame
    tables: list[Table]
    plots: list[Plot]
    findings: list[Finding]
    forgetting: Forgetting
    files: list[Path] = field(default_factory=list)  # relative to the report folder
    notes: list[str] = field(default_factory=list)


def render_html(content: ReportContent) -> str:
    esc = html.escape
    frame = content.frame
    title = f"knowcomp report: {', '.join(frame.studies) or content.db.name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        "<p>"
        + "<br>".join(
            [
                f"Results file: <code>{esc(content.db.name)}</code> ({frame.rows} results)",
                f"Studies: {esc(', '.join(frame.studies))}",
                f"Models: {esc(', '.join(frame.models))}",
                f"Probes: {esc(', '.join(frame.probes))}",
            ]
        )
        + "</p>",
        _contents(content),
        _findings(content.findings),
        "<h2 id='tables'>Tables</h2>",
    ]
    for paper, tables in by_paper(content.tables):
        parts.append(f"<h3 class='paper'>{esc(paper)}</h3>")
        parts += [to_html(t) for t in tables]
    if not content.tables:
        parts.append("<p>No table has data.</p>")
    parts.append("<h2 id='plots'>Plots</h2>")
    for paper, plots in by_paper(content.plots):
        parts.append(f"<h3 class='paper'>{esc(paper)}</h3>")
        parts += [_figure(p) for p in plots]
    if not content.plots:
        parts.append("<p>No compressed trial to plot.</p>")
    parts.append(_forgetting(content.forgetting))
    parts.append(_versions(frame))
    for note in content.notes:
        parts.append(f"<p class='note'>{esc(note)}</p>")
    if content.files:
        files = "".join(f"<li><code>{esc(str(f))}</code></li>" for f in content.files)
        parts.append(f"<h2 id='files'>Files</h2><p>Written beside this page:</p><ul>{files}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


PAPERS = {
    "namburi2023": "The Cost of Compression (Namburi et al., EMNLP Findings 2023)",
    "hoang2024": "Do Compressed LLMs Forget Knowledge? (Hoang et al., ICML 2024)",
}
OWN = "knowcomp's own tables and plots"
_HOANG_LAYOUTS = ("recovery", "recovery_training")  # its tables' layout


def paper_of(name: str) -> str | None:
    """The paper a table or figure reproduces, from its name (`namburi2023-table4`), or None."""
    for key in PAPERS:
        if name.startswith(f"{key}-"):
            return key
    return "hoang2024" if name.startswith(_HOANG_LAYOUTS) else None


def by_paper(items: list[T]) -> list[tuple[str, list[T]]]:
    """Tables or plots grouped by the paper they reproduce (in `PAPERS` order), then the rest."""
    groups: dict[str | None, list[T]] = {}
    for item in items:
        groups.setdefault(paper_of(item.name), []).append(item)  # type: ignore[attr-defined]
    order = [*PAPERS, None]
    return [(PAPERS.get(k, OWN) if k else OWN, groups[k]) for k in order if k in groups]


def _contents(content: ReportContent) -> str:
    links = [("findings", "Findings check"), ("tables", "Tables"), ("plots", "Plots"),
             ("forgetting", "Per-fact forgetting"), ("versions", "Package versions")]  # fmt: skip
    if any(t.name == "recovery" for t in content.tables):
        links.insert(2, ("recovery", "Compression and recovery"))
    items = "".join(f"<li><a href='#{a}'>{html.escape(t)}</a></li>" for a, t in links)
    return f"<ul>{items}</ul>"


def _findings(findings: list[Finding]) -> str:
    esc = html.escape
    out = ["<h2 id='findings'>Findings check</h2>",
           "<p class='note'>The claims of <i>The Cost of Compression</i> (Namburi et al., "
           "2023) and <i>Do Compressed LLMs Forget Knowledge?</i> (Hoang et al., 2024), "
           "checked on this data per model and per probe kind. Drops are baseline minus "
           "compressed headline score, in percentage points; each verdict rests on paired "
           "tests on the same items, Holm-adjusted over the claim's comparisons.</p>"]  # fmt: skip
    paper = None
    for f in findings:
        if f.paper != paper:
            paper = f.paper
            out.append(f"<h3>{esc(paper)}</h3>")
        css = _VERDICT_CLASS.get(f.verdict, "nodata")
        evidence = "".join(f"<li>{esc(e)}</li>" for e in f.evidence)
        tests = "".join(f"<p>Test: {esc(t)}</p>" for t in f.tests)
        source = f"<p class='note'>{esc(f.source)}. Checked as: {esc(f.definition)}.</p>"
        out.append(
            f"<h4>{f.number}. {esc(f.claim)}: <span class='verdict {css}'>{esc(f.verdict)}"
            f"</span></h4>{source if f.source else ''}<p>{esc(f.summary)}</p>{tests}"
            + (f"<ul>{evidence}</ul>" if evidence else "")
        )
    return "\n".join(out)


def _figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png.read_bytes()).decode("ascii")
    esc = html.escape
    return (
        f"<figure id='{esc(plot.name)}'><img alt='{esc(plot.title)}' "
        f"src='data:image/png;base64,{data}'><figcaption><b>{esc(plot.title)}.</b> "
        f"{esc(plot.caption)} Files: <code>plots/{esc(plot.name)}.png</code>, "
        f"<code>plots/{esc(plot.name)}.svg</code>.</figcaption></figure>"
    )


def _forgetting(forgetting: Forgetting) -> str:
    esc = html.escape
    out = ["<h2 id='forgetting'>Per-fact forgetting</h2>"]
    totals = forgetting.totals()
    if not totals:
        out.append("<p>No per-item records to compare (LAMA or multiple-choice probes, with "
                   "their baseline).</p>")  # fmt: skip
        return "\n".join(out)
    out.append("<p class='note'>Items the baseline got right (LAMA: P@1 = 1; multiple choice: "
               "gold chosen) that the compressed model got wrong; <i>gained</i>: the reverse. "
               "Every fact is in <code>forgetting/forgetting_facts.csv</code>, every "
               "multiple-choice item in <code>forgetting/forgetting_items.csv</code>, counts by "
               "relation in <code>forgetting/forgetting_by_relation.csv</code>.</p>")  # fmt: skip
    head = "".join(f"<th>{h}</th>" for h in ("Model", "Compression", "Seed", "Probe"))
    head += "".join(f"<th class='num'>{h}</th>" for h in
                    ("Baseline correct", "Forgotten", "Share", "Gained"))  # fmt: skip
    rows = []
    for r in totals:
        share = "–" if r["share_forgotten"] is None else f"{100 * r['share_forgotten']:.1f}%"
        cells = [esc(str(r[k])) for k in ("model", "recipe", "seed", "probe")]
        nums = [str(r["baseline_correct"]), str(r["forgotten"]), share, str(r["gained"])]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells)
                    + "".join(f"<td class='num'>{c}</td>" for c in nums) + "</tr>")  # fmt: skip
    out.append(
        f"<details open><summary>{len(totals)} trial x probe pairs</summary><table>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></details>"
    )
    out.append(_relations(forgetting))
    return "\n".join(out)


def _relations(forgetting: Forgetting) -> str:
    """LAMA relations by share forgotten, pooled over every compressed trial."""
    pooled: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in forgetting.summary:
        if r["relation"] != "(all)":
            tally = pooled[(r["probe"], r["relation"])]
            tally[0] += r["baseline_correct"]
            tally[1] += r["forgotten"]
    ranked = sorted(((f / c, p, rel, c, f) for (p, rel), (c, f) in pooled.items() if c),
                    reverse=True)  # fmt: skip
    if not ranked:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(p)}</td><td>{html.escape(rel)}</td><td class='num'>{c}</td>"
        f"<td class='num'>{f}</td><td class='num'>{100 * share:.1f}%</td></tr>"
        for share, p, rel, c, f in ranked
    )
    return ("<h3>LAMA relations, pooled over every compressed trial</h3><details><summary>"
            f"{len(ranked)} relations, most forgotten first</summary><table><thead><tr>"
            "<th>Probe</th><th>Relation</th><th class='num'>Baseline correct</th>"
            "<th class='num'>Forgotten</th><th class='num'>Share</th></tr></thead><tbody>"
            f"{rows}</tbody></table></details>")  # fmt: skip


def _versions(frame: Frame) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(package)}</td><td>{html.escape(', '.join(versions))}</td></tr>"
        for package, versions in sorted(frame.versions.items())
    )
    body = (f"<table><thead><tr><th>Package</th><th>Version(s)</th></tr></thead><tbody>{rows}"
            "</tbody></table>") if rows else "<p>No versions recorded.</p>"  # fmt: skip
    return f"<h2 id='versions'>Package versions</h2>{body}"
