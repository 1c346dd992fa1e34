"""``python -m attnspec`` is the same as the ``attnspec`` console script."""

import sys

from attnspec.cli import main

sys.exit(main())
