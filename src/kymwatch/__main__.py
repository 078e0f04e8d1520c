"""Allow ``python -m kymwatch``."""

from kymwatch.cli import main

raise SystemExit(main())
