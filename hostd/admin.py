"""Admin commands that talk HTTP to a running daemon: ``hostd status``, ``hostd dlq``, ``hostd cron``."""
from __future__ import annotations

import json
import time

import click
import requests

__all__ = ["status", "dlq", "cron", "rebuild", "daemon_options", "daemon_request"]


def daemon_options(command):
    """Add ``--url`` and ``--token`` to a command."""
    command = click.option("--token", envvar="INSIGHTS_TOKEN", default=None,
                           help="Bearer token (or INSIGHTS_TOKEN).")(command)
    return click.option("--url", default="http://127.0.0.1:8000", show_default=True,
                        help="Base URL of the running hostd.")(command)


def daemon_request(method: str, url: str, path: str, token=None, **kwargs):
    """Send one request to the daemon. :returns: the decoded JSON answer.

    :raises click.ClickException: the daemon is unreachable or answered an error.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        answer = requests.request(method, url.rstrip("/") + path, headers=headers, timeout=30, **kwargs)
    except requests.RequestException as err:
        raise click.ClickException(f"cannot reach hostd at {url}: {err}") from err
    try:
        body = answer.json()
    except ValueError:
        body = None
    if answer.status_code >= 400:
        message = (body or {}).get("error", {}).get("message") if isinstance(body, dict) else None
        raise click.ClickException(f"{answer.status_code}: {message or answer.text[:200]}")
    return body


@click.command()
@daemon_options
def status(url, token):
    """Show every module's state, restarts, lag and dead letters."""
    modules = daemon_request("GET", url, "/modules", token)
    click.echo(f"{'module':24} {'state':11} {'pid':>7} {'restarts':>8} {'lag':>8} {'handled':>9} {'dead':>5}")
    for name, info in sorted(modules.items()):
        click.echo(f"{name:24} {info['state']:11} {info['pid'] or '-':>7} {info['restarts']:>8}"
                   f" {info['lag']:>8} {info['handled']:>9} {info['dead_letters']:>5}")
        if info.get("last_error") and info["state"] in ("failed", "crashloop"):
            click.echo("    " + info["last_error"].strip().splitlines()[-1])


@click.group()
def dlq():
    """Dead letters: events a module's handlers gave up on."""


@dlq.command("list")
@daemon_options
@click.argument("module")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def dlq_list(url, token, module, as_json):
    """List MODULE's dead letters."""
    letters = daemon_request("GET", url, f"/modules/{module}/dead_letters", token)
    if as_json:
        click.echo(json.dumps(letters, indent=2))
        return
    for letter in letters:
        click.echo(f"seq {letter['seq']}  {letter['handler']}  attempts={letter['attempts']}"
                   f"  {letter['status']}  {letter['error']}")
        click.echo("    " + json.dumps(letter["event"])[:200])
    click.echo(f"{len(letters)} dead letter(s)")


@dlq.command("retry")
@daemon_options
@click.argument("module")
def dlq_retry(url, token, module):
    """Send MODULE's dead letters back through their handlers."""
    answer = daemon_request("POST", url, f"/modules/{module}/dead_letters/retry", token)
    click.echo(f"retrying {answer['retrying']} dead letter(s); see `hostd dlq list {module}`")


@click.group()
def cron():
    """Modules' periodic tasks."""


@cron.command("run")
@daemon_options
@click.argument("module")
@click.argument("task")
def cron_run(url, token, module, task):
    """Run MODULE's cron TASK now and wait for it to finish."""
    answer = daemon_request("POST", url, f"/modules/{module}/cron/{task}/run", token)
    click.echo(f"{module}.{task} ran in {answer['seconds']} s; it returned {json.dumps(answer['result'])[:500]}")


@click.command()
@daemon_options
@click.argument("module")
@click.option("--handler", default=None, help="Only this handler (it must declare its collections).")
def rebuild(url, token, module, handler):
    """Drop MODULE's data and replay its handlers from the start of the log.

    Its views and queries answer 503 (rebuilding) until it has caught up.
    """
    from tqdm import tqdm
    params = {"handler": handler} if handler else {}
    started = daemon_request("POST", url, f"/modules/{module}/rebuild", token, params=params)
    click.echo(f"dropped {', '.join(started['dropped']) or 'nothing'}; replaying"
               f" {', '.join(started['handlers']) or 'no handler'} up to event {started['target']}")
    target = started["target"]
    with tqdm(total=target, unit="event", disable=None) as bar:
        while True:
            entry = daemon_request("GET", url, "/modules", token).get(module, {})
            positions = [entry.get("handlers", {}).get(h, {}).get("position") or 0 for h in started["handlers"]]
            done = min(positions, default=target)
            bar.update(max(0, min(done, target) - bar.n))
            if done >= target and not entry.get("rebuilding"):
                break
            time.sleep(0.2)
    click.echo(f"{module} rebuilt")
