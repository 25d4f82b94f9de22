"""The Redis probe of django-kubernetes' documentation, ported to probehost.

The original::

    class RedisProbe(ReadinessProbe):
        def ready(self, request):
            try:
                redis_client.ping()
            except Exception as e:
                logger.exception(f"redis probe failed: {str(e)}")
                raise NotReady("redis: could not connect")

Here ``redis_client`` is a small RESP client over a socket from ``net.connect``
(the component can only reach the addresses its ``network`` grant lists).
Settings, in ``[probes.NAME.config]``: ``address`` (default
``127.0.0.1:6379``), ``password`` (sends ``AUTH``), ``username`` (the ACL
user ``AUTH`` names, Redis 6+), ``timeout`` (default ``500ms``), as for the
Rust Redis probe.

Build::

    componentize-py -d wit -w probehost:probe/probe@0.1.0 componentize \\
        -p guest-sdk/python -p guest-sdk/python/examples redis_probe -o redis_probe.wasm
"""

import logging

from probehost_sdk import NotReady, ReadinessProbe, config, export, net

logger = logging.getLogger("myapp.probe")


class RedisClient:
    """Just enough of Redis for a readiness check: ``AUTH`` and ``PING``."""

    def __init__(self, address, password=None, username=None, timeout=0.5):
        self.address = address
        self.password = password
        self.username = username
        self.timeout = timeout

    def ping(self):
        with net.connect(self.address, self.timeout) as conn:
            reader = conn.makefile("rb")
            if self.password and self.username:
                self._call(conn, reader, "AUTH", self.username, self.password)
            elif self.password:
                self._call(conn, reader, "AUTH", self.password)
            reply = self._call(conn, reader, "PING")
            if reply != b"+PONG":
                raise ConnectionError(f"PING answered {reply[:40]!r}")

    @staticmethod
    def _call(conn, reader, *args):
        command = b"*%d\r\n" % len(args)
        for arg in args:
            data = arg.encode()
            command += b"$%d\r\n%s\r\n" % (len(data), data)
        conn.sendall(command)
        reply = reader.readline(64 * 1024).rstrip(b"\r\n")
        if not reply:
            raise ConnectionError("connection closed")
        if reply.startswith(b"-"):
            # The server's error (e.g. WRONGPASS, NOAUTH), never our arguments.
            raise ConnectionError(reply[1:].decode(errors="replace"))
        return reply


def redis_client():
    return RedisClient(
        config.get("address", "127.0.0.1:6379"),
        password=config.get("password") or None,
        username=config.get("username") or None,
        timeout=config.duration("timeout", 0.5),
    )


class RedisProbe(ReadinessProbe):
    def ready(self, request):
        try:
            redis_client().ping()
        except Exception as e:
            logger.exception(f"redis probe failed: {str(e)}")
            raise NotReady("redis: could not connect")


WitWorld = export(RedisProbe)
