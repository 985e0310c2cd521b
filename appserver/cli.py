"""``python -m appserver.cli``: the ``zasgi`` command (appserver/commands/, one module per subcommand)."""

from .commands import main

if __name__ == "__main__":
    main()
