"""resolv.conf parsing and glibc's candidate names, on files as kubelet and pod specs write them."""
from __future__ import annotations

from pathlib import Path

import pytest

from netconform.analysis.resolvconf import (
    candidate_names,
    cluster_domain_from_search,
    parse_resolv_conf,
    search_plan,
)

DATA = Path(__file__).parent / "data" / "resolvconf"


def conf(name: str):
    return parse_resolv_conf((DATA / name).read_text())


def test_eks_default_file():
    c = conf("eks-default.conf")
    assert c.nameservers == ["172.20.0.10"]
    assert c.search == ["default.svc.cluster.local", "svc.cluster.local", "cluster.local",
                        "us-west-2.compute.internal"]
    assert (c.ndots, c.timeout, c.attempts, c.rotate, c.use_vc) == (5, 5, 2, False, False)
    assert c.warnings == []


def test_only_three_nameservers_are_used_like_glibc():
    c = conf("gke-style.conf")
    assert c.nameservers == ["10.8.0.10", "169.254.169.254", "8.8.8.8"]
    assert c.ignored_nameservers == ["1.1.1.1"]
    assert any("first 3 nameservers" in w for w in c.warnings)


def test_semicolon_comment_ipv6_nameserver_and_options():
    c = conf("six-search-ndots2-rotate.conf")
    assert c.nameservers == ["10.100.0.10", "fd00:10:96::a"]
    assert len(c.search) == 6 and c.search[-1] == "example.com"
    assert (c.ndots, c.timeout, c.attempts, c.rotate, c.edns0) == (2, 1, 3, True, True)
    assert c.options == ["ndots:2", "timeout:1", "attempts:3", "rotate", "edns0"]


def test_last_of_domain_and_search_wins():
    assert conf("domain-then-search.conf").search == ["web.svc.cluster.local", "svc.cluster.local",
                                                      "cluster.local"]
    assert conf("search-then-domain.conf").search == ["corp.example"]


def test_glibc_line_rules_for_nameservers():
    c = conf("domain-then-search.conf")
    # trailing text after the address is ignored; an indented keyword is not a keyword;
    # a non-IP nameserver is skipped with a warning
    assert c.nameservers == ["172.20.0.10"]
    assert any("not-an-ip" in w for w in c.warnings)
    assert "single-request-reopen" in c.options


def test_option_limits_and_later_options_override():
    c = conf("ipv6-only.conf")
    assert c.nameservers == ["fd7c:4d3a:9f0e::a"]
    assert (c.ndots, c.timeout, c.attempts, c.use_vc) == (15, 30, 5, True)


def test_no_nameserver_falls_back_to_loopback():
    c = parse_resolv_conf("search svc.cluster.local\n")
    assert c.nameservers == ["127.0.0.1"]
    assert c.warnings


@pytest.mark.parametrize("text, ndots", [("options ndots:abc", 0), ("options ndots:3x", 3), ("options ndots:-2", 0)])
def test_ndots_is_parsed_like_atoi(text, ndots):
    assert parse_resolv_conf(text).ndots == ndots


def test_short_name_goes_through_the_search_list_first():
    c = conf("eks-default.conf")
    assert candidate_names(c, "kubernetes.default") == [
        "kubernetes.default.default.svc.cluster.local.",
        "kubernetes.default.svc.cluster.local.",
        "kubernetes.default.cluster.local.",
        "kubernetes.default.us-west-2.compute.internal.",
        "kubernetes.default.",
    ]


def test_enough_dots_tries_the_name_as_is_first():
    c = conf("six-search-ndots2-rotate.conf")
    assert candidate_names(c, "api.example.com") == [
        "api.example.com.", "api.example.com.payments.svc.cluster.local.", "api.example.com.svc.cluster.local.",
        "api.example.com.cluster.local.", "api.example.com.eu-west-1.compute.internal.",
        "api.example.com.corp.example.com.", "api.example.com.example.com.",
    ]
    # one dot < ndots:2: search first, as-is last
    assert candidate_names(c, "kubernetes.default")[0] == "kubernetes.default.payments.svc.cluster.local."
    assert candidate_names(c, "kubernetes.default")[-1] == "kubernetes.default."


def test_trailing_dot_is_absolute_only():
    assert candidate_names(conf("eks-default.conf"), "kubernetes.default.svc.cluster.local.") == [
        "kubernetes.default.svc.cluster.local."]


def test_root_search_entry_replaces_the_final_as_is_query():
    c = conf("root-in-search.conf")
    assert candidate_names(c, "web") == ["web.default.svc.cluster.local.", "web.", "web.cluster.local."]
    assert search_plan(c, "web") == (None, ["web.default.svc.cluster.local.", "web.", "web.cluster.local."], None)


def test_no_tld_query_skips_dotless_as_is():
    c = parse_resolv_conf("search a.example\noptions no-tld-query ndots:2\n")
    assert candidate_names(c, "web") == ["web.a.example."]
    assert candidate_names(c, "web.x") == ["web.x.a.example.", "web.x."]


def test_without_search_list_the_name_is_asked_as_is():
    assert candidate_names(parse_resolv_conf("nameserver 10.0.0.2\n"), "intranet") == ["intranet."]


def test_cluster_domain_comes_from_the_search_list():
    assert cluster_domain_from_search(conf("eks-default.conf"), "default") == "cluster.local"
    assert cluster_domain_from_search(conf("kubeadm-custom-domain.conf"), "shop") == "k8s.corp.example"
    # a namespace that is not in the file: the svc.<domain> entry still says it
    assert cluster_domain_from_search(conf("kubeadm-custom-domain.conf"), "other") == "k8s.corp.example"
    # dnsPolicy Default: no cluster search entries at all
    assert cluster_domain_from_search(parse_resolv_conf("search ec2.internal\nnameserver 10.0.0.2\n"),
                                      "default") is None
