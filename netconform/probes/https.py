"""HTTPS GET with the TLS verdict kept apart from the HTTP one: the apiserver probes.

An HTTP answer proves little on its own (k8snetlook counted any answer as "apiserver OK", with
TLS unchecked). Here the server certificate is always verified against the CA given (the
cluster CA) and the name asked for, and each stage fails with its own kind:

=======================  ===============================================================
error_kind               meaning
=======================  ===============================================================
refused, timeout, ...    the TCP connect failed (kinds of probes/_net.py)
ca-invalid               the CA PEM given could not be loaded (nothing was sent)
tls-verify-failed        the certificate does not chain to the CA or does not name the
                         host / IP; `error` is OpenSSL's reason, `verify_code` its code
tls-handshake-timeout    TCP connected but the TLS handshake did not finish in time
tls-error                the handshake failed otherwise (alert, reset, not TLS at all)
http-timeout             TLS up, no complete HTTP status line in time
http-error               the connection closed or the answer was not HTTP
http-status              an HTTP answer that is not 2xx (status and body are kept)
=======================  ===============================================================

A bearer token, when given, is sent in the Authorization header and never appears in the
result (it is also scrubbed from a body that echoes it).

>>> r = get("10.0.200.11", 443, "/livez", ca_pem=ca, server_name="kubernetes.default.svc")
>>> r.ok, r.status, r.body, r.peer_cert.subject
(True, 200, 'ok', 'CN=kube-apiserver')
>>> get("10.0.200.11", 443, "/livez", ca_pem=other_ca).error
'unable to get local issuer certificate'
"""
from __future__ import annotations

import datetime
import hashlib
import http.client
import ipaddress
import ssl
import time
from dataclasses import dataclass, field

from netconform.probes._net import describe, errno_name, ms, parse_ip, remaining
from netconform.probes.tcp import TcpResult, open_socket

__all__ = ["ApiserverHealth", "HttpsResult", "PeerCert", "apiserver_health", "get"]

MAX_BODY = 512  # enough for an apiserver's "[-]etcd failed" lines, short enough for a report
USER_AGENT = "netconform-probe"
_REDACTED = "<redacted>"


@dataclass
class PeerCert:
    """The certificate the server presented."""

    subject: str  # RFC 4514, e.g. "CN=kube-apiserver"
    issuer: str
    sans: list[str]  # "DNS:kubernetes.default.svc", "IP:172.20.0.1"
    not_before: str  # ISO 8601, UTC
    not_after: str
    serial: str  # hex
    sha256: str  # fingerprint of the DER certificate
    verified: bool  # False: read on a second, unverified handshake only to show what was served


@dataclass
class HttpsResult:
    """One HTTPS GET. `ok`: TLS verified and a 2xx answer; else `error_kind` says which stage failed."""

    ip: str
    port: int
    path: str
    server_name: str  # the name (or IP) the certificate was verified against
    ok: bool = False
    error_kind: str | None = None  # table in the module docstring
    error: str = ""
    errno_name: str | None = None
    tcp: TcpResult | None = None
    tls_version: str | None = None
    cipher: str | None = None
    verify_code: int | None = None  # OpenSSL X509_V_ERR_* on tls-verify-failed
    peer_cert: PeerCert | None = None
    status: int | None = None
    reason: str = ""
    body: str = ""  # the first MAX_BODY characters
    body_truncated: bool = False
    token_sent: bool = False
    tcp_ms: float | None = None
    tls_ms: float | None = None
    http_ms: float | None = None  # request sent to status line and body read
    total_ms: float | None = None


@dataclass
class ApiserverHealth:
    """/livez and /readyz of one apiserver address, each on its own connection(s), with latencies.

    With `attempts` > 1 (a ClusterIP in front of several endpoints) each path is retried on a new
    connection until a 200, and every attempt is kept: a dead endpoint behind the ClusterIP shows
    as a failed attempt without making the verdict depend on luck.
    """

    ip: str
    port: int
    server_name: str
    ok: bool  # both answered 200
    livez_ok: bool
    readyz_ok: bool
    livez_ms: float | None = None  # total_ms of the attempt that succeeded
    readyz_ms: float | None = None
    livez: list[HttpsResult] = field(default_factory=list)
    readyz: list[HttpsResult] = field(default_factory=list)
    error_kind: str | None = None  # the first failing path's last attempt
    error: str = ""


