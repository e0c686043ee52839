"""``python -m attnkit.bench [--quick] [--json PATH] [--case NAME ...]``."""

import sys

from attnkit.bench.runner import main

sys.exit(main())
