"""The Kubernetes manifests in deploy/k8s validate against the Kubernetes API schemas
(kubernetes-validate, offline) and describe what the services need."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from gateway.settings import GatewaySettings
from services.common.config import ImagegenSettings, StatusSettings, StorageSettings, load_settings, setting_names
from tests.ci import IN_CI
from tools.processes import ROOT, SERVICES

K8S = ROOT / "deploy" / "k8s"
KUBERNETES = "1.30.0"


def documents() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_is_valid_kubernetes(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_every_deployment_has_probes_resources_a_pdb_and_an_autoscaler() -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    assert set(deployments) == {*SERVICES, "worker"}
    pdbs = {d["metadata"]["name"] for d in of_kind("PodDisruptionBudget")}
    hpas = {d["spec"]["scaleTargetRef"]["name"] for d in of_kind("HorizontalPodAutoscaler")}
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["requests"] and container["resources"]["limits"], name
        assert "livenessProbe" in container, name
        assert name in pdbs and name in hpas, name
        if name in ("imagegen", "storage", "status"):
            port = int(SERVICES[name][2])
            assert container["readinessProbe"]["grpc"]["port"] == port  # native gRPC health probes
            assert container["livenessProbe"]["grpc"]["port"] == port


def test_the_imagegen_replicas_share_state_through_the_redis_in_the_manifests() -> None:
    config = of_kind("ConfigMap")[0]["data"]
    redis = next(d for d in of_kind("StatefulSet") if d["metadata"]["name"] == "redis")
    service = next(d for d in of_kind("Service") if d["metadata"]["name"] == "redis")
    assert service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    port = service["spec"]["ports"][0]["port"]
    assert config["IMAGEGEN_SHARED_STATE"] == f"redis://redis.storyshort.svc.cluster.local:{port}/0"
    container = redis["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] and "readinessProbe" in container and "livenessProbe" in container
    assert "noeviction" in container["args"]


def test_every_pod_is_annotated_for_scraping_on_its_metrics_port() -> None:
    for deployment in of_kind("Deployment"):
        template = deployment["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert annotations["prometheus.io/scrape"] == "true"
        metrics_port = ports.get("metrics", ports.get("http"))
        assert int(annotations["prometheus.io/port"]) == metrics_port, deployment["metadata"]["name"]


def test_the_compose_scrape_config_is_valid_and_reaches_every_replica() -> None:
    config = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    promtool = shutil.which("promtool")
    if promtool is None:
        if IN_CI:
            pytest.fail("CI=true and no promtool")
        pytest.skip("no promtool (apt install prometheus)")
    checked = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    targets = {
        (name, sd["port"])
        for sd in yaml.safe_load(config.read_text())["scrape_configs"][0]["dns_sd_configs"]
        for name in sd["names"]
    }
    assert targets == {
        ("gateway", 8080),
        ("worker", 9104),
        ("imagegen-pool", 9101),
        ("storage", 9102),
        ("status", 9103),
    }


def test_grpc_services_are_headless_so_round_robin_sees_every_pod() -> None:
    services = {d["metadata"]["name"]: d for d in of_kind("Service")}
    config = of_kind("ConfigMap")[0]["data"]
    for name in ("imagegen", "storage", "status"):
        assert services[name]["spec"]["clusterIP"] == "None"
        port = SERVICES[name][2]
        assert config[f"{name.upper()}_ADDR"] == f"dns:///{name}.storyshort.svc.cluster.local:{port}"


def test_config_and_secrets_name_only_settings_the_services_read() -> None:
    known = {
        name
        for settings in (ImagegenSettings, StorageSettings, StatusSettings, GatewaySettings)
        for name in setting_names(settings)
    }
    config = of_kind("ConfigMap")[0]["data"]
    assert set(config) <= known, set(config) - known
    secret_keys = set(of_kind("Secret")[0]["stringData"])
    for deployment in of_kind("Deployment"):
        for env in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
            assert env["name"] in known
            ref = env["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "storyshort-keys" and ref["key"] in secret_keys


def test_services_take_calls_only_from_gateways_and_workers_and_metrics_only_from_prometheus() -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in of_kind("NetworkPolicy")}
    deny = policies["default-deny-ingress"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    grpc_policy = policies["grpc-from-gateways-and-workers"]
    (selected,) = grpc_policy["podSelector"]["matchExpressions"]
    assert set(selected["values"]) == {"imagegen", "storage", "status"}
    (rule,) = grpc_policy["ingress"]
    (source,) = rule["from"]
    assert set(source["podSelector"]["matchExpressions"][0]["values"]) == {"gateway", "worker"}
    assert {p["port"] for p in rule["ports"]} == {SERVICES[n][2] for n in ("imagegen", "storage", "status")}
    metrics = policies["metrics-from-prometheus"]
    (rule,) = metrics["ingress"]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    allowed = {p["port"] for p in rule["ports"]}
    for deployment in of_kind("Deployment"):
        ports = {
            p["name"]: p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        }
        assert ports["metrics"] in allowed, deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels.items() >= metrics["podSelector"]["matchLabels"].items()
    # The front door: the gateway's HTTP port, from anywhere; nothing else of it.
    (door,) = policies["gateway-http"]["ingress"]
    assert "from" not in door and [p["port"] for p in door["ports"]] == [8080]


def test_every_process_sends_or_checks_the_service_token_and_the_gateway_is_for_signed_in_users() -> None:
    for deployment in of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        token = env["GRPC_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert token["key"] == "grpc-service-token" and not token.get("optional"), name
        if name in ("gateway", "worker"):
            assert env["OBJECT_KEY_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "object-key-secret"
    config = of_kind("ConfigMap")[0]["data"]
    gateway = GatewaySettings.model_validate(config)
    assert gateway.auth_required and gateway.cors_origins and gateway.issuer
    assert gateway.gateway_metrics_port and not gateway.api_docs


def test_the_secret_template_cannot_be_deployed_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process refuses to start while a value it reads still holds REPLACE_ME."""
    config = of_kind("ConfigMap")[0]["data"]
    secret = of_kind("Secret")[0]["stringData"]
    kinds: dict[str, type[BaseSettings]] = {
        "imagegen": ImagegenSettings,
        "storage": StorageSettings,
        "status": StatusSettings,
    }
    for deployment in of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        env = dict(config)
        for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
            env[item["name"]] = secret[item["valueFrom"]["secretKeyRef"]["key"]]
        with monkeypatch.context() as patched:
            for key, value in env.items():
                patched.setenv(key, value)
            with pytest.raises(SystemExit) as refused:
                load_settings(kinds.get(name, GatewaySettings))
        said = str(refused.value)
        assert "REPLACE_ME" in said and "GRPC_SERVICE_TOKEN" in said, (name, said)
