"""Files that belong to another user, for tests of what nodeload must not trust.

What root running with another user's environment (``sudo -E``) meets: that user's
directories, in which they can swap anything for a link.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

try:
    OTHER_UID, OTHER_GID = pwd.getpwnam("nobody")[2:4]
except KeyError:
    OTHER_UID = OTHER_GID = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="gives files to another user: needs root")


def give_away(*paths: Path) -> None:
    """Make ``paths`` (links themselves, not their targets) belong to another user than this one."""
    for path in paths:
        os.chown(path, OTHER_UID, OTHER_GID, follow_symlinks=False)
