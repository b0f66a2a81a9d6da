"""Driving a real shell's completion of ``nodeload`` command lines."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

_BASH_DRIVER = r"""
eval "$(nodeload completion bash)"
line=$1
COMP_LINE=$line COMP_POINT=${#line} COMP_TYPE=9 COMP_KEY=9
read -ra COMP_WORDS <<< "$line"
[[ $line == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
function=$(complete -p nodeload | sed -E 's/.* -F ([^ ]+) .*/\1/')
"$function" nodeload "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


def bash(line: str, env: Mapping[str, str]) -> set[str]:
    """What bash's completion of ``line`` (the cursor at its end) offers."""
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", _BASH_DRIVER, "bash", line],
        env=dict(env),
        cwd=env.get("NODELOAD_TEST_DIR"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {word.strip() for word in done.stdout.splitlines() if word.strip()}
