"""``python -m cloud.greengrass build ...`` (see :mod:`cloud.greengrass.cli`)."""

from .cli import main

raise SystemExit(main())
