"""Write probehost readiness probes in Python.

The API mirrors django-kubernetes: subclass ``ReadinessProbe``, implement
``ready(self, request)``, and raise ``NotReady(content, status=503)`` when the
thing you check is not ready. Then export the class::

    from probehost_sdk import NotReady, ReadinessProbe, export

    class CacheWarm(ReadinessProbe):
        def ready(self, request):
            if config.get("warm") != "yes":
                raise NotReady("cache: not warm yet")

    WitWorld = export(CacheWarm)

Build it into a probe component for probehost's WIT world
(``probehost:probe/probe@0.1.0``) with the SDK's builder, which drives
``componentize-py`` (``pip install 'probehost[sdk]'`` installs both)::

    python -m probehost_sdk build my_probe.py -o my_probe.wasm

The probe runs sandboxed: it reaches only what its ``[probes.NAME]`` table
grants. The helpers below wrap those capabilities:

- ``config.get(key)`` / ``config.entries()``: the probe's own settings;
- ``sql.query(database, statement, params)``: SQL on a granted database;
- ``memcached.stats(cache, server)``: stats of a server of a granted cache;
- ``net.connect(address, timeout)``: a TCP socket to a granted address
  (``network = [...]``);
- the standard ``logging`` module: records go to probehost's log under the
  probe's name (installed when the module is exported).

A probe that raises anything other than ``NotReady`` is reported not ready
with the exception's type and message; the host keeps serving either way.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

# socket.getaddrinfo encodes host names with the idna codec, which
# componentize-py bundles only when something imports it.
import encodings.idna  # noqa: F401

# componentize-py runs the module once at build time and snapshots it; at run
# time the component has no files, so every module must be imported here, not
# lazily inside a function. Outside a componentize-py build (`python -m
# probehost_sdk build`, an IDE, a test runner) the bindings do not exist: the
# package still imports, and only export() refuses.
try:
    import wit_world
    from componentize_py_types import Err
    from wit_world.imports import config as _host_config
    from wit_world.imports import log as _host_log
    from wit_world.imports import memcached as _host_memcached
    from wit_world.imports import sql as _host_sql
    from wit_world.imports import types as _host_types

    _IN_COMPONENT = True
except ImportError:
    _IN_COMPONENT = False

__all__ = [
    "NotReady",
    "ReadinessProbe",
    "Request",
    "export",
    "config",
    "sql",
    "memcached",
    "net",
]


class NotReady(Exception):
    """Not ready: ``content`` is the body of the answer, ``status`` its HTTP
    status (the host accepts 400-599 and answers 503 for anything else)."""

    def __init__(self, content: str = "Not ready", status: int = 503):
        super().__init__(content)
        self.content = content
        self.status = status


@dataclass
class Request:
    """The HTTP request that asked for the check (``None`` for ``probehost
    probe --ready``)."""

    method: str
    path: str
    query: Optional[str]
    headers: List[Tuple[str, str]]

    def header(self, name: str) -> Optional[str]:
        """The first value of a header, looked up without regard to case."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class ReadinessProbe:
    """Base class of a probe: implement ``ready``."""

    def ready(self, request: Optional[Request]) -> None:
        raise NotImplementedError


class _Config:
    """The probe's ``[probes.NAME.config]`` table, ``${VAR}`` already resolved."""

    def get(self, key: str, default: Optional[str] = None) -> Optional[str]:
        host = _host_config
        value = host.get(key)
        return default if value is None else value

    def entries(self) -> List[Tuple[str, str]]:
        host = _host_config
        return host.entries()

    def duration(self, key: str, default: float) -> float:
        """Seconds from a setting such as ``"500ms"``, ``"2s"`` or a bare number
        of milliseconds (as the Rust SDK reads them); ``default`` when unset."""
        text = (self.get(key) or "").strip()
        if not text:
            return default
        number = text.rstrip("ms").strip()
        unit = text[len(number):].strip() or "ms"
        if not number.isdigit() or unit not in ("ms", "s"):
            raise ValueError(f"{key} {text!r} is not a duration such as '500ms' or '2s'")
        return int(number) / (1000 if unit == "ms" else 1)


