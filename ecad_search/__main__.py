"""`python -m ecad_search` is the `ecad-search` command."""

from .cli import main

main()
