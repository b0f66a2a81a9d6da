"""Reading: the inventory file as bounded UTF-8 text, YAML loading, and telling YAML from INI."""

from __future__ import annotations

import stat
from pathlib import Path

import yaml

from nodeload.errors import NodeSourceError

# An inventory is text a person maintains; anything larger is a mistake or hostile.
MAX_INVENTORY_BYTES = 16 * 1024 * 1024


def _read(path: Path) -> str:
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise NodeSourceError(
                f"inventory {path} is a directory, which only Ansible reads: install ansible-core "
                "(pip install ansible-core), or give one inventory file"
            )
        if not stat.S_ISREG(info.st_mode):
            raise NodeSourceError(f"inventory {path} is not a regular file")
        if info.st_size > MAX_INVENTORY_BYTES:
            raise NodeSourceError(f"inventory {path} is larger than {MAX_INVENTORY_BYTES // 2**20} MiB")
        with path.open("rb") as file:
            data = file.read(MAX_INVENTORY_BYTES + 1)  # the file may grow after stat()
    except FileNotFoundError:
        raise NodeSourceError(f"inventory {path} does not exist") from None
    except OSError as exc:
        raise NodeSourceError(f"cannot read inventory {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_INVENTORY_BYTES:
        raise NodeSourceError(f"inventory {path} is larger than {MAX_INVENTORY_BYTES // 2**20} MiB")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NodeSourceError(f"inventory {path} is not UTF-8 text (byte {exc.start})") from None


def _load_yaml(text: str, source: Path) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise NodeSourceError(f"{source}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise NodeSourceError(f"{source}: YAML nested too deeply") from None
    # PyYAML lets constructor failures through raw, e.g. ValueError for 2001-13-01.
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        raise NodeSourceError(f"{source}: malformed YAML: {exc}") from None


def _sniff_yaml(text: str) -> dict[object, object] | None:
    """The document, when a file without a YAML extension is a YAML inventory.

    That is a mapping whose values are all group bodies (or a plugin configuration, to
    report it as such): an INI host line such as ``h note="a: b"`` also reads as a YAML
    mapping, but never as one of mappings.
    """
    lines = (line.strip() for line in text.split("\n"))
    first = next((line for line in lines if line and line[0] not in "#;"), "")
    if first.startswith("["):  # an INI section; also spares PyYAML a large INI file
        return None
    try:
        document = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError):
        return None
    if not isinstance(document, dict):
        return None
    if "plugin" in document or all(body is None or isinstance(body, dict) for body in document.values()):
        return document
    return None
