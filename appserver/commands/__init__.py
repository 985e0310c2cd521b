"""The ``zasgi`` command: one module per subcommand.

``run`` (everything on one machine), ``frontend``, ``appserver``, ``reload``, ``status``
(the workers each front end sees, from its admin endpoint), ``keygen``.

Side effects (logging setup, processes) live in these modules and in the supervisor only.
Every option also reads a ``ZASGI_*`` environment variable so containers need no wrapper
script, and a key of a ``--config`` TOML file (configfile.py): command line > environment >
file > defaults everywhere. Option names follow uvicorn's where the meaning is the same, so
switching is a rename of the command. The front end's options are declared once, in
wire/frontend_options.py: ``zasgi frontend`` and ``zasgi run`` build theirs from that table
and pass on what was given (appserver never imports frontend).

Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 boot error (front end or worker could
not start, handshake refused), 4 the app could not be loaded or its lifespan startup failed.
"""

from __future__ import annotations

import click

from wire import compiled

from . import appserver, frontend, keygen, reload, run, status


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="zasgi", message=f"%(prog)s %(version)s ({compiled.describe()})")
def main() -> None:
    """zasgi: an ASGI server split into an HTTP front end and app-server workers over ZeroMQ."""


for _module in (run, frontend, appserver, reload, status, keygen):
    main.add_command(_module.command)

__all__ = ["main"]
