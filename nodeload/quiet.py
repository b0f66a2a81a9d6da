"""Deprecation notices of nodeload's dependencies, kept off a nodeload user's screen.

asyncssh still names DSA, which today's cryptography deprecates: importing it prints ten
``CryptographyDeprecationWarning`` lines before any output of nodeload's, about code nodeload
never runs and its user cannot change. Only that category, and only as issued from those
modules, is silenced (the filter matches the module a warning is attributed to); every other
warning, nodeload's own included, shows as before. Whoever asks for warnings (``python -W``,
``PYTHONWARNINGS``, pytest's ``-W``) gets them all.
"""

from __future__ import annotations

import sys
import warnings

# (warning category, as "module.Class"; modules it is silenced from, a regular expression)
QUIETED = (("cryptography.utils.CryptographyDeprecationWarning", r"(asyncssh|paramiko)(\.|$)"),)


def quiet_dependencies() -> None:
    """Install the filters of :data:`QUIETED`, unless warnings were asked for (``-W``)."""
    import importlib

    if sys.warnoptions:
        return
    for category_path, modules in QUIETED:
        module_name, _, name = category_path.rpartition(".")
        try:
            category = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError):  # that dependency is not installed: nothing to say
            continue
        warnings.filterwarnings("ignore", category=category, module=modules, append=False)


def warning_filter_lines() -> list[str]:
    """The same filters as pytest ``filterwarnings`` lines (for the pytest plugin)."""
    return [f"ignore::{category}:{modules}" for category, modules in QUIETED]
