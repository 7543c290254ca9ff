"""``python -m sandbox SPEC_FILE``: run one module's sandbox."""
import sys

from .runtime import main

sys.exit(main())
