"""The Kubernetes manifests (deploy/k8s): rendered by `kubectl kustomize`, validated against
Kubernetes' schemas offline (kubernetes-validate), and checked for what schemas cannot see:
probes and ports that exist in the app, selectors that match, sizes that fit together."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.config import Settings
from app.main import create_app
from tests.conftest import REPO

KUSTOMIZATIONS = ["deploy/k8s/base", "deploy/k8s/overlays/production"]
KUBERNETES_VERSION = "1.30.0"  # The oldest version the manifests are meant for.
Manifest = dict[str, Any]


def render(kustomization: str) -> list[Manifest]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here (it renders the kustomizations)")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(REPO / kustomization)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [document for document in yaml.safe_load_all(rendered) if document]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def manifests(request: pytest.FixtureRequest) -> dict[str, Manifest]:
    documents = render(request.param)
    by_kind = {document["kind"]: document for document in documents}
    assert len(by_kind) == len(documents), "one object of each kind"
    return by_kind


def quantity(value: str | int) -> float:
    """A Kubernetes quantity as a number (cores, bytes)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()  # type: ignore[union-attr]
    return float(number) * units[unit]


def container(manifests: dict[str, Manifest]) -> Manifest:
    (only,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return dict(only)


def settings_of(manifests: dict[str, Manifest]) -> Settings:
    data = manifests["ConfigMap"]["data"]
    assert all(key.startswith("CNN_SERVE_") for key in data)
    # Every setting must be one the service knows, with a valid value.
    known = set(Settings.model_fields)
    given = {key.removeprefix("CNN_SERVE_").lower(): value for key, value in data.items()}
    assert set(given) <= known, set(given) - known
    return Settings(**given)


def test_manifests_are_valid_kubernetes_objects(manifests: dict[str, Manifest]):
    for manifest in manifests.values():
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_selectors_match_the_pods(manifests: dict[str, Manifest]):
    deployment = manifests["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        manifests["Service"]["spec"]["selector"],
        manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector
        assert selector.items() <= pod_labels.items(), selector
    target = manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


def test_probes_and_ports_exist_in_the_app(manifests: dict[str, Manifest]):
    serving = container(manifests)
    ports = {port["name"]: port["containerPort"] for port in serving["ports"]}
    settings = settings_of(manifests)
    dockerfile = (REPO / "Dockerfile").read_text()
    image_port, image_grpc_port = (
        int(re.search(rf"CNN_SERVE_{name}=(\d+)", dockerfile).group(1))  # type: ignore[union-attr]
        for name in ("PORT", "GRPC_PORT")
    )
    assert ports == {"http": image_port, "grpc": image_grpc_port}
    targets = {port["name"]: port["targetPort"] for port in manifests["Service"]["spec"]["ports"]}
    assert targets == {"http": "http", "grpc": "grpc"}
    assert "CNN_SERVE_PORT" not in manifests["ConfigMap"]["data"] or settings.port == image_port
    routes = set(create_app(settings).openapi()["paths"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        action = serving[probe]["httpGet"]
        assert action["path"] in routes, probe
        assert action["port"] in ports, probe
    assert serving["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert serving["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert manifests["Service"]["spec"]["ports"][0]["targetPort"] in ports
    annotations = manifests["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == image_port
    assert annotations["prometheus.io/path"] in routes


def test_replicas_budgets_and_resources_fit_together(manifests: dict[str, Manifest]):
    autoscaler = manifests["HorizontalPodAutoscaler"]["spec"]
    replicas = manifests["Deployment"]["spec"]["replicas"]
    assert 1 <= autoscaler["minReplicas"] <= autoscaler["maxReplicas"]
    assert autoscaler["minReplicas"] <= replicas <= autoscaler["maxReplicas"]
    # Below the replicas: a node drain can always evict one pod.
    assert manifests["PodDisruptionBudget"]["spec"]["minAvailable"] < autoscaler["minReplicas"]
    resources = container(manifests)["resources"]
    for resource in ("cpu", "memory"):
        assert quantity(resources["limits"][resource]) >= quantity(resources["requests"][resource])
    # One worker keeps about a core busy: the CPU limit leaves every worker one.
    assert quantity(resources["limits"]["cpu"]) >= settings_of(manifests).workers


def test_a_pod_is_never_killed_while_draining(manifests: dict[str, Manifest]):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    settings = settings_of(manifests)
    command = container(manifests)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain_s = float(command[1]) + settings.shutdown_grace_s + settings.shutdown_timeout_s
    assert pod["terminationGracePeriodSeconds"] > drain_s


def test_runs_as_non_root_on_a_read_only_root_with_writable_paths_mounted(
    manifests: dict[str, Manifest],
):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    serving = container(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert serving["securityContext"]["readOnlyRootFilesystem"] is True
    assert serving["securityContext"]["allowPrivilegeEscalation"] is False
    assert serving["securityContext"]["capabilities"]["drop"] == ["ALL"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in serving["volumeMounts"]}
    assert all(mount["name"] in volumes for mount in mounts.values())
    writable = [path for path, mount in mounts.items() if not mount.get("readOnly")]
    # The workers' metric files and scratch space.
    assert "/tmp" in writable
    settings = settings_of(manifests)
    data = manifests["ConfigMap"]["data"]
    if "CNN_SERVE_COMPILE_CACHE_DIR" in data:
        assert any(Path(path) in settings.compile_cache_dir.parents for path in writable)
    if "CNN_SERVE_MODEL_BASE_DIR" in data:
        assert str(settings.model_base_dir) in mounts
    (reference,) = serving["envFrom"]
    assert reference["configMapRef"]["name"] == manifests["ConfigMap"]["metadata"]["name"]
