"""``make bench-scale``: how one operator holds 100 to 1,000 rollouts, and how fast a standby
takes over.

For each size N (default 100, 200, 500, 1000), in a fresh namespace of the local control plane:
N AgentRollouts tick every 10 s against the AgentField stand-in (served from this process so its
request counter can be read), a tenth of them with a canary in progress (a PromptProposal whose
challenger is rendered, seeded and stepped; version 2.1.0 registered and heart-beating). After a
warm-up, the bench reads, over a measuring window:

- tick lateness and pass duration p50/p99: the delta of the operator's own histograms over the
  window (the start-up burst is left out);
- resident memory (VmRSS) at the end and operator CPU (utime+stime over the window, in cores);
- **API server requests per second per rollout**, from the API server's own
  ``apiserver_request_total`` scraped as admin before and after the window (WATCH excluded: a
  watch is one long request), minus the background rate measured over the same resources before
  the operator started (controller-manager, scheduler and kwok also talk to the API server);
- connector requests per second, counted by the stand-in as it serves them.

With ``--failover`` (default on) it then runs two operators with leader election on a Lease,
SIGKILLs the leader several times and records kill -> first pass by the new leader.

Figures, not asserts. Writes ``bench/results/scale.json`` and ``bench/results/scale.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT), str(ROOT / "bench")]

from kubernetes import client, config  # noqa: E402
from operator_latency import (  # noqa: E402
    _bucket_quantile,
    _histogram,
    incumbent_and_token,
    operator_kubeconfig,
    percentile,
    rollout_manifest,
)

from devenv import cluster  # noqa: E402
from devenv.agentfield_standin import RunningStandin, start_standin  # noqa: E402
from tests.conftest import KubeCluster  # noqa: E402
from tests.integration.harness import OperatorProcess, wait_for  # noqa: E402

GROUP, VERSION = "promptloop.dev", "v1alpha1"
# What the operator reads or writes; background traffic on other resources is not its doing.
OPERATOR_RESOURCES = {
    "agentrollouts",
    "promptproposals",
    "deployments",
    "configmaps",
    "secrets",
    "events",
    "leases",
}
_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


# ---------------------------------------------------------------------------------------------
# Helpers


class Standin:
    """The AgentField stand-in served from a thread of this process (its counters at hand)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.token = uuid.uuid4().hex
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: RunningStandin = asyncio.run_coroutine_threadsafe(
            start_standin(connector_token=self.token), self.loop
        ).result(timeout=30)
        self.url = self.running.url

    def connector_requests(self) -> int:
        return self.running.state.connector_served_total

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.running.close(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url,
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).close()


def register(standin: Standin, node: str, version: str) -> None:
    now = datetime.now(UTC).isoformat()
    _post(
        f"{standin.url}/api/v1/nodes/register",
        {
            "id": node,
            "version": version,
            "base_url": f"http://127.0.0.1:1/{version}",
            "reasoners": [{"id": "classify"}],
            "instance_id": f"{version}-instance",
            "health_status": "active",
            "last_heartbeat": now,
            "registered_at": now,
        },
    )


class Heartbeats:
    """Keeps the canary nodes' versions fresh (AgentField's stale threshold is 60 s)."""

    def __init__(self, standin: Standin, nodes: list[str]) -> None:
        self.standin, self.nodes = standin, nodes
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(15):
            for node in self.nodes:
                for version in ("2.0.0", "2.1.0"):
                    with contextlib.suppress(OSError):
                        _post(
                            f"{self.standin.url}/api/v1/nodes/{node}/heartbeat",
                            {
                                "status": "ready",
                                "version": version,
                                "instance_id": f"{version}-i",
                                "timestamp": datetime.now(UTC).isoformat(),
                            },
                        )

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