class SqlError(Exception):
    """A query failed: ``kind`` is ``not-granted``, ``connection``, ``timeout``
    or ``query``."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class _Sql:
    """SQL on the databases granted to the probe (``databases = [...]``)."""

    def databases(self) -> List[Tuple[str, str]]:
        host = _host_sql
        return [(d.name, d.backend.name.lower()) for d in host.databases()]

    def query(self, database: str, statement: str, params: Sequence[Any] = ()) -> List[List[Any]]:
        """Rows as lists of Python values (None, bool, int, float, str, bytes)."""
        host = _host_sql
        try:
            rows = host.query(database, statement, [_to_value(p) for p in params])
        except Err as e:
            raise SqlError(_kind(e.value), e.value.value) from None
        return [[_from_value(v) for v in row] for row in rows.rows]


def _kind(variant: Any) -> str:
    # Error_NotGranted -> not-granted
    name = type(variant).__name__.split("_", 1)[-1]
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


def _to_value(v: Any) -> Any:
    host = _host_sql
    if v is None:
        return host.Value_Null()
    if isinstance(v, bool):
        return host.Value_Boolean(v)
    if isinstance(v, int):
        return host.Value_Integer(v)
    if isinstance(v, float):
        return host.Value_Real(v)
    if isinstance(v, (bytes, bytearray)):
        return host.Value_Blob(bytes(v))
    return host.Value_Text(str(v))


def _from_value(v: Any) -> Any:
    return getattr(v, "value", None)


class CacheError(Exception):
    """A memcached call failed: ``kind`` is ``not-granted``, ``connection``,
    ``timeout`` or ``protocol``."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class _Memcached:
    """memcached servers of the caches granted to the probe (``caches = [...]``)."""

    def caches(self) -> List[Tuple[str, List[str]]]:
        host = _host_memcached
        return [(c.name, list(c.servers)) for c in host.caches()]

    def stats(self, cache: str, server: str) -> dict:
        host = _host_memcached
        try:
            return dict(host.stats(cache, server))
        except Err as e:
            raise CacheError(_kind(e.value), e.value.value) from None


class _Net:
    """TCP connections to the addresses granted to the probe (``network = [...]``).
    A connection anywhere else fails with ``PermissionError``."""

    def connect(self, address: str, timeout: float = 0.5) -> socket.socket:
        """Connect to ``host:port``; reads and writes time out after ``timeout``
        seconds (the check's deadline applies in any case)."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:  # a name: resolved through the host
            return socket.create_connection((host, int(port)), timeout=timeout)
        # An address needs no lookup (and a probe without a grant has none).
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((host, int(port)))
        except BaseException:
            sock.close()
            raise
        return sock


config = _Config()
sql = _Sql()
memcached = _Memcached()
net = _Net()


class _HostLogHandler(logging.Handler):
    """Sends log records to probehost, which writes them under the probe's
    name (and bounds their number and size)."""

    def emit(self, record: logging.LogRecord) -> None:
        host = _host_log
        if record.levelno >= logging.ERROR:
            level = host.Level.ERROR
        elif record.levelno >= logging.WARNING:
            level = host.Level.WARN
        elif record.levelno >= logging.INFO:
            level = host.Level.INFO
        else:
            level = host.Level.DEBUG
        try:
            host.log(level, self.format(record))
        except Exception:  # logging must never break the check
            pass


def _install_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(h, _HostLogHandler) for h in root.handlers):
        handler = _HostLogHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def export(probe_class: type) -> type:
    """The class componentize-py exports for the probe world: assign it to
    ``WitWorld`` in the probe's module."""
    if not _IN_COMPONENT:
        raise RuntimeError(
            "probehost_sdk.export() runs inside a componentize-py build: "
            "build the probe with `python -m probehost_sdk build MODULE.py -o OUT.wasm`"
        )
    types = _host_types

    if not (isinstance(probe_class, type) and issubclass(probe_class, ReadinessProbe)):
        raise TypeError("export() takes a ReadinessProbe subclass")
    _install_logging()

    class WitWorld(wit_world.WitWorld):
        def ready(self, request: Optional[types.Request]) -> None:
            wrapped = None
            if request is not None:
                wrapped = Request(
                    method=request.method,
                    path=request.path,
                    query=request.query,
                    headers=list(request.headers),
                )
            try:
                probe_class().ready(wrapped)
            except NotReady as e:
                raise Err(types.NotReady(message=str(e.content), status=int(e.status)))
            except Exception as e:  # a bug in the probe: not ready, with the reason
                logging.getLogger(probe_class.__name__).exception("probe raised")
                raise Err(
                    types.NotReady(
                        message=f"{probe_class.__name__}: {type(e).__name__}: {e}",
                        status=503,
                    )
                )

    return WitWorld
