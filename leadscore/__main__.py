"""``python -m leadscore`` is the ``leadscore`` command."""

from __future__ import annotations

import sys

from leadscore.cli import main

if __name__ == "__main__":
    sys.exit(main())
