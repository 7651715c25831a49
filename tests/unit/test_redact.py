"""netconform.redact: secrets never reach a file; everything else is left exactly as it was."""
from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from netconform.redact import MARK, Redactor, is_secret_name, known_secrets

DATA = Path(__file__).parent / "data"
TOKEN = "q7V3rS9xYk2LmN0pB4cD6eF8gH1jK5tW"  # urlsafe, like the lab's secrets.token_urlsafe(32)
AKID = "AKIAQX3RSTUVWXYZ2345"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("text", [
    f"curl -H 'Authorization: Bearer {TOKEN}' https://10.0.0.1:443/livez",
    f"authorization: bearer {TOKEN}",
    f'{{"Authorization": "Bearer {TOKEN}"}}',
    f"aws_access_key_id = {AKID}\naws_secret_access_key = {AWS_SECRET}\n",
    f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET}",
    f'{{"name": "AWS_SECRET_ACCESS_KEY", "value": "{AWS_SECRET}"}}',
    f'"SecretAccessKey": "{AWS_SECRET}"',
    f"users:\n- name: admin\n  user:\n    token: {TOKEN}\n",
    f"client-key-data: {base64.b64encode(TOKEN.encode()).decode()}",
    f"https://admin:{TOKEN}@registry.example.com/v2/",
    "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0.c2lnbmF0dXJlLWJ5dGVz",
    f"-----BEGIN RSA PRIVATE KEY-----\n{TOKEN}\n{TOKEN}\n-----END RSA PRIVATE KEY-----",
    f"GITHUB_TOKEN=ghp_{TOKEN}abcd",
    f"password: {TOKEN}",
])
def test_pattern_secrets_are_redacted(text):
    r = Redactor()
    out = r.text(text)
    assert MARK in out
    for secret in (TOKEN, AKID, AWS_SECRET, "c2lnbmF0dXJlLWJ5dGVz"):
        assert secret not in out
    assert r.counts  # what was redacted is counted (never recorded)


def test_known_values_are_redacted_anywhere_and_base64_encoded():
    r = Redactor(known=[TOKEN, "short"])
    out = r.text(f"annotation value {TOKEN}; b64 {base64.b64encode(TOKEN.encode()).decode()}; short stays")
    assert TOKEN not in out and base64.b64encode(TOKEN.encode()).decode().rstrip("=") not in out
    assert "short stays" in out  # values under 8 characters would redact half the report
    assert r.counts["known-value"] == 2


def test_structured_redaction_keeps_the_shape():
    pod = {"metadata": {"name": "web-0", "annotations": {"deploy-token": TOKEN}},
           "spec": {"automountServiceAccountToken": True,
                    "volumes": [{"name": "creds", "secret": {"secretName": "aws-creds"}}],
                    "containers": [{"name": "app", "env": [
                        {"name": "AWS_SECRET_ACCESS_KEY", "value": AWS_SECRET},
                        {"name": "TOKEN_FILE", "value": "/var/run/secrets/token"},
                        {"name": "LOG_LEVEL", "value": "debug"}]}]}}
    out = Redactor().data(pod)
    assert out["metadata"]["annotations"]["deploy-token"] == MARK
    env = {e["name"]: e["value"] for e in out["spec"]["containers"][0]["env"]}
    assert env == {"AWS_SECRET_ACCESS_KEY": MARK, "TOKEN_FILE": "/var/run/secrets/token", "LOG_LEVEL": "debug"}
    assert out["spec"]["volumes"][0]["secret"]["secretName"] == "aws-creds"
    assert out["spec"]["automountServiceAccountToken"] is True


@pytest.mark.parametrize("text", [
    ("pod default/web-0: kubernetes.default (the kubernetes Service (short name, via the search list)) did not "
     "resolve over UDP through 172.20.0.10: timeout (no answer in 3.0 s); no CoreDNS replica answered directly"),
    "secretName: aws-creds",
    "automountServiceAccountToken: true",
    "serviceAccountToken:\n  expirationSeconds: 3607\n  path: token",
    "tokenFile: /var/run/secrets/eks.amazonaws.com/serviceaccount/token",
    "the security groups for pods (secret groups) are missing",
    "https://kubernetes.io/docs/tasks/administer-cluster/dns-debugging-resolution/",
    "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIUY\n-----END CERTIFICATE-----",
])
def test_ordinary_text_is_left_alone(text):
    assert Redactor(known=[TOKEN]).text(text) == text


