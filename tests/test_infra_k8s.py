"""infra/k8s/: every overlay renders with kustomize and every rendered manifest validates against the
Kubernetes schemas offline (kubernetes-validate ships them); CRDs without a bundled schema get a
structural check. Plus the hardening rules the manifests promise (non-root, limits, GPU pool, secrets
only from Secret objects) and the Dockerfile's."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from core.settings import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

K8S_DIR = PROJECT_ROOT / "infra" / "k8s"
OVERLAYS = sorted(path.name for path in (K8S_DIR / "overlays").iterdir() if (path / "kustomization.yaml").exists())
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")
CRD_KINDS = {("sparkoperator.k8s.io/v1beta2", "SparkApplication")}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
SECRET_NAME = "featurestack-secrets"
# The InferenceService CRD's schema (spec.predictor), vendored from kserve/kserve: see its $comment.
KSERVE_SCHEMA = PROJECT_ROOT / "tests" / "schemas" / "kserve_inferenceservice_v1beta1.json"


def _kustomize_command(path: Path) -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build", str(path)]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize", str(path)]
    return None


def render(path: Path) -> list[dict]:
    command = _kustomize_command(path)
    if command is None:
        pytest.skip("neither kustomize nor kubectl (with built-in kustomize) is on PATH")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, render(K8S_DIR / "overlays" / request.param)


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def _pod_specs(docs: list[dict]):
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            yield doc, doc["spec"]["template"]["spec"]


def test_overlays_exist():
    assert {"dev", "prod"} <= set(OVERLAYS)


def test_kustomizations_reference_existing_files():
    """Works without kustomize: every resource, patch file and generator file that a kustomization lists exists."""
    for kustomization in K8S_DIR.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        folder = kustomization.parent
        listed = list(spec.get("resources", []))
        listed += [patch["path"] for patch in spec.get("patches", []) if "path" in patch]
        for generator in spec.get("configMapGenerator", []) + spec.get("secretGenerator", []):
            listed += [item.split("=", 1)[-1] for item in generator.get("files", [])]
        for item in listed:
            assert (folder / item).exists(), f"{kustomization.relative_to(PROJECT_ROOT)} lists missing {item}"


def test_every_manifest_validates_against_kubernetes_schemas(overlay):
    name, docs = overlay
    assert docs, f"overlay {name} rendered nothing"
    for doc in docs:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                assert (doc["apiVersion"], doc["kind"]) in CRD_KINDS, f"{name}: no schema for {doc['apiVersion']} {doc['kind']}"
                assert doc["metadata"].get("name") and isinstance(doc.get("spec"), dict), f"{name}: {doc['kind']} lacks metadata.name/spec"
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} invalid for k8s {version}: {error.message} at {list(error.path)}")


def test_the_validator_rejects_a_broken_manifest():
    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
              "spec": {"replicas": "three", "selector": {}, "template": {"spec": {"containers": [{"name": "c", "imagee": "x"}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_spark_application_crd_is_complete():
    docs = render(K8S_DIR / "overlays" / "prod")
    (app,) = _by_kind(docs, "SparkApplication").values()
    spec = app["spec"]
    assert spec["mode"] == "cluster" and spec["type"] == "Python"
    assert spec["mainApplicationFile"].startswith("local:///app/")
    assert spec["driver"]["serviceAccount"] in _by_kind(docs, "ServiceAccount")
    assert spec["executor"]["instances"] >= 1


def test_pods_are_non_root_with_requests_and_limits(overlay):
    name, docs = overlay
    for doc, pod in _pod_specs(docs):
        where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] > 0, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert security.get("readOnlyRootFilesystem") is True, where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"]), where


def test_serving_runs_on_the_gpu_pool_with_an_hpa_and_a_pdb():
    docs = render(K8S_DIR / "overlays" / "prod")
    serving = _by_kind(docs, "Deployment")["serving"]
    pod = serving["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"]["featurestack.io/node-pool"] == "gpu"
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in pod["tolerations"])
    hpa = _by_kind(docs, "HorizontalPodAutoscaler")["serving"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "serving"}
    assert hpa["spec"]["minReplicas"] >= 2


def test_selectors_match_workloads(overlay):
    """PDBs, Services and NetworkPolicies select pods that some workload actually creates."""
    name, docs = overlay
    pod_labels = [doc["spec"]["template"]["metadata"]["labels"] for doc in docs if doc["kind"] in WORKLOAD_KINDS]
    # Pods made at run time: Dagster run Jobs (K8sRunLauncher of the base instance) and Spark operator pods.
    base_instance = yaml.safe_load((K8S_DIR / "base" / "dagster-instance.yaml").read_text())
    pod_labels.append(base_instance["run_launcher"]["config"]["run_k8s_config"]["pod_template_spec_metadata"]["labels"])
    for app in yaml.safe_load_all((K8S_DIR / "base" / "spark.yaml").read_text()):
        pod_labels += [app["spec"]["driver"]["labels"], app["spec"]["executor"]["labels"]]

    def matches(selector: dict) -> bool:
        return any(all(labels.get(k) == v for k, v in selector.items()) for labels in pod_labels)

    for pdb in _by_kind(docs, "PodDisruptionBudget").values():
        assert matches(pdb["spec"]["selector"]["matchLabels"]), f"{name}: PDB {pdb['metadata']['name']} selects nothing"
    for service in _by_kind(docs, "Service").values():
        assert matches(service["spec"]["selector"]), f"{name}: Service {service['metadata']['name']} selects nothing"
    for hpa in _by_kind(docs, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in _by_kind(docs, hpa["spec"]["scaleTargetRef"]["kind"])
    policies = _by_kind(docs, "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"]["podSelector"] == {}
    for policy in policies.values():
        selector = policy["spec"]["podSelector"].get("matchLabels")
        if selector:
            assert matches(selector), f"{name}: NetworkPolicy {policy['metadata']['name']} selects nothing"


def test_secrets_come_only_from_secret_objects(overlay):
    name, docs = overlay
    secrets = _by_kind(docs, "Secret")
    if name == "prod":
        assert not secrets, "prod must not render secret values; the Secret is created out of band"
    else:
        assert set(secrets) == {SECRET_NAME}
    needed_keys = set()
    for doc, pod in _pod_specs(docs):
        for container in pod["containers"]:
            for env in container.get("env", []):
                if "value" in env:
                    value = str(env["value"])
                    assert not any(word in env["name"] for word in ("PASSWORD", "API_KEY", "TOKEN")), f"{name}: literal {env['name']}"
                    assert "@" not in value, f"{name}: credentials in the literal value of {env['name']}"
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == SECRET_NAME
                    needed_keys.add(ref["key"])
    for config_map in _by_kind(docs, "ConfigMap").values():
        for key, value in (config_map.get("data") or {}).items():
            assert "PASSWORD" not in key and ":@" not in value and "password=" not in value.lower().replace("{env: postgres_password}", "")
    if name != "prod":
        assert needed_keys <= set(secrets[SECRET_NAME]["data"]), f"{name}: Secret lacks {needed_keys - set(secrets[SECRET_NAME]['data'])}"


def test_dagster_instance_uses_postgres_and_a_run_launcher(overlay):
    name, docs = overlay
    instance = yaml.safe_load(_by_kind(docs, "ConfigMap")["dagster-instance"]["data"]["dagster.yaml"])
    assert "postgres_db" in instance["storage"]["postgres"]
    assert instance["storage"]["postgres"]["postgres_db"]["password"] == {"env": "POSTGRES_PASSWORD"}
    launcher = instance["run_launcher"]["class"]
    assert launcher == ("K8sRunLauncher" if name == "prod" else "DefaultRunLauncher")
    if launcher == "K8sRunLauncher":
        config = instance["run_launcher"]["config"]
        assert config["instance_config_map"] in _by_kind(docs, "ConfigMap")
        assert config["service_account_name"] in _by_kind(docs, "ServiceAccount")
        assert config["env_secrets"] == [SECRET_NAME]


def test_dockerfile_runs_as_non_root_and_ships_no_state():
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert "requirements.lock" in dockerfile  # the pinned set, not a fresh resolve
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".state", ".git"} <= set(ignored)
    for line in dockerfile.splitlines():
        assert not line.startswith(("ENV REDIS_URL", "ARG REDIS_URL")), "no secrets baked into the image"


def test_stream_processors_share_the_log_partitions():
    docs = render(K8S_DIR / "overlays" / "prod")
    processor = _by_kind(docs, "Deployment")["stream-processor"]
    (container,) = processor["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["featurestack", "stream"]
    env = _by_kind(docs, "ConfigMap")["featurestack-env"]["data"]
    # More replicas than partitions would idle.
    assert processor["spec"]["replicas"] <= int(env["FEATURESTACK_STREAM_PARTITIONS"])
    assert env["FEATURESTACK_SERVING_PUBLISH_EVENTS"] == "1"
    assert _by_kind(docs, "PodDisruptionBudget")["stream-processor"]["spec"]["minAvailable"] == 1


def test_mlflow_tracking_server_is_backed_by_the_platforms_postgres(overlay):
    name, docs = overlay
    deployment = _by_kind(docs, "Deployment")["mlflow"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = dict(arg.removeprefix("--").partition("=")[::2] for arg in container["args"])
    store = args["backend-store-uri"]
    # The store is the `mlflow` database of the Postgres StatefulSet, its password expanded from the Secret.
    assert store == "postgresql+psycopg://featurestack:$(POSTGRES_PASSWORD)@postgres:5432/mlflow"
    assert {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "POSTGRES_PASSWORD"}}} in container["env"]
    assert "postgres" in _by_kind(docs, "Service") and "postgres" in _by_kind(docs, "StatefulSet")
    init = _by_kind(docs, "ConfigMap")["postgres-init"]["data"]
    assert any("CREATE DATABASE mlflow OWNER featurestack;" in sql for sql in init.values())
    # Artifacts are served by it from its own volume; clients find it through the Service.
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert volumes[mounts[args["artifacts-destination"]]]["persistentVolumeClaim"]["claimName"] in _by_kind(docs, "PersistentVolumeClaim")
    service = _by_kind(docs, "Service")["mlflow"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    port = service["spec"]["ports"][0]["port"]
    env = _by_kind(docs, "ConfigMap")["featurestack-env"]["data"]
    assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow:{port}" and args["port"] == str(port)
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    postgres_clients = _by_kind(docs, "NetworkPolicy")["postgres-clients"]["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}} in postgres_clients


def _strict(schema: dict) -> dict:
    """The CRD schema with unknown fields refused, as the API server's strict field validation does
    (`kubectl apply` warns and drops them otherwise): a misspelt field fails here."""
    schema = copy.deepcopy(schema)
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
                    and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return schema


def _inference_service() -> tuple[dict, jsonschema.Draft7Validator]:
    (service,) = render(K8S_DIR / "kserve")
    return service, jsonschema.Draft7Validator(_strict(json.loads(KSERVE_SCHEMA.read_text())))


def test_the_kserve_inference_service_validates_against_the_crd_schema():
    service, validator = _inference_service()
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    errors = [f"{list(error.path)}: {error.message}" for error in validator.iter_errors(service)]
    assert errors == []
    predictor = service["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["image"].startswith("ghcr.io/example/featurestack:")
    assert container["command"][:2] == ["featurestack", "serve"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert predictor["nodeSelector"]["featurestack.io/node-pool"] == "gpu"
    # The Open Inference Protocol's health routes are the probes; the port is the one KServe routes to.
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["ports"][0]["containerPort"] == 8080 and "--port" in container["command"] and "8080" in container["command"]
    env = {item["name"]: item for item in container["env"]}
    assert env["FEATURESTACK_SERVING_MODEL_URI"]["value"] == "models:/fraud_mlp@champion"
    # The registry is the MLflow tracking server, named in the shared ConfigMap.
    assert "MLFLOW_TRACKING_URI" not in env and {"configMapRef": {"name": "featurestack-env"}} in predictor["containers"][0]["envFrom"]


def test_the_crd_schema_rejects_a_broken_inference_service():
    service, validator = _inference_service()
    for path, value in ((("spec", "predictor", "minReplicas"), "two"), (("spec", "predictor", "containerz"), []),
                        (("spec", "predictor", "containers", 0, "resources", "limits", "nvidia.com/gpu"), [1])):
        broken = copy.deepcopy(service)
        target = broken
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        assert list(validator.iter_errors(broken)), f"{path} = {value!r} passed"


def test_the_inference_service_stays_out_of_the_default_kustomization():
    """Rendering it needs nothing, applying it needs KServe's CRD: the overlays never include it."""
    for name in OVERLAYS:
        assert all(doc["kind"] != "InferenceService" for doc in render(K8S_DIR / "overlays" / name))