def get(ip: str, port: int, path: str, *, ca_pem: str, server_name: str | None = None,
        timeout: float = 3.0, token: str | None = None) -> HttpsResult:
    """GET `path` from `ip:port` over TLS verified against `ca_pem` and `server_name` (or the IP).

    `timeout` bounds connect + handshake + answer together. Verification is never skipped: an
    empty `ca_pem` is a caller bug (ValueError), a malformed one a "ca-invalid" result.

    >>> r = get("172.20.0.1", 443, "/readyz", ca_pem=ca, server_name="kubernetes.default.svc")
    >>> r.error_kind, r.status, r.body.splitlines()[-1]
    ('http-status', 500, 'readyz check failed')
    """
    if not ca_pem or not str(ca_pem).strip():
        raise ValueError("ca_pem is required: the probe never skips certificate verification")
    _, bare_ip, _ = parse_ip(ip)
    result = HttpsResult(ip=ip, port=port, path=path, server_name=server_name or bare_ip)
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        _run(result, ca_pem, deadline, token)
    finally:
        result.total_ms = ms(time.monotonic() - t0)
        if token:
            result.body = result.body.replace(token, _REDACTED)
            result.error = result.error.replace(token, _REDACTED)
    return result


def _context(ca_pem: str) -> ssl.SSLContext:
    # PROTOCOL_TLS_CLIENT: CERT_REQUIRED and check_hostname on; only the cluster CA is trusted
    # (no system store: a public CA must not vouch for an apiserver).
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca_pem if isinstance(ca_pem, str) else ca_pem.decode())
    return ctx


def _run(result: HttpsResult, ca_pem: str, deadline: float, token: str | None) -> None:
    try:
        ctx = _context(ca_pem)
    except (ssl.SSLError, ValueError) as e:
        result.error_kind, result.error = "ca-invalid", f"the CA PEM given cannot be loaded: {e}"
        return
    sock, tcp = open_socket(result.ip, result.port, remaining(deadline))
    result.tcp, result.tcp_ms = tcp, tcp.latency_ms
    if sock is None:
        result.error_kind, result.error, result.errno_name = tcp.error_kind, tcp.error, tcp.errno_name
        return
    t1 = time.monotonic()
    try:
        sock.settimeout(max(remaining(deadline), 0.001))
        tls = ctx.wrap_socket(sock, server_hostname=result.server_name)
    except OSError as e:  # ssl.SSLError, its verification error and TimeoutError are all OSErrors
        sock.close()
        result.tls_ms = ms(time.monotonic() - t1)
        _handshake_failed(result, e, deadline)
        return
    result.tls_ms = ms(time.monotonic() - t1)
    with tls:
        result.tls_version, result.cipher = tls.version(), (tls.cipher() or (None,))[0]
        result.peer_cert = _peer_cert(tls.getpeercert(binary_form=True), verified=True)
        _exchange(result, tls, deadline, token)


def _handshake_failed(result: HttpsResult, exc: OSError, deadline: float) -> None:
    if isinstance(exc, ssl.SSLCertVerificationError):
        result.error_kind, result.verify_code = "tls-verify-failed", exc.verify_code
        result.error = exc.verify_message or str(exc)
        result.peer_cert = _unverified_peer_cert(result, deadline)
    elif isinstance(exc, TimeoutError):
        result.error_kind, result.error = "tls-handshake-timeout", "TLS handshake did not complete in time"
    else:
        result.error_kind, result.errno_name = "tls-error", errno_name(exc)
        result.error = f"TLS handshake failed: {getattr(exc, 'reason', None) or describe(exc)}"


