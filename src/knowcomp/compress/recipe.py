"""Recipes: ordered (method, group, level) steps, written as data and validated up front.

Compact form, steps separated by commas, fields by colons, options as key=value:

    prune:l1_unstructured:overall:0.2,quant:dynamic_int8:all_linear
    prune:nm:feed_forward:n=2:m=4
    quant:weight_only:attention:bits=4:group_size=32

YAML form (a file, or the same text inline): a list of steps, or a mapping with `steps:`,
each step `{method, group, level?, <option>: value}` (`kind` optional, checked if given).
Groups may be joined with `+` (`overall+final_layer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowcomp.compress.registry import Method, build_method, get_method, parse_number
from knowcomp.errors import RecipeError
from knowcomp.modules.groups import check_group_names

NAMED_RECIPES: dict[str, str] = {
    "overall-gpq": "prune:l1_unstructured:overall:0.2,quant:dynamic_int8:all_linear",
}


@dataclass(frozen=True)
class Step:
    method: Method
    group: str

    @property
    def level(self) -> float | None:
        return getattr(self.method, "level", None)

    def to_compact(self) -> str:
        opts = self.method.options()
        parts = [self.method.kind, self.method.name, self.group]
        if self.method.takes_level:
            parts.append(_fmt(opts.pop("level")))
        parts += [f"{k}={_fmt(v)}" for k, v in opts.items()]
        return ":".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.method.kind,
            "method": self.method.name,
            "group": self.group,
            **self.method.options(),
        }


@dataclass(frozen=True)
class Recipe:
    steps: tuple[Step, ...]

    def to_compact(self) -> str:
        return ",".join(step.to_compact() for step in self.steps)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [step.to_dict() for step in self.steps]

    def placement_problem(self, device: Any, dtype: Any) -> str | None:
        """Why a step cannot run with this torch device and dtype, or None if all can."""
        for step in self.steps:
            problem = step.method.placement_problem(device, dtype)
            if problem is not None:
                return problem
        return None

    @property
    def has_quantization(self) -> bool:
        return any(step.method.kind == "quant" for step in self.steps)


def _fmt(value: Any) -> str:
    return (
        "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


def parse_recipe(text: str) -> Recipe:
    """A recipe from a named recipe, a YAML file path, inline YAML, or the compact form."""
    text = text.strip()
    if not text:
        raise RecipeError("empty recipe; write e.g. prune:l1_unstructured:overall:0.5")
    if text in NAMED_RECIPES:
        text = NAMED_RECIPES[text]
    path = Path(text)
    if text.endswith((".yaml", ".yml")):
        if not path.is_file():
            raise RecipeError(f"recipe file '{text}' does not exist; check the path")
        from knowcomp.data.readers import read_text

        return _from_yaml(read_text(path, "recipe file", RecipeError), source=text)
    if "\n" in text or text.startswith(("-", "{", "[", "steps")):
        return _from_yaml(text, source="inline YAML")
    steps = [_compact_step(i + 1, part) for i, part in enumerate(text.split(","))]
    return validate(Recipe(tuple(steps)))


def _compact_step(number: int, text: str) -> Step:
    fields = [f.strip() for f in text.strip().split(":")]
    if len(fields) < 3:
        raise RecipeError(
            f"recipe step {number} '{text}' needs kind:method:group[:level][:option=value], "
            "e.g. prune:l1_unstructured:attention:0.2"
        )
    kind, name, group, *rest = fields
    options: dict[str, str] = {}
    for key, value in (f.split("=", 1) for f in rest if "=" in f):
        if key.strip() in options:
            raise RecipeError(
                f"recipe step {number} '{text}' sets '{key.strip()}' twice; give it once"
            )
        options[key.strip()] = value.strip()
    levels = [f for f in rest if "=" not in f]
    if len(levels) > 1:
        raise RecipeError(f"recipe step {number} '{text}' has more than one level: {levels}")
    return _make_step(
        number, kind, name, group, _number(number, levels[0]) if levels else None, options
    )


def _number(step: int, text: str) -> float:
    try:
        return parse_number(text[:-1]) / 100 if text.endswith("%") else parse_number(text)
    except ValueError:
        raise RecipeError(
            f"recipe step {step}: level '{text}' is not a number in ASCII digits that a float "
            "can hold; write e.g. 0.5 or 50%"
        ) from None


def _from_yaml(text: str, *, source: str) -> Recipe:
    from knowcomp.data.readers import load_yaml

    data = load_yaml(text, f"recipe {source}", RecipeError)
    if isinstance(data, dict) and "steps" in data:
        data = data["steps"]
    if not isinstance(data, list) or not data:
        raise RecipeError(f"recipe {source} must be a non-empty list of steps (or steps: [...])")
    steps = []
    for i, raw in enumerate(data, 1):
        if not isinstance(raw, dict) or "method" not in raw or "group" not in raw:
            raise RecipeError(f"recipe {source}, step {i}: needs at least 'method' and 'group'")
        raw = dict(raw)
        name, group = str(raw.pop("method")), raw.pop("group")
        if isinstance(group, list):
            group = "+".join(map(str, group))
        kind = raw.pop("kind", None)
        level = raw.pop("level", None)
        steps.append(_make_step(i, kind, name, str(group), level, raw))
    return validate(Recipe(tuple(steps)))


def _make_step(
    number: int, kind: str | None, name: str, group: str, level: Any, options: dict[str, Any]
) -> Step:
    cls = get_method(name)
    if kind is not None and kind != cls.kind:
        raise RecipeError(
            f"recipe step {number}: '{name}' is a {cls.kind} method, not {kind}; "
            f"write {cls.kind}:{name}:..."
        )
    check_group_names(group)
    return Step(build_method(name, level, options), group)


def validate(recipe: Recipe) -> Recipe:
    """Checks that need no model: a group is never touched after it was quantized."""
    quantized: dict[str, int] = {}
    for i, step in enumerate(recipe.steps, 1):
        for group in step.group.split("+"):
            if group in quantized:
                raise RecipeError(
                    f"recipe step {i} {step.method.kind}s '{group}' after step {quantized[group]} "
                    "quantized it; prune first, then quantize"
                )
        if step.method.kind == "quant":
            for group in step.group.split("+"):
                quantized[group] = i
    return recipe
