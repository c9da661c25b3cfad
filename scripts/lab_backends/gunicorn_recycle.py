"""gunicorn config for the reset lab's worker-recycling scenarios (`gunicorn -c` this file).

The gthread worker (or $PRL_WORKER_CLASS, e.g. uvicorn.workers.UvicornWorker, which counts
requests itself: worker.nr stays 0 there) keeps upstream connections alive; --max-requests
recycles it.  Server
hooks log, as JSON lines with sub-second wall-clock times, every response (with the
peer's address:port) and every worker exit, into $PRL_GUNICORN_LOG."""
import json
import os
import time

worker_class = os.environ.get("PRL_WORKER_CLASS", "gthread")
workers = 1
threads = 4
keepalive = 30
max_requests = int(os.environ.get("PRL_MAX_REQUESTS", "12"))
max_requests_jitter = 0
graceful_timeout = 5


def _log(event, **kw):
    with open(os.environ["PRL_GUNICORN_LOG"], "a") as fh:
        fh.write(json.dumps({"ts": round(time.time(), 6), "event": event, **kw}) + "\n")


def post_request(worker, req, environ, resp):
    peer = f"{environ.get('REMOTE_ADDR')}:{environ.get('REMOTE_PORT')}"
    _log("response", peer=peer, path=req.path, worker_pid=worker.pid,
         worker_requests=worker.nr)


def worker_exit(server, worker):
    _log("worker_exit", worker_pid=worker.pid, requests=worker.nr,
         worker_class=worker_class,
         note="max_requests reached: worker recycled" if worker.nr >= max_requests else "")


def post_fork(server, worker):
    _log("worker_started", worker_pid=worker.pid)
