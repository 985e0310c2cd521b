"""``zasgi keygen PATH``: a CurveZMQ key pair for one process."""

from __future__ import annotations

import sys

import click

from wire import curve


@click.command("keygen")
@click.argument("path")
def command(path: str) -> None:
    """Write a CurveZMQ key pair: PATH.key (public) and PATH.key_secret (mode 0600); print the public key.

    Give PATH.key_secret to the process it belongs to (--curve-secret-key) and PATH.key to its peer:
    a worker's into the front end's --authorized-keys directory, the front end's as --curve-server-key.
    """
    try:
        public_file, secret_file, public = curve.keygen(path)
    except curve.KeyFileError as exc:
        click.echo(f"zasgi keygen: {exc}", err=True)
        sys.exit(1)
    click.echo(public.decode())
    click.echo(f"wrote {public_file} and {secret_file}", err=True)
