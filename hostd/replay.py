"""``hostd replay FILE``: placeholder replaced by the replay command."""
import click


@click.command()
def replay():
    """Feed a log file of events to a running daemon."""
    raise click.ClickException("not written yet")
