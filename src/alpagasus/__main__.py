"""`python -m alpagasus ...` is the `alpagasus` command."""

import sys

from alpagasus.core.cli import main

sys.exit(main())
