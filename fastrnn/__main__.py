"""`python -m fastrnn ...` is the `fastrnn` command (fastrnn/cli.py)."""
import sys

from .cli import main

sys.exit(main())
