"""`python -m codec` is the `codec` command."""

import sys

from codec.cli import main

sys.exit(main())
