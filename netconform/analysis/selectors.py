"""Kubernetes label selectors (apimachinery `labels.Parse` syntax and `metav1.LabelSelector`),
evaluated on plain label dicts — for target selection and for SecurityGroupPolicy matching.

>>> reqs = parse_label_selector("app=web,tier in (a,b),!legacy")
>>> all(r.matches({"app": "web", "tier": "a"}) for r in reqs)
True
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Requirement", "parse_label_selector", "label_selector_from_dict", "selector_matches"]


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return has and value == self.values[0]
        if self.op == "!=":
            return not has or value != self.values[0]
        if self.op == "in":
            return has and value in self.values
        if self.op == "notin":
            return not has or value not in self.values
        if self.op == "exists":
            return has
        return not has  # "!"


_SET_RE = re.compile(r"^([^\s!=(),]+)\s+(in|notin)\s*\((.*)\)$")


def _split_top(s: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(selector: str | None) -> list[Requirement]:
    """Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h` (apimachinery labels.Parse syntax).

    Raises ValueError naming the requirement it cannot parse.
    """
    reqs = []
    for term in _split_top(selector or ""):
        if term.startswith("!"):
            key, op, values = term[1:].strip(), "!", ()
        elif m := _SET_RE.match(term):
            key, op = m.group(1), m.group(2)
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
        elif "!=" in term:
            key, _, v = term.partition("!=")
            op, values = "!=", (v.strip(),)
        elif "==" in term:
            key, _, v = term.partition("==")
            op, values = "=", (v.strip(),)
        elif "=" in term:
            key, _, v = term.partition("=")
            op, values = "=", (v.strip(),)
        else:
            key, op, values = term, "exists", ()
        key = key.strip()
        if not key or re.search(r"[\s()=!,]", key) or any(re.search(r"[\s()=!,]", v) for v in values):
            raise ValueError(f"unable to parse requirement: {term!r}")
        reqs.append(Requirement(key, op, values))
    return reqs


def label_selector_from_dict(sel: dict[str, Any]) -> list[Requirement]:
    """A `metav1.LabelSelector` (matchLabels, matchExpressions) as requirements."""
    reqs = [Requirement(k, "=", (v,)) for k, v in (sel.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for e in sel.get("matchExpressions") or []:
        reqs.append(Requirement(e["key"], ops[e["operator"]], tuple(e.get("values") or ())))
    return reqs


def selector_matches(requirements: list[Requirement], labels: dict[str, str]) -> bool:
    """All requirements hold (an empty selector selects everything, as in the API)."""
    return all(r.matches(labels) for r in requirements)
