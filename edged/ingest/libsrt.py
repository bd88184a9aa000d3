"""A thin ctypes binding to libsrt 1.5 (Debian `libsrt1.5-gnutls`): only what the SRT ingest needs.

Listener side: socket, bind, listen, listen callback (+ srt_setrejectreason), accept, epoll_uwait,
recvmsg, bstats, socket flags. Caller side (connect, sendmsg) exists for tests and benchmarks.
Layouts and numbers follow libsrt's public header `srt.h` of the 1.5 series.

Every call here may block on libsrt's internal locks: call them from a thread, never the event
loop. ctypes releases the GIL around each call; callbacks (listen hook) take it back on libsrt's
thread, so keep them short.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import logging
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from edged.errors import DependencyMissing, EdgedError

log = logging.getLogger(__name__)

_LIB_NAMES = ("libsrt-gnutls.so.1.5", "libsrt.so.1.5", "libsrt-openssl.so.1.5")
_INSTALL_HINT = "install the Debian package libsrt1.5-gnutls (apt-get install libsrt1.5-gnutls)"
MIN_VERSION = 0x010500  # 1.5.0: the CBytePerfMon layout below and srt_setrejectreason

SRT_ERROR = -1
SRT_INVALID_SOCK = -1
MAX_STREAMID = 512  # bytes, libsrt's limit on SRTO_STREAMID
LIVE_PAYLOAD_SIZE = 1316  # bytes: 7 TS packets, libsrt's default live-mode payload (SRT_LIVE_DEF_PLSIZE)
LIVE_MAX_PAYLOAD = 1456  # bytes: largest live-mode message (MTU 1500 - UDP 28 - SRT header 16)


class Opt(enum.IntEnum):
    """SRT_SOCKOPT values used here (srt.h)."""

    RCVSYN = 2
    SNDSYN = 1
    LINGER = 7
    LATENCY = 23  # sets both RCVLATENCY and PEERLATENCY
    PASSPHRASE = 26
    PBKEYLEN = 27
    KMSTATE = 28
    CONNTIMEO = 36
    RCVLATENCY = 43
    PEERLATENCY = 44
    STREAMID = 46
    PAYLOADSIZE = 49
    TRANSTYPE = 50
    ENFORCEDENCRYPTION = 53
    PEERIDLETIMEO = 55


class Epoll(enum.IntFlag):
    IN = 0x1
    OUT = 0x4
    ERR = 0x8


class Err(enum.IntEnum):
    """A few SRT_ERRNO values (srt.h: 1000 * major + minor)."""

    ECONNREJ = 1002
    ECONNLOST = 2001
    ENOCONN = 2002
    EINVSOCK = 5004
    EASYNCRCV = 6002
    ETIMEOUT = 6003


# syslog levels, which srt_setloglevel takes
LOG_CRIT = 2
LOG_ERR = 3
LOG_WARNING = 4
LOG_NOTICE = 5
LOG_DEBUG = 7

_int64 = ctypes.c_int64
_uint64 = ctypes.c_uint64
_int = ctypes.c_int
_double = ctypes.c_double


class _PerfMon(ctypes.Structure):
    """struct CBytePerfMon (SRT_TRACEBSTATS) as of libsrt 1.5; new fields are only ever appended."""

    _fields_ = [
        ("msTimeStamp", _int64), ("pktSentTotal", _int64), ("pktRecvTotal", _int64),
        ("pktSndLossTotal", _int), ("pktRcvLossTotal", _int), ("pktRetransTotal", _int),
        ("pktSentACKTotal", _int), ("pktRecvACKTotal", _int), ("pktSentNAKTotal", _int),
        ("pktRecvNAKTotal", _int), ("usSndDurationTotal", _int64),
        ("pktSndDropTotal", _int), ("pktRcvDropTotal", _int), ("pktRcvUndecryptTotal", _int),
        ("byteSentTotal", _uint64), ("byteRecvTotal", _uint64), ("byteRcvLossTotal", _uint64),
        ("byteRetransTotal", _uint64), ("byteSndDropTotal", _uint64), ("byteRcvDropTotal", _uint64),
        ("byteRcvUndecryptTotal", _uint64),
        ("pktSent", _int64), ("pktRecv", _int64), ("pktSndLoss", _int), ("pktRcvLoss", _int),
        ("pktRetrans", _int), ("pktRcvRetrans", _int), ("pktSentACK", _int), ("pktRecvACK", _int),
        ("pktSentNAK", _int), ("pktRecvNAK", _int), ("mbpsSendRate", _double), ("mbpsRecvRate", _double),
        ("usSndDuration", _int64), ("pktReorderDistance", _int), ("pktRcvAvgBelatedTime", _double),
        ("pktRcvBelated", _int64), ("pktSndDrop", _int), ("pktRcvDrop", _int), ("pktRcvUndecrypt", _int),
        ("byteSent", _uint64), ("byteRecv", _uint64), ("byteRcvLoss", _uint64), ("byteRetrans", _uint64),
        ("byteSndDrop", _uint64), ("byteRcvDrop", _uint64), ("byteRcvUndecrypt", _uint64),
        ("usPktSndPeriod", _double), ("pktFlowWindow", _int), ("pktCongestionWindow", _int),
        ("pktFlightSize", _int), ("msRTT", _double), ("mbpsBandwidth", _double),
        ("byteAvailSndBuf", _int), ("byteAvailRcvBuf", _int), ("mbpsMaxBW", _double), ("byteMSS", _int),
        ("pktSndBuf", _int), ("byteSndBuf", _int), ("msSndBuf", _int), ("msSndTsbPdDelay", _int),
        ("pktRcvBuf", _int), ("byteRcvBuf", _int), ("msRcvBuf", _int), ("msRcvTsbPdDelay", _int),
        ("pktSndFilterExtraTotal", _int), ("pktRcvFilterExtraTotal", _int),
        ("pktRcvFilterSupplyTotal", _int), ("pktRcvFilterLossTotal", _int),
        ("pktSndFilterExtra", _int), ("pktRcvFilterExtra", _int), ("pktRcvFilterSupply", _int),
        ("pktRcvFilterLoss", _int), ("pktReorderTolerance", _int),
        ("pktSentUniqueTotal", _int64), ("pktRecvUniqueTotal", _int64),
        ("byteSentUniqueTotal", _uint64), ("byteRecvUniqueTotal", _uint64),
        ("pktSentUnique", _int64), ("pktRecvUnique", _int64),
        ("byteSentUnique", _uint64), ("byteRecvUnique", _uint64),
        ("_reserve", ctypes.c_char * 256),  # room for fields a newer 1.5.x may append
    ]


class _EpollEvent(ctypes.Structure):
    _fields_ = [("fd", _int), ("events", _int)]


@dataclass(frozen=True, slots=True)
class LinkStats:
    """Receiver-side link statistics of one socket (srt_bstats). `*_delta` count since the last call."""

    rtt_ms: float
    bandwidth_mbps: float  # libsrt's estimate of the link capacity
    recv_rate_mbps: float
    recv_total_pkts: int
    lost_delta: int  # packets detected missing (before retransmission)
    retrans_delta: int  # retransmitted packets received
    dropped_delta: int  # packets never recovered in time (too late to play)
    undecrypted_delta: int
    recv_bytes_delta: int
    rcv_buf_ms: int  # undelivered timespan in the receive buffer
    latency_ms: int  # the receiver's negotiated TSBPD delay


class SrtCallError(EdgedError):
    """A libsrt call failed; `code` is SRT_ERRNO (srt_getlasterror)."""

    def __init__(self, what: str, code: int, text: str) -> None:
        super().__init__(f"{what}: {text} (SRT error {code})")
        self.code = code


# int (*)(void* opaque, SRTSOCKET ns, int hsversion, const struct sockaddr* peer, const char* streamid)
_LISTEN_CB = ctypes.CFUNCTYPE(_int, ctypes.c_void_p, _int, _int, ctypes.c_void_p, ctypes.c_char_p)
# void (*)(void* opaque, int level, const char* file, int line, const char* area, const char* message)
_LOG_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, _int, ctypes.c_char_p, _int, ctypes.c_char_p,
                           ctypes.c_char_p)

ListenHook = Callable[[int, tuple[str, int] | None, bytes], int | None]
"""(new socket, peer address, stream ID) → None to accept, or an SRT reject code to refuse."""


def sockaddr(host: str, port: int) -> tuple[ctypes.Array[ctypes.c_char], int]:
    """A struct sockaddr_in/sockaddr_in6 for a numeric address (Linux layout)."""
    if ":" in host:
        raw = (struct.pack("=H", socket.AF_INET6) + port.to_bytes(2, "big") + bytes(4)
               + socket.inet_pton(socket.AF_INET6, host) + bytes(4))
    else:
        raw = struct.pack("=H", socket.AF_INET) + port.to_bytes(2, "big") + socket.inet_pton(socket.AF_INET, host)
        raw += bytes(16 - len(raw))
    return ctypes.create_string_buffer(raw, len(raw)), len(raw)


def parse_sockaddr(ptr: int | None) -> tuple[str, int] | None:
    """(host, port) from a struct sockaddr pointer; None when absent or not IP."""
    if not ptr:
        return None
    (family,) = struct.unpack("=H", ctypes.string_at(ptr, 2))
    if family == socket.AF_INET:
        raw = ctypes.string_at(ptr, 16)
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET6:
        raw = ctypes.string_at(ptr, 28)
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), int.from_bytes(raw[2:4], "big")
    return None


class SrtLib:
    """The loaded library with typed wrappers; one per process (see `load`)."""

    def __init__(self, cdll: ctypes.CDLL) -> None:
        self._c = c = cdll
        self._hooks: dict[int, object] = {}  # keep ctypes callback objects alive per listener
        self._log_hook: object | None = None
        sig: dict[str, tuple[type | None, list[type]]] = {
            "srt_startup": (_int, []),
            "srt_cleanup": (_int, []),
            "srt_getversion": (ctypes.c_uint32, []),
            "srt_create_socket": (_int, []),
            "srt_bind": (_int, [_int, ctypes.c_void_p, _int]),
            "srt_listen": (_int, [_int, _int]),
            "srt_accept": (_int, [_int, ctypes.c_void_p, ctypes.POINTER(_int)]),
            "srt_listen_callback": (_int, [_int, _LISTEN_CB, ctypes.c_void_p]),
            "srt_connect": (_int, [_int, ctypes.c_void_p, _int]),
            "srt_close": (_int, [_int]),
            "srt_getsockname": (_int, [_int, ctypes.c_void_p, ctypes.POINTER(_int)]),
            "srt_getpeername": (_int, [_int, ctypes.c_void_p, ctypes.POINTER(_int)]),
            "srt_getsockflag": (_int, [_int, _int, ctypes.c_void_p, ctypes.POINTER(_int)]),
            "srt_setsockflag": (_int, [_int, _int, ctypes.c_void_p, _int]),
            "srt_recvmsg": (_int, [_int, ctypes.c_void_p, _int]),
            "srt_sendmsg": (_int, [_int, ctypes.c_char_p, _int, _int, _int]),
            "srt_getlasterror": (_int, [ctypes.POINTER(_int)]),
            "srt_getlasterror_str": (ctypes.c_char_p, []),
            "srt_clearlasterror": (None, []),
            "srt_bstats": (_int, [_int, ctypes.POINTER(_PerfMon), _int]),
            "srt_getsockstate": (_int, [_int]),
            "srt_epoll_create": (_int, []),
            "srt_epoll_add_usock": (_int, [_int, _int, ctypes.POINTER(_int)]),
            "srt_epoll_remove_usock": (_int, [_int, _int]),
            "srt_epoll_uwait": (_int, [_int, ctypes.POINTER(_EpollEvent), _int, _int64]),
            "srt_epoll_set": (ctypes.c_int32, [_int, ctypes.c_int32]),
            "srt_epoll_release": (_int, [_int]),
            "srt_setloglevel": (None, [_int]),
            "srt_setloghandler": (None, [ctypes.c_void_p, _LOG_CB]),
            "srt_setrejectreason": (_int, [_int, _int]),
            "srt_getrejectreason": (_int, [_int]),
            "srt_rejectreason_str": (ctypes.c_char_p, [_int]),
        }
        for name, (restype, argtypes) in sig.items():
            try:
                fn = getattr(c, name)
            except AttributeError:
                raise DependencyMissing(f"libsrt lacks {name} (need libsrt >= 1.5): {_INSTALL_HINT}") from None
            fn.restype = restype
            fn.argtypes = argtypes
        self.version = int(c.srt_getversion())
        if self.version < MIN_VERSION:
            raise DependencyMissing(f"libsrt {self.version_str} is too old (need >= 1.5.0): {_INSTALL_HINT}")

    @property
    def version_str(self) -> str:
        v = self.version
        return f"{v >> 16}.{(v >> 8) & 0xFF}.{v & 0xFF}"

    # -- errors -------------------------------------------------------------------------------
    def last_error(self) -> tuple[int, str]:
        code = int(self._c.srt_getlasterror(None))
        text = self._c.srt_getlasterror_str() or b""
        return code, text.decode("utf-8", "replace")

    def _check(self, rc: int, what: str) -> int:
        if rc == SRT_ERROR:
            code, text = self.last_error()
            raise SrtCallError(what, code, text)
        return rc

    # -- library ------------------------------------------------------------------------------
    def startup(self) -> None:
        self._check(self._c.srt_startup(), "srt_startup")

    def cleanup(self) -> None:
        self._c.srt_cleanup()

    def set_log_level(self, level: int) -> None:
        """libsrt prints to stderr at or above `level` (syslog numbering) unless a handler is set."""
        self._c.srt_setloglevel(level)

    def set_log_handler(self, handler: Callable[[int, str, str], None]) -> None:
        """Route libsrt's log lines (level, area, message) to `handler`, called on libsrt threads."""

        def trampoline(_opaque: int | None, level: int, _file: bytes | None, _line: int,
                       area: bytes | None, message: bytes | None) -> None:
            try:
                handler(level, (area or b"").decode("utf-8", "replace"),
                        (message or b"").decode("utf-8", "replace").rstrip())
            except Exception:  # noqa: BLE001 - an exception must not unwind into C
                pass

        hook = _LOG_CB(trampoline)
        self._log_hook = hook  # libsrt keeps the pointer; so must we
        self._c.srt_setloghandler(None, hook)

    # -- sockets ------------------------------------------------------------------------------
    def create_socket(self) -> int:
        return self._check(self._c.srt_create_socket(), "srt_create_socket")

    def close(self, sock: int) -> None:
        self._c.srt_close(sock)
        self._hooks.pop(sock, None)

    def bind(self, sock: int, host: str, port: int) -> None:
        addr, n = sockaddr(host, port)
        self._check(self._c.srt_bind(sock, addr, n), f"srt_bind {host}:{port}")

    def listen(self, sock: int, backlog: int) -> None:
        self._check(self._c.srt_listen(sock, backlog), "srt_listen")

    def connect(self, sock: int, host: str, port: int) -> None:
        addr, n = sockaddr(host, port)
        self._check(self._c.srt_connect(sock, addr, n), f"srt_connect {host}:{port}")

    def accept(self, sock: int) -> tuple[int, tuple[str, int] | None]:
        """A pending connection of a listener, or (-1, None) when none is waiting (non-blocking)."""
        buf = ctypes.create_string_buffer(128)
        n = _int(128)
        ns = self._c.srt_accept(sock, buf, ctypes.byref(n))
        if ns == SRT_INVALID_SOCK:
            code, text = self.last_error()
            if code in (Err.EASYNCRCV, Err.ETIMEOUT):
                return SRT_INVALID_SOCK, None
            raise SrtCallError("srt_accept", code, text)
        return ns, parse_sockaddr(ctypes.addressof(buf))

    def sockname(self, sock: int) -> tuple[str, int]:
        buf = ctypes.create_string_buffer(128)
        n = _int(128)
        self._check(self._c.srt_getsockname(sock, buf, ctypes.byref(n)), "srt_getsockname")
        addr = parse_sockaddr(ctypes.addressof(buf))
        if addr is None:
            raise SrtCallError("srt_getsockname", 0, "not an IP socket")
        return addr

    def state(self, sock: int) -> int:
        """SRT_SOCKSTATUS: 5 connected, 6 broken, 8 closed, 9 nonexistent..."""
        return int(self._c.srt_getsockstate(sock))

    def set_listen_callback(self, sock: int, hook: ListenHook) -> None:
        """Install `hook` as the listener's srt_listen_callback (runs on libsrt's thread)."""
        c = self._c

        def trampoline(_opaque: int | None, ns: int, _hsversion: int, peer: int | None,
                       streamid: bytes | None) -> int:
            try:
                code = hook(ns, parse_sockaddr(peer), streamid or b"")
            except Exception:  # noqa: BLE001 - never unwind into libsrt; refuse instead
                log.exception("SRT listen hook failed; refusing the caller")
                code = 1500  # SRT_REJX_ISE: internal server error
            if code is None:
                return 0
            c.srt_setrejectreason(ns, code)
            return -1

        cb = _LISTEN_CB(trampoline)
        self._check(c.srt_listen_callback(sock, cb, None), "srt_listen_callback")
        self._hooks[sock] = cb

    def set_int(self, sock: int, opt: Opt, value: int) -> None:
        v = _int(value)
        self._check(self._c.srt_setsockflag(sock, opt, ctypes.byref(v), ctypes.sizeof(v)), f"set {opt.name}")

    def set_bool(self, sock: int, opt: Opt, value: bool) -> None:
        v = ctypes.c_bool(value)
        self._check(self._c.srt_setsockflag(sock, opt, ctypes.byref(v), ctypes.sizeof(v)), f"set {opt.name}")

    def set_str(self, sock: int, opt: Opt, value: str | bytes) -> None:
        raw = value.encode("utf-8") if isinstance(value, str) else value
        self._check(self._c.srt_setsockflag(sock, opt, raw, len(raw)), f"set {opt.name}")

    def get_int(self, sock: int, opt: Opt) -> int:
        v = _int(0)
        n = _int(ctypes.sizeof(v))
        self._check(self._c.srt_getsockflag(sock, opt, ctypes.byref(v), ctypes.byref(n)), f"get {opt.name}")
        return v.value

    def get_bytes(self, sock: int, opt: Opt, size: int = MAX_STREAMID + 1) -> bytes:
        buf = ctypes.create_string_buffer(size)
        n = _int(size)
        self._check(self._c.srt_getsockflag(sock, opt, buf, ctypes.byref(n)), f"get {opt.name}")
        return buf.raw[: n.value]

    def reject_reason(self, sock: int) -> int:
        return int(self._c.srt_getrejectreason(sock))

    def reject_reason_str(self, code: int) -> str:
        s = self._c.srt_rejectreason_str(code)
        return (s or b"").decode("utf-8", "replace")

    # -- data ---------------------------------------------------------------------------------
    def recvmsg(self, sock: int, buf: ctypes.Array[ctypes.c_char]) -> int:
        """Bytes received into `buf`; 0 when nothing is ready (non-blocking); raises when broken."""
        n = self._c.srt_recvmsg(sock, buf, len(buf))
        if n == SRT_ERROR:
            code, text = self.last_error()
            if code == Err.EASYNCRCV:
                return 0
            raise SrtCallError("srt_recvmsg", code, text)
        return int(n)

    def sendmsg(self, sock: int, data: bytes) -> int:
        return self._check(self._c.srt_sendmsg(sock, data, len(data), -1, 0), "srt_sendmsg")

    def bstats(self, sock: int, clear: bool = True) -> LinkStats:
        """Link statistics; with `clear` the interval counters restart (the *_delta fields)."""
        p = _PerfMon()
        self._check(self._c.srt_bstats(sock, ctypes.byref(p), int(clear)), "srt_bstats")
        return LinkStats(
            rtt_ms=p.msRTT, bandwidth_mbps=p.mbpsBandwidth, recv_rate_mbps=p.mbpsRecvRate,
            recv_total_pkts=p.pktRecvTotal, lost_delta=p.pktRcvLoss, retrans_delta=p.pktRcvRetrans,
            dropped_delta=p.pktRcvDrop, undecrypted_delta=p.pktRcvUndecrypt, recv_bytes_delta=p.byteRecv,
            rcv_buf_ms=p.msRcvBuf, latency_ms=p.msRcvTsbPdDelay,
        )

    # -- epoll --------------------------------------------------------------------------------
    def epoll_create(self) -> int:
        eid = self._check(self._c.srt_epoll_create(), "srt_epoll_create")
        self._c.srt_epoll_set(eid, 1)  # SRT_EPOLL_ENABLE_EMPTY: waiting on an empty set is not an error
        return eid

    def epoll_add(self, eid: int, sock: int, events: Epoll) -> None:
        ev = _int(int(events))
        self._check(self._c.srt_epoll_add_usock(eid, sock, ctypes.byref(ev)), "srt_epoll_add_usock")

    def epoll_remove(self, eid: int, sock: int) -> None:
        self._c.srt_epoll_remove_usock(eid, sock)

    def epoll_release(self, eid: int) -> None:
        self._c.srt_epoll_release(eid)

    def epoll_wait(self, eid: int, events: ctypes.Array[_EpollEvent], timeout_ms: int) -> list[tuple[int, int]]:
        """Ready (socket, events) pairs; [] on timeout. `events` comes from `epoll_events(n)`."""
        n = self._c.srt_epoll_uwait(eid, events, len(events), timeout_ms)
        if n == SRT_ERROR:
            code, text = self.last_error()
            if code == Err.ETIMEOUT:
                return []
            raise SrtCallError("srt_epoll_uwait", code, text)
        return [(events[i].fd, events[i].events) for i in range(min(n, len(events)))]

    @staticmethod
    def epoll_events(n: int) -> ctypes.Array[_EpollEvent]:
        return (_EpollEvent * n)()


_lib: SrtLib | None = None
_lib_lock = threading.Lock()


def load() -> SrtLib:
    """The process-wide binding; raises DependencyMissing naming the package to install."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        cdll = None
        errors = []
        names = list(_LIB_NAMES)
        found = ctypes.util.find_library("srt-gnutls") or ctypes.util.find_library("srt")
        if found:
            names.append(found)
        for name in names:
            try:
                cdll = ctypes.CDLL(name)
                break
            except OSError as exc:
                errors.append(str(exc))
        if cdll is None:
            raise DependencyMissing(f"libsrt not found ({errors[0] if errors else 'no candidates'}): "
                                    f"{_INSTALL_HINT}")
        _lib = SrtLib(cdll)
        return _lib
