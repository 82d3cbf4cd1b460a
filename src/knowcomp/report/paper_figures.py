"""The papers' figures, named after them (`namburi2023-fig6.png`, `hoang2024-fig1.png`).

*The Cost of Compression* (Namburi et al., 2023) pools the models of a family in each figure;
so do these (the mean over the family's models, with the spread between them as error bars
where there are several, else the one model's own uncertainty):

- Figs. 3-5: global pruning, drop against the pruning level per group, one figure per family
  (encoder, encoder-decoder, decoder, the order in which the paper lists them);
- Fig. 6: global quantization (GQ), the drop per group; Fig. 7: prune-then-quantize (GPQ),
  the drop against the pruning level per group; one row of panels per family;
- Figs. 8-10: the final layer pruned structured vs unstructured, the drop averaged over a
  kind's probes, one figure per family; Fig. 11: the drop against the share of the model's
  parameters each compression changed, one row per family (a share is one model's, so models
  are not pooled there). These four are inferred from the numbering around them (Figs. 3-5
  per family; the appendix's Figs. 26-28, the final layer per dataset per family): the
  paper's text was not at hand to check them;
- Figs. 15-18: the same per dataset: GQ on LAMA (15) and on the other tasks (16), GPQ on LAMA
  (17) and on the other tasks (18);
- Figs. 26-28: the final layer pruned structured vs unstructured, per dataset, one figure per
  family.

*Do Compressed LLMs Forget Knowledge?* (Hoang et al., 2024), scores averaged over the nine
tasks that ran (`knowcomp.probes.categories.STUDY_TASKS`):

- Fig. 1: the average against bits (quantization) and against sparsity (pruning);
- Fig. 4: the average against the trainable parameters of each recovery method;
- Fig. 6: IDP (and prompt tuning, where it ran) against the prompt size;
- Fig. 7: each task's improvement by recovery (recovered minus compressed score).

Error bars and bands are the report's own uncertainty (`report.stats`): the SD over seeds
where several ran, else the 95% interval over items (a paired interval for one probe's drop,
a stratified bootstrap for an average over probes or an improvement). A figure is written only
where its data ran; each writes its plotted values to `NAME.csv` beside it. The figure numbers
are the papers'; what each figure holds is knowcomp's reading of them.
"""

from __future__ import annotations

from pathlib import Path

from knowcomp.report.frame import Frame
from knowcomp.report.hoang_figures import hoang_figures
from knowcomp.report.namburi_figures import namburi_figures
from knowcomp.report.plots import Plot
from knowcomp.report.stats import arms


def draw_paper_figures(frame: Frame, folder: Path) -> list[Plot]:
    """Every figure of both papers that the data supports."""
    folder.mkdir(parents=True, exist_ok=True)
    all_arms = [a for a in arms(frame) if a.drop() is not None]
    plots = namburi_figures(frame, all_arms, folder)
    plots += hoang_figures(frame, folder)
    return plots
