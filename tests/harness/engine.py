"""Whether a Docker engine answers, asked without leaking a socket.

docker-py's client connects while it is built and, when no engine listens, drops the socket it
opened without closing it: a ResourceWarning at the next garbage collection, which pytest
reports as an unraisable exception (an error in this suite). So the usual case, no `DOCKER_HOST`
and no socket file, is answered without the client, and a client that was built is closed.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_SOCKET = Path("/var/run/docker.sock")


def docker_available() -> bool:
    """True when a Docker engine answers; testcontainers is imported only then."""
    if not os.environ.get("DOCKER_HOST") and not DEFAULT_SOCKET.exists():
        return False
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=2)
    except Exception:  # any failure means "no engine"
        return False
    try:
        client.ping()
    except Exception:
        return False
    finally:
        client.close()
    return True
