"""The ``hostd`` command line."""
from __future__ import annotations

import logging
import sys

import click

from .config import ConfigError, load_config

__all__ = ["main", "cli"]


@click.group()
def cli():
    """Insights host daemon: runs analytics modules in sandboxes and serves them over HTTP."""


@cli.command()
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="TOML file merged over the defaults (see conf/hostd.toml).")
@click.option("--modules", "modules", multiple=True, type=click.Path(file_okay=False),
              help="Folder of module folders (repeatable; replaces modules.paths).")
@click.option("--data-dir", help="Private folder for the store, sockets, module files and logs.")
@click.option("--bind", help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, help="TCP port (default 8000; 0 picks a free one).")
@click.option("--workers", type=int, help="Number of web worker processes.")
@click.option("--mongo-url", help="Use this MongoDB instead of the embedded store.")
def serve(config_path, modules, data_dir, bind, port, workers, mongo_url):
    """Start the store, the module sandboxes and the HTTP server."""
    from .daemon import Daemon, PortUnavailable
    from .store import DataDirLocked, StoreStartError
    overrides = {"modules.paths": list(modules) or None, "storage.data_dir": data_dir,
                 "server.bind": bind, "server.port": port, "server.workers": workers,
                 "storage.mongo_url": mongo_url}
    try:
        config = load_config(config_path, overrides)
    except ConfigError as err:
        raise click.UsageError(str(err)) from err
    logging.basicConfig(level=config["logging.level"],
                        format="%(asctime)s hostd[%(process)d] %(levelname)s %(name)s: %(message)s")
    try:
        status = Daemon(config).run()
    except (ConfigError, DataDirLocked, StoreStartError, PortUnavailable) as err:
        raise click.ClickException(str(err)) from err
    sys.exit(status)


def _register_commands() -> None:
    """Attach the commands that live in their own modules."""
    from .admin import cron, dlq, rebuild, status
    from .demo.command import demo
    from .replay import replay
    from .scaffold import new, test
    from .tokens import token
    for command in (replay, status, dlq, cron, rebuild, new, test, demo, token):
        cli.add_command(command)


def main():
    """Console-script entry point."""
    _register_commands()
    cli()
