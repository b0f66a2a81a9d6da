"""``python -m nodeload``."""

import sys

from nodeload.cli import main

sys.exit(main())