class Counters:
    """Cumulative counters for every version, growing with time (20 requests/s, 2% failing)."""

    def __init__(self) -> None:
        started = time.monotonic()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                total = int((time.monotonic() - started) * 20)
                payload = json.dumps({"total": total, "failed": total // 50}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/counts/{{{{ version }}}}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def apiserver_requests(kube: KubeCluster, namespace_resources: set[str]) -> dict[str, float]:
    """``apiserver_request_total`` summed per resource/verb (WATCH excluded), as admin."""
    text = kube.kubectl("get", "--raw", "/metrics").stdout
    sums: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("verb") in ("WATCH", "CONNECT"):
            continue
        resource = labels.get("resource", "")
        if resource not in namespace_resources:
            continue
        key = f"{labels.get('verb')} {resource}"
        if labels.get("subresource"):
            key += f"/{labels['subresource']}"
        sums[key] += float(match["value"])
    return dict(sums)


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) > 0}


def histogram_delta(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    base = dict(before)
    return [(bound, count - base.get(bound, 0.0)) for bound, count in after]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def metrics_port_of(operator: OperatorProcess) -> int:
    assert operator.proc is not None
    args = Path(f"/proc/{operator.proc.pid}/cmdline").read_bytes().split(b"\0")
    return int(args[args.index(b"--metrics-port") + 1])


def proposal_manifest(index: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PromptProposal",
        "metadata": {"name": f"p{index}"},
        "spec": {
            "rolloutRef": {"name": f"s{index}"},
            "version": "2.1.0",
            "systemPrompt": f"Classify carefully, variant {index}. One word.",
        },
    }


def rollout_versions(custom: Any, namespace: str) -> dict[str, str]:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "agentrollouts")
    return {r["metadata"]["name"]: r["metadata"]["resourceVersion"] for r in items["items"]}


def release_and_delete(kube: KubeCluster, custom: Any, namespace: str) -> None:
    """Drop kopf's finalizers (no operator runs any more to remove them) and delete the
    namespace, so that it does not linger Terminating and load the next size's background."""

    def strip(job: tuple[str, str]) -> None:
        with contextlib.suppress(client.ApiException):
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, job[0], job[1], {"metadata": {"finalizers": None}}
            )

    jobs = [
        (plural, item["metadata"]["name"])
        for plural in ("promptproposals", "agentrollouts")
        for item in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]
    ]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(strip, jobs))
    kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    # The namespace controller and garbage collector deleting hundreds of objects load the same
    # two cores: the next size must not be measured while they do.
    started = time.monotonic()
    wait_for(
        lambda: not kube.kubectl("get", "namespace", namespace, check=False).stdout.strip(),
        timeout=600,
        what=f"namespace {namespace} to be deleted",
        interval=2,
    )
    print(f"  namespace {namespace} deleted in {time.monotonic() - started:.0f}s", flush=True)


def load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


# ---------------------------------------------------------------------------------------------
# One size


