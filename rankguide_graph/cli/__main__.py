"""``python -m rankguide_graph.cli`` = the ``rankguide`` script."""

import sys

from rankguide_graph.cli import main

sys.exit(main())
