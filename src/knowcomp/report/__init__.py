"""Reports from a results store: the study's tables and plots, forgetting, and its findings.

`write_report(db, out)` writes everything into folder `out` and returns `out/report.html`:

- `tables/`: the baseline, Tables 1 and 4 to 6 of *The Cost of Compression* in its layout
  (`namburi2023-table*`, `report.paper_tables`), every drop with its paired 95% interval
  (`drops`), category averages and the recovery tables, as Markdown, CSV and LaTeX;
- `plots/`: drops against sparsity per group, per probe, final layer structured vs
  unstructured, drop against the fraction of parameters compressed (PNG and SVG), and both
  papers' figures named after them (`namburi2023-fig*`, `hoang2024-fig*`,
  `report.paper_figures`) with their plotted values as CSV;
- `drops.csv`: every compressed trial x probe with its baseline score and drop;
- `plots/hoang2024-fig5*` and `similarity.csv`: layer-wise similarity of each compressed and
  recovered trial to the uncompressed model (Hoang et al., 2024, Fig. 5), when the study
  measured it;
- `forgetting/`: facts and items the baseline got right and a compressed model got wrong;
- `findings.md`: whether each claim of both studies holds on this data, per model and probe
  kind (`report.findings`, `report.recovery_claims`), each verdict with its paired tests;
- `report.html`: all of it in one self-contained page, grouped by the paper reproduced.
"""

from knowcomp.report.build import (
    ReportError,
    ReportResult,
    check_results_file,
    generate_report,
    write_report,
)
from knowcomp.report.findings import Finding, check_findings
from knowcomp.report.frame import Frame, headline_metric, load_frame

__all__ = [
    "Finding", "Frame", "ReportError", "ReportResult", "check_findings", "check_results_file",
    "generate_report", "headline_metric", "load_frame", "write_report",
]  # fmt: skip