def _exchange(result: HttpsResult, tls: ssl.SSLSocket, deadline: float, token: str | None) -> None:
    host = result.server_name if ":" not in result.server_name else f"[{result.server_name}]"
    lines = [f"GET {result.path} HTTP/1.1", f"Host: {host}:{result.port}", f"User-Agent: {USER_AGENT}",
             "Accept: */*", "Connection: close"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
        result.token_sent = True
    t2 = time.monotonic()
    try:
        tls.settimeout(max(remaining(deadline), 0.001))
        tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        resp = http.client.HTTPResponse(tls, method="GET")
        resp.begin()
        result.status, result.reason = resp.status, resp.reason
        raw = resp.read(MAX_BODY + 1)
    except TimeoutError:
        result.http_ms = ms(time.monotonic() - t2)
        if result.status is None:
            result.error_kind, result.error = "http-timeout", "no HTTP answer in time after the TLS handshake"
            return
        raw = b""  # status line arrived, body did not: judge by the status
    except (http.client.HTTPException, OSError) as e:
        result.http_ms = ms(time.monotonic() - t2)
        result.error_kind, result.errno_name = "http-error", errno_name(e)
        result.error = f"no valid HTTP answer: {type(e).__name__}: {describe(e)}"
        return
    result.http_ms = ms(time.monotonic() - t2)
    text = raw.decode("utf-8", "replace")
    result.body, result.body_truncated = text[:MAX_BODY], len(raw) > MAX_BODY
    if 200 <= result.status < 300:
        result.ok = True
    else:
        result.error_kind = "http-status"
        result.error = f"HTTP {result.status} {result.reason}".rstrip()


def _peer_cert(der: bytes | None, verified: bool) -> PeerCert | None:
    """The certificate's fields, read by cryptography where it is importable (a node, a laptop)
    and by `_der_cert_fields` elsewhere (a debug pod's stock python3 has no cryptography, and a
    C extension cannot ship in the remote payload). Both give the same strings; a certificate
    neither can read is left out (the verdict never depends on it)."""
    if not der:
        return None
    fields = None
    try:
        fields = _cryptography_cert_fields(der)
    except ValueError:  # a certificate cryptography refuses (e.g. a negative serial): try ours
        pass
    if fields is None:
        try:
            fields = _der_cert_fields(der)
        except (ValueError, IndexError):
            return None
    return PeerCert(**fields, sha256=hashlib.sha256(der).hexdigest(), verified=verified)


def _cryptography_cert_fields(der: bytes) -> dict | None:
    """PeerCert fields by cryptography; None when it is missing or older than 42 (no *_utc)."""
    try:
        from cryptography import x509
    except ImportError:
        return None
    if not hasattr(x509.Certificate, "not_valid_before_utc"):
        return None
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
        sans += [f"IP:{a}" for a in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        sans = []
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(), "sans": sans,
            "not_before": cert.not_valid_before_utc.isoformat(), "not_after": cert.not_valid_after_utc.isoformat(),
            "serial": f"{cert.serial_number:x}"}


# -- a DER reader for the few certificate fields PeerCert shows (RFC 5280 section 4.1) ----------
# cryptography's short names for RFC 4514 strings; other attribute types print as dotted OIDs.
_DN_NAMES = {"2.5.4.3": "CN", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O", "2.5.4.11": "OU",
             "2.5.4.6": "C", "2.5.4.9": "STREET", "0.9.2342.19200300.100.1.25": "DC",
             "0.9.2342.19200300.100.1.1": "UID"}
_SAN_OID = "2.5.29.17"
_BITS, _UTCTIME, _UNIVERSAL, _BMP = 0x03, 0x17, 0x1C, 0x1E  # universal tags (X.680)


def _tlv(data: bytes, i: int) -> tuple[int, bytes, int]:
    """(tag, contents, offset after) of the DER element at `i`."""
    tag, n = data[i], data[i + 1]
    i += 2
    if n & 0x80:
        width = n & 0x7F
        if not 0 < width <= 4:
            raise ValueError("unsupported DER length")
        n = int.from_bytes(data[i:i + width], "big")
        i += width
    if i + n > len(data):
        raise ValueError("truncated DER element")
    return tag, data[i:i + n], i + n


def _children(data: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i < len(data):
        tag, body, i = _tlv(data, i)
        out.append((tag, body))
    return out


def _oid(body: bytes) -> str:
    arcs, n = [], 0
    for b in body:
        n = n << 7 | b & 0x7F
        if not b & 0x80:
            arcs.append(n)
            n = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]]))


def _dn_value(tag: int, body: bytes) -> str:
    # As cryptography decodes them: BMP/Universal by their encodings, a BitString (x500
    # UniqueIdentifier) as "#" + its raw contents in hex, every other string type as UTF-8.
    if tag == _BITS:
        return "#" + body.hex() if body else ""
    if tag == _BMP:
        text = body.decode("utf_16_be", "replace")
    elif tag == _UNIVERSAL:
        text = body.decode("utf_32_be", "replace")
    else:
        text = body.decode("utf-8", "replace")
    if not text:
        return ""
    for ch in '\\"+,;<>':
        text = text.replace(ch, "\\" + ch)
    text = text.replace("\0", "\\00")
    if text[0] == "#" or (text[0] == " " and len(text) > 1):
        text = "\\" + text
    if text[-1] == " ":
        text = text[:-1] + "\\ "
    return text


def _rfc4514(name: bytes) -> str:
    rdns = []
    for _, rdn in _children(name):
        attrs = []
        for _, atv in _children(rdn):
            (_, oid), (tag, value) = _children(atv)[:2]
            dotted = _oid(oid)
            attrs.append(f"{_DN_NAMES.get(dotted, dotted)}={_dn_value(tag, value)}")
        rdns.append("+".join(attrs))
    return ",".join(reversed(rdns))


