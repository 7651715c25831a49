"""Run `netconform-lab ARGS` as an unprivileged user that never reads the checkout (a test helper).

    python -I -B tests/lab/cli_as_user.py --checkout ROOT --user nobody --group nogroup \\
        --report-fd N -- status --name lab1

Started as root. It imports `netconform.lab.cli` from ROOT *as root*, then drops to USER/GROUP for
good (setgroups([]), setresgid, setresuid: no capability and no way back, which it verifies), and
only then runs the CLI's `main()` with `sys.argv = ["netconform-lab", *ARGS]` — exactly what the
installed console script does. Its stdout, stderr and exit code are the CLI's.

Why not `setpriv --reuid=nobody .venv/bin/netconform-lab`: then `nobody` has to read the console
script, the venv, the interpreter's standard library and the checkout, none of which is the CLI's
business, and a checkout (or a pyenv under /root) only root can enter fails the test for a reason
that has nothing to do with the CLI. Here the unprivileged process only does what an operator's
shell would make the CLI do: parse the arguments and touch the lab's own state.

To prove that, an audit hook (installed right after the drop) records every file or folder the
process opens or lists below the checkout, the venv, the interpreter's prefix or any sys.path
entry; the list is written as JSON to fd N when the CLI is done, and the test requires it to be
empty. So the property holds even when the checkout happens to be readable by everyone.
"""
from __future__ import annotations

import grp
import json
import os
import pwd
import sys


def _usage(msg: str) -> None:
    sys.stderr.write(f"cli_as_user: {msg}\n")
    sys.exit(125)


def _parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    if "--" not in argv:
        _usage("expected `--` before the netconform-lab arguments")
    split = argv.index("--")
    own, rest = argv[:split], argv[split + 1:]
    opts = dict(zip(own[0::2], own[1::2], strict=False))
    for need in ("--checkout", "--user", "--group", "--report-fd"):
        if need not in opts:
            _usage(f"missing {need}")
    return opts, rest


def _drop(user: str, group: str) -> None:
    uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    if uid == 0 or gid == 0:
        _usage(f"{user}:{group} is root")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    # Verify: every id is the user's, no supplementary group, no capability left, no way back.
    assert os.getresuid() == (uid, uid, uid) and os.getresgid() == (gid, gid, gid) and os.getgroups() == []
    with open("/proc/self/status") as f:
        caps = {k: v.strip() for k, _, v in (ln.partition(":") for ln in f) if k.startswith("Cap")}
    assert int(caps["CapEff"], 16) == 0 and int(caps["CapPrm"], 16) == 0, caps
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise AssertionError("could become root again after dropping privileges")


def main() -> None:
    opts, args = _parse(sys.argv[1:])
    checkout = os.path.abspath(opts["--checkout"])
    report_fd = int(opts["--report-fd"])
    # -I leaves the script's folder and $PYTHONPATH out of sys.path: the checkout under test goes
    # first, ahead of whatever the venv's editable install points at.
    sys.path.insert(0, checkout)
    from netconform.lab import cli  # as root: the last time anything of the checkout is read

    if not os.path.abspath(cli.__file__).startswith(checkout + os.sep):
        _usage(f"imported {cli.__file__}, not the checkout {checkout}")

    watched = sorted({os.path.abspath(p) for p in [checkout, sys.prefix, sys.exec_prefix, sys.base_prefix,
                                                  sys.base_exec_prefix, *sys.path] if p and p != "/"})
    _drop(opts["--user"], opts["--group"])

    touched: list[str] = []

    def audit(event: str, eargs: tuple) -> None:
        if event not in ("open", "os.listdir", "os.scandir") or not eargs:
            return
        path = eargs[0]
        if isinstance(path, int) or path is None:
            return
        path = os.path.abspath(os.fsdecode(path))
        if any(path == w or path.startswith(w + os.sep) for w in watched) and len(touched) < 50:
            touched.append(f"{event} {path}")

    sys.addaudithook(audit)
    sys.argv = ["netconform-lab", *args]
    code: object = 0
    try:
        code = cli.main()
    except SystemExit as e:  # argparse's own exits
        code = e.code
    finally:
        sys.stdout.flush()
        os.write(report_fd, json.dumps({"uid": os.getuid(), "gid": os.getgid(), "touched": touched}).encode())
        os.close(report_fd)
    sys.exit(code)


if __name__ == "__main__":
    main()
