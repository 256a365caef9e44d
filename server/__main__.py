"""``python -m server migrate | ingest | api``: the server's command without the ``fieldproof`` wrapper."""

import sys

from server.cli import main

sys.exit(main())
