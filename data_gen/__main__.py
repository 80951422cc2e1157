"""``python -m data_gen run ...``: see data_gen/cli.py."""

import sys

from data_gen.cli import main

sys.exit(main())
