"""deploy/k8s: every manifest is valid against the Kubernetes OpenAPI schemas (offline, strict mode, with the
schemas kubernetes-validate ships), and the cross-references no schema can see hold: selectors, probe ports,
SIFT_* settings, the shutdown timeline, the thread rule and the non-root, read-only container."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from server.app import SERVICE_NAMES
from server.config import Settings

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes these manifests claim (native gRPC probes are GA from 1.27, the grpc probe and every
# field used exist in 1.30) and the newest schema set kubernetes-validate 1.37.0 ships.
K8S_VERSIONS = ("1.30.0", "1.37.0")
SERVER = "sift"  # the server container's name
# The health service names server/app.py registers: the whole server ("") and each Sift service.
HEALTH_SERVICES = {"", *SERVICE_NAMES}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


RESOURCES = [doc for path in _manifest_files() for doc in _documents(path)]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [r for r in RESOURCES if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


DEPLOYMENT = _one("Deployment", "sift")
POD = DEPLOYMENT["spec"]["template"]
CONTAINER = next(c for c in POD["spec"]["containers"] if c["name"] == SERVER)
ENV = {e["name"]: e["value"] for e in CONTAINER.get("env", []) if "value" in e}


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are checked here"
    return bool(selector.get("matchLabels")) and selector["matchLabels"].items() <= labels.items()


def _settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings the server container starts with: the image's ENV, then the Deployment's env."""
    for name in [n for n in os.environ if n.startswith("SIFT_")]:
        monkeypatch.delenv(name)
    dockerfile_env = re.search(r"^ENV (.*?)(?<!\\)$", _runtime_stage(), re.M | re.S)
    assert dockerfile_env, "the Dockerfile's runtime stage sets ENV"
    for name, value in re.findall(r"(SIFT_\w+)=(\S+)", dockerfile_env.group(1)):
        monkeypatch.setenv(name, value)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return Settings()


def _runtime_stage() -> str:
    return (ROOT / "Dockerfile").read_text().split(" AS runtime", 1)[1]


def _cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


# --- schemas -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_strictly_against_the_kubernetes_schemas(version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    assert {r["kind"] for r in RESOURCES} == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    errors = []
    for resource in RESOURCES:
        try:
            assert kv.validate(resource, version, strict=True) == version.rsplit(".", 1)[0]
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append(f"{resource['kind']}/{resource['metadata']['name']}: {path}: {e.message}")
    assert not errors, f"against Kubernetes {version}:\n" + "\n".join(errors)


def test_strict_validation_catches_a_misspelt_field() -> None:
    """The negative control: strict mode refuses unknown fields (what a typo in a probe becomes)."""
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    bad = yaml.safe_load(yaml.safe_dump(DEPLOYMENT))
    container = next(c for c in bad["spec"]["template"]["spec"]["containers"] if c["name"] == SERVER)
    container["readinessProbe"]["grpc"]["serviceName"] = container["readinessProbe"]["grpc"].pop("service")
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest_and_renders() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in _manifest_files()]
    used = {c["image"].split(":")[0] for c in POD["spec"]["containers"] + POD["spec"]["initContainers"]}
    assert {image["name"] for image in kustomization.get("images", [])} <= used
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the kustomize rendering is not checked")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    rendered = [doc for doc in yaml.safe_load_all(out) if doc]
    key = sorted((r["kind"], r["metadata"]["name"]) for r in rendered)
    assert key == sorted((r["kind"], r["metadata"]["name"]) for r in RESOURCES)


# --- cross-references ----------------------------------------------------------------------------------


def test_selectors_target_the_deployments_pods() -> None:
    labels = POD["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "sift"
    assert _matches(DEPLOYMENT["spec"]["selector"], labels)
    services = [r for r in RESOURCES if r["kind"] == "Service"]
    assert {s["spec"].get("clusterIP") for s in services} >= {None, "None"}, "a ClusterIP and a headless one"
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items(), service["metadata"]["name"]
    assert _matches(_one("PodDisruptionBudget")["spec"]["selector"], labels)
    target = _one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT["metadata"]["name"]}
    # With an HPA, a replicas field would reset the HPA's count on every `kubectl apply`.
    assert "replicas" not in DEPLOYMENT["spec"]


