"""Load YAML keeping line numbers, so validation errors can name the line of a bad field."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

Location = tuple[int | str, ...]


class YamlDocument:
    """A parsed YAML mapping plus the source line of every key and list item in it."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data: Any = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{source}:{mark.line + 1}" if mark is not None else source
            raise ValueError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
        self._lines: dict[Location, int] = {}
        # PyYAML keeps the last of two equal keys: a silently dropped setting. Loaders refuse
        # the document when this is not empty: (location of the key, line of its repeat).
        self.duplicates: list[tuple[Location, int]] = []
        if node is not None:
            self._index(node, ())
        if self.data is None:
            self.data = {}

    @classmethod
    def from_path(cls, path: Path) -> "YamlDocument":
        return cls(path.read_text(encoding="utf-8"), str(path))

    def _index(self, node: yaml.Node, loc: Location) -> None:
        self._lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                child = (*loc, key.value)
                if key.value in seen:
                    self.duplicates.append((child, key.start_mark.line + 1))
                    continue
                seen.add(key.value)
                self._index(value, child)
                self._lines[child] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._index(item, (*loc, i))

    def line_of(self, loc: Sequence[int | str]) -> int:
        """The line of the deepest part of `loc` that appears in the file (1 if none does)."""
        parts = tuple(loc)
        while parts:
            if parts in self._lines:
                return self._lines[parts]
            parts = parts[:-1]
        return self._lines.get((), 1)

    def describe(self, error: ValidationError) -> str:
        """One line per problem: `file:line: field.path: message`."""
        lines = []
        for problem in error.errors():
            loc = tuple(p for p in problem["loc"] if not str(p).startswith("function-"))
            field = ".".join(str(p) for p in loc) or "(top level)"
            msg = problem["msg"]
            if problem["type"] == "extra_forbidden":
                msg = "unknown field"
            lines.append(f"{self.source}:{self.line_of(loc)}: {field}: {msg}")
        return "\n".join(lines)
