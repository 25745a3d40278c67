"""The example ticket classifier: an AgentField agent (Python SDK ``agentfield`` 0.1.144) that
records its own misses, as in the seed's ``classify_v2_0_0.py``.

It registers as node ``AGENT_NODE_ID`` (default ``classifier``) at version ``PROMPTLOOP_VERSION``
or ``AGENT_VERSION``, with one reasoner::

    POST /reasoners/classify {"text": "...", "correct_label": "billing"}
    -> {"label": "other", "version": "2.0.0", "correct": false, "model": "...",
        "usage": {"prompt_tokens": 23, "completion_tokens": 1}}

The label comes from an OpenAI-compatible model (``openai`` SDK; ``OPENAI_BASE_URL``,
``OPENAI_API_KEY``, ``OPENAI_MODEL``) under the system prompt the operator renders: the env var
``SYSTEM_PROMPT``, or the file named by ``SYSTEM_PROMPT_FILE`` when the rollout mounts the prompt.
A request that carries ``correct_label`` is graded: a miss is appended to the failure log in
AgentField global memory and every graded request updates the version's outcome counters there
(``classifier_core`` says exactly what, where, and what the concurrency caveat is). A model error
fails the request (HTTP 500) and counts as a failure of the version, but is not logged as a miss.

``GET /metrics`` serves Prometheus counters labelled by version:
``classifier_requests_total`` (on arrival), ``classifier_graded_total``,
``classifier_outcomes_total`` (graded or failed: counted when the outcome is known, with the
failure, as promptloop's counter contract asks; use it in ``totalQuery``),
``classifier_failures_total`` (label ``reason``: ``miss`` or ``error``) and
``classifier_model_tokens_total`` (label ``kind``).

Run it: ``pip install -r requirements.txt`` in its own environment (the SDK's botocore and the
operator's ``kubernetes`` client disagree about python-dateutil), then
``AGENT_VERSION=2.0.0 SYSTEM_PROMPT='...' AGENTFIELD_SERVER=http://... python classifier.py``.
"""

from __future__ import annotations

import sys
from typing import Any

from agentfield import Agent
from classifier_core import ClassifierConfig, ConfigError, Outcome, OutcomeRecorder, parse_label
from fastapi import Response
from openai import AsyncOpenAI, OpenAIError
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

__all__ = ["app", "classify", "config"]

try:
    config = ClassifierConfig.from_env()
except ConfigError as problem:
    print(f"classifier: {problem}", file=sys.stderr)
    sys.exit(2)

app = Agent(
    node_id=config.node_id,
    version=config.version,
    # DIDs and verifiable credentials are off: the classifier calls no other agent, and the
    # AgentField stand-in the demo runs has no DID routes.
    enable_did=False,
    vc_enabled=False,
)
model = AsyncOpenAI(timeout=30.0, max_retries=2)
recorder = OutcomeRecorder(
    node_id=config.node_id,
    version=config.version,
    outcomes_prefix=config.outcomes_prefix,
    failures_key=config.failures_key,
    failures_limit=config.failures_limit,
)

REQUESTS = Counter("classifier_requests", "Classification requests", ["version"])
GRADED = Counter("classifier_graded", "Requests that carried a correct label", ["version"])
FAILURES = Counter(
    "classifier_failures",
    "Misses (wrong label) and errors (model call failed)",
    ["version", "reason"],
)
OUTCOMES = Counter(
    "classifier_outcomes",
    "Requests whose outcome is recorded (graded or failed), counted with their failure",
    ["version"],
)
TOKENS = Counter("classifier_model_tokens", "Model tokens used", ["version", "kind"])


@app.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus exposition of the counters above."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@app.reasoner(tags=["entry"])
async def classify(text: str, correct_label: str | None = None) -> dict[str, Any]:
    """Classify a support ticket as billing, bug or other; record a miss when graded."""
    REQUESTS.labels(config.version).inc()
    expected = correct_label.strip().lower() if correct_label else None
    memory = app.memory.global_scope
    try:
        reply = await model.chat.completions.create(
            model=config.model,
            messages=[
                {"role": "system", "content": config.system_prompt},
                {"role": "user", "content": text},
            ],
            # As the improver's --evaluate replays ask: a cap that bounds a chatty model's cost,
            # and a temperature only when one is configured (reasoning models refuse it).
            **config.model_options(),
        )
    except OpenAIError as error:
        OUTCOMES.labels(config.version).inc()
        FAILURES.labels(config.version, "error").inc()
        await recorder.record(
            memory, Outcome(text=text, predicted="", expected=expected, error=True)
        )
        # The exception's class only: a message could echo the (masked) key back into logs.
        raise RuntimeError(f"model call failed: {type(error).__name__}") from None
    label = parse_label(reply.choices[0].message.content if reply.choices else "")
    usage = {
        "prompt_tokens": reply.usage.prompt_tokens if reply.usage else 0,
        "completion_tokens": reply.usage.completion_tokens if reply.usage else 0,
    }
    TOKENS.labels(config.version, "prompt").inc(usage["prompt_tokens"])
    TOKENS.labels(config.version, "completion").inc(usage["completion_tokens"])
    outcome = Outcome(text=text, predicted=label, expected=expected)
    if outcome.graded:
        GRADED.labels(config.version).inc()
        OUTCOMES.labels(config.version).inc()
    if outcome.miss:
        FAILURES.labels(config.version, "miss").inc()
    await recorder.record(memory, outcome)
    return {
        "label": label,
        "version": config.version,
        "correct": None if expected is None else label == expected,
        "model": config.model,
        "usage": usage,
    }


if __name__ == "__main__":
    print(
        f"classifier {config.node_id} {config.version}: prompt from {config.prompt_source} "
        f"({len(config.system_prompt)} characters), model {config.model}, "
        f"listening on {config.host}:{config.port}",
        flush=True,
    )
    app.run(host=config.host, port=config.port)
