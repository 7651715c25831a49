"""https.py's PeerCert is the same with cryptography (a node, a laptop) and without it (a debug
pod's stock python3): certificates made here with cryptography, read both ways, and served over
a real TLS handshake on loopback."""
from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import sys
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from netconform.probes import https

UTC = datetime.timezone.utc


def _name(*rdns: list[x509.NameAttribute]) -> x509.Name:
    return x509.Name([x509.RelativeDistinguishedName(attrs) for attrs in rdns])


def _cert(subject: x509.Name, issuer: x509.Name, key, signer, *, serial: int, not_before: datetime.datetime,
          not_after: datetime.datetime, sans: list[x509.GeneralName] | None = None, ca: bool = False) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
         .serial_number(serial).not_valid_before(not_before).not_valid_after(not_after))
    if sans is not None:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    return b.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def pki():
    """A CA and an apiserver-like leaf it signed (names and dates as a kubeadm cluster has them)."""
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = _name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(UTC).replace(microsecond=0)
    ca = _cert(ca_name, ca_name, ca_key, ca_key, serial=1, not_before=now - datetime.timedelta(days=1),
               not_after=now + datetime.timedelta(days=3650), ca=True)
    leaf = _cert(_name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), ca_name, leaf_key, ca_key,
                 serial=0x7D3A5F00C1E2B4A69F3E0D2C1B0A99887766554, not_before=now - datetime.timedelta(hours=1),
                 not_after=now + datetime.timedelta(days=365),
                 sans=[x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default.svc"),
                       x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                       x509.IPAddress(ipaddress.ip_address("172.20.0.1")),
                       x509.IPAddress(ipaddress.ip_address("fd00:10:96::1"))])
    return ca, leaf, leaf_key


@pytest.fixture(scope="module")
def odd(pki) -> list[x509.Certificate]:
    """Names and fields that stress the RFC 4514 and date formats."""
    _, _, key = pki
    issuer = _name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")],
                   [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Ops"),  # a multi-valued RDN
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "#platform")],
                   [x509.NameAttribute(NameOID.COMMON_NAME, "etcd-ca")])
    escapes = _name([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "cluster")],
                    [x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'Acme, Inc. +<x>;"q"\\ ')],
                    [x509.NameAttribute(NameOID.SERIAL_NUMBER, " 0042")],
                    [x509.NameAttribute(NameOID.EMAIL_ADDRESS, "sre@exämple.org")],
                    [x509.NameAttribute(NameOID.LOCALITY_NAME, "Zürich", _type=_ASN1Type.BMPString)],
                    [x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Zug", _type=_ASN1Type.UniversalString)],
                    [x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, b"\x00\xab", _type=_ASN1Type.BitString)],
                    [x509.NameAttribute(NameOID.USER_ID, "system:node:ip-10-0-1-5")],
                    [x509.NameAttribute(NameOID.STREET_ADDRESS, "Main St 1")],
                    [x509.NameAttribute(NameOID.COMMON_NAME, "système")])
    return [
        # UTCTime before 2000, GeneralizedTime after 2049; serial with the high bit set
        _cert(escapes, issuer, key, key, serial=(1 << 159) - 12345, not_before=datetime.datetime(1999, 12, 31, 23, 59, 58),
              not_after=datetime.datetime(2077, 6, 1, 12, 0, 0), sans=[x509.DNSName("*.svc"), x509.RFC822Name("a@b")]),
        # no SAN extension at all, serial 1
        _cert(_name([x509.NameAttribute(NameOID.COMMON_NAME, "front-proxy-client")]), issuer, key, key, serial=1,
              not_before=datetime.datetime(2024, 2, 29, 0, 0, 0), not_after=datetime.datetime(2049, 12, 31, 23, 59, 59)),
        # an empty SAN list is legal DER for us to read; IPs only
        _cert(_name([x509.NameAttribute(NameOID.COMMON_NAME, "10.0.0.1")]), issuer, key, key, serial=255,
              not_before=datetime.datetime(2050, 1, 1), not_after=datetime.datetime(2051, 1, 1),
              sans=[x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]),
    ]


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def test_both_readers_give_the_same_fields(pki, odd):
    ca, leaf, _ = pki
    for cert in [ca, leaf, *odd]:
        der = _der(cert)
        assert https._der_cert_fields(der) == https._cryptography_cert_fields(der), cert.subject


