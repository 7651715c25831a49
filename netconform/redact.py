"""Keep secrets out of every file a run writes: reports, results.json, the bundle, the step summary.

Two layers, because neither alone is enough:

- **known values**: the secrets this process can see — the kubeconfig's tokens, passwords and
  client keys, the in-cluster service-account token, and environment variables whose names say
  they are secrets (AWS_SECRET_ACCESS_KEY, GITHUB_TOKEN, ...). They are replaced wherever they
  appear, whatever the text around them (a token pasted in an annotation is still the token).
- **patterns**: what secrets look like — bearer/basic authorization headers, AWS access key ids,
  `secret=`/`token:`/`password` assignments, JWTs, PEM private keys, GitHub/Slack tokens,
  credentials in URLs — for secrets the run cannot know (someone else's key in a pod spec).

Structured data (API objects, evidence) is redacted by key as well: the value of a `token` or
`client-key-data` key, and the `value` of an env entry named like a secret, go whole.

>>> r = Redactor(known=["s3cr3t-t0ken-value"])
>>> r.text("curl -H 'Authorization: Bearer s3cr3t-t0ken-value' https://10.0.0.1")
"curl -H 'Authorization: Bearer [REDACTED]' https://10.0.0.1"
>>> r.data({"env": [{"name": "DB_PASSWORD", "value": "hunter22"}]})
{'env': [{'name': 'DB_PASSWORD', 'value': '[REDACTED]'}]}
"""
from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["MARK", "Redactor", "known_secrets", "redactor_for_environment"]

MARK = "[REDACTED]"
# Shorter "secrets" would turn every "true" or port number into a redaction.
MIN_KNOWN_LEN = 8

# Words that make a key or variable name a secret's name.
_SECRET_WORD = r"(?:secret|token|passw(?:or)?d|passphrase|api[_-]?key|access[_-]?key|private[_-]?key" \
               r"|client[_-]?key(?:[_-]?data)?|credentials?|auth[_-]?key|session[_-]?key)"
_SECRET_NAME_RE = re.compile(rf"(?i){_SECRET_WORD}")
# Names that contain a secret word but hold no secret.
_NOT_SECRET_NAMES = re.compile(r"(?i)^(?:.*_?(?:file|path|dir|name|names|type|ref|id_file|length|len|count|"
                               r"ttl|expiry|expires?|expiration|hash|kind|max_tokens?|tokens?_used))$")

_PEM = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----[\s\S]*?-----END \1PRIVATE KEY-----")
# A line can only hold a pattern below if its lowercased text holds one of these literals
# (str.find is ~100x faster than one case-insensitive alternation over megabytes of evidence).
_TRIGGER_WORDS = ("secret", "token", "passw", "passphrase", "apikey", "api_key", "api-key", "accesskey",
                  "access_key", "access-key", "private", "clientkey", "client_key", "client-key", "credential",
                  "auth", "sessionkey", "session_key", "session-key", "bearer", "eyj", "a3t", "akia", "asia",
                  "agpa", "aida", "aroa", "aipa", "anpa", "anva", "abia", "acca", "ghp_", "gho_", "ghu_", "ghs_",
                  "ghr_", "github_pat", "xox", "aiza", "://")
