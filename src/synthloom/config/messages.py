"""Validation errors as users read them: one line per problem with its dotted path, and "did you mean"
for a key in the wrong section or a typo."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from .sections import UNION_SECTIONS


def format_validation_error(exc: ValidationError, root: type[BaseModel]) -> str:
    """Every problem of `exc` on a line of its own, with its dotted path; `root`: the model validated (its
    keys are where "did you mean" looks)."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = _dotted(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown key{_did_you_mean(err['loc'], root)}")
        elif err["type"] in ("value_error", "assertion_error"):
            text = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
            for line in text.splitlines():  # cross-field checks carry their own paths
                lines.append(f"{loc}.{line}" if loc and not line.startswith(loc) else line)
        elif err["type"] == "union_tag_invalid":
            tag, tags = str(err["ctx"]["tag"]), err["ctx"]["expected_tags"].replace("'", "").split(", ")
            close = difflib.get_close_matches(tag, tags, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            lines.append(
                f"{loc}.{err['ctx']['discriminator'].strip(chr(39))}: unknown {tag!r}; {hint}one of {', '.join(tags)}"
            )
        elif err["type"] == "missing":
            lines.append(f"{loc}: required")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            lines.append(f"{loc}: {msg}{shown}")
    n = len(lines)
    return f"invalid config ({n} problem{'s' if n != 1 else ''}):\n  " + "\n  ".join(lines)


def _dotted(loc: tuple) -> str:
    # discriminated unions put the tag in the path ('model', 'lstm', 'x'): drop it
    parts = [_shown(p) for i, p in enumerate(loc) if not (i == 1 and p in UNION_SECTIONS.get(loc[0], ()))]
    return ".".join(parts)


def _shown(part: Any) -> str:
    # a key holding a line break (or a tab) would split one problem over several lines
    text = str(part)
    return repr(text) if any(c in text for c in "\n\r\t") else text


def section_classes(name: str, root: type[BaseModel]) -> list[type[BaseModel]]:
    """The section class(es) a top-level key holds: one, every variant of a union, or none for a plain value."""
    if name in UNION_SECTIONS:
        return list(UNION_SECTIONS[name].values())
    field = root.model_fields.get(name)
    cls = field.annotation if field is not None else None
    return [cls] if isinstance(cls, type) and issubclass(cls, BaseModel) else []


def _section_fields(section_loc: tuple, root: type[BaseModel]) -> set[str]:
    if not section_loc:
        return set(root.model_fields)
    name = str(section_loc[0])
    if len(section_loc) > 1 and section_loc[1] in UNION_SECTIONS.get(name, ()):
        return set(UNION_SECTIONS[name][section_loc[1]].model_fields)
    return {key for cls in section_classes(name, root) for key in cls.model_fields}


def _all_dotted_fields(root: type[BaseModel]) -> dict[str, list[str]]:
    """leaf name -> dotted paths, to point a key put in the wrong section to the right one."""
    index: dict[str, list[str]] = {}
    for section in root.model_fields:
        classes = section_classes(section, root)
        for leaf in dict.fromkeys(k for cls in classes for k in cls.model_fields):
            index.setdefault(leaf, []).append(f"{section}.{leaf}")
        if not classes:
            index.setdefault(section, []).append(section)
    return index


def _did_you_mean(loc: tuple, root: type[BaseModel]) -> str:
    key = str(loc[-1])
    if len(loc) == 3 and loc[1] in UNION_SECTIONS.get(loc[0], ()):  # a key of another variant of this union
        users = [tag for tag, cls in UNION_SECTIONS[loc[0]].items() if key in cls.model_fields]
        if users:
            return f" for {loc[0]} {loc[1]!r} (only {', '.join(users)} use it)"
    elsewhere = [p for p in _all_dotted_fields(root).get(key, []) if p != _dotted(loc)]
    if elsewhere:  # the exact key of another section beats a look-alike in this one
        return f"; did you mean '{elsewhere[0]}'?"
    close = difflib.get_close_matches(key, sorted(_section_fields(loc[:-1], root)), n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return ""
