"""https.get / apiserver_health against the lab's apiserver endpoint server on loopback (a CA made
here), a listener that never speaks TLS, a plain-HTTP server, and a ClusterIP (iptables DNAT)
that sends every other connection to a dead endpoint."""
from __future__ import annotations

import dataclasses
import http.server
import json
import socket
import subprocess
import threading

import pytest

from netconform.lab.netservers import NetServers
from netconform.lab.pki import CertificateAuthority
from netconform.probes.https import apiserver_health, get
from netconform.runners.local import LocalRunner

API_NAMES = ["kubernetes", "kubernetes.default", "kubernetes.default.svc"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create(d / "ca")
    other = CertificateAuthority.create(d / "other", common_name="someone-else-ca")
    return ca, other, d


@pytest.fixture(scope="module")
def servers():
    with NetServers(thread_name="test-https-probe") as s:
        yield s


@pytest.fixture(scope="module")
def apiserver(pki, servers):
    """An apiserver endpoint on 127.0.0.1 with a cert for 127.0.0.1 and the kubernetes names."""
    ca, _, d = pki
    port = free_port()
    ctx = ca.server_context(d / "srv", "kube-apiserver", ips=["127.0.0.1"], dns=API_NAMES)
    servers.start_https_endpoint("api", None, "127.0.0.1", port, ctx)
    yield port
    servers.set_apiserver_health("api", live=True, ready=True)


def test_livez_ok_with_verified_certificate(pki, apiserver):
    ca, _, _ = pki
    r = get("127.0.0.1", apiserver, "/livez", ca_pem=ca.pem.decode(), timeout=3.0)
    assert (r.ok, r.error_kind, r.status, r.body, r.server_name) == (True, None, 200, "ok", "127.0.0.1")
    assert r.peer_cert.subject == "CN=kube-apiserver" and r.peer_cert.verified
    assert r.peer_cert.issuer == "CN=netconform-lab-ca"
    assert "IP:127.0.0.1" in r.peer_cert.sans and "DNS:kubernetes.default.svc" in r.peer_cert.sans
    assert r.tls_version and r.tcp.ok and r.tcp.local_ip == "127.0.0.1"
    assert None not in (r.tcp_ms, r.tls_ms, r.http_ms, r.total_ms)
    json.dumps(dataclasses.asdict(r))


def test_server_name_is_checked_instead_of_the_ip(pki, apiserver):
    ca, _, _ = pki
    r = get("127.0.0.1", apiserver, "/readyz", ca_pem=ca.pem.decode(), server_name="kubernetes.default.svc")
    assert r.ok and r.server_name == "kubernetes.default.svc"
    bad = get("127.0.0.1", apiserver, "/livez", ca_pem=ca.pem.decode(), server_name="api.example.com")
    assert (bad.ok, bad.error_kind, bad.status) == (False, "tls-verify-failed", None)
    assert "Hostname mismatch" in bad.error and bad.verify_code == 62


def test_wrong_ca_is_tls_verify_failed_with_the_served_cert_as_evidence(pki, apiserver):
    _, other, _ = pki
    r = get("127.0.0.1", apiserver, "/livez", ca_pem=other.pem.decode())
    # the server sends leaf + its CA: OpenSSL meets a self-signed root it was not told to trust
    assert (r.ok, r.error_kind, r.status, r.verify_code) == (False, "tls-verify-failed", None, 19)
    assert r.error == "self-signed certificate in certificate chain"
    assert r.peer_cert.subject == "CN=kube-apiserver" and r.peer_cert.verified is False


def test_readyz_failure_is_http_status_with_the_failing_checks(pki, apiserver, servers):
    ca, _, _ = pki
    servers.set_apiserver_health("api", ready=False)
    h = apiserver_health("127.0.0.1", apiserver, ca_pem=ca.pem.decode(), server_name="kubernetes", attempts=2)
    assert (h.ok, h.livez_ok, h.readyz_ok, h.error_kind) == (False, True, False, "http-status")
    assert len(h.livez) == 1 and h.livez_ms is not None  # stopped at the first 200
    assert [r.status for r in h.readyz] == [500, 500] and h.readyz_ms is None  # every attempt kept
    assert "[-]shutdown failed" in h.readyz[0].body and h.error.startswith("/readyz: HTTP 500")
    servers.set_apiserver_health("api", ready=True)
    h = apiserver_health("127.0.0.1", apiserver, ca_pem=ca.pem.decode(), server_name="kubernetes")
    assert (h.ok, len(h.livez), len(h.readyz), h.error_kind) == (True, 1, 1, None)


def test_refused_and_handshake_timeout(pki):
    ca, _, _ = pki
    assert get("127.0.0.1", free_port(), "/livez", ca_pem=ca.pem.decode()).error_kind == "refused"
    with socket.socket() as mute:  # accepts TCP (backlog) but never answers the ClientHello
        mute.bind(("127.0.0.1", 0))
        mute.listen(4)
        r = get("127.0.0.1", mute.getsockname()[1], "/livez", ca_pem=ca.pem.decode(), timeout=0.5)
    assert (r.ok, r.error_kind, r.tcp.ok) == (False, "tls-handshake-timeout", True)


def test_plain_http_port_is_a_tls_error(pki, servers):
    ca, _, _ = pki
    port = free_port()
    servers.start_https_endpoint("plain", None, "127.0.0.1", port, None)
    r = get("127.0.0.1", port, "/livez", ca_pem=ca.pem.decode())
    assert (r.ok, r.error_kind, r.status) == (False, "tls-error", None)
    assert "TLS handshake failed" in r.error


def test_ca_is_required_and_checked(pki, apiserver):
    with pytest.raises(ValueError):
        get("127.0.0.1", apiserver, "/livez", ca_pem="")
    r = get("127.0.0.1", apiserver, "/livez", ca_pem="-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    assert (r.ok, r.error_kind, r.tcp) == (False, "ca-invalid", None)


class _EchoAuth(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"you sent: {self.headers.get('Authorization')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_token_is_sent_but_never_in_the_result(pki):
    ca, _, d = pki
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoAuth)
    ctx = ca.server_context(d / "echo", "echo", ips=["127.0.0.1"])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.sig"
    try:
        r = get("127.0.0.1", server.server_address[1], "/version", ca_pem=ca.pem.decode(), token=token)
    finally:
        server.shutdown()
        server.server_close()
    assert r.ok and r.token_sent
    assert r.body == "you sent: Bearer <redacted>"  # the server did get it
    assert token not in json.dumps(dataclasses.asdict(r))


def test_clusterip_with_a_dead_endpoint_behind_it(pki, servers, make_netns, tmp_path):
    """kube-proxy style DNAT alternating between a dead and a live endpoint: attempts show both."""
    ca, _, _ = pki
    ns = make_netns("api")
    for ip in ("10.0.200.11/32", "10.0.200.12/32"):
        subprocess.run(["ip", "-n", ns, "addr", "add", ip, "dev", "lo"], check=True, timeout=10)
    # the service CIDR needs a route (a node's default route); DNAT then picks the endpoint
    subprocess.run(["ip", "-n", ns, "route", "add", "10.96.0.0/12", "dev", "lo"], check=True, timeout=10)
    nat = ["ip", "netns", "exec", ns, "iptables", "-w", "-t", "nat", "-A", "OUTPUT", "-d", "10.96.0.1", "-p", "tcp",
           "--dport", "443"]
    subprocess.run([*nat, "-m", "statistic", "--mode", "nth", "--every", "2", "--packet", "0", "-j", "DNAT",
                    "--to-destination", "10.0.200.12:443"], check=True, timeout=10)
    subprocess.run([*nat, "-j", "DNAT", "--to-destination", "10.0.200.11:443"], check=True, timeout=10)
    ctx = ca.server_context(tmp_path, "kube-apiserver", ips=["10.96.0.1", "10.0.200.11"], dns=API_NAMES)
    servers.start_https_endpoint(f"api-{ns}", ns, "10.0.200.11", 443, ctx)
    try:
        with LocalRunner(f"/run/netns/{ns}") as runner:
            h = runner.call("https:apiserver_health", {"ip": "10.96.0.1", "port": 443, "ca_pem": ca.pem.decode(),
                                                       "server_name": "kubernetes.default.svc", "timeout": 2.0,
                                                       "attempts": 3}, timeout=30).raise_for_status()
            endpoint = runner.call("https:apiserver_health", {"ip": "10.0.200.12", "port": 443,
                                                              "ca_pem": ca.pem.decode(), "timeout": 2.0},
                                   timeout=30).raise_for_status()
    finally:
        servers.remove(f"api-{ns}")
    assert h["ok"] and h["error_kind"] is None
    assert [a["error_kind"] for a in h["livez"]] == ["refused", None]
    assert [a["error_kind"] for a in h["readyz"]] == ["refused", None]
    assert (endpoint["ok"], endpoint["error_kind"], len(endpoint["livez"])) == (False, "refused", 1)
