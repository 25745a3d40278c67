"""One prompt reader for the operator, the improver and the CLI: where the stable Deployment's
prompt comes from (``render.challenger.stable_prompt_source``, pure) and reading it
(``k8s.sync.SyncKube.stable_prompt``, against a fake API here).

The improver used to have its own reader (``k8s/proposals.find_prompt_ref``) that disagreed with
the operator's. The cases where they disagreed are pinned here with what Kubernetes does: the
kubelet builds a container's environment in ``makeEnvironmentVariables``
(kubernetes/kubernetes ``pkg/kubelet/kubelet_pods.go``) by writing every ``envFrom`` source's keys
into one map in order, then every ``env`` entry into the same map in order (``tmpEnv[envVar.Name]
= runtimeVal``): a later duplicate entry wins, an explicit entry beats ``envFrom``, and a later
``envFrom`` source beats an earlier one.
"""

from __future__ import annotations

from typing import Any

import pytest

from promptloop.api.agentrollout import PromptDelivery
from promptloop.k8s.sync import KubeRequestError, SyncKube
from promptloop.render.challenger import (
    EnvFromRef,
    PromptSourceKind,
    resolve_env_from,
    stable_prompt_source,
)


def deployment(container: dict[str, Any], volumes: list[dict[str, Any]] | None = None) -> Any:
    spec: dict[str, Any] = {"containers": [{"name": "agent", **container}]}
    if volumes is not None:
        spec["volumes"] = volumes
    return {"metadata": {"name": "classifier"}, "spec": {"template": {"spec": spec}}}


FROM_P_K = {"configMapKeyRef": {"name": "p", "key": "k"}}


class FakeKube(SyncKube):
    def __init__(self, maps: dict[str, dict[str, str]]) -> None:  # no API client at all
        self.maps = maps
        self.namespace = "agents"
        self.read: list[str] = []

    def config_map_data(self, name: str) -> dict[str, str]:
        self.read.append(name)
        if name not in self.maps:
            raise KubeRequestError(f"reading ConfigMap agents/{name}", 404, "not found")
        return self.maps[name]


def read(stable: Any, maps: dict[str, dict[str, str]], **prompt: Any) -> tuple[str | None, Any]:
    source = stable_prompt_source(stable_deployment=stable, prompt=PromptDelivery(**prompt))
    return FakeKube(maps).stable_prompt(source)


def test_the_last_duplicate_env_entry_wins() -> None:
    # find_prompt_ref took the first; the kubelet's map keeps the last.
    stable = deployment(
        {
            "env": [
                {"name": "SYSTEM_PROMPT", "value": "first"},
                {
                    "name": "SYSTEM_PROMPT",
                    "valueFrom": {"configMapKeyRef": {"name": "p", "key": "k"}},
                },
            ]
        }
    )
    assert read(stable, {"p": {"k": "last"}}) == ("last", None)


def test_an_explicit_entry_beats_env_from() -> None:
    stable = deployment(
        {
            "envFrom": [{"configMapRef": {"name": "env"}}],
            "env": [{"name": "SYSTEM_PROMPT", "value": "explicit"}],
        }
    )
    assert read(stable, {"env": {"SYSTEM_PROMPT": "imported"}}) == ("explicit", None)


def test_env_from_is_resolved_with_its_prefix_and_the_later_source_wins() -> None:
    # find_prompt_ref resolved envFrom to the first matching source without looking at its keys;
    # stable_prompt_source called it unknown. Now: the last source that has the key.
    stable = deployment(
        {
            "envFrom": [
                {"configMapRef": {"name": "base"}, "prefix": "APP_"},
                {"configMapRef": {"name": "override"}, "prefix": "APP_"},
                {"configMapRef": {"name": "unrelated"}, "prefix": "OTHER_"},
            ]
        }
    )
    maps = {"base": {"SYSTEM_PROMPT": "base"}, "override": {"SYSTEM_PROMPT": "override"}}
    assert read(stable, maps, env="APP_SYSTEM_PROMPT") == ("override", None)
    # A later source without the key does not hide an earlier one that has it.
    maps["override"] = {"SOMETHING_ELSE": "x"}
    assert read(stable, maps, env="APP_SYSTEM_PROMPT") == ("base", None)
    # An absent (optional) ConfigMap is skipped, as the kubelet does.
    del maps["override"]
    assert read(stable, maps, env="APP_SYSTEM_PROMPT") == ("base", None)
    # No source defines it: unknown, and said why.
    prompt, why = read(stable, {}, env="APP_SYSTEM_PROMPT")
    assert prompt is None and "no envFrom source" in why


def test_a_secret_that_may_define_the_prompt_makes_it_unknown() -> None:
    stable = deployment(
        {"envFrom": [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "creds"}}]}
    )
    prompt, why = read(stable, {"cm": {"SYSTEM_PROMPT": "maybe"}})
    assert prompt is None and "Secret creds" in why
    # A Secret before the ConfigMap is overridden by it when the ConfigMap has the key.
    refs = (EnvFromRef("secret", "creds", "P"), EnvFromRef("configMap", "cm", "P"))
    assert resolve_env_from(refs, {"cm": {"P": "cm wins"}})[0] == "cm wins"


def test_a_projected_volume_with_one_config_map_is_read() -> None:
    # find_prompt_ref knew only configMap volumes.
    stable = deployment(
        {"volumeMounts": [{"name": "all", "mountPath": "/etc/agent"}]},
        volumes=[
            {
                "name": "all",
                "projected": {
                    "sources": [
                        {"secret": {"name": "tls"}},
                        {
                            "configMap": {
                                "name": "prompt",
                                "items": [{"key": "system-prompt", "path": "prompt.txt"}],
                            }
                        },
                    ]
                },
            }
        ],
    )
    assert read(
        stable, {"prompt": {"system-prompt": "projected"}}, mountPath="/etc/agent/prompt.txt"
    ) == (
        "projected",
        None,
    )


def test_a_directory_is_not_a_prompt_file() -> None:
    # find_prompt_ref guessed a key when the mount path was the volume's root; that path is a
    # directory in the container, not the prompt.
    stable = deployment(
        {"volumeMounts": [{"name": "p", "mountPath": "/etc/prompt"}]},
        volumes=[{"name": "p", "configMap": {"name": "cm"}}],
    )
    source = stable_prompt_source(
        stable_deployment=stable, prompt=PromptDelivery(mountPath="/etc/prompt")
    )
    assert source.kind is PromptSourceKind.UNKNOWN and "directory" in source.detail


@pytest.mark.parametrize(
    ("maps", "expected"),
    [
        ({"p": {"k": "text"}}, ("text", None)),
        ({"p": {}}, (None, "ConfigMap p has no key 'k'")),
        ({}, (None, "ConfigMap p (the stable prompt) does not exist")),
    ],
)
def test_a_config_map_key_is_read_or_said_missing(
    maps: dict[str, dict[str, str]], expected: tuple[str | None, str | None]
) -> None:
    stable = deployment(
        {
            "env": [
                {
                    "name": "SYSTEM_PROMPT",
                    "valueFrom": {"configMapKeyRef": {"name": "p", "key": "k"}},
                }
            ]
        }
    )
    assert read(stable, maps) == expected