_PATTERNS: list[tuple[str, re.Pattern[str], int | str]] = [
    # (rule, regex, group to replace) — group 0 means the whole match. One line at a time. Values
    # stop at a backslash: in serialised JSON, "\n" or "\"" after a secret is syntax, not secret.
    ("authorization-header", re.compile(
        r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|negotiate|digest|aws4-hmac-sha256)\s+)?)"
        r"([^\s\"',;\\]+)"), 2),
    ("bearer", re.compile(r"(?i)(\bbearer\s+)([A-Za-z0-9\-._~+/]{8,}=*)"), 2),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), 0),
    ("aws-access-key-id", re.compile(
        r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}\b"), 0),
    ("github-token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})\b"), 0),
    ("slack-token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"), 0),
    ("google-api-key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), 0),
    ("url-credentials", re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@\"']+:)([^/\s@\"'\\]+)(@)"), 2),
    # `name: value`, `name=value`, `"name": "value"` where the name says secret (checked again by
    # is_secret_name in _replacer, so `secretName: my-volume` stays); the value is one token on the
    # same line, so prose ("secret groups are missing") and YAML mappings are left alone.
    ("secret-assignment", re.compile(
        rf"(?i){_SECRET_WORD}(?P<rest>[A-Za-z0-9_.-]*)[\"']?[ \t]*[:=][ \t]*[\"']?"
        r"(?!(?:true|false|null|none|yes|no)\b)(?!\d+\b)(?P<value>[^\s\"',;&<>}{\]\[\\]{4,})"), "value"),
    # an env entry serialised as JSON: {"name": "AWS_SECRET_ACCESS_KEY", "value": "..."}
    ("secret-env-json", re.compile(
        rf"(?i)(\"name\"\s*:\s*\"[A-Za-z0-9_.-]*{_SECRET_WORD}[A-Za-z0-9_.-]*\"\s*,\s*\"value\"\s*:\s*\")"
        r"((?:[^\"\\]|\\.)+)(\")"), 2),
]