def run_size(
    kube: KubeCluster, work: Path, count: int, warmup: float, seconds: float
) -> dict[str, Any]:
    namespace = f"scale{count}-{uuid.uuid4().hex[:5]}"
    kube.kubectl("create", "namespace", namespace)
    standin = Standin()
    counters = Counters()
    canaries = [i for i in range(count) if i % 10 == 0]
    heartbeats = Heartbeats(standin, [f"scale-{i}" for i in canaries])
    operator = OperatorProcess(
        kubeconfig=operator_kubeconfig(kube, work),
        namespace=namespace,
        log_path=work / f"operator-{count}.log",
    )
    config.load_kube_config(str(kube.kubeconfig))
    custom, core = client.CustomObjectsApi(), client.CoreV1Api()
    try:
        incumbent_and_token(kube, core, namespace, standin.token)

        def create(index: int) -> None:
            node = f"scale-{index}"
            register(standin, node, "2.0.0")
            if index in canaries:
                register(standin, node, "2.1.0")
            custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                "agentrollouts",
                rollout_manifest(f"s{index}", node, standin.url, counters.url, "10s", 50),
            )
            if index in canaries:
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, "promptproposals", proposal_manifest(index)
                )

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(count)))
        print(f"  created {count} rollouts in {time.monotonic() - started:.1f}s", flush=True)
        # Background: the same resources without the operator (controllers, kwok, leases).
        background_window = 10.0
        before = apiserver_requests(kube, OPERATOR_RESOURCES)
        time.sleep(background_window)  # a measuring window, not a stand-in for a condition
        background = _delta(apiserver_requests(kube, OPERATOR_RESOURCES), before)
        background_rate = sum(background.values()) / background_window

        operator.start()
        assert operator.proc is not None
        pid = operator.proc.pid
        port = metrics_port_of(operator)

        def reconciled() -> bool:
            items = custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "agentrollouts"
            )["items"]
            return sum(1 for r in items if r.get("status", {}).get("phase")) == count

        # Generous: on a shared machine kopf's start-up (a finalizer on every rollout, throttled
        # by the API server's 429s) alone takes minutes at 1,000.
        wait_for(reconciled, timeout=900, what=f"{count} rollouts reconciled", interval=2)
        print(f"  all reconciled {time.monotonic() - started:.0f}s after start", flush=True)
        time.sleep(warmup)  # lets the first burst of passes settle (a measuring choice)
        # Outside the counted window (these admin LISTs are API requests too).
        versions_before = rollout_versions(custom, namespace)
        metrics_before = scrape(port)
        api_before = apiserver_requests(kube, OPERATOR_RESOURCES)
        connector_before = standin.connector_requests()
        cpu_before = cpu_seconds(pid)
        window_started = time.monotonic()
        print(f"  measuring {seconds:.0f}s; load {load()}", flush=True)
        time.sleep(seconds)  # the measuring window
        elapsed = time.monotonic() - window_started
        cpu_after = cpu_seconds(pid)
        connector_after = standin.connector_requests()
        api_after = apiserver_requests(kube, OPERATOR_RESOURCES)
        metrics_after = scrape(port)
        versions_after = rollout_versions(custom, namespace)
        idle = [f"s{i}" for i in range(count) if i not in canaries]
        idle_changed = sum(1 for n in idle if versions_after.get(n) != versions_before.get(n))
        memory = rss_mb(pid)
        lateness = histogram_delta(
            _histogram(metrics_after, "promptloop_tick_lateness_seconds"),
            _histogram(metrics_before, "promptloop_tick_lateness_seconds"),
        )
        passes = histogram_delta(
            _histogram(metrics_after, "promptloop_reconcile_seconds"),
            _histogram(metrics_before, "promptloop_reconcile_seconds"),
        )
        api = _delta(api_after, api_before)
        api_rate = sum(api.values()) / elapsed
        phases: dict[str, int] = defaultdict(int)
        for proposal in custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, "promptproposals"
        )["items"]:
            phases[proposal.get("status", {}).get("phase") or "none"] += 1
        result = {
            "rollouts": count,
            "canaries": len(canaries),
            "window_s": round(elapsed, 1),
            "passes": passes[-1][1] if passes else 0,
            "tick_lateness_p50_s": _bucket_quantile(lateness, 0.5) if lateness else None,
            "tick_lateness_p99_s": _bucket_quantile(lateness, 0.99) if lateness else None,
            "pass_p50_s": _bucket_quantile(passes, 0.5) if passes else None,
            "pass_p99_s": _bucket_quantile(passes, 0.99) if passes else None,
            "rss_mb": round(memory, 1),
            "operator_cpu_cores": round((cpu_after - cpu_before) / elapsed, 3),
            "api_requests_per_s": round(api_rate, 2),
            "api_background_per_s": round(background_rate, 2),
            "api_requests_per_s_per_rollout": round(
                max(0.0, api_rate - background_rate) / count, 4
            ),
            "api_requests_by_verb": {k: round(v / elapsed, 3) for k, v in sorted(api.items())},
            # Whether an idle rollout was written at all during the window (its
            # resourceVersion moved): the by-verb figures show the operator reads nothing.
            "idle_rollouts": len(idle),
            "idle_rollouts_written": idle_changed,
            "connector_requests_per_s": round((connector_after - connector_before) / elapsed, 2),
            "proposal_phases": dict(phases),
            "load_average": load(),
        }
        return result
    finally:
        operator.stop()
        heartbeats.close()
        counters.close()
        standin.close()
        release_and_delete(kube, custom, namespace)


