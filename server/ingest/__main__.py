"""``python -m server.ingest``: run one ingest worker (the same as ``fieldproof server ingest``)."""

import sys

from server.cli import main

sys.exit(main(["ingest", *sys.argv[1:]]))