class Redactor:
    """Replaces known secret values and secret-looking text with `[REDACTED]`.

    `counts` tells how many replacements each rule made (for the run's metadata), never what.
    """

    def __init__(self, known: Iterable[str] = ()):
        values = set()
        for v in known:
            if not isinstance(v, str):
                continue
            v = v.strip()
            if len(v) < MIN_KNOWN_LEN or v == MARK:
                continue
            values.add(v)
            # The same secret base64-encoded (a kubeconfig in a ConfigMap, a Basic header).
            b64 = base64.b64encode(v.encode()).decode().rstrip("=")
            if len(b64) >= MIN_KNOWN_LEN:
                values.add(b64)
        # Longest first, so a secret that contains another is replaced whole.
        self._known = sorted(values, key=len, reverse=True)
        self.counts: dict[str, int] = {}

    def _count(self, rule: str, n: int = 1) -> None:
        if n:
            self.counts[rule] = self.counts.get(rule, 0) + n

    def text(self, s: str, *, count: bool = True) -> str:
        """`s` with every known secret and secret-looking value replaced."""
        if not s:
            return s
        for v in self._known:  # str.replace: far faster than one alternation regex
            if v in s:
                if count:
                    self._count("known-value", s.count(v))
                s = s.replace(v, MARK)
        if "PRIVATE KEY-----" in s:
            s, n = _PEM.subn(MARK, s)
            if count:
                self._count("pem-private-key", n)
        spans = _trigger_lines(s)
        if not spans:
            return s
        # Only lines holding a trigger word can match a pattern: most lines of a route table,
        # an iptables dump or a probe transcript never pay for the full set of patterns.
        out, pos = [], 0
        for start, end in spans:
            line = s[start:end]
            for rule, rx, group in _PATTERNS:
                line, n = rx.subn(_replacer(group), line)
                if count:
                    self._count(rule, n)
            out += [s[pos:start], line]
            pos = end
        out.append(s[pos:])
        return "".join(out)

    def data(self, value: Any) -> Any:
        """A copy of JSON-like `value` with secrets redacted by key and by text."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            out = {}
            env_secret = is_secret_name(value.get("name")) if isinstance(value.get("name"), str) else False
            for k, v in value.items():
                if isinstance(v, str) and v and v != MARK and (
                        (isinstance(k, str) and is_secret_name(k)) or (env_secret and k == "value")):
                    out[k] = MARK
                    self._count("secret-key")
                else:
                    out[k] = self.data(v)
            return out
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value

    def contains_secret(self, s: str) -> bool:
        """True if `text(s)` would change `s` (used to decide whether to rewrite a file)."""
        return bool(s) and self.text(s, count=False) != s


_SEPARATORS = frozenset(" \t\"'<>,;{}[]")
# Around a trigger word on a long line (a 2 MB JSON blob in report.html), look this far back and
# ahead, then widen to a separator so no value is cut in two (values never contain one).
_BEFORE, _AFTER = 512, 4096


def _trigger_lines(s: str) -> list[tuple[int, int]]:
    """Disjoint (start, end) spans of `s` around each trigger word: its line, or on a long line a
    window that starts and ends at a separator. In order."""
    low = s.lower()
    raw = []
    for word in _TRIGGER_WORDS:
        i = low.find(word)
        while i != -1:
            line_start = s.rfind("\n", 0, i) + 1
            line_end = s.find("\n", i)
            line_end = len(s) if line_end == -1 else line_end
            start = max(line_start, i - _BEFORE)
            while start > line_start and s[start - 1] not in _SEPARATORS:
                start -= 1
            end = min(line_end, i + _AFTER)
            while end < line_end and s[end] not in _SEPARATORS:
                end += 1
            raw.append((start, end))
            i = low.find(word, i + len(word))
    spans: list[tuple[int, int]] = []
    for start, end in sorted(raw):
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


def _replacer(group: int | str):
    if group == 0:
        return lambda m: MARK

    def repl(m: re.Match[str]) -> str:
        if "rest" in m.re.groupindex:
            # The pattern starts at the secret word; the whole name may begin before it.
            line, i = m.string, m.start()
            while i > 0 and (line[i - 1].isalnum() or line[i - 1] in "_.-"):
                i -= 1
            name = line[i:m.start()] + m.group(0)[: m.end("rest") - m.start()]
            if not is_secret_name(name):
                return m.group(0)
        start, end = m.span(group)
        base = m.start()
        whole = m.group(0)
        return whole[: start - base] + MARK + whole[end - base:]

    return repl


def is_secret_name(name: str) -> bool:
    """Whether a key or variable named `name` holds a secret (`token`, `AWS_SECRET_ACCESS_KEY`, ...).

    >>> is_secret_name("client-key-data"), is_secret_name("tokenFile"), is_secret_name("severity")
    (True, False, False)
    """
    if not name or not _SECRET_NAME_RE.search(name):
        return False
    flat = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name)  # tokenFile -> token_File
    return not _NOT_SECRET_NAMES.match(flat)


# -- what this process can see -------------------------------------------------------------------
_KUBECONFIG_SECRET_KEYS = ("token", "password", "client-key-data", "id-token", "refresh-token",
                           "access-token", "client-secret")
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def known_secrets(environ: Mapping[str, str] | None = None, kubeconfig: str | None = None) -> list[str]:
    """Secret values visible to this process: environment and kubeconfig credentials.

    Never raises: a kubeconfig that cannot be read simply contributes nothing.
    """
    environ = os.environ if environ is None else environ
    found: list[str] = [v for k, v in environ.items() if is_secret_name(k) and v]
    paths = [kubeconfig] if kubeconfig else [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if not paths:
        paths = [str(Path("~/.kube/config").expanduser())]
    for path in paths:
        found += _kubeconfig_secrets(Path(path))
    try:
        found.append(IN_CLUSTER_TOKEN.read_text())
    except OSError:
        pass
    return found


def _kubeconfig_secrets(path: Path) -> list[str]:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return []
    out: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, Mapping):
            for k, sub in v.items():
                if isinstance(sub, str) and (k in _KUBECONFIG_SECRET_KEYS or (isinstance(k, str) and is_secret_name(k))):
                    out.append(sub)
                    if k == "client-key-data":  # the decoded PEM may be pasted elsewhere
                        try:
                            out.append(base64.b64decode(sub).decode())
                        except (ValueError, UnicodeDecodeError):
                            pass
                elif k == "tokenFile" and isinstance(sub, str):
                    try:
                        out.append(Path(sub).read_text())
                    except OSError:
                        pass
                else:
                    walk(sub)
        elif isinstance(v, list):
            for sub in v:
                walk(sub)

    for user in cfg.get("users") or []:
        walk(user)
    return out


def redactor_for_environment(kubeconfig: str | None = None) -> Redactor:
    """A Redactor that knows this process's secrets (environment, kubeconfig, in-cluster token)."""
    return Redactor(known_secrets(kubeconfig=kubeconfig))
