"""`python -m compressor.hubserver`: the same as `compressor serve-hub` (see server.main)."""

import sys

from compressor.hubserver.server import main

sys.exit(main())
