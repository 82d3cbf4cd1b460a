"""Multiple-choice and language-modelling probes (BoolQ, PIQA, ARC, HellaSwag, WinoGrande,
LAMBADA, user tasks from YAML), scored by log-likelihood as lm-evaluation-harness scores them."""
