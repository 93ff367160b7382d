"""The Kubernetes manifests of deploy/k8s: valid offline, and in step with the code."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from processors.registry import PROCESSORS
from tools.cli import build_parser, cmd_ingest, cmd_migrate, cmd_process
from vidpulse.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"
SCALEDOBJECT_SCHEMA = json.loads(Path(__file__).with_name("scaledobject.schema.json").read_text())
NOT_KUBERNETES_CORE = {"ScaledObject", "Kustomization"}

Doc = dict[str, Any]


def manifests() -> list[Doc]:
    """Every document of every manifest the kustomization lists."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[Doc] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def find(kind: str, name: str) -> Doc:
    matches = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def cli_args(c: Doc) -> Any:
    """The container's command parsed by the real `vidpulse` argument parser."""
    command = c["command"] + c.get("args", [])
    assert command[0] == "vidpulse"
    return build_parser().parse_args(command[1:])


def env_names(c: Doc) -> set[str]:
    """Every environment variable the container gets, from env and envFrom."""
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in manifests()}
    names = {e["name"] for e in c.get("env", [])}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(by_name["ConfigMap", source["configMapRef"]["name"]]["data"])
        if "secretRef" in source:
            names |= set(by_name["Secret", source["secretRef"]["name"]]["stringData"])
    return names


def test_kustomization_lists_every_manifest() -> None:
    """Every YAML file of deploy/k8s is a resource of the kustomization, and none is missing."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


@pytest.mark.parametrize(
    "doc",
    [d for d in manifests() if d["kind"] not in NOT_KUBERNETES_CORE],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_manifest_is_valid_kubernetes(doc: Doc) -> None:
    """Each core resource validates against the Kubernetes schema, unknown fields refused."""
    assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validation_catches_a_misspelt_field() -> None:
    """The offline validation is not vacuous: a misspelt probe field is refused."""
    bad = copy.deepcopy(find("Deployment", "vidpulse-ingest"))
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", list(PROCESSORS))
def test_scaledobject_is_valid_keda(name: str) -> None:
    """Each processor's ScaledObject validates against the KEDA schema of tests/deploy."""
    jsonschema.validate(find("ScaledObject", f"vidpulse-{name}"), SCALEDOBJECT_SCHEMA)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "triggers", 0, "metadata", "lagcount"), "100"),  # misspelt key
        (("spec", "triggers", 0, "metadata", "lagCount"), "lots"),  # not a count
        (("spec", "triggers", 0, "metadata", "stream"), None),  # required key gone
        (("spec", "triggers", 0, "metadata", "activationLagCount"), None),  # lagCount needs it
        (("spec", "maxReplicas"), 4),  # an HPA field, not a ScaledObject one
    ],
)
def test_keda_schema_refuses_broken_scaledobjects(path: tuple[Any, ...], value: Any) -> None:
    """The KEDA schema refuses misspelt, missing and malformed redis-streams fields."""
    bad = copy.deepcopy(find("ScaledObject", "vidpulse-heatmap"))
    parent = bad
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCALEDOBJECT_SCHEMA)


def test_every_processor_has_a_deployment_and_a_scaledobject() -> None:
    """One Deployment and one ScaledObject per processor of the registry, and no others."""
    docs = manifests()
    processors = {
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"].get("app.kubernetes.io/component") == "processor"
    }
    scaled = {d["metadata"]["name"] for d in docs if d["kind"] == "ScaledObject"}
    expected = {f"vidpulse-{name}" for name in PROCESSORS}
    assert processors == expected
    assert scaled == expected


@pytest.mark.parametrize("name", list(PROCESSORS))
def test_processor_deployment_runs_its_processor(name: str) -> None:
    """The Deployment runs `vidpulse process NAME` with metrics on the port it probes."""
    c = container(find("Deployment", f"vidpulse-{name}"))
    args = cli_args(c)
    assert args.func is cmd_process
    assert args.name == name
    assert not args.burst
    assert args.consumer is None  # each replica is a consumer of its own (pod name, pid)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert args.metrics_port == ports["metrics"]
    assert c["readinessProbe"]["httpGet"]["port"] == "metrics"


@pytest.mark.parametrize("name", list(PROCESSORS))
def test_scaledobject_scales_the_processor_on_its_group_lag(name: str) -> None:
    """The ScaledObject targets the processor's Deployment and watches its group's lag."""
    processor = PROCESSORS[name]
    scaled = find("ScaledObject", f"vidpulse-{name}")
    target = scaled["spec"]["scaleTargetRef"]["name"]
    assert target == f"vidpulse-{name}"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == processor.group
    config = find("ConfigMap", "vidpulse-config")["data"]
    assert meta["stream"] == config["VIDPULSE_STREAM"] == Settings.model_fields["stream"].default
    assert int(meta["lagCount"]) > 0
    # The scaler reads these variables from the target's container.
    names = env_names(container(find("Deployment", target)))
    assert {meta["addressFromEnv"], meta["passwordFromEnv"]} <= names


def test_ingest_and_migrate_commands_match_the_cli() -> None:
    """The ingest Deployment serves on the port its Service and probes use; the Job migrates."""
    ingest = container(find("Deployment", "vidpulse-ingest"))
    args = cli_args(ingest)
    assert args.func is cmd_ingest
    assert args.host == "0.0.0.0"
    assert {p["name"]: p["containerPort"] for p in ingest["ports"]} == {"http": args.port}
    assert ingest["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = find("Service", "vidpulse-ingest")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    job = find("Job", "vidpulse-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert cli_args(job).func is cmd_migrate


def test_dashboard_runs_on_8001_with_tokens_from_the_secret() -> None:
    """The dashboard Deployment serves port 8001 and takes its admin tokens from the Secret."""
    dashboard = container(find("Deployment", "vidpulse-dashboard"))
    assert dashboard["command"] == ["vidpulse", "dashboard", "--host", "0.0.0.0", "--port", "8001"]
    assert {p["name"]: p["containerPort"] for p in dashboard["ports"]} == {"http": 8001}
    tokens = {e["name"]: e for e in dashboard["env"]}["VIDPULSE_ADMIN_TOKENS"]
    ref = tokens["valueFrom"]["secretKeyRef"]
    assert ref["key"] in find("Secret", ref["name"])["stringData"]
    assert find("Service", "vidpulse-dashboard")["spec"]["ports"][0]["targetPort"] == "http"


def test_every_secret_and_config_reference_exists() -> None:
    """Each secretKeyRef, secretRef and configMapRef names a key or object the manifests define."""
    docs = manifests()
    defined = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec")
        if not pod:
            continue
        for c in pod["containers"]:
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in defined
                if "secretRef" in source:
                    assert ("Secret", source["secretRef"]["name"]) in defined
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in defined["Secret", ref["name"]]["stringData"]
