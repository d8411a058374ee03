"""``python -m kvx``: see :mod:`kvx.cli`."""

from .cli import main

raise SystemExit(main())
