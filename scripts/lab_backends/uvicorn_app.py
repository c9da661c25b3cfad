#!/usr/bin/env python3
"""uvicorn backend for the reset lab: default timeout_keep_alive (5 s), h11, log level
trace so that every "HTTP connection made/lost" is logged with the peer and a timestamp."""
import sys

import uvicorn


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while True:
        msg = await receive()
        if not msg.get("more_body"):
            break
    body = b"ok\n"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"ts": {"format": "%(created).6f %(name)s %(levelname)s %(message)s"}},
    "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "ts",
                         "stream": "ext://sys.stdout"}},
    "loggers": {"uvicorn": {"handlers": ["out"], "level": "TRACE", "propagate": False},
                "uvicorn.error": {"level": "TRACE"},
                "uvicorn.access": {"handlers": ["out"], "level": "INFO", "propagate": False}},
}

if __name__ == "__main__":
    host = sys.argv[1] if len(sys.argv) > 1 else "0.0.0.0"
    # optional 2nd argument: timeout_keep_alive in seconds (lab variants); default: uvicorn's
    extra = {"timeout_keep_alive": int(sys.argv[2])} if len(sys.argv) > 2 else {}
    cfg = uvicorn.Config(app, host=host, port=3000, log_level="trace", log_config=LOG_CONFIG,
                         http="h11", loop="asyncio", **extra)
    print(f"{__import__('time').time():.6f} lab timeout_keep_alive={cfg.timeout_keep_alive}",
          flush=True)
    uvicorn.Server(cfg).run()