def test_the_formats_are_the_documented_ones(pki, odd):
    _, leaf, _ = pki
    pc = https._peer_cert(_der(leaf), verified=True)
    assert pc.subject == "CN=kube-apiserver" and pc.issuer == "CN=kubernetes"
    assert pc.sans == ["DNS:kubernetes", "DNS:kubernetes.default.svc", "IP:127.0.0.1", "IP:172.20.0.1",
                       "IP:fd00:10:96::1"]
    assert pc.not_before == leaf.not_valid_before_utc.isoformat() and pc.not_before.endswith("+00:00")
    assert pc.serial == "7d3a5f00c1e2b4a69f3e0d2c1b0a99887766554"
    fields = https._der_cert_fields(_der(odd[0]))
    assert fields["subject"].startswith("CN=système,STREET=Main St 1,UID=system:node:ip-10-0-1-5,2.5.4.45=#00ab,")
    assert "O=Acme\\, Inc. \\+\\<x\\>\\;\\\"q\\\"\\\\\\ " in fields["subject"] and "2.5.4.5=\\ 0042" in fields["subject"]
    assert fields["issuer"] == "CN=etcd-ca,O=Ops+OU=\\#platform,C=DE"
    assert (fields["not_before"], fields["not_after"]) == ("1999-12-31T23:59:58+00:00", "2077-06-01T12:00:00+00:00")


def test_peer_cert_without_cryptography_is_identical(pki, odd, monkeypatch):
    ca, leaf, _ = pki
    certs = [(_der(c), https._peer_cert(_der(c), verified=True)) for c in [ca, leaf, *odd]]
    for name in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cryptography", None)  # as a debug pod's python3 sees it
    with pytest.raises(ImportError):
        import cryptography  # noqa: F401
    assert https._cryptography_cert_fields(certs[0][0]) is None
    for der, with_crypto in certs:
        assert https._peer_cert(der, verified=True) == with_crypto


@pytest.fixture
def tls_server(pki, tmp_path):
    """A TLS server on 127.0.0.1 presenting the leaf + CA chain; answers one HTTP 200 per connection."""
    ca, leaf, key = pki
    (tmp_path / "chain.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                                         + ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)  # close() does not wake a blocked accept(): look at `stop` now and then
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(5)
                    tls.recv(4096)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            except (OSError, ssl.SSLError):
                pass  # the unverified second handshake closes without a request

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], ca.public_bytes(serialization.Encoding.PEM).decode()
    stop.set()
    t.join(30)
    srv.close()


def _get_both_ways(port: int, ca_pem: str, monkeypatch, **kw):
    with_crypto = https.get("127.0.0.1", port, "/livez", ca_pem=ca_pem, timeout=10, **kw)
    with monkeypatch.context() as m:
        for name in [n for n in sys.modules if n == "cryptography" or n.startswith("cryptography.")]:
            m.delitem(sys.modules, name)
        m.setitem(sys.modules, "cryptography", None)
        without = https.get("127.0.0.1", port, "/livez", ca_pem=ca_pem, timeout=10, **kw)
    return with_crypto, without


def test_served_certificate_reads_the_same_both_ways(tls_server, monkeypatch):
    port, ca_pem = tls_server
    a, b = _get_both_ways(port, ca_pem, monkeypatch)
    assert a.ok and b.ok, (a.error, b.error)
    assert a.peer_cert == b.peer_cert and a.peer_cert.verified
    assert a.peer_cert.subject == "CN=kube-apiserver" and "IP:127.0.0.1" in a.peer_cert.sans


def test_unverified_certificate_reads_the_same_both_ways(tls_server, monkeypatch):
    """A failed verification shows the served certificate from a second, unverified handshake
    (where getpeercert() gives no dict: only the DER), both ways alike."""
    port, ca_pem = tls_server
    a, b = _get_both_ways(port, ca_pem, monkeypatch, server_name="api.example.com")
    assert (a.error_kind, b.error_kind) == ("tls-verify-failed", "tls-verify-failed")
    assert a.peer_cert is not None and a.peer_cert == b.peer_cert and not a.peer_cert.verified
