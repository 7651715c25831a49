"""junit.xml from a results document (pure), shaped like pytest's own xunit2 output so CI
parsers read it the same way, plus netconform's properties on every testcase: check_id,
severity, area, target.

>>> xml = render_junit(doc)
>>> 'name="check_id" value="dns.resolves"' in xml
True
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from . import model

# XML 1.0 cannot carry most control characters, even escaped.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(s: Any) -> str:
    return _INVALID_XML.sub("?", str(s if s is not None else ""))


def _classname_and_name(nodeid: str) -> tuple[str, str]:
    """`checks/test_dns.py::test_x[p]` -> ("checks.test_dns", "test_x[p]") as pytest's junitxml does."""
    path, _, rest = nodeid.partition("::")
    parts = rest.split("::") if rest else [path]
    module = path.removesuffix(".py")
    classname = ".".join([module.replace("/", ".")] + parts[:-1])
    return classname, parts[-1]


def _case_body(r: dict[str, Any]) -> str:
    lines = [r["diagnosis"], ""]
    if r.get("remediation"):
        lines += ["Remediation: " + model.one_line(r["remediation"]), ""]
    if r.get("files"):
        lines += ["Evidence files: " + ", ".join(r["files"])]
    return "\n".join(lines).strip()


def render_junit(doc: dict[str, Any]) -> str:
    run, results = doc["run"], doc["results"]
    c = model.counts(results)
    suite_attrs = {"name": "netconform", "tests": str(len(results)), "failures": str(c["failed"]),
                   "errors": str(c["error"]), "skipped": str(c["skipped"]),
                   "time": f"{float(run.get('duration_s') or 0):.3f}", "timestamp": _x(run.get("start", "")),
                   "hostname": _x(run.get("host", ""))}
    root = ET.Element("testsuites", {"name": "netconform", "tests": suite_attrs["tests"],
                                     "failures": suite_attrs["failures"], "errors": suite_attrs["errors"],
                                     "skipped": suite_attrs["skipped"], "time": suite_attrs["time"]})
    suite = ET.SubElement(root, "testsuite", suite_attrs)
    props = ET.SubElement(suite, "properties")
    cluster = run.get("cluster", {})
    for name, value in (("run_id", run.get("id")), ("context", cluster.get("context")),
                        ("server", cluster.get("server")), ("kubernetes_version", cluster.get("version")),
                        ("netconform_version", run.get("netconform_version")), ("fail_on", run.get("fail_on")),
                        ("exit_status", run.get("exit_status"))):
        ET.SubElement(props, "property", {"name": name, "value": _x(value)})
    for r in results:
        classname, name = _classname_and_name(r["nodeid"])
        case = ET.SubElement(suite, "testcase", {"classname": _x(classname), "name": _x(name),
                                                 "file": _x(r["nodeid"].split("::")[0]),
                                                 "time": f"{float(r['duration_s']):.3f}"})
        cprops = ET.SubElement(case, "properties")
        for pname, value in (("check_id", r["check_id"]), ("severity", r["severity"]), ("area", r["area"]),
                             ("target", model.target_label(r["target"])),
                             ("counted", "true" if r.get("counted") else "false")):
            ET.SubElement(cprops, "property", {"name": pname, "value": _x(value)})
        if r["outcome"] == "failed":
            el = ET.SubElement(case, "failure", {"message": _x(model.one_line(r["diagnosis"])),
                                                 "type": _x(f"{r['severity']}: {r['check_id']}")})
            el.text = _x(_case_body(r))
        elif r["outcome"] == "error":
            el = ET.SubElement(case, "error", {"message": _x(model.one_line(r["diagnosis"])),
                                               "type": "netconform.internal_error"})
            el.text = _x(r["diagnosis"])
        elif r["outcome"] == "skipped":
            ET.SubElement(case, "skipped", {"message": _x(model.one_line(r["diagnosis"])), "type": "pytest.skip"})
    ET.indent(root, space=" ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
