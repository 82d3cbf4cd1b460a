"""The two LAMA protocols knowcomp implements, by name.

- `templates` (the default): each fact is its relation's template filled with the subject
  (SQuAD and ConceptNet: their own cloze sentence); the object's rank among the whole
  vocabulary gives P@1, P@10 and MRR; objects of several tokens are left out of every metric;
  macro (relations) and micro (facts) averages. LAMA's own protocol.
- `cost-of-compression`: the first study's (Namburi et al., 2023) protocol, as its code does
  it: each fact's first masked evidence sentence, duplicate sentences dropped, the model's
  decoded top token compared as a lower-cased, stripped string with the object, objects of
  several tokens counted as wrong, micro top-1 accuracy as the headline (`evidence.py`,
  `string_match.py`).

Results scored under a protocol other than the default carry its name in their probe name
(`lama-trex@cost-of-compression`), so tables, stores and reports never put the two protocols'
numbers in one row or column; results under the default keep the plain probe name they always
had.
"""

from __future__ import annotations

from knowcomp.errors import KnowcompError

TEMPLATES = "templates"
COST_OF_COMPRESSION = "cost-of-compression"
PROTOCOLS = (TEMPLATES, COST_OF_COMPRESSION)
DEFAULT_PROTOCOL = TEMPLATES


def check_protocol(protocol: str, lama_mode: str = "next-token") -> None:
    """Raise a one-line error for an unknown protocol, or one that cannot run in `lama_mode`."""
    if protocol not in PROTOCOLS:
        raise KnowcompError(f"unknown LAMA protocol '{protocol}'; choose {' or '.join(PROTOCOLS)}")
    if protocol == COST_OF_COMPRESSION and lama_mode != "next-token":
        raise KnowcompError(
            f"the {COST_OF_COMPRESSION} LAMA protocol scores the model's top token at the slot; "
            f"it cannot run in LAMA mode '{lama_mode}' (use --lama-mode next-token; in a study "
            "spec, lama_mode: next-token)"
        )


def result_name(probe: str, protocol: str) -> str:
    """The name a LAMA result is stored and shown under: the probe's own name under the
    default protocol, `probe@protocol` under another."""
    return probe if protocol == DEFAULT_PROTOCOL else f"{probe}@{protocol}"


def probe_of(result: str) -> str:
    """The probe a stored result name belongs to (`result_name`'s inverse)."""
    for protocol in PROTOCOLS:
        if protocol != DEFAULT_PROTOCOL and result.endswith(f"@{protocol}"):
            return result[: -len(protocol) - 1]
    return result
