"""Generate the CustomResourceDefinitions from the pydantic models (``make crds``).

Pydantic emits JSON Schema (draft 2020-12, with ``$ref``/``$defs`` and ``anyOf`` for optional
fields); Kubernetes wants a *structural* OpenAPI v3 schema: every node typed, no references, no
``anyOf`` around a type, ``exclusiveMinimum`` as a boolean. This module does that translation and
nothing else, so that the models stay the single source of the wire format.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from promptloop.api.agentrollout import AgentRollout
from promptloop.api.promptproposal import PromptProposal
from promptloop.constants import GROUP, VERSION

__all__ = ["RESOURCES", "crd_for", "main", "render_all"]

RESOURCES: tuple[type[BaseModel], ...] = (AgentRollout, PromptProposal)

# Keys of JSON Schema that have no place (or another meaning) in a structural schema.
_DROPPED_KEYS = {"title", "additionalProperties", "$defs", "x-promptloop-crd"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline every ``$ref``, unwrap ``Optional`` and translate keywords, recursively."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node

    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        # Siblings of $ref (the field's own description, validations) win over the model's.
        node = {**target, **node}
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union of {branches} structurally")
        node = {**_resolve(branches[0], defs), **node}
        if node.get("default", ...) is None:
            node.pop("default")

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            # A map (dict[str, X]) keeps additionalProperties as its value schema.
            if key == "additionalProperties" and isinstance(value, dict):
                out[key] = _resolve(value, defs)
            continue
        if key == "properties":
            out[key] = {name: _resolve(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _resolve(value, defs)
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        else:
            out[key] = value
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _schema_of(model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    meta = raw["x-promptloop-crd"]
    properties = raw["properties"]
    schema = {
        "type": "object",
        "description": meta["description"],
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "The API group and version."},
            "kind": {"type": "string", "description": "The kind of object."},
            # The API server owns metadata's schema and refuses anything here but its type.
            "metadata": {"type": "object"},
            "spec": _resolve(properties["spec"], defs),
            "status": _resolve(properties["status"], defs),
        },
    }
    schema["properties"]["status"].pop("default", None)
    _mark_condition_lists(schema)
    return schema, meta


def _mark_condition_lists(node: Any) -> None:
    """Conditions are a map keyed by type, as metav1.Condition lists are."""
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            if name == "conditions" and sub.get("type") == "array":
                sub["x-kubernetes-list-type"] = "map"
                sub["x-kubernetes-list-map-keys"] = ["type"]
            _mark_condition_lists(sub)
        if "items" in node:
            _mark_condition_lists(node["items"])


def _check_described(node: dict[str, Any], path: str) -> None:
    for name, sub in node.get("properties", {}).items():
        if not sub.get("description") and not (path.count(".") == 0 and name == "metadata"):
            raise ValueError(f"{path}.{name} has no description")
        _check_described(sub, f"{path}.{name}")
    if "items" in node:
        _check_described(node["items"], f"{path}[]")


def crd_for(model: type[BaseModel]) -> dict[str, Any]:
    """The CustomResourceDefinition of one resource model.

    Parameters
    ----------
    model
        :class:`AgentRollout` or :class:`PromptProposal`.

    Returns
    -------
    dict
        The CRD as a plain dict, ready to dump as YAML.

    Raises
    ------
    ValueError
        When a field has no description or a type cannot be expressed structurally.
    """
    schema, meta = _schema_of(model)
    _check_described(schema, meta["kind"])
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{meta['plural']}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "promptloop"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": meta["kind"],
                "listKind": f"{meta['kind']}List",
                "plural": meta["plural"],
                "singular": meta["singular"],
                "shortNames": meta["shortNames"],
                "categories": meta["categories"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": meta["printerColumns"],
                    # Server-side filtering (Kubernetes >= 1.32) on the fields handlers list by.
                    **(
                        {"selectableFields": [{"jsonPath": f} for f in meta["selectableFields"]]}
                        if meta.get("selectableFields")
                        else {}
                    ),
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def render_all() -> dict[str, str]:
    """Every CRD as YAML text, keyed by its file name under ``crds/``."""
    header = "# Generated by `make crds` from operator/promptloop/api/. Do not edit.\n"
    files = {}
    for model in RESOURCES:
        crd = crd_for(model)
        name = f"{GROUP}_{crd['spec']['names']['plural']}.yaml"
        files[name] = header + yaml.safe_dump(crd, sort_keys=False, width=100)
    return files


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check``, compare) the CRD files in a directory."""
    parser = argparse.ArgumentParser(prog="promptloop-crdgen", description=__doc__)
    parser.add_argument("directory", type=Path, nargs="?", default=Path("crds"))
    parser.add_argument("--check", action="store_true", help="fail if the files differ")
    args = parser.parse_args(argv)
    drifted = []
    for name, text in render_all().items():
        path = args.directory / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                drifted.append(str(path))
        else:
            args.directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if drifted:
        print("out of date (run `make crds`): " + ", ".join(drifted), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
