"""How the operator reaches a metrics provider's HTTP backend: headers, credentials, CA, timeout.

Real Prometheus endpoints (managed services, Thanos, Mimir) sit behind a bearer token, basic auth,
a tenant header or a private CA. The shape follows the Prometheus Operator's ``SafeAuthorization``
and ``BasicAuth`` (credentials are always Secret references, never literal values in a spec that
lives in git), with the CA accepted inline too (a CA certificate is public).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from promptloop.api.common import DURATION_PATTERN, SecretKeyRef, SpecModel, cel

__all__ = ["BasicAuth", "EndpointOptions", "HttpHeader"]

# RFC 9110 token characters: what a header name may contain.
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"

Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]


class HttpHeader(SpecModel):
    """One request header: a literal value, or one read from a Secret (a tenant key, say)."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.value) != has(self.valueFrom)",
                    "set exactly one of value and valueFrom",
                )
            ]
        }
    }

    name: str = Field(
        pattern=HEADER_NAME_PATTERN,
        max_length=256,
        description="Header name, e.g. X-Scope-OrgID.",
    )
    value: str | None = Field(default=None, max_length=4096, description="A literal value.")
    value_from: SecretKeyRef | None = Field(
        default=None, description="A Secret key holding the value (never logged)."
    )


class BasicAuth(SpecModel):
    """HTTP basic authentication, both parts from Secrets."""

    username: SecretKeyRef = Field(description="Secret key holding the user name.")
    password: SecretKeyRef = Field(description="Secret key holding the password.")


class EndpointOptions(SpecModel):
    """Headers, credentials, CA and timeout of an HTTP backend; all optional."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.bearerTokenSecretRef) && has(self.basicAuth))",
                    "set at most one of bearerTokenSecretRef and basicAuth",
                ),
                cel(
                    "!(has(self.caBundle) && has(self.caBundleSecretRef))",
                    "set at most one of caBundle and caBundleSecretRef",
                ),
            ]
        }
    }

    headers: list[HttpHeader] = Field(
        default_factory=list,
        max_length=32,
        description="Extra request headers (e.g. X-Scope-OrgID for Mimir or Cortex).",
    )
    bearer_token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a bearer token, sent as 'Authorization: Bearer <token>'.",
    )
    basic_auth: BasicAuth | None = Field(default=None, description="HTTP basic authentication.")
    ca_bundle: str | None = Field(
        default=None,
        max_length=65536,
        description="PEM CA certificates that sign the server's certificate (https URLs).",
    )
    ca_bundle_secret_ref: SecretKeyRef | None = Field(
        default=None, description="The same, read from a Secret key."
    )
    timeout: Duration = Field(default="5s", description="How long one request may take.")
