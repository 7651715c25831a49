"""A pod's resolv.conf read the way glibc's stub resolver reads it, and the names it would try.

Kubelet writes the file (dnsPolicy ClusterFirst): `nameserver <kube-dns ClusterIP>`, `search
<ns>.svc.<domain> svc.<domain> <domain> <node's search...>`, `options ndots:5`. What the pod
asks for `kubernetes.default` follows from these lines by glibc rules (resolv/res_init.c,
resolv/res_query.c), which this module reproduces:

- a keyword counts only at the start of a line; `#` or `;` there makes a comment;
- `nameserver` takes the first address after it; glibc uses the first three (MAXNS) only;
  none at all means 127.0.0.1;
- `search` and `domain` replace each other: the last one in the file wins;
- `options ndots:N` (max 15), `timeout:N` (max 30), `attempts:N` (max 5), `rotate`, `edns0`,
  `use-vc`, `no-tld-query`, ... (unknown options are kept, and ignored like glibc does).

musl (Alpine images) differs: it queries all nameservers at once and, when a name has at
least `ndots` dots, never uses the search list. This module is glibc's behaviour only.

>>> conf = parse_resolv_conf("nameserver 172.20.0.10\\nsearch default.svc.cluster.local "
...                          "svc.cluster.local cluster.local\\noptions ndots:5\\n")
>>> candidate_names(conf, "kubernetes.default")
['kubernetes.default.default.svc.cluster.local.', 'kubernetes.default.svc.cluster.local.', \
'kubernetes.default.cluster.local.', 'kubernetes.default.']
>>> cluster_domain_from_search(conf, "default")
'cluster.local'
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

__all__ = ["ResolvConf", "candidate_names", "cluster_domain_from_search", "parse_resolv_conf", "search_plan"]

MAXNS = 3  # glibc resolv.h
RES_MAXNDOTS, RES_MAXRETRANS, RES_MAXRETRY = 15, 30, 5
DEFAULT_NAMESERVER = "127.0.0.1"  # glibc's fallback when the file names none


@dataclass
class ResolvConf:
    """What glibc takes from a resolv.conf; `warnings` lists what it would ignore or fall back on."""

    nameservers: list[str] = field(default_factory=list)  # those glibc uses, in file order
    ignored_nameservers: list[str] = field(default_factory=list)  # beyond the third
    search: list[str] = field(default_factory=list)  # without trailing dots; "." is the root
    ndots: int = 1
    timeout: int = 5  # seconds per try (glibc's base; later tries wait longer)
    attempts: int = 2  # rounds over all nameservers (0 is possible, and then nothing is asked)
    rotate: bool = False
    edns0: bool = False
    use_vc: bool = False  # TCP for every query
    no_tld_query: bool = False
    options: list[str] = field(default_factory=list)  # every option token, in file order
    warnings: list[str] = field(default_factory=list)


def _atoi(text: str) -> int:
    """C atoi: leading digits (with sign), 0 when there are none; what glibc uses for options."""
    text = text.lstrip()
    sign, digits = 1, ""
    if text[:1] and text[:1] in "+-":
        sign, text = (-1 if text[0] == "-" else 1), text[1:]
    for ch in text:
        if not ch.isdigit():
            break
        digits += ch
    return sign * int(digits) if digits else 0


def _keyword(line: str, word: str) -> str | None:
    """The rest of `line` if it starts with `word` followed by a blank (glibc's MATCH), else None."""
    if line.startswith(word) and line[len(word):len(word) + 1] in (" ", "\t"):
        return line[len(word):]
    return None


def parse_resolv_conf(text: str) -> ResolvConf:
    """Parse resolv.conf text as glibc does (see the module docstring for the rules).

    >>> c = parse_resolv_conf("search a.example b.example\\ndomain corp.example\\noptions ndots:2 rotate")
    >>> c.search, c.ndots, c.rotate, c.nameservers
    (['corp.example'], 2, True, ['127.0.0.1'])
    """
    conf = ResolvConf()
    named: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line[0] in "#;":
            continue
        if (rest := _keyword(line, "nameserver")) is not None:
            tokens = rest.split()
            if not tokens:
                conf.warnings.append(f"line {lineno}: nameserver without an address")
                continue
            addr = tokens[0]
            try:
                ipaddress.ip_address(addr.split("%", 1)[0])
            except ValueError:
                conf.warnings.append(f"line {lineno}: nameserver {addr!r} is not an IP address; glibc skips it")
                continue
            named.append(addr)
        elif (rest := _keyword(line, "domain")) is not None:
            tokens = rest.split()
            conf.search = [_domain(tokens[0])] if tokens else []
        elif (rest := _keyword(line, "search")) is not None:
            conf.search = [_domain(t) for t in rest.split()]
        elif (rest := _keyword(line, "options")) is not None:
            for opt in rest.split():
                conf.options.append(opt)
                _apply_option(conf, opt)
        # sortlist and anything else: no effect on which names are asked where
    conf.nameservers, conf.ignored_nameservers = named[:MAXNS], named[MAXNS:]
    if conf.ignored_nameservers:
        conf.warnings.append(f"glibc uses the first {MAXNS} nameservers only; ignored: "
                             + ", ".join(conf.ignored_nameservers))
    if not named:
        conf.nameservers = [DEFAULT_NAMESERVER]
        conf.warnings.append(f"no nameserver line: glibc falls back to {DEFAULT_NAMESERVER}")
    return conf


def _domain(token: str) -> str:
    # glibc strips one leading dot of a search entry when it builds a name; keep "." as the root
    if token.startswith(".") and token != ".":
        token = token[1:]
    return token.rstrip(".") or "."


def _apply_option(conf: ResolvConf, opt: str) -> None:
    if opt.startswith("ndots:"):
        conf.ndots = max(0, min(_atoi(opt[6:]), RES_MAXNDOTS))
    elif opt.startswith("timeout:"):
        conf.timeout = max(0, min(_atoi(opt[8:]), RES_MAXRETRANS))  # glibc waits >= 1 s anyway
    elif opt.startswith("attempts:"):
        conf.attempts = max(0, min(_atoi(opt[9:]), RES_MAXRETRY))
        if conf.attempts == 0:
            conf.warnings.append(f"options {opt}: glibc then sends no query at all")
    elif opt == "rotate":
        conf.rotate = True
    elif opt == "edns0":
        conf.edns0 = True
    elif opt in ("use-vc", "usevc"):
        conf.use_vc = True
    elif opt == "no-tld-query":
        conf.no_tld_query = True


def search_plan(conf: ResolvConf, name: str) -> tuple[str | None, list[str], str | None]:
    """glibc's res_search order for `name` in three parts: (as-is first, search list, as-is last).

    The first part is set for a trailing dot (and then the only one) or at least `ndots` dots;
    the last when the name was not asked as is yet, unless a "." search entry asked it, or
    `no-tld-query` and the name has no dot. Names are absolute (trailing dot).

    >>> search_plan(parse_resolv_conf("search default.svc.cluster.local\\noptions ndots:5"), "web")
    (None, ['web.default.svc.cluster.local.'], 'web.')
    """
    name = name.strip()
    if name.endswith("."):
        return name, [], None
    dots = name.count(".")
    first = name + "." if dots >= conf.ndots else None
    search: list[str] = []
    root_on_list = False
    for domain in conf.search:
        if domain == ".":
            root_on_list = True
            search.append(name + ".")
        else:
            search.append(f"{name}.{domain}.")
    searched = bool(search)
    last = None
    if (dots or not searched or not conf.no_tld_query) and not (first or root_on_list):
        last = name + "."
    return first, search, last


def candidate_names(conf: ResolvConf, name: str) -> list[str]:
    """The absolute names glibc's res_search would query for `name`, in order (trailing dots).

    - a trailing dot: the name itself only;
    - at least `ndots` dots: the name as is first, then each search domain;
    - fewer: each search domain, then the name as is (unless a "." search entry already asked
      it, or `no-tld-query` and the name has no dot at all).

    Every candidate is listed, also those glibc only reaches when earlier ones fail.

    >>> conf = parse_resolv_conf("search ns1.svc.cluster.local svc.cluster.local\\noptions ndots:2")
    >>> candidate_names(conf, "api.example.com")
    ['api.example.com.', 'api.example.com.ns1.svc.cluster.local.', 'api.example.com.svc.cluster.local.']
    """
    first, search, last = search_plan(conf, name)
    return [n for n in (first, *search, last) if n is not None]


def cluster_domain_from_search(conf: ResolvConf, namespace: str) -> str | None:
    """The cluster domain, read from kubelet's `<namespace>.svc.<domain>` search entry.

    Never assumed to be cluster.local. Falls back to a `svc.<domain>` entry (a pod in another
    namespace's resolv.conf shape); None if neither is present (dnsPolicy Default / None).

    >>> conf = parse_resolv_conf("search shop.svc.k8s.corp.example svc.k8s.corp.example k8s.corp.example")
    >>> cluster_domain_from_search(conf, "shop")
    'k8s.corp.example'
    """
    prefix = f"{namespace.lower()}.svc."
    for domain in conf.search:
        d = domain.lower()
        if d.startswith(prefix) and len(d) > len(prefix):
            return domain[len(prefix):]
    for domain in conf.search:
        if domain.lower().startswith("svc.") and len(domain) > 4:
            return domain[4:]
    return None
