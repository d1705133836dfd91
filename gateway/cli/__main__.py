"""`python -m gateway.cli`: the `jisr` command."""

from gateway.cli.main import main

raise SystemExit(main())
