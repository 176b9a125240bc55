"""``python -m cnnviz``: same as the ``cnnviz`` command."""

import sys

from .cli import main

sys.exit(main())