def _time(tag: int, body: bytes) -> str:
    text = body.decode("ascii").rstrip("Z")
    if tag == _UTCTIME:  # YYMMDDHHMMSS; RFC 5280: YY < 50 is 20YY
        text = ("20" if int(text[:2]) < 50 else "19") + text
    whole, _, frac = text.partition(".")
    t = datetime.datetime.strptime(whole, "%Y%m%d%H%M%S").replace(tzinfo=datetime.timezone.utc)
    if frac:
        t = t.replace(microsecond=int(frac[:6].ljust(6, "0")))
    return t.isoformat()


def _sans(ext_value: bytes) -> list[str]:
    (_, names), = _children(ext_value)
    dns, ips = [], []
    for tag, body in _children(names):
        if tag == 0x82:  # [2] dNSName
            dns.append(f"DNS:{body.decode('utf-8', 'replace')}")
        elif tag == 0x87 and len(body) in (4, 16):  # [7] iPAddress
            ips.append(f"IP:{ipaddress.ip_address(body)}")
    return dns + ips


def _der_cert_fields(der: bytes) -> dict:
    """PeerCert fields read from the DER certificate itself (stdlib only)."""
    cert = _children(der)[0][1]
    tbs = _children(_children(cert)[0][1])
    if tbs[0][0] == 0xA0:  # [0] version, absent for v1 certificates
        tbs = tbs[1:]
    serial, issuer, validity, subject = tbs[0], tbs[2], tbs[3], tbs[4]
    (nb_tag, nb), (na_tag, na) = _children(validity[1])
    sans: list[str] = []
    for tag, body in tbs[6:]:
        if tag != 0xA3:  # [3] extensions
            continue
        (_, exts), = _children(body)
        for _, ext in _children(exts):
            parts = _children(ext)
            if _oid(parts[0][1]) == _SAN_OID:
                sans = _sans(parts[-1][1])
    return {"subject": _rfc4514(subject[1]), "issuer": _rfc4514(issuer[1]), "sans": sans,
            "not_before": _time(nb_tag, nb), "not_after": _time(na_tag, na),
            "serial": f"{int.from_bytes(serial[1], 'big', signed=True):x}"}


def _unverified_peer_cert(result: HttpsResult, deadline: float) -> PeerCert | None:
    """After a failed verification: what certificate *was* served, for the report.

    Python 3.11 cannot hand out the peer certificate of a failed handshake, so this opens a
    second connection without verification, reads the certificate and closes it. Nothing is
    sent over it and the verdict stays "tls-verify-failed"; the cert is marked unverified.
    """
    sock, _ = open_socket(result.ip, result.port, max(remaining(deadline), 0.001))
    if sock is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        sock.settimeout(max(remaining(deadline), 0.001))
        with ctx.wrap_socket(sock, server_hostname=result.server_name) as tls:
            return _peer_cert(tls.getpeercert(binary_form=True), verified=False)
    except (ssl.SSLError, OSError):
        return None
    finally:
        sock.close()


def apiserver_health(ip: str, port: int, *, ca_pem: str, server_name: str | None = None,
                     timeout: float = 3.0, token: str | None = None, attempts: int = 1) -> ApiserverHealth:
    """GET /livez, then /readyz, from `ip:port`, each expecting 200 with TLS verified.

    Use attempts=1 for an endpoint and a few for a ClusterIP (see ApiserverHealth). Takes at most
    2 x attempts x timeout. No token is needed by default: /livez and /readyz are readable by
    system:unauthenticated (the system:public-info-viewer role); a 401/403 shows anonymous auth
    disabled and is reported as http-status.

    >>> h = apiserver_health("172.20.0.1", 443, ca_pem=ca, server_name="kubernetes.default.svc", attempts=3)
    >>> h.ok, [a.error_kind for a in h.livez], h.livez_ms
    (True, ['timeout', None], 2.913)
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    health = ApiserverHealth(ip=ip, port=port, server_name=server_name or parse_ip(ip)[1], ok=False,
                             livez_ok=False, readyz_ok=False)
    for path, tries in (("/livez", health.livez), ("/readyz", health.readyz)):
        for _ in range(attempts):
            r = get(ip, port, path, ca_pem=ca_pem, server_name=server_name, timeout=timeout, token=token)
            tries.append(r)
            if r.ok:
                break
    health.livez_ok, health.readyz_ok = health.livez[-1].ok, health.readyz[-1].ok
    health.livez_ms = health.livez[-1].total_ms if health.livez_ok else None
    health.readyz_ms = health.readyz[-1].total_ms if health.readyz_ok else None
    health.ok = health.livez_ok and health.readyz_ok
    failed = next((t[-1] for t in (health.livez, health.readyz) if not t[-1].ok), None)
    if failed is not None:
        health.error_kind = failed.error_kind
        health.error = f"{failed.path}: {failed.error}"
    return health
