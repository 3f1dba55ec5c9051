"""`python -m transformer_fam.cli ...` is `fam ...` (torchrun starts it this way)."""

import sys

from . import main

sys.exit(main())
