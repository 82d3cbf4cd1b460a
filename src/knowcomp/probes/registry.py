"""The probe registry: `@register` a Probe class; `get_probe(name)` builds one."""

from __future__ import annotations

from knowcomp.errors import KnowcompError
from knowcomp.probes.base import Probe

PROBES: dict[str, type[Probe]] = {}


def register(cls: type[Probe]) -> type[Probe]:
    if cls.name in PROBES:
        raise ValueError(f"probe '{cls.name}' registered twice")
    PROBES[cls.name] = cls
    return cls


def load_builtin_probes() -> None:
    from knowcomp.probes.lama import probes  # noqa: F401  (registers the LAMA probes)
    from knowcomp.probes.mc import tasks  # noqa: F401  (registers the multiple-choice probes)
    from knowcomp.probes.qa import probes as qa  # noqa: F401  (registers TriviaQA, WebQS)


def probe_names() -> list[str]:
    load_builtin_probes()
    return sorted(PROBES)


def get_probe(name: str) -> Probe:
    """A built-in probe by name, or a user task from a `.yaml`/`.yml` file (see `mc.custom`)."""
    if name.endswith((".yaml", ".yml")):
        from knowcomp.probes.mc.custom import register_task_file

        return register_task_file(name)
    load_builtin_probes()
    if name not in PROBES:
        raise KnowcompError(f"unknown probe '{name}'; choose from: {', '.join(sorted(PROBES))}")
    return PROBES[name]()


def parse_probe_list(text: str) -> list[Probe]:
    """`lama-trex,piqa` -> probes, every name checked before any work starts."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise KnowcompError("no probe given; e.g. --probes lama-trex,piqa")
    return [get_probe(n) for n in names]
