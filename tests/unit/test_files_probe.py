from netconform.probes.files import read_text


def test_reads_text_and_says_why_not(tmp_path):
    # a kubelet-written resolv.conf (kubelet pkg/kubelet/network/dns/dns.go: search, nameserver, options)
    p = tmp_path / "resolv.conf"
    p.write_text("search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 172.20.0.10\n"
                 "options ndots:5\n")
    r = read_text(str(p))
    assert r.ok and r.text.splitlines()[1] == "nameserver 172.20.0.10" and not r.truncated and r.size == p.stat().st_size
    assert read_text(str(p), max_bytes=6).text == "search" and read_text(str(p), max_bytes=6).truncated
    missing = read_text(str(tmp_path / "nope"))
    assert not missing.ok and missing.errno_name == "ENOENT" and missing.error
    (tmp_path / "bin").write_bytes(b"ok\xff\n")
    assert read_text(str(tmp_path / "bin")).text == "ok\ufffd\n"
