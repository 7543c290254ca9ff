"""Ingest: events through POST /event to queued handlers, vs. the store's ceiling and Celery.

Starts ``hostd serve`` (embedded store) with the three modules of
``bench/ingest_modules/`` and measures, several times, alternating the order:

(a) **Throughput**: N edX-like events (new ones each run) are POSTed to
    ``/event`` as JSON lists of ``--batch`` events by ``--clients`` threads; the
    clock stops when the queued handler of each of the three modules has
    handled all N (``handled`` in ``GET /modules``; the handlers' own totals are
    checked with their queries afterwards). Each handler folds its batch into
    ONE ``bulk_write`` of ``$inc`` upserts (per user; per course and event type;
    per user and course) plus a total. The ceiling: raw pymongo ``insert_many``
    of the same events, same batches and threads, into the same store (URL from
    ``<data-dir>/store.url``, database ``bench_ceiling``), with the default
    write concern and, for information, with ``j=True`` as the event log uses
    (database ``bench_ceiling_j``: nx keeps a write concern per database).
    Target: ours >= 0.5x the ``insert_many`` ceiling.
(b) **Celery + Redis** doing the same work one task per event: a
    ``redis-server`` on a free loopback port is broker and result backend, a
    worker (``--pool prefork --concurrency 2``) runs ``bench/celery_ingest.py``,
    whose task does one ``$inc`` upsert per event in the same store (database
    ``bench_celery_<run>``); the producer sends N ``.delay()`` calls and the
    clock stops when the counts sum to N. Skipped (with the reason) when celery,
    redis or redis-server is missing, or with ``--skip-celery``.
(c) **Realtime latency**: a second hostd with ``bench/realtime_modules/rt_probe``
    (one ``@event_handler(mode="realtime")`` doing one ``$inc``); sequential
    ``POST /event`` of one event each, after a warm-up; p50/p99. Target p50 < 10 ms.
    ``200`` means the answer waited for the realtime handler; ``202`` means it
    did not (realtime delivery not there), so the figure is not meaningful.

Prints the per-run values and the medians. A run of the defaults takes about
two to four minutes on a 2-core machine; the numbers are noisy when other work
runs on the machine.

    python bench/ingest.py [--runs 3] [--events 20000] [--clients 3] [--skip-celery]
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pymongo

from hostd.store import module_db_name

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
INGEST_MODULES = {"ingest_a": "ingest_a_total", "ingest_b": "ingest_b_total", "ingest_c": "ingest_c_total"}
EVENT_TYPES = ["play_video", "pause_video", "seek_video", "load_video", "problem_check",
               "problem_show", "page_close", "edx.course.enrollment.activated"]
COURSES = ["course-v1:MITx+6.002x+2026_T1", "course-v1:HarvardX+CS50+2026", "course-v1:edX+DemoX+Demo_Course",
           "course-v1:UQx+Think101x+1T2026", "course-v1:BerkeleyX+CS169.1x+3T2025"]
POLL_S = 0.05


# -- processes and HTTP ---------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 30.0):
    """:returns: ``(status, decoded JSON or None)`` of one request (a fresh connection, as gunicorn closes it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        data = answer.read()
        try:
            return answer.status, json.loads(data) if data else None
        except ValueError:
            return answer.status, None
    finally:
        conn.close()


HOSTD_SETTINGS = {"on": True}  # storage.journal and events.batch_size, from the command line


def start_hostd(modules_dir: Path, data_dir: str, port: int, workers: int) -> subprocess.Popen:
    config = os.path.join(data_dir, "hostd.toml")
    with open(config, "w") as handle:
        handle.write(f"[storage]\njournal = {'true' if HOSTD_SETTINGS['on'] else 'false'}\n")
        handle.write(f"[events]\nbatch_size = {HOSTD_SETTINGS.get('batch', 2000)}\n")
    command = [sys.executable, "-c", "from hostd.cli import main; main()", "serve", "--config", config,
               "--modules", str(modules_dir), "--data-dir", data_dir,
               "--port", str(port), "--workers", str(workers)]
    output = open(os.path.join(data_dir, "hostd.out"), "wb")
    # A session of its own, so a stuck hostd can be killed with everything it started.
    return subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(process: subprocess.Popen | None, timeout_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL of its process group if it does not end in time."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            process.kill()
        process.wait(10)


def wait_modules(port: int, names, process: subprocess.Popen, data_dir: str, timeout_s: float = 90.0) -> None:
    """Block until ``GET /modules`` shows every module of ``names`` running."""
    deadline = time.time() + timeout_s
    states = {}
    while time.time() < deadline:
        if process.poll() is not None:
            break
        try:
            status, body = http_json(port, "GET", "/modules", timeout=5)
            if status == 200 and body:
                states = {name: (body.get(name) or {}).get("state") for name in names}
                if all(state == "running" for state in states.values()):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    tail = Path(data_dir, "hostd.out").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"hostd did not get {sorted(names)} running (states {states}); its output:\n{tail}")


def store_url(data_dir: str, timeout_s: float = 30.0) -> str:
    path = Path(data_dir, "store.url")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.1)
    raise RuntimeError(f"{path} was not written")


