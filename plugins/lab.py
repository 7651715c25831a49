"""`--lab`: bring the built-in lab up for the session and down at the end — on success, failure,
timeout and Ctrl-C — and point the run at it (KUBECONFIG, AWS_ENDPOINT_URL, ...).

Only the controlling process owns the lab; pytest-xdist workers receive its environment through
`workerinput` and never build or remove it.
"""
from __future__ import annotations

import atexit
import os
import signal

import pytest

_ENV_KEY = "netconform_lab_env"


class LabSession:
    """The lab of one pytest run. Registered as plugin `netconform-lab` on the controller."""

    def __init__(self, config: pytest.Config):
        opt = config.option
        self.flavor = opt.lab
        self.name = opt.lab_name or f"pt{os.getpid() % 1000000}"
        self.nodes, self.pods_per_node = opt.lab_nodes, opt.lab_pods_per_node
        self.cluster_domain = opt.lab_cluster_domain
        self.faults: list[tuple[str, str]] = list(opt.lab_fault)
        self.env: dict[str, str] = {}
        self._saved_env: dict[str, str | None] = {}
        self._up = False

    def up(self) -> None:
        from netconform.lab.cli import CliError, lab_env, lab_fault, start_lab

        # Removing the lab must survive SIGTERM (CI timeouts) too, not only Ctrl-C.
        atexit.register(self.down)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            paths = start_lab(self.name, self.flavor, self.nodes, self.pods_per_node, self.cluster_domain)
            self._up = True
            for fault, target in self.faults:
                lab_fault(self.name, fault, target)
        except (CliError, ValueError) as e:
            self.down()
            raise pytest.UsageError(f"--lab: {e}") from None
        self.env = lab_env(paths)
        for k, v in self.env.items():
            self._saved_env[k] = os.environ.get(k)
            os.environ[k] = v

    def down(self) -> None:
        if not self._up:
            return
        from netconform.lab.cli import stop_lab

        self._up = False
        stop_lab(self.name)
        for k, old in self._saved_env.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old

    # -- hooks -------------------------------------------------------------------------------
    def pytest_configure_node(self, node) -> None:
        """xdist: hand the lab's environment to each worker."""
        node.workerinput[_ENV_KEY] = dict(self.env)

    def pytest_report_header(self, config: pytest.Config) -> str:
        faults = ", ".join(f"{f}{':' + t if t else ''}" for f, t in self.faults) or "none"
        return f"netconform lab: {self.name} ({self.flavor}), faults: {faults}"

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.down()


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        os.environ.update(workerinput.get(_ENV_KEY, {}))
        return
    if config.option.lab_fault and not config.option.lab:
        raise pytest.UsageError("--lab-fault needs --lab (or run `netconform-lab fault` on a running lab)")
    if not config.option.lab or config.option.help:
        return
    lab = LabSession(config)
    config.pluginmanager.register(lab, "netconform-lab")
    lab.up()
