import sys

from alpagasus.training.cli import main

sys.exit(main())
