"""User code named in a config or on the command line: 'module:function' or 'file.py:function'.

    fn = load_callable("my_checks.py:is_valid", "--validator")

The current directory is searched for modules too (a console script's own sys.path does
not hold it), so `my_hooks:on_epoch` finds my_hooks.py beside the config.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError


def load_callable(spec: str | None, where: str) -> Callable[..., Any] | None:
    """Import the callable `spec` names; a ConfigError naming `where` if it cannot."""
    if spec is None:
        return None
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise ConfigError(f"{where}: expected 'module:function' or 'file.py:function', got {spec!r}")
    try:
        if target.endswith(".py"):
            path = Path(target)
            file_spec = importlib.util.spec_from_file_location(path.stem, path) if path.is_file() else None
            if file_spec is None or file_spec.loader is None:
                raise ImportError(f"no such file: {target}")
            module = importlib.util.module_from_spec(file_spec)
            file_spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:
                sys.path.append(os.getcwd())
            module = importlib.import_module(target)
        fn = getattr(module, name)
    except Exception as exc:  # the user's module ran and failed: whatever it raised, it cannot be used
        raise ConfigError(f"{where}: cannot load {spec!r} ({type(exc).__name__}: {exc})") from None
    if not callable(fn):
        raise ConfigError(f"{where}: {spec!r} is not callable")
    return fn
