"""Where the stable prompt lives in a pod template (pure part of ``k8s/proposals.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from promptloop.k8s.proposals import ClusterError, PromptRef, find_prompt_ref


def _template(
    container: dict[str, Any], volumes: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "agent", **container}, {"name": "sidecar"}]}
    if volumes is not None:
        spec["volumes"] = volumes
    return {"spec": spec}


def test_literal_env_value_default_name() -> None:
    template = _template({"env": [{"name": "SYSTEM_PROMPT", "value": "Classify."}]})
    assert find_prompt_ref(template) == PromptRef(value="Classify.")


def test_config_map_key_ref_and_custom_env_name() -> None:
    template = _template(
        {
            "env": [
                {"name": "OTHER", "value": "x"},
                {
                    "name": "PROMPT",
                    "valueFrom": {"configMapKeyRef": {"name": "prompt-v2", "key": "system-prompt"}},
                },
            ]
        }
    )
    assert find_prompt_ref(template, env="PROMPT") == PromptRef(
        config_map="prompt-v2", key="system-prompt"
    )


def test_env_from_config_map_with_prefix() -> None:
    template = _template({"envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "APP_"}]})
    assert find_prompt_ref(template, env="APP_SYSTEM_PROMPT") == PromptRef(
        config_map="cfg", key="SYSTEM_PROMPT"
    )


def test_secret_is_refused() -> None:
    template = _template(
        {
            "env": [
                {"name": "SYSTEM_PROMPT", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
            ]
        }
    )
    with pytest.raises(ClusterError, match="Secret"):
        find_prompt_ref(template)


def test_missing_env_and_named_container() -> None:
    with pytest.raises(ClusterError, match="no env var SYSTEM_PROMPT"):
        find_prompt_ref(_template({}))
    with pytest.raises(ClusterError, match="no container named 'nope'"):
        find_prompt_ref(_template({}), container="nope")
    sidecar = _template({})
    sidecar["spec"]["containers"][1]["env"] = [{"name": "SYSTEM_PROMPT", "value": "p"}]
    assert find_prompt_ref(sidecar, container="sidecar") == PromptRef(value="p")


@pytest.mark.parametrize(
    ("mount", "config_map", "path", "expected"),
    [
        # The directory holds the ConfigMap's keys as files.
        (
            {"mountPath": "/etc/prompt"},
            {"name": "cm"},
            "/etc/prompt/system-prompt",
            PromptRef(config_map="cm", key="system-prompt"),
        ),
        # items project a key to another file name.
        (
            {"mountPath": "/etc/prompt"},
            {"name": "cm", "items": [{"key": "system-prompt", "path": "prompt.txt"}]},
            "/etc/prompt/prompt.txt",
            PromptRef(config_map="cm", key="system-prompt"),
        ),
        # subPath mounts one key as the file itself.
        (
            {"mountPath": "/prompt.txt", "subPath": "system-prompt"},
            {"name": "cm"},
            "/prompt.txt",
            PromptRef(config_map="cm", key="system-prompt"),
        ),
        # The whole ConfigMap at the path: the key is decided when the ConfigMap is read.
        (
            {"mountPath": "/etc/prompt/"},
            {"name": "cm"},
            "/etc/prompt",
            PromptRef(config_map="cm", key=None),
        ),
    ],
)
def test_mounted_prompt(
    mount: dict[str, Any], config_map: dict[str, Any], path: str, expected: PromptRef
) -> None:
    template = _template(
        {"volumeMounts": [{"name": "prompt", **mount}]},
        volumes=[{"name": "prompt", "configMap": config_map}],
    )
    assert find_prompt_ref(template, mount_path=path) == expected


def test_mount_path_without_config_map_volume() -> None:
    template = _template(
        {"volumeMounts": [{"name": "data", "mountPath": "/etc/prompt"}]},
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    with pytest.raises(ClusterError, match="no ConfigMap volume"):
        find_prompt_ref(template, mount_path="/etc/prompt/system-prompt")