# -- events -------------------------------------------------------------------

def make_events(count: int, users: int, seed: int) -> list[dict]:
    """:returns: ``count`` edX-tracking-log-like events, each with a fresh unique ``event_id``."""
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:12]
    start = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.timezone.utc)
    events = []
    for n in range(count):
        user = rng.randrange(users)
        course = COURSES[user % len(COURSES)] if rng.random() < 0.8 else rng.choice(COURSES)
        event_type = rng.choice(EVENT_TYPES)
        when = start + datetime.timedelta(milliseconds=n * 37 + rng.randrange(1000))
        kind = "problem" if "problem" in event_type else "video"
        block = f"block-v1:{course[10:]}+type@{kind}+block@{rng.randrange(40):032x}"
        payload = ({"id": block, "currentTime": round(rng.uniform(0, 900), 2), "speed": "1.0"}
                   if "video" in event_type else {"problem_id": block, "attempts": rng.randrange(1, 4),
                                                  "grade": rng.randrange(0, 3), "max_grade": 2})
        events.append({
            "event_id": f"bench-{tag}-{n}",
            "username": f"learner{user:05d}",
            "event_type": event_type,
            "event_source": "browser" if "video" in event_type else "server",
            "time": when.isoformat(),
            "course_id": course,
            "page": f"https://courses.example.org/courses/{course}/courseware/week{rng.randrange(1, 13)}/",
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0",
            "context": {"user_id": 1000 + user, "course_id": course, "org_id": course.split(":")[1].split("+")[0],
                        "path": "/event"},
            "event": payload,
        })
    return events


def batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_threads(work, items: list, threads: int) -> list:
    """Run ``work(item)`` over ``items`` from ``threads`` threads. :returns: the errors raised."""
    lock, errors = threading.Lock(), []
    pending = list(reversed(items))

    def loop():
        while True:
            with lock:
                if not pending:
                    return
                item = pending.pop()
            try:
                work(item)
            except Exception as err:  # reported, not fatal to the other threads
                with lock:
                    errors.append(err)

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors


# -- (a) throughput -------------------------------------------------------------

def handler_totals(client: pymongo.MongoClient) -> dict:
    """:returns: ``{module: total}``, each handler's own total doc, read straight from the store."""
    totals = {}
    for name in INGEST_MODULES:
        doc = client[module_db_name(name)]["counts"].find_one({"_id": "total|all"})
        totals[name] = int(doc["count"]) if doc else 0
    return totals


def module_lags(port: int) -> dict:
    """:returns: ``{module: lag}`` from ``GET /modules``."""
    status, body = http_json(port, "GET", "/modules", timeout=30)
    if status != 200:
        raise RuntimeError(f"GET /modules answered {status}")
    return {name: int(body[name].get("lag") or 0) for name in INGEST_MODULES}