# ---------------------------------------------------------------------------------------------
# Failover


def run_failover(kube: KubeCluster, work: Path, rollouts: int, kills: int) -> dict[str, Any]:
    """Two operators on one Lease; SIGKILL the leader ``kills`` times; kill -> first pass."""
    namespace = f"failover-{uuid.uuid4().hex[:5]}"
    kube.kubectl("create", "namespace", namespace)
    standin = Standin()
    counters = Counters()
    config.load_kube_config(str(kube.kubeconfig))
    custom, core = client.CustomObjectsApi(), client.CoreV1Api()
    kubeconfig = operator_kubeconfig(kube, work)
    operators: list[OperatorProcess] = []
    times: list[float] = []

    def new_operator(index: int) -> OperatorProcess:
        operator = OperatorProcess(
            kubeconfig=kubeconfig,
            namespace=namespace,
            log_path=work / f"failover-{index}.log",
            # The chart's timings (15 s lease, 10 s renew deadline, 2 s retry): the figure is
            # what an installation gets. The Lease Role of manifests/base is in
            # promptloop-system.
            extra_args=(
                "--leader-election",
                "--lease-name",
                f"bench-{namespace}",
                "--lease-namespace",
                "promptloop-system",
            ),
        )
        operator.start()
        operators.append(operator)
        return operator

    def alive(operator: OperatorProcess) -> bool:
        return operator.proc is not None and operator.proc.poll() is None

    def passes(operator: OperatorProcess) -> float:
        if not alive(operator):
            return 0.0
        try:
            buckets = _histogram(scrape(metrics_port_of(operator)), "promptloop_reconcile_seconds")
        except (OSError, ValueError):
            return 0.0
        return buckets[-1][1] if buckets else 0.0

    try:
        incumbent_and_token(kube, core, namespace, standin.token)
        for index in range(rollouts):
            register(standin, f"fo-{index}", "2.0.0")
            custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                "agentrollouts",
                rollout_manifest(f"s{index}", f"fo-{index}", standin.url, counters.url, "10s", 50),
            )
        pair = [new_operator(0), new_operator(1)]
        for attempt in range(kills):
            # A leader that could not renew in time exits by design; keep a pair running.
            pair = [o if alive(o) else new_operator(len(operators)) for o in pair]
            wait_for(
                lambda p=pair: any(passes(o) > 0 for o in p),  # type: ignore[misc]
                timeout=120,
                what="a leader's pass",
            )
            leader = next(o for o in pair if passes(o) > 0)
            standby = next(o for o in pair if o is not leader)
            killed = time.monotonic()
            leader.kill()
            wait_for(lambda s=standby: passes(s) > 0, timeout=120, what="the standby's first pass")
            times.append(time.monotonic() - killed)
            print(f"  failover {attempt + 1}: {times[-1]:.2f}s", flush=True)
            pair = [standby, new_operator(len(operators))]
        return {
            "leaders_that_exited_on_a_late_renewal": sum(
                "leadership lost" in o.log_text() for o in operators
            ),
            "kills": len(times),
            "failover_s": [round(t, 3) for t in times],
            "failover_p50_s": percentile(times, 50),
            "failover_p99_s": percentile(times, 99),
            "failover_max_s": max(times),
        }
    finally:
        for operator in operators:
            operator.stop()
        kube.kubectl(
            "delete", "lease", f"bench-{namespace}", "-n", "promptloop-system", check=False
        )
        counters.close()
        standin.close()
        release_and_delete(kube, custom, namespace)


