"""`python -m app.cli`: the same as the `cta` console script."""

from app.cli import main

main()
