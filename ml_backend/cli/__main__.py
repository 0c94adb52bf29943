"""`python -m ml_backend.cli` runs the `unsamv2` command."""

import sys

from ml_backend.cli import main

sys.exit(main())
