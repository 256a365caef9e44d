"""`python -m fieldproof` is the `fieldproof` command."""

import sys

from fieldproof.cli import main

sys.exit(main())
