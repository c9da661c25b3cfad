"""WSGI app for the pcapreset reset lab under uWSGI (uwsgi_pass).  Logs each request's
start and end as JSON lines (worker pid, microseconds) to $PRL_LOG; ?sleep=S sleeps S
seconds; /upload answers without reading the request body."""

import json
import os
import time
from urllib.parse import parse_qs

LOG = os.environ.get("PRL_LOG", "/dev/null")


def _log(**kw):
    with open(LOG, "a") as fh:
        fh.write(json.dumps({"ts": time.time(), "pid": os.getpid(), **kw}) + "\n")


def application(environ, start_response):
    req = f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}"
    q = parse_qs(environ.get("QUERY_STRING", ""))
    _log(event="request", request=req, query=environ.get("QUERY_STRING", ""))
    sleep = float(q.get("sleep", ["0"])[0])
    if sleep:
        time.sleep(sleep)
    if environ.get("PATH_INFO") != "/upload":
        environ["wsgi.input"].read()
    body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    _log(event="response", request=req)
    return [body]