@pytest.mark.parametrize("name", sorted((DATA / "ipjson").rglob("*.json")) + sorted((DATA / "resolvconf").iterdir()),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recorded_outputs_are_left_alone(name):
    text = name.read_text()
    assert Redactor(known=[TOKEN, AWS_SECRET]).text(text) == text


def test_lab_api_objects_are_left_alone():
    from netconform.lab.k8s_objects import objects_from_spec
    from netconform.lab.topology import build_spec

    objs = objects_from_spec(build_spec("redact", "vpc-cni"), ca_pem="-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n",
                             api_server_url="https://127.0.0.1:6443", created=datetime(2025, 1, 1, tzinfo=UTC))
    r = Redactor(known=[TOKEN])
    assert r.data(objs) == objs
    assert r.text(json.dumps(objs)) == json.dumps(objs)


def test_redaction_is_idempotent():
    r = Redactor(known=[TOKEN])
    once = r.text(f"Authorization: Bearer {TOKEN}\npassword={AWS_SECRET}\n{AKID}")
    assert r.text(once) == once
    assert not r.contains_secret(once)


def test_long_lines_are_redacted_whole():
    # report.html keeps all results on one multi-megabyte line: a secret far into it still goes.
    filler = "x " * 500_000
    text = f"{filler}Authorization: Bearer {TOKEN} {filler}token={AWS_SECRET}"
    out = Redactor().text(text)
    assert TOKEN not in out and AWS_SECRET not in out and len(out) < len(text)


@pytest.mark.parametrize("name, secret", [
    ("AWS_SECRET_ACCESS_KEY", True), ("AWS_SESSION_TOKEN", True), ("GITHUB_TOKEN", True), ("client-key-data", True),
    ("DB_PASSWORD", True), ("apiKey", True), ("AWS_DEFAULT_REGION", False), ("tokenFile", False),
    ("secretName", False), ("TOKEN_PATH", False), ("severity", False), ("KUBECONFIG", False),
])
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret


def test_known_secrets_from_kubeconfig_and_environment(tmp_path):
    key_pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n"
    token_file = tmp_path / "token"
    token_file.write_text("from-a-token-file-0123")
    kc = tmp_path / "kubeconfig"
    kc.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://x", "certificate-authority-data": "Q0EtREFUQQ=="}}],
        "users": [{"name": "a", "user": {"token": TOKEN}},
                  {"name": "b", "user": {"client-key-data": base64.b64encode(key_pem.encode()).decode()}},
                  {"name": "c", "user": {"tokenFile": str(token_file)}},
                  {"name": "d", "user": {"auth-provider": {"config": {"id-token": "id-token-value-1234",
                                                                     "client-secret": "client-secret-5678"}}}}]}))
    found = known_secrets({"KUBECONFIG": str(kc), "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_REGION": "us-west-2"})
    for secret in (TOKEN, key_pem, "from-a-token-file-0123", "id-token-value-1234", "client-secret-5678", AWS_SECRET):
        assert secret in found
    assert "us-west-2" not in found and "Q0EtREFUQQ==" not in found


def test_unreadable_kubeconfig_contributes_nothing(tmp_path, monkeypatch):
    from netconform import redact

    monkeypatch.setattr(redact, "IN_CLUSTER_TOKEN", tmp_path / "absent")
    (tmp_path / "bad").write_text("{: not yaml")
    assert known_secrets({"KUBECONFIG": str(tmp_path / "bad")}) == []
    assert known_secrets({"KUBECONFIG": str(tmp_path / "missing")}) == []


def test_serialised_json_stays_valid_and_unchanged_after_structured_redaction():
    doc = {"resolv.conf": f"search svc.cluster.local\n# Authorization: Bearer {TOKEN}\nnameserver 10.0.0.10\n",
           "url": f"https://ci:{TOKEN}@git.example/x\"y", "note": f"token={TOKEN}\\n"}
    r = Redactor()
    once = json.dumps(r.data(doc))
    assert r.text(once) == once  # the text pass over results.json must not eat JSON escapes
    raw = r.text(json.dumps(doc))
    assert TOKEN not in raw and json.loads(raw)["resolv.conf"].endswith("nameserver 10.0.0.10\n")
