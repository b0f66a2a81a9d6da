"""``python -m nodeload.sandbox ARGS``: the same as ``nodeload sandbox ARGS`` (up, down, status,
compose, cluster).

The command line is run as a program of its own rather than imported: the command line depends
on this package, never this package on it.
"""

import os
import sys

os.execv(sys.executable, [sys.executable, "-m", "nodeload", "sandbox", *sys.argv[1:]])
