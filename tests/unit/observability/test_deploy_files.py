"""The deploy/ files parse and agree with the code (Docker and Kubernetes cannot run here)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from headwater.settings import Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])


def docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kube_objects() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in docs(path):
            found[(doc["kind"], doc["metadata"].get("name", ""))] = doc
    return found


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    assert docs(path), f"{path} is empty"


def test_every_deploy_area_is_there() -> None:
    for rel in (
        "docker/Dockerfile", "docker/compose.yml", "prometheus/prometheus.yml", "prometheus/alerts.yml",
        "grafana/dashboards/headwater.json", "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/headwater.yml", "kubernetes/statefulset.yaml",
    ):  # fmt: skip
        assert (DEPLOY / rel).is_file(), rel
    json.loads((DEPLOY / "grafana/dashboards/headwater.json").read_text())


def test_dockerfile_runs_the_server_on_a_volume_with_a_healthcheck() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "pip install" in text and "COPY src" in text
    assert 'CMD ["headwater", "serve", "--host", "0.0.0.0"]' in text
    assert re.search(r"^VOLUME .*/var/lib/headwater", text, re.M)
    assert "HEADWATER_DATA_DIR=/var/lib/headwater" in text
    healthcheck = re.search(r"^HEALTHCHECK .*?(?<!\\)$", text, re.M | re.S)
    assert healthcheck and "/health" in healthcheck.group(0)


def test_compose_wires_prometheus_and_grafana_to_files_that_exist() -> None:
    compose_dir = DEPLOY / "docker"
    compose = docs(compose_dir / "compose.yml")[0]
    services = compose["services"]
    assert set(services) >= {"headwater", "prometheus", "grafana"}
    assert "HEADWATER_BOOTSTRAP_KEY" in services["headwater"]["environment"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (compose_dir / source).exists(), (
                    f"compose mounts {source}, which does not exist"
                )
    build = services["headwater"]["build"]
    assert (compose_dir / build["context"] / build["dockerfile"]).is_file()
    prom = docs(compose_dir / "prometheus.yml")[0]
    scrape = prom["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == ["headwater:8000"]
    assert scrape["authorization"]["credentials_file"] == "/run/secrets/headwater_key"
    assert "headwater_key" in services["prometheus"]["secrets"]


def test_grafana_provisioning_points_at_the_dashboard_mount() -> None:
    compose = docs(DEPLOY / "docker" / "compose.yml")[0]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    provider = docs(DEPLOY / "grafana/provisioning/dashboards/headwater.yml")[0]["providers"][0]
    assert mounts["../grafana/dashboards"] == provider["options"]["path"]
    source = docs(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")[0]["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"


def test_kustomization_lists_every_manifest() -> None:
    kustomization = docs(DEPLOY / "kubernetes" / "kustomization.yaml")[0]
    manifests = {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_kubernetes_statefulset_probes_secret_and_volume() -> None:
    objects = kube_objects()
    for (kind, name), obj in objects.items():
        assert obj["apiVersion"] and kind and name, obj
    sts = objects[("StatefulSet", "headwater")]["spec"]
    pod = sts["template"]["spec"]
    (container,) = pod["containers"]
    assert sts["replicas"] == 1
    assert sts["serviceName"] in {n for k, n in objects if k == "Service"}
    claim = sts["volumeClaimTemplates"][0]["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim] == "/var/lib/headwater"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    ready = " ".join(container["readinessProbe"]["exec"]["command"])
    assert "/ready" in ready and "Authorization" in ready and "HEADWATER_BOOTSTRAP_KEY" in ready
    env = {e["name"]: e for e in container["env"]}
    ref = env["HEADWATER_BOOTSTRAP_KEY"]["valueFrom"]["secretKeyRef"]
    secret = objects[("Secret", ref["name"])]
    assert ref["key"] in secret["stringData"]
    labels = sts["template"]["metadata"]["labels"]
    for (kind, _), obj in objects.items():
        if kind == "Service":
            assert obj["spec"]["selector"].items() <= labels.items()


def test_kubernetes_config_file_is_valid_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = kube_objects()
    config = objects[("ConfigMap", "headwater-config")]["data"]["headwater.toml"]
    (container,) = objects[("StatefulSet", "headwater")]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HEADWATER_CONFIG"] == "/etc/headwater/headwater.toml"
    path = tmp_path / "headwater.toml"
    path.write_text(config)
    for var in [v for v in os.environ if v.startswith("HEADWATER_")]:
        monkeypatch.delenv(var)
    settings = load_settings(path)
    assert isinstance(settings, Settings) and str(settings.data_dir) == "/var/lib/headwater"
