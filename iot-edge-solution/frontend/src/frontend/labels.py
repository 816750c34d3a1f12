"""The objects a user can enrol: the classes of the classifier's model, from its labels.txt."""

from __future__ import annotations

import difflib
from pathlib import Path

from frontend.errors import UnknownObjectError


class ObjectCatalog:
    """Classes of one model. A label line may hold comma-separated synonyms (`tabby, tabby cat`); the classifier
    matches a requested class against any of them, case-insensitively, so each synonym can be enrolled."""

    def __init__(self, labels: list[str], source: str = "labels") -> None:
        self.source = source
        self._names: dict[str, str] = {}
        for line in labels:
            for synonym in line.split(","):
                name = normalize(synonym)
                if name:
                    self._names.setdefault(name, synonym.strip())
        if not self._names:
            raise UnknownObjectError(f"{source} holds no class names")

    @classmethod
    def from_file(cls, path: Path) -> ObjectCatalog:
        """Read a labels.txt (one class per line)."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UnknownObjectError(f"cannot read the model's labels from {path}: {e}") from e
        return cls(text.splitlines(), source=str(path))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize(name) in self._names

    def __len__(self) -> int:
        return len(self._names)

    def resolve(self, name: str) -> str:
        """The enrolable form of `name` (trimmed, lower case); UnknownObjectError with close matches otherwise."""
        key = normalize(name)
        if key in self._names:
            return key
        close = difflib.get_close_matches(key, list(self._names), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownObjectError(
            f"unknown object {name.strip()!r}: the classifier's model ({self.source}) has no such class{hint}"
        )


def normalize(name: str) -> str:
    """Case and spacing do not matter in class names."""
    return " ".join(name.split()).lower()
