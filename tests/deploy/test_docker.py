"""The Docker image, built offline with buildah from the project's Dockerfile and run from the host.

The base image is a local stand-in for python:3.11-slim (deploy/docker/local-base-image.sh, debootstrap; made
once and kept in container storage), the bundle is the session's tiny one shipped with --build-arg BUNDLE (so
the build never installs torch), and pip reaches the index with the host's settings and CA bundle handed in
as build secrets. The image must hold no torch, training code, tests or pip secrets, run as a non-root user,
answer every kind of call from the host, stop cleanly on SIGTERM, and do all of that with a read-only root
filesystem. Needs root and buildah (and debootstrap while the base image is missing). The image size and the
build times go to stdout (`pytest -s`) and to docker-image.json in pytest's base temp directory.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from server._proto.sift.v1 import (
    intent_pb2,
    intent_pb2_grpc,
    relevance_pb2,
    relevance_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from server.bundle import load_bundle
from tests.conftest import ROOT, LiveServer, free_port, wait_serving

BASE_IMAGE = "localhost/python:3.11-slim"
BASE_SCRIPT = ROOT / "deploy" / "docker" / "local-base-image.sh"
RUN = ("buildah", "run", "--isolation", "chroot")


def _skip_reason() -> str | None:
    if shutil.which("buildah") is None:
        return "buildah is missing (apt-get install buildah)"
    if os.geteuid() != 0:
        return "buildah runs as root here (chroot isolation, mounts)"
    if shutil.which("debootstrap") is None and not _image_exists(BASE_IMAGE):
        return f"{BASE_IMAGE} is missing and debootstrap (which makes it) too"
    return None


def _image_exists(image: str) -> bool:
    probe = ["buildah", "inspect", "--type", "image", image]
    return subprocess.run(probe, capture_output=True).returncode == 0


_SKIP = _skip_reason()
pytestmark = [pytest.mark.container, pytest.mark.skipif(_SKIP is not None, reason=str(_SKIP))]


def sh(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} -> {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


# --- pip settings for the build, as secrets ---------------------------------------------------------------


def pip_build_secrets(workdir: Path, marker: str) -> dict[str, Path]:
    """The build secrets (id -> file) that hand the host's pip settings to the build: a pip.conf with the
    host's network indexes (its local paths and file:// indexes do not exist inside the build) and the CA
    bundle pip trusts here (a TLS-intercepting proxy's CA, for one). The Dockerfile mounts them only while pip
    runs. `marker` is a comment in the pip.conf, to find it by if it ever got into the image."""
    listed = sh(sys.executable, "-m", "pip", "config", "list").stdout
    settings: dict[str, str] = {}
    for line in listed.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        settings[key.rpartition(".")[2]] = str(ast.literal_eval(value))
    conf = [f"# {marker}", "[global]"]
    for name in ("index-url", "extra-index-url", "find-links"):
        urls = [u for u in settings.get(name, "").split() if u.startswith(("http://", "https://"))]
        if urls:
            conf.append(f"{name} = {' '.join(urls)}")
    conf += [
        f"{name} = {settings[name]}" for name in ("timeout", "default-timeout", "retries") if name in settings
    ]
    secrets = {"pipconf": workdir / "pip.conf"}
    secrets["pipconf"].write_text("\n".join(conf) + "\n")
    ca = settings.get("cert") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    if Path(ca).is_file():
        secrets["pipcert"] = Path(ca)
    return secrets


def pem_certs(text: str) -> list[str]:
    """The base64 bodies of the PEM certificates in `text`, one string each."""
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", text, re.S)
    return ["".join(block.split()) for block in blocks]


# --- images and containers --------------------------------------------------------------------------------


@dataclass
class Image:
    name: str
    config: dict  # the Docker image config: User, Entrypoint, Healthcheck, Env
    inspected: str  # `buildah inspect` of the image: config and history
    secrets: dict[str, Path]  # the build secrets (id -> host file)
    marker: str  # a line of the pipconf secret
    report: dict


@pytest.fixture(scope="module")
def base_image() -> float:
    """Makes the local python:3.11-slim unless it exists (debootstrap, 2 minutes); returns the seconds."""
    start = time.monotonic()
    done = sh(str(BASE_SCRIPT), timeout=1200)
    print(f"\n{done.stdout.strip()}")
    return time.monotonic() - start


@pytest.fixture(scope="module")
def image(base_image: float, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    """The project's Dockerfile built offline with the tiny bundle; the image is removed at the end."""
    tag = uuid.uuid4().hex[:10]
    name = f"localhost/sift-test:{tag}"
    workdir = tmp_path_factory.mktemp("docker")
    # The bundle must sit inside the build context: bundles/ is gitignored, and the test's ignore file (the
    # project's .dockerignore plus "only this bundle") keeps other local bundles out of the context.
    bundle_rel = f"bundles/docker-test-{tag}"
    shutil.copytree(tiny_bundle, ROOT / bundle_rel)
    ignore = workdir / "dockerignore"
    ignore.write_text((ROOT / ".dockerignore").read_text() + f"\nbundles/*\n!{bundle_rel}\n")
    marker = f"sift-build-secret-{uuid.uuid4().hex}"
    secrets = pip_build_secrets(workdir, marker)
    secret_args = [a for key, src in secrets.items() for a in ("--secret", f"id={key},src={src}")]
    report: dict = {"image": name, "base_image_seconds": round(base_image, 1)}
    try:
        start = time.monotonic()
        done = sh(
            "buildah", "bud", "--isolation", "chroot", "--pull=never", "--layers=false", "--format", "docker",
            "--ignorefile", str(ignore), *secret_args, "--build-arg", f"BUNDLE={bundle_rel}",
            "-f", str(ROOT / "Dockerfile"), "-t", name, str(ROOT),
            timeout=1800,
        )  # fmt: skip
        report["build_seconds"] = round(time.monotonic() - start, 1)
        assert "Collecting torch" not in done.stdout, "the build installed torch"
        inspected = sh("buildah", "inspect", "--type", "image", name).stdout
        report["image_size"] = sh("buildah", "images", "--format", "{{.Size}}", name).stdout.strip()
        config = json.loads(inspected)["Docker"]["config"]
        yield Image(name, config, inspected, secrets, marker, report)
    finally:
        shutil.rmtree(ROOT / bundle_rel, ignore_errors=True)
        sh("buildah", "rmi", name, check=False)
        out = tmp_path_factory.getbasetemp() / "docker-image.json"
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nimage report ({out}): {json.dumps(report)}")


@dataclass
class Container:
    name: str
    read_only: bool

    def run(
        self, *cmd: str, user: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return sh(*self.run_args(*cmd, user=user, env=env), timeout=timeout, check=False)

    def run_args(self, *cmd: str, user: str | None = None, env: dict[str, str] | None = None) -> list[str]:
        """`buildah run` of `cmd` in this container; /tmp is a tmpfs (a Kubernetes emptyDir, say)."""
        args = [*RUN, "--mount", "type=tmpfs,destination=/tmp", *(["--user", user] if user else [])]
        args += [a for key, value in (env or {}).items() for a in ("--env", f"{key}={value}")]
        return [*args, self.name, "--", *cmd]


@pytest.fixture
def container_factory() -> Iterator:
    """Makes containers of an image (`buildah from`), optionally with a read-only root filesystem; removes
    them and their mounts at the end."""
    made: list[tuple[str, list[str]]] = []

    def make(image: str, read_only: bool = False) -> Container:
        name = f"sift-test-{uuid.uuid4().hex[:10]}"
        sh("buildah", "from", "--pull=never", "--name", name, image)
        mounts: list[str] = []
        made.append((name, mounts))
        if not read_only:
            return Container(name, False)
        # buildah 1.28's `run` has no --read-only, so: one run while writable lets buildah create the mount
        # targets it keeps in the container's layer (/etc/hosts, /etc/hostname, /etc/resolv.conf); then the
        # container's overlay mount itself is remounted read-only, and every later `buildah run` of this
        # container gets it as its root. /run gets a tmpfs (as with podman --read-only): buildah creates and
        # deletes /run/.containerenv on every run, and that delete in a read-only /run crashes buildah 1.28.
        assert Container(name, False).run("true").returncode == 0
        root = sh("buildah", "mount", name).stdout.strip()
        mounts.append(root)
        sh("mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev,size=16m", "tmpfs", f"{root}/run")
        mounts.append(f"{root}/run")
        sh("mount", "-o", "remount,ro", root)
        return Container(name, True)

    yield make
    for name, mounts in made:
        for path in mounts[1:]:
            sh("umount", path, check=False)
        if mounts:
            sh("buildah", "umount", name, check=False)
        sh("buildah", "rm", name, check=False)


def server_pid(launcher: int) -> int:
    """The container's main process (python -m server), below `buildah run` and buildah's chroot helpers."""
    pending, below = [launcher], []
    while pending:
        for task in Path(f"/proc/{pending.pop()}/task").glob("*"):
            with contextlib.suppress(OSError):
                children = [int(c) for c in (task / "children").read_text().split()]
                pending += children
                below += children
    for pid in below:
        with contextlib.suppress(OSError):
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            if Path(argv0).name.startswith("python"):
                return pid
    raise AssertionError(f"no python process below pid {launcher}")


# --- tests ------------------------------------------------------------------------------------------------


def test_image_holds_the_server_only(image: Image, container_factory) -> None:
    config = image.config
    assert config["User"] == "10001"
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "-m", "server.healthcheck"]
    container = container_factory(image.name)
    assert container.run("id", "-u").stdout.strip() == "10001"
    probe = container.run("python", "-c", "import server.app, torch")
    assert "No module named 'torch'" in probe.stderr, probe.stderr
    for module in ("training", "benchmarks", "tests"):
        probe = container.run("python", "-c", f"import {module}")
        assert f"No module named '{module}'" in probe.stderr, probe.stderr

    root = Path(sh("buildah", "mount", container.name).stdout.strip())
    try:
        assert sorted(p.name for p in (root / "app").iterdir()) == ["README.md", "pyproject.toml"]
        site = {p.name for p in (root / "usr/local/lib/python3.11/dist-packages").iterdir()}
        assert "server" in site and not site & {"torch", "training", "benchmarks", "tests", "transformers"}
        bin_dir = root / "usr/local/bin"
        assert (bin_dir / "sift-serve").exists() and not (bin_dir / "sift-train").exists()
        # No torch and no training package anywhere, and none of the project's tests (third-party packages
        # may ship their own tests and conftest.py).
        found = sh(
            "find", str(root), "-name", "torch", "-o", "-name", "training", "-o", "-path", "*/tests/deploy"
        )
        assert not found.stdout, found.stdout

        # The build secrets: no pip configuration, an empty /run/secrets, and neither the pipconf secret (by
        # its marker) nor any CA certificate of the host's bundle that the image's own CA bundle lacks in any
        # file of the image or in its config and history.
        assert not (root / "etc/pip.conf").exists() and not (root / "root/.config/pip").exists()
        assert not any((root / "run/secrets").glob("*"))
        needles = [image.marker]
        if "pipcert" in image.secrets:
            own = set(pem_certs((root / "etc/ssl/certs/ca-certificates.crt").read_text()))
            host = pem_certs(image.secrets["pipcert"].read_text())
            needles += [cert[64:128] for cert in host if cert not in own]  # a PEM file's second line
        image.report["secret_strings_checked"] = len(needles)
        patterns = [a for n in needles for a in ("-e", n)]
        leaks = sh("grep", "-rlF", *patterns, str(root), timeout=300, check=False)
        assert leaks.returncode == 1 and not leaks.stdout, f"build secrets in the image:\n{leaks.stdout}"
        assert not [n for n in needles if n in image.inspected]
        image.report["rootfs_bytes"] = int(sh("du", "-sb", str(root)).stdout.split()[0])
    finally:
        sh("buildah", "umount", container.name, check=False)


@pytest.mark.parametrize("read_only", [False, True], ids=["writable-root", "read-only-root"])
def test_serves_from_the_host(
    image: Image, container_factory, tiny_bundle: Path, tmp_path: Path, read_only: bool
) -> None:
    container = container_factory(image.name, read_only=read_only)
    port, metrics_port = free_port(), free_port()
    env = {"SIFT_PORT": str(port), "SIFT_METRICS_PORT": str(metrics_port)}
    log_path = tmp_path / "container.log"
    start = time.monotonic()
    with log_path.open("w") as log:
        # The image's entrypoint, as `docker run` would start it; buildah shares the host's network here.
        process = subprocess.Popen(
            container.run_args(*image.config["Entrypoint"], env=env), stdout=log, stderr=subprocess.STDOUT
        )
    server = LiveServer(f"127.0.0.1:{port}", metrics_port, process, log_path)
    try:
        wait_serving(server, timeout=60)
        key = "seconds_to_serving_read_only" if read_only else "seconds_to_serving"
        image.report[key] = round(time.monotonic() - start, 2)
        bundle = load_bundle(tiny_bundle)
        pid, title = bundle.products.ids[42], bundle.products.titles[42]
        category = bundle.labels[bundle.products.categories[42]].id
        with server.channel() as channel:
            intent = intent_pb2_grpc.IntentServiceStub(channel).ClassifyIntent(
                intent_pb2.ClassifyIntentRequest(query=title, top_k=3), timeout=10
            )
            assert intent.categories[0].id == category and intent.model_version.startswith("tiny-")
            scores = relevance_pb2_grpc.RelevanceServiceStub(channel).ScoreRelevance(
                relevance_pb2.ScoreRelevanceRequest(
                    query=title,
                    candidates=[
                        relevance_pb2.Candidate(product_id=pid),
                        relevance_pb2.Candidate(title="Enameled Cast Iron Dutch Oven with Lid"),
                    ],
                ),
                timeout=10,
            )
            assert len(scores.scores) == 2 and scores.scores[0].score > scores.scores[1].score
            hits = retrieval_pb2_grpc.RetrievalServiceStub(channel).Search(
                retrieval_pb2.SearchRequest(query=title, k=5), timeout=10
            )
            assert pid in [h.product_id for h in hits.hits]
        metrics = server.metrics()
        assert "sift_request_duration_seconds_count" in metrics and "ClassifyIntent" in metrics
        # The image's HEALTHCHECK command, run inside the container as Docker would.
        health = container.run(*image.config["Healthcheck"]["Test"][1:], env={"SIFT_PORT": str(port)})
        assert health.returncode == 0 and "SERVING" in health.stdout, health.stdout + health.stderr
        if read_only:
            # Not even root writes to the image's files, nor the server's user to its own bundle; /tmp works.
            for user, path in (("0", "/usr/probe"), ("10001", "/bundle/probe")):
                probe = container.run("touch", path, user=user)
                assert "Read-only file system" in probe.stderr, probe.stderr
            assert container.run("touch", "/tmp/probe").returncode == 0
        # docker stop: SIGTERM to the container's main process; drain, close, exit 0.
        os.kill(server_pid(process.pid), signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_path.read_text()
        assert '"message": "stopped' in log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
