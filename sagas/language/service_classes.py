"""Resolving the ``module:Class`` a flow names into its ``Service`` class.

A service class is imported only here: when a flow is first run (by the engine's service
registry), and when a flow is validated with ``check_services=True``
(:func:`sagas.language.loader.load_flow`), which asks :func:`service_handlers`. Problems (an
import that fails, a class that is not a ``Service``, a step naming a handler the class lacks)
raise :class:`~sagas.errors.DefinitionUnavailable`, one line each.

``module:Class`` is looked up on ``sys.path``, then in the working directory (where
``python -m`` looks first), so a ``shop.py`` in the directory ``saga`` runs in is found whether
it runs as a console script or as ``python -m``; the working directory is on ``sys.path`` only
while the module imports. The flow file's own directory is not searched.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import pkgutil
import sys
from collections.abc import Collection, Iterator
from typing import Any

from actors import Service

from ..errors import DefinitionUnavailable

__all__ = ["did_you_mean", "first_line", "import_service", "missing_handler", "service_handlers"]


def import_service(import_path: str) -> type[Service]:
    """The class named by ``package.module:Class``; ``DefinitionUnavailable`` if it fails.

    Every failure is one line: a missing module (with a close sibling module suggested), a
    module that does not compile or raises while it imports (even ``SystemExit``), a missing
    class (with a close name suggested), or an object that is not a ``Service`` class.
    """
    module_name, _, qualname = import_path.partition(":")
    obj: Any = _import_module(module_name, import_path)
    owner = repr(module_name)
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except Exception:
            names = [n for n in dir(obj) if not n.startswith("_")]
            raise DefinitionUnavailable(
                f"cannot import {import_path}: {owner} has no {part!r}"
                f"{did_you_mean(part, names)}") from None
        owner = repr(part)
    if not (isinstance(obj, type) and issubclass(obj, Service)):
        raise DefinitionUnavailable(
            f"{import_path} is not a Service class (subclass actors.Service and mark handlers "
            "with @handles)")
    return obj


def service_handlers(import_path: str) -> frozenset[str]:
    """The command names the ``Service`` class at ``import_path`` handles (its ``@handles``
    methods); ``DefinitionUnavailable`` (one line) when it cannot be imported or is not one."""
    return import_service(import_path).handler_names()


def missing_handler(service: str, import_path: str, handler: str,
                    handlers: Collection[str]) -> str:
    """What to say about a step naming ``handler`` that service ``service`` lacks."""
    hint = did_you_mean(handler, handlers) or \
        f" (it handles: {', '.join(sorted(handlers)) or 'nothing'})"
    return f"service {service!r} ({import_path}) has no handler {handler!r}{hint}"


def _import_module(module_name: str, import_path: str) -> Any:
    try:
        with _working_directory_importable():
            return importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        hint = _sibling_hint(module_name) if isinstance(exc, ModuleNotFoundError) \
            and exc.name == module_name else ""
        raise DefinitionUnavailable(
            f"cannot import {import_path}: {type(exc).__name__}: {first_line(exc)}{hint}"
        ) from None


@contextlib.contextmanager
def _working_directory_importable() -> Iterator[None]:
    """The working directory at the end of ``sys.path`` while a service module imports, unless
    it is already there (``python -m`` and ``python -c`` put it first). Installed modules win:
    a file in the working directory never shadows one."""
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed: nothing to add
        cwd = ""
    if "" in sys.path or cwd in sys.path or not cwd:
        yield
        return
    sys.path.append(cwd)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(cwd)


def _sibling_hint(module_name: str) -> str:
    """"; did you mean 'flows.shop'?" when the parent package has a module close to the name."""
    parent, _, leaf = module_name.rpartition(".")
    path = getattr(sys.modules.get(parent), "__path__", None) if parent else None
    if path is None:
        return ""
    siblings = [info.name for info in pkgutil.iter_modules(path)]
    close = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6)
    return f"; did you mean {parent + '.' + close[0]!r}?" if close else ""


def did_you_mean(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def first_line(exc: BaseException) -> str:
    """An exception's message on one line (at most 200 characters)."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    line = line or type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."
