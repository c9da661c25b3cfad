"""WSGI app for the gunicorn backend of the reset lab (run with --threads 4, i.e. the gthread
worker: the sync worker forces "Connection: close" and never keeps connections alive)."""


def app(environ, start_response):
    environ["wsgi.input"].read()
    body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
