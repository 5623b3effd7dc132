"""``python -m mosear ...``: the same as the ``mosear`` command (useful where scripts are not on PATH)."""

from mosear.cli import main

raise SystemExit(main())