def test_ports_probes_and_annotations_agree_with_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in CONTAINER["ports"]}
    assert ports == {"grpc": settings.port, "metrics": settings.metrics_port}
    assert settings.host == "0.0.0.0", "the server must listen on the pod IP, not loopback"
    for service in (r for r in RESOURCES if r["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports or port["targetPort"] in ports.values()
            if port["name"] == "grpc":
                assert port["appProtocol"] == "grpc"
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = CONTAINER[kind]["grpc"]
        assert probe["port"] == ports["grpc"], kind
        assert probe.get("service", "") in HEALTH_SERVICES, f"{kind}: no such health service"
    annotations = POD["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]


def test_env_names_are_settings_and_service_links_cannot_shadow_them() -> None:
    fields = {f"SIFT_{name.upper()}" for name in Settings.model_fields}
    sift_env = {name for name in ENV if name.startswith("SIFT_")}
    assert sift_env, "the Deployment sets SIFT_* settings"
    assert sift_env <= fields, f"not sift-serve settings: {sorted(sift_env - fields)}"
    # Service links inject <NAME>_SERVICE_HOST, <NAME>_PORT=tcp://ip:port, ... for every Service with a
    # cluster IP; the image's ENV (e.g. SIFT_PORT) does not win over them.
    linked = {
        f"{s['metadata']['name'].upper().replace('-', '_')}_{suffix}"
        for s in RESOURCES
        if s["kind"] == "Service" and s["spec"].get("clusterIP") != "None"
        for suffix in ("SERVICE_HOST", "SERVICE_PORT", "PORT")
    }
    if linked & fields:
        assert POD["spec"].get("enableServiceLinks") is False, f"service links would set {linked & fields}"


def test_threads_fit_the_cpu_request(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch)
    resources = CONTAINER["resources"]
    cores = _cores(str(resources["requests"]["cpu"]))
    assert cores == int(cores) >= 1, "whole cores, so the static CPU manager can pin them"
    # Explicit, because the server counts os.cpu_count() (the node's cores), not the pod's limit.
    assert settings.workers >= 1, "SIFT_WORKERS=0 would start one worker per node core"
    assert settings.workers * settings.intra_op_threads <= cores
    for container in POD["spec"]["containers"] + POD["spec"]["initContainers"]:
        assert container["resources"]["requests"] == container["resources"]["limits"], container["name"]


def test_termination_grace_covers_prestop_drain_and_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch)
    pre_stop = CONTAINER["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        sleep = float(pre_stop["sleep"]["seconds"])
    else:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep", "preStop sleeps while endpoint removal propagates"
        sleep = float(command[1])
    assert sleep > 0
    total = sleep + settings.drain_period + settings.grace_period
    assert POD["spec"]["terminationGracePeriodSeconds"] > total


def test_runs_non_root_with_a_read_only_root_filesystem() -> None:
    uid = int(re.findall(r"^USER (\d+)", _runtime_stage(), re.M)[-1])
    pod = POD["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == uid
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in POD["spec"]["containers"] + POD["spec"]["initContainers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert context.get("runAsUser", uid) == uid, container["name"]
    bundle_image = (K8S / "bundle.Dockerfile").read_text()
    assert re.search(rf"^USER {uid}$", bundle_image, re.M)
    assert f"--chown={uid}:{uid}" in bundle_image


def test_bundle_comes_from_the_init_container_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch)
    volumes = {v["name"]: v for v in POD["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in CONTAINER["volumeMounts"]}
    bundle = mounts[str(settings.bundle)]
    assert bundle.get("readOnly") is True
    assert "emptyDir" in volumes[bundle["name"]]
    writers = [
        c
        for c in POD["spec"]["initContainers"]
        if any(m["name"] == bundle["name"] and not m.get("readOnly") for m in c["volumeMounts"])
    ]
    assert len(writers) == 1 and writers[0]["image"].startswith("sift-bundle:")
    # The only writable path of a read-only root: workers' metrics files and onnxruntime's $HOME.
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert ENV.get("HOME") == "/tmp"
    # `:latest` defaults imagePullPolicy to Always, which fails for images loaded with `kind load`.
    for container in POD["spec"]["containers"] + POD["spec"]["initContainers"]:
        assert container["imagePullPolicy"] == "IfNotPresent", container["name"]
