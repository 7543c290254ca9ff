"""The ``hostd demo`` command: write a synthetic course stream and its truth, and optionally load it."""
from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

import click

from ..admin import daemon_options
from ..logfile import LogEvent
from ..replay import ReplayError, Sender
from .simulate import DEFAULT_COURSE_ID, DEFAULT_START, Demo, generate

__all__ = ["demo", "write_demo", "load_events", "EVENTS_FILE", "TRUTH_FILE"]

EVENTS_FILE = "demo_events.log"
TRUTH_FILE = "demo_truth.json"
_COURSE_ID = re.compile(r"^course-v1:[A-Za-z0-9_.-]+\+[A-Za-z0-9_.-]+\+[A-Za-z0-9_.-]+$")


def write_demo(result: Demo, out: Path) -> tuple[Path, Path]:
    """Write the events (one JSON object per line, readable by ``hostd replay``) and the truth.

    :param result: what :func:`~hostd.demo.generate` returned.
    :param out: the folder to write into (created if missing).
    :returns: the paths of the events file and of the truth file.
    """
    out.mkdir(parents=True, exist_ok=True)
    events_path, truth_path = out / EVENTS_FILE, out / TRUTH_FILE
    with open(events_path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(event, ensure_ascii=False) + "\n" for event in result.events)
    with open(truth_path, "w", encoding="utf-8") as handle:
        json.dump(result.truth, handle, indent=1, ensure_ascii=False)
        handle.write("\n")
    return events_path, truth_path


def load_events(events: list[dict], source: str, sender: Sender, batch_size: int, bar) -> Counter:
    """POST the events in batches, advancing a progress bar.

    :param events: the events, in order.
    :param source: the file they were written to, named in errors with line numbers.
    :param sender: where they go.
    :param batch_size: events per request.
    :param bar: a ``tqdm`` bar counting events.
    :returns: ``accepted``, ``duplicates`` (and ``late``) as the daemon counted them.
    :raises ReplayError: the daemon refused a batch or could not be reached.
    """
    counts = Counter()
    for start in range(0, len(events), batch_size):
        batch = [LogEvent(source, start + n + 1, event) for n, event in enumerate(events[start:start + batch_size])]
        counts.update(sender.send(batch))
        bar.update(len(batch))
    return counts


@click.command()
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same stream and truth.")
@click.option("--learners", type=click.IntRange(1, 1_000_000), default=300, show_default=True,
              help="Learners who enrol.")
@click.option("--weeks", type=click.IntRange(1, 52), default=6, show_default=True,
              help="Weeks the course runs (one chapter of videos and problems each).")
@click.option("--start", default=DEFAULT_START, show_default=True, help="First day of the course (YYYY-MM-DD, UTC).")
@click.option("--course-id", default=DEFAULT_COURSE_ID, show_default=True, help="course-v1:ORG+NUMBER+RUN")
@click.option("--out", "out", type=click.Path(file_okay=False), default=".", show_default=True,
              help=f"Folder for {EVENTS_FILE} and {TRUTH_FILE}.")
@click.option("--load", is_flag=True, help="Also POST the events to the daemon at --url.")
@daemon_options
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=500, show_default=True,
              help="Events per POST /event with --load.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
              help="Seconds to wait for the daemon's answer to a batch.")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar on stderr with --load (default: when stderr is a terminal).")
def demo(seed, learners, weeks, start, course_id, out, load, url, token, batch_size, timeout_s, progress):
    """Generate a synthetic edX course stream and the ground truth it was drawn from.

    Writes OUT/demo_events.log (tracking-log lines: enrolments, page views, video
    play/pause/seek/stop, problem_check with answers drawn from a 2PL item
    response model, sessions, dropout) and OUT/demo_truth.json (seconds watched,
    attempts, item parameters, counts, daily activity). With --load the events
    are also sent to a running hostd; loading twice is harmless (the daemon keeps
    each event once).
    """
    from tqdm import tqdm
    if not _COURSE_ID.match(course_id):
        raise click.BadParameter(f"{course_id!r} is not course-v1:ORG+NUMBER+RUN", param_hint="--course-id")
    if load and not re.match(r"https?://", url):
        raise click.BadParameter(f"{url!r} is not an http:// or https:// URL", param_hint="--url")
    try:
        date.fromisoformat(start)
    except ValueError:
        raise click.BadParameter(f"{start!r} is not a date (YYYY-MM-DD)", param_hint="--start") from None
    began = time.perf_counter()
    result = generate(seed=seed, learners=learners, weeks=weeks, start=start, course_id=course_id)
    generated_s = time.perf_counter() - began
    events_path, truth_path = write_demo(result, Path(out))
    counts = result.truth["counts"]
    click.echo(f"{len(result.events)} events in {generated_s:.2f} s ({len(result.events) / generated_s:.0f} events/s)"
               f" written to {events_path}")
    click.echo(f"truth written to {truth_path}: {counts['enrolled']} enrolled, {counts['active']} active, "
               f"{counts['watched']} watched a video, {counts['attempted']} attempted a problem, "
               f"{counts['passed']} passed")
    if not load:
        return
    sender = Sender(url, token, timeout_s)
    bar = tqdm(total=len(result.events), unit="ev", unit_scale=True, file=sys.stderr,
               disable=None if progress is None else not progress, desc="load")
    try:
        sent = load_events(result.events, str(events_path.resolve()), sender, batch_size, bar)
    except ReplayError as err:
        raise click.ClickException(f"{err}\nLoading again is safe (events already logged count as duplicates),"
                                   f" or feed the file with `hostd replay {events_path}`.") from None
    finally:
        bar.close()
        sender.close()
    click.echo(f"loaded into {url}: accepted {sent['accepted']}, duplicates {sent['duplicates']}")
    if sent["late"]:
        click.echo(f"realtime handlers late (504) for {sent['late']} request(s): the events are logged and "
                   "hostd retries the handlers")
