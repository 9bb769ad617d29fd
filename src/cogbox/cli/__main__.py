"""`python -m cogbox.cli`: the same as the `cogbox` command."""

from cogbox.cli import main

main()
