"""`python -m benchmarks`: run the suite (see benchmarks/cli.py)."""

from benchmarks.cli import main

raise SystemExit(main())