# ---------------------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results["sizes"]
    xs = [s["rollouts"] for s in sizes]
    panels = [
        ("tick lateness (s)", ["tick_lateness_p50_s", "tick_lateness_p99_s"], 2.0),
        ("reconcile pass (s)", ["pass_p50_s", "pass_p99_s"], 1.0),
        ("resident memory (MB)", ["rss_mb"], 400.0),
        ("operator CPU (cores)", ["operator_cpu_cores"], None),
        ("API requests/s per rollout", ["api_requests_per_s_per_rollout"], 0.02),
        ("connector requests/s", ["connector_requests_per_s"], None),
    ]
    figure, axes = plt.subplots(2, 3, figsize=(13, 7))
    for axis, (title, keys, goal) in zip(axes.flat, panels, strict=True):
        for key in keys:
            axis.plot(xs, [s[key] for s in sizes], marker="o", label=key)
        if goal is not None:
            axis.axhline(goal, color="red", linestyle="--", linewidth=1, label="goal")
        axis.set_title(title)
        axis.set_xlabel("rollouts")
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    failover = results.get("failover")
    subtitle = (
        f"; failover p50 {failover['failover_p50_s']:.1f}s p99 {failover['failover_p99_s']:.1f}s"
        if failover
        else ""
    )
    figure.suptitle(f"promptloop operator at scale (2 shared cores{subtitle})")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,200,500,1000", help="comma-separated")
    parser.add_argument("--seconds", type=float, default=60, help="measuring window per size")
    parser.add_argument("--warmup", type=float, default=20, help="after every rollout reconciled")
    parser.add_argument("--failover-kills", type=int, default=5, help="0 skips failover")
    parser.add_argument("--failover-rollouts", type=int, default=50)
    parser.add_argument("--keep-logs", action="store_true", help="keep the operators' logs")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    args = parser.parse_args()
    cluster.build()
    state = cluster.up()
    kube = KubeCluster(state.kubeconfig)
    kube.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        *[a for p in sorted((ROOT / "crds").glob("promptloop.dev_*.yaml")) for a in ("-f", str(p))],
    )
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    results: dict[str, Any] = {"commit": commit, "cores": os.cpu_count(), "sizes": []}
    tmp = tempfile.mkdtemp(prefix="bench-scale-")
    print(f"operator logs in {tmp}", flush=True)
    try:
        for size in [int(s) for s in args.sizes.split(",") if s]:
            print(f"scale: {size} rollouts", flush=True)
            results["sizes"].append(run_size(kube, Path(tmp), size, args.warmup, args.seconds))
            print(json.dumps(results["sizes"][-1]), flush=True)
            # Written after every size: a later size that fails does not lose the earlier ones.
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        if args.failover_kills:
            print(f"failover: {args.failover_kills} kills", flush=True)
            results["failover"] = run_failover(
                kube, Path(tmp), args.failover_rollouts, args.failover_kills
            )
    finally:
        if not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    header = (
        f"{'rollouts':>8} {'late p50':>9} {'late p99':>9} {'pass p50':>9} {'pass p99':>9} "
        f"{'RSS MB':>7} {'CPU':>6} {'API/s/ro':>9} {'idle wr':>8} {'conn/s':>7}  load"
    )
    print(header)
    for s in results["sizes"]:
        print(
            f"{s['rollouts']:>8} {s['tick_lateness_p50_s']:>9.3f} {s['tick_lateness_p99_s']:>9.3f}"
            f" {s['pass_p50_s']:>9.3f} {s['pass_p99_s']:>9.3f} {s['rss_mb']:>7.0f}"
            f" {s['operator_cpu_cores']:>6.2f} {s['api_requests_per_s_per_rollout']:>9.4f}"
            f" {s.get('idle_rollouts_written', '-'):>8} {s['connector_requests_per_s']:>7.1f}"
            f"  {s['load_average']}"
        )
    print("goals at 1,000: lateness p99 < 2s, pass p99 < 1s, RSS < 400MB, idle <= 0.02 API/s")
    if "failover" in results:
        f = results["failover"]
        print(
            f"failover (kill -> first pass of the new leader) over {f['kills']} kills: "
            f"p50 {f['failover_p50_s']:.2f}s p99 {f['failover_p99_s']:.2f}s"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
