"""Building blocks shared by both resources: the base model, references, conditions, durations.

The base model speaks camelCase on the wire (as Kubernetes objects do) and snake_case in Python.
Spec models forbid unknown fields so that a typo is an error, never a silently ignored setting.
Objects read back from the API server are the exception (:func:`from_cluster`): the API server
has already validated them against the installed CRD, so a field the model does not know is a
field of a newer CRD, and an older CLI or operator must keep working, ignoring it.
"""

from __future__ import annotations

import enum
import re
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

__all__ = [
    "DURATION_PATTERN",
    "READ_FROM_CLUSTER",
    "SEMVER_PATTERN",
    "ApiModel",
    "Condition",
    "ConditionStatus",
    "LocalObjectReference",
    "ObjectMeta",
    "SecretKeyRef",
    "SpecModel",
    "cel",
    "from_cluster",
    "parse_duration",
]

# Validation context for objects the API server returned (see the module docstring).
READ_FROM_CLUSTER: dict[str, Any] = {"unknown_fields": "ignore"}

# semver.org's recommended expression, without the leading "v" (versions are compared as
# registered in AgentField, where "2.1.0" and "v2.1.0" would be two different versions).
SEMVER_PATTERN = (
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)

# The subset of Go's time.ParseDuration syntax that CEL's duration() also accepts.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration such as ``30s``, ``1m30s`` or ``1.5h``.

    Parameters
    ----------
    text
        The duration; must match :data:`DURATION_PATTERN`.

    Returns
    -------
    timedelta
        The parsed duration.

    Raises
    ------
    ValueError
        When the text is not a well-formed duration.
    """
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m or 1h30m")
    seconds = sum(
        float(number) * _DURATION_UNIT_SECONDS[unit]
        for number, unit in _DURATION_PART.findall(text)
    )
    return timedelta(seconds=seconds)


def cel(rule: str, message: str, *, field_path: str | None = None) -> JsonDict:
    """One ``x-kubernetes-validations`` entry: a CEL rule and the message a person reads."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


class ApiModel(BaseModel):
    """Base of every wire model: camelCase aliases, population by Python name too."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        populate_by_name=True,
        use_enum_values=False,
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the Kubernetes API wants it: camelCase, JSON types, no unset fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SpecModel(ApiModel):
    """Base of every spec model: unknown fields are an error, except when reading from the
    cluster (validation context :data:`READ_FROM_CLUSTER`), where they are dropped."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_unknown_fields_read_from_the_cluster(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or (info.context or {}).get("unknown_fields") != "ignore":
            return data
        known = _KNOWN_FIELDS.get(cls)
        if known is None:
            # Once per class: every pass validates every nested spec model of its rollout, and
            # rebuilding these sets each time was ~6 % of the operator's loop at 1,000 rollouts.
            known = frozenset(cls.model_fields) | frozenset(
                field.alias for field in cls.model_fields.values() if field.alias
            )
            _KNOWN_FIELDS[cls] = known
        if known.issuperset(data):
            return data
        return {key: value for key, value in data.items() if key in known}


# Field names and aliases per spec model class (see _drop_unknown_fields_read_from_the_cluster).
_KNOWN_FIELDS: dict[type[SpecModel], frozenset[str]] = {}


class ObjectMeta(BaseModel):
    """The few metadata fields the operator reads; everything else passes through untouched."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    creation_timestamp: str | None = Field(default=None, alias="creationTimestamp")
    deletion_timestamp: str | None = Field(default=None, alias="deletionTimestamp")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class LocalObjectReference(SpecModel):
    """A reference to an object in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        description="Name of the referenced object, in the same namespace.",
    )


class SecretKeyRef(SpecModel):
    """A key in a Secret in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")
    key: str = Field(min_length=1, max_length=253, description="Key within the Secret's data.")


class ConditionStatus(enum.StrEnum):
    """The three values of a Kubernetes condition's status."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A Kubernetes-style condition (the shape of metav1.Condition)."""

    type: str = Field(description="Condition type, e.g. Ready or TrafficVerified.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        default="",
        description="A CamelCase word machines can match on, e.g. Forbidden.",
    )
    message: str = Field(default="", description="What a person needs to know, in a sentence.")
    last_transition_time: str | None = Field(
        default=None,
        description="When status last changed (RFC 3339).",
    )
    observed_generation: int | None = Field(
        default=None,
        description="The .metadata.generation this condition was computed from.",
    )


ModelT = TypeVar("ModelT", bound=BaseModel)


def from_cluster(model: type[ModelT], raw: Any) -> ModelT:
    """Validate an object read from the API server, ignoring fields a newer CRD added.

    Parameters
    ----------
    model
        The model class (``AgentRollout``, ``PromptProposal``).
    raw
        The object as the API server returned it.

    Returns
    -------
    ModelT
        The validated model; unknown fields, at any depth, are dropped rather than refused.
    """
    return model.model_validate(raw, context=READ_FROM_CLUSTER)