def measure_ours(port: int, client: pymongo.MongoClient, events: list[dict], batch: int, clients: int,
                 timeout_s: float) -> dict:
    """POST the events and wait until every queued handler's total counts them all.

    Completion is read from the handlers' total docs in the store (a cheap ``find_one``
    every 50 ms); ``GET /modules`` is sampled alongside for the handlers' lag.
    """
    bodies = [(json.dumps(chunk).encode(), len(chunk)) for chunk in batches(events, batch)]
    expected = {name: total + len(events) for name, total in handler_totals(client).items()}

    def post(item):
        body, count = item
        status, answer = http_json(port, "POST", "/event", body, timeout=120)
        if status not in (200, 202) or (answer or {}).get("accepted") != count:
            raise RuntimeError(f"POST /event answered {status}: {answer}")

    result: dict = {}
    samples: list = []
    done = threading.Event()

    def sample_lag():
        while not done.is_set():
            try:
                samples.append((time.perf_counter() - t0, module_lags(port)))
            except (OSError, RuntimeError, KeyError, ValueError):
                pass  # a missed sample only thins the timeline
            done.wait(0.2)

    t0 = time.perf_counter()
    posting = threading.Thread(target=lambda: result.update(errors=run_threads(post, bodies, clients)), daemon=True)
    sampler = threading.Thread(target=sample_lag, daemon=True)
    posting.start()
    sampler.start()
    ingest_s = None
    try:
        while True:
            time.sleep(POLL_S)
            totals = handler_totals(client)
            now = time.perf_counter() - t0
            if ingest_s is None and not posting.is_alive():
                ingest_s = now
                done_at_ingest = min(totals[name] - (expected[name] - len(events)) for name in totals)
                if result["errors"]:
                    raise RuntimeError(f"{len(result['errors'])} POSTs failed, first: {result['errors'][0]}")
            if ingest_s is not None and all(totals[name] >= expected[name] for name in totals):
                total_s = now
                break
            if now > timeout_s:
                raise RuntimeError(f"not processed after {timeout_s:.0f} s: {totals}, expected {expected}")
    finally:
        done.set()
        sampler.join(30)
    return {"rate": len(events) / total_s, "total_s": total_s, "ingest_s": ingest_s,
            "ingest_rate": len(events) / ingest_s, "done_at_ingest": done_at_ingest,
            "drain_rate": (len(events) - done_at_ingest) / max(total_s - ingest_s, 1e-9),
            "max_lag": max((max(lags.values()) for _, lags in samples), default=0), "samples": samples}


def check_totals(port: int, expected: int) -> list[str]:
    """:returns: the problems found comparing each handler's own total with ``expected``."""
    problems = []
    for module, query in INGEST_MODULES.items():
        status, total = http_json(port, "GET", f"/query/{query}")
        if status != 200 or total != expected:
            problems.append(f"{module}: /query/{query} answered {status} {total!r}, expected {expected}")
    return problems


def measure_ceiling(client: pymongo.MongoClient, events: list[dict], batch: int, clients: int,
                    collection: str, journal: bool) -> float:
    """:returns: events/s of raw ``insert_many`` of the events, in batches, from ``clients`` threads."""
    # Separate databases: on the embedded store, a write concern sticks to the database it was used on.
    if journal:
        coll = client["bench_ceiling_j"].get_collection(collection, write_concern=pymongo.WriteConcern(w=1, j=True))
    else:
        coll = client["bench_ceiling"][collection]
    chunks = [[dict(e) for e in chunk] for chunk in batches(events, batch)]  # insert_many adds _id
    t0 = time.perf_counter()
    errors = run_threads(lambda chunk: coll.insert_many(chunk, ordered=True), chunks, clients)
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"insert_many failed: {errors[0]}")
    return len(events) / elapsed


