"""``python -m infinitetalk_cli``: the same command without the installed console script."""

from infinitetalk_cli.main import app

app(prog_name="infinitetalk")