def lag_timeline(samples, points: int = 12) -> str:
    """:returns: a few ``t: lag`` points of one run (max lag over the three handlers)."""
    if not samples:
        return "(no sample)"
    step = max(1, len(samples) // points)
    picked = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    return "  ".join(f"{t:.1f}s:{max(lags.values())}" for t, lags in picked)


# -- (b) Celery -------------------------------------------------------------------

def celery_missing() -> str | None:
    """:returns: why the Celery comparison cannot run, or None."""
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError as err:
        return f"{err.name} is not installed (pip install celery redis)"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    return None


def celery_sum(client: pymongo.MongoClient, db_name: str) -> int:
    result = list(client[db_name]["counts"].aggregate([{"$group": {"_id": None, "n": {"$sum": "$count"}}}]))
    return int(result[0]["n"]) if result else 0


def wait_celery(client, db_name: str, expected: int, timeout_s: float, worker) -> float:
    """:returns: the ``time.perf_counter()`` at which the counts summed to ``expected``."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if celery_sum(client, db_name) >= expected:
            return time.perf_counter()
        if worker.poll() is not None:
            raise RuntimeError(f"the celery worker exited ({worker.returncode})")
        time.sleep(POLL_S)
    raise RuntimeError(f"celery: {celery_sum(client, db_name)} of {expected} processed after {timeout_s:.0f} s")


def run_celery(url: str, client: pymongo.MongoClient, runs: int, count: int, users: int, tmp: str) -> dict:
    """Start redis and a worker, then send ``count`` tasks per run. :returns: per-run rates."""
    import redis
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    env = dict(os.environ, INSIGHTS_BENCH_REDIS_URL=redis_url, INSIGHTS_BENCH_STORE_URL=url,
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    server = worker = None
    log_file = open(os.path.join(tmp, "celery.out"), "wb")
    try:
        server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", tmp], stdout=log_file, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        ping = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.time() + 20
        while True:
            try:
                ping.ping()
                break
            except redis.ConnectionError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.1)
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "celery_ingest", "worker",
                                   "--pool", "prefork", "--concurrency", "2", "--loglevel", "warning",
                                   "--without-gossip", "--without-mingle", "--without-heartbeat"],
                                  cwd=HERE, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        os.environ["INSIGHTS_BENCH_REDIS_URL"] = redis_url  # for the producer's import below
        sys.path.insert(0, str(HERE))
        import celery_ingest
        task = celery_ingest.count_event
        warm = make_events(200, users, seed=-1)
        for event in warm:
            task.delay(event, "bench_celery_warmup")
        wait_celery(client, "bench_celery_warmup", len(warm), 90, worker)
        rates = []
        for run in range(runs):
            events = make_events(count, users, seed=10_000 + run)
            db_name = f"bench_celery_{run}"
            t0 = time.perf_counter()
            for event in events:
                task.delay(event, db_name)
            sent = time.perf_counter()
            done_at_sent = celery_sum(client, db_name)
            done = wait_celery(client, db_name, count, max(120, count / 100), worker)
            rates.append({"rate": count / (done - t0), "enqueue_rate": count / (sent - t0),
                          "drain_rate": (count - done_at_sent) / max(done - sent, 1e-9)})
            print(f"  celery run {run + 1}: {rates[-1]['rate']:.0f} tasks/s (the .delay() calls alone"
                  f" {rates[-1]['enqueue_rate']:.0f}/s, {done_at_sent} done by then; the rest drained at"
                  f" {rates[-1]['drain_rate']:.0f}/s)", flush=True)
        return {"runs": rates}
    finally:
        stop_process(worker, 20)
        stop_process(server, 10)
        log_file.close()


# -- (c) realtime latency ---------------------------------------------------------

def run_realtime(runs: int, requests: int, workers: int, users: int) -> dict:
    data_dir = tempfile.mkdtemp(prefix="insights-bench-rt-")
    port = free_port()
    hostd = None
    try:
        hostd = start_hostd(HERE / "realtime_modules", data_dir, port, workers)
        wait_modules(port, ["rt_probe"], hostd, data_dir)
        bodies = [json.dumps(e).encode() for e in make_events(50 + runs * requests, users, seed=99)]
        statuses: dict = {}
        failures = 0

        def post(body) -> float:
            nonlocal failures
            t0 = time.perf_counter()
            status, _ = http_json(port, "POST", "/event", body, timeout=30)
            elapsed = time.perf_counter() - t0
            statuses[status] = statuses.get(status, 0) + 1
            if status not in (200, 202):
                failures += 1
                if failures > 5:
                    raise RuntimeError(f"POST /event keeps failing ({statuses})")
            return elapsed

        for body in bodies[:50]:
            post(body)
        statuses.clear()
        results = []
        for run in range(runs):
            chunk = bodies[50 + run * requests: 50 + (run + 1) * requests]
            times = sorted(post(body) for body in chunk)
            results.append({"p50": statistics.median(times), "p99": times[min(len(times) - 1, int(len(times) * 0.99))]})
            print(f"  realtime run {run + 1}: p50 {results[-1]['p50'] * 1e3:.2f} ms, "
                  f"p99 {results[-1]['p99'] * 1e3:.2f} ms", flush=True)
        deadline = time.time() + 10
        while time.time() < deadline:  # the handler saw them all (at once if realtime, soon if queued)
            status, total = http_json(port, "GET", "/query/rt_probe_total")
            if total == len(bodies):
                break
            time.sleep(0.1)
        return {"runs": results, "statuses": statuses, "handled": total, "sent": len(bodies)}
    finally:
        stop_process(hostd)
        shutil.rmtree(data_dir, ignore_errors=True)


# -- main -------------------------------------------------------------------------

def median(values) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=20000, help="events per run (a) and tasks per run (b)")
    parser.add_argument("--batch", type=int, default=500, help="events per POST and per insert_many")
    parser.add_argument("--clients", type=int, default=3, help="concurrent client threads in (a)")
    parser.add_argument("--users", type=int, default=300, help="distinct usernames in the events")
    parser.add_argument("--workers", type=int, default=4, help="hostd web workers")
    parser.add_argument("--celery-events", type=int, default=None, help="tasks per Celery run (default: --events)")
    parser.add_argument("--rt-requests", type=int, default=300, help="requests per realtime run (c)")
    parser.add_argument("--skip-celery", action="store_true")
    parser.add_argument("--skip-realtime", action="store_true")
    parser.add_argument("--no-journal", action="store_true",
                        help="run hostd with storage.journal = false (no disk sync per logged event)")
    parser.add_argument("--delivery-batch", type=int, default=2000, help="hostd events.batch_size")
    parser.add_argument("--json", dest="json_path", help="also write the medians to this JSON file")
    args = parser.parse_args()
    HOSTD_SETTINGS["on"] = not args.no_journal
    HOSTD_SETTINGS["batch"] = args.delivery_batch
    print(f"ingest benchmark: runs={args.runs} events={args.events} batch={args.batch} clients={args.clients}"
          f" users={args.users} workers={args.workers} cpus={os.cpu_count()}", flush=True)

    data_dir = tempfile.mkdtemp(prefix="insights-bench-ingest-")
    port = free_port()
    hostd = client = None
    ours, ceiling, ceiling_j, problems, celery, skipped = [], [], [], [], None, None
    try:
        hostd = start_hostd(HERE / "ingest_modules", data_dir, port, args.workers)
        wait_modules(port, INGEST_MODULES, hostd, data_dir)
        url = store_url(data_dir)
        client = pymongo.MongoClient(url, serverSelectionTimeoutMS=10000)
        # warm-up: every path once (web workers, ingest, delivery, sandboxes, store files)
        warm = make_events(2 * args.batch, args.users, seed=-2)
        measure_ours(port, client, warm, args.batch, args.clients, 120)
        measure_ceiling(client, warm, args.batch, args.clients, "warmup", journal=False)
        sent = len(warm)

        print("(a) throughput", flush=True)
        for run in range(args.runs):
            events = make_events(args.events, args.users, seed=run)
            first_ours = run % 2 == 0
            if not first_ours:
                ceiling.append(measure_ceiling(client, events, args.batch, args.clients, f"r{run}", False))
                ceiling_j.append(measure_ceiling(client, events, args.batch, args.clients, f"j{run}", True))
            ours.append(measure_ours(port, client, events, args.batch, args.clients, max(180, args.events / 100)))
            sent += len(events)
            problems += check_totals(port, sent)
            if first_ours:
                ceiling.append(measure_ceiling(client, events, args.batch, args.clients, f"r{run}", False))
                ceiling_j.append(measure_ceiling(client, events, args.batch, args.clients, f"j{run}", True))
            last = ours[-1]
            print(f"  run {run + 1}: ours {last['rate']:.0f} ev/s (POSTs acked after {last['ingest_s']:.2f} s, when"
                  f" every handler had {last['done_at_ingest']}; processed after {last['total_s']:.2f} s;"
                  f" max lag {last['max_lag']}), insert_many {ceiling[-1]:.0f} ev/s, j=True {ceiling_j[-1]:.0f} ev/s",
                  flush=True)
            print(f"    while POSTing, handlers kept up at {last['done_at_ingest'] / last['ingest_s']:.0f} ev/s;"
                  f" after, they drained at {last['drain_rate']:.0f} ev/s (each)", flush=True)
            print(f"    lag (max of 3 handlers) over time: {lag_timeline(last['samples'])}", flush=True)

        if args.skip_celery:
            skipped = "--skip-celery"
        else:
            skipped = celery_missing()
        if skipped:
            print(f"(b) Celery + Redis skipped: {skipped}", flush=True)
        else:
            print("(b) Celery + Redis, one task per event", flush=True)
            try:
                celery = run_celery(url, client, args.runs, args.celery_events or args.events, args.users, data_dir)
            except Exception as err:  # report and go on with (c)
                skipped = f"failed: {err}"
                print(f"(b) Celery + Redis {skipped}; see {data_dir}/celery.out", flush=True)
                tail = Path(data_dir, "celery.out")
                if tail.exists():
                    print(tail.read_text(errors="replace")[-2000:], flush=True)
    finally:
        if client is not None:
            client.close()
        stop_process(hostd)
        shutil.rmtree(data_dir, ignore_errors=True)

    realtime = None
    if not args.skip_realtime:
        print("(c) realtime latency, one event per POST, sequential", flush=True)
        realtime = run_realtime(args.runs, args.rt_requests, args.workers, args.users)

    # -- report -------------------------------------------------------------------
    ours_rate = median(r["rate"] for r in ours)
    ceiling_rate = median(ceiling)
    print()
    print(f"medians of {args.runs} runs; events={args.events} batch={args.batch} clients={args.clients}"
          f" users={args.users}")
    rows = [("(a) POST /event -> 3 queued handlers", ours_rate, [r["rate"] for r in ours], "events/s"),
            ("    POSTs acked (logged), same runs", median(r["ingest_rate"] for r in ours),
             [r["ingest_rate"] for r in ours], "events/s"),
            ("    insert_many ceiling (w=1)", ceiling_rate, ceiling, "events/s"),
            ("    insert_many, j=True (as the log)", median(ceiling_j), ceiling_j, "events/s")]
    if celery:
        rows.append(("(b) Celery + Redis, 1 task per event", median(r["rate"] for r in celery["runs"]),
                     [r["rate"] for r in celery["runs"]], "tasks/s"))
        rows.append(("    the .delay() calls alone", median(r["enqueue_rate"] for r in celery["runs"]),
                     [r["enqueue_rate"] for r in celery["runs"]], "tasks/s"))
    print(f"{'':40} {'median':>9}  {'unit':9} runs")
    for label, value, values, unit in rows:
        print(f"{label:40} {value:9.0f}  {unit:9} {' '.join(f'{v:.0f}' for v in values)}")
    ratio = ours_rate / ceiling_rate
    print(f"ratio ours / insert_many ceiling: {ratio:.2f}x (target >= 0.5x: {'met' if ratio >= 0.5 else 'NOT met'})")
    print(f"time to processed, median: {median(r['total_s'] for r in ours):.2f} s, of which POSTing"
          f" {median(r['ingest_s'] for r in ours):.2f} s; max handler lag median"
          f" {median(r['max_lag'] for r in ours):.0f} events; handlers drained the rest at"
          f" {median(r['drain_rate'] for r in ours):.0f} ev/s each once the POSTs were done")
    if celery:
        print(f"ratio ours / Celery+Redis: {ours_rate / median(r['rate'] for r in celery['runs']):.1f}x")
    else:
        print(f"(b) Celery + Redis: skipped ({skipped})")
    if problems:
        print("handler totals did not match:\n  " + "\n  ".join(problems))
    if realtime:
        p50 = median(r["p50"] for r in realtime["runs"])
        p99 = median(r["p99"] for r in realtime["runs"])
        print(f"(c) realtime POST /event, 1 event: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms"
              f" (target p50 < 10 ms: {'met' if p50 < 0.010 else 'NOT met'}); answers {realtime['statuses']};"
              f" handler saw {realtime['handled']} of {realtime['sent']}")
        if set(realtime["statuses"]) != {200}:
            print("    not every answer was 200: the answer did not wait for the realtime handler"
                  " (202: realtime delivery not implemented yet), so this figure is not meaningful yet")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({
            "journal": not args.no_journal, "ours": ours_rate, "ceiling": ceiling_rate,
            "ceiling_j": median(ceiling_j), "problems": problems,
            "realtime": None if not realtime else {
                "p50": median(r["p50"] for r in realtime["runs"]), "p99": median(r["p99"] for r in realtime["runs"]),
                "statuses": {str(k): v for k, v in realtime["statuses"].items()}}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
