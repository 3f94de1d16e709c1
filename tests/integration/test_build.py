"""The real default runtime image, built through `nox -s build`'s own code, checked inside."""

import dataclasses
import json
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from tests.integration.conftest import TEST_REPOSITORY, Canaries, Pipeline, build_small, remove_images
from torchimg import image_inputs, layers, paths
from torchimg.adapters import engine, gitinfo
from torchimg.errors import PipelineError
from torchimg.model import lockfile, record, variants
from torchimg.stages import build

pytestmark = pytest.mark.integration


def py(image: str, code: str) -> str:
    return engine.run(image, ["python", "-c", code]).strip()


def labels_of(image: str) -> dict[str, str]:
    return engine.image_labels(image)


def layers_of(image: str) -> list[str]:
    return engine.layer_ids(image)


def test_torch_is_the_locked_build_for_cuda_12_8(
    runtime_image: record.Record, default_variant: variants.Variant
) -> None:
    pins = lockfile.pins((default_variant.lock_dir / "runtime.txt").read_text())
    out = json.loads(
        py(
            runtime_image.image_id,
            "import json, torch; print(json.dumps([torch.__version__, torch.version.cuda, "
            "torch.backends.cudnn.version(), torch.cuda.is_available()]))",
        )
    )
    version, cuda, cudnn, _ = out
    assert version.split("+")[0] == pins["torch"] == "2.9.1"
    assert cuda == "12.8"
    major, minor, patch = pins["nvidia-cudnn-cu12"].split(".")[:3]
    assert cudnn == int(major) * 10000 + int(minor) * 100 + int(patch)


def test_runs_as_a_non_root_user_in_workspace(runtime_image: record.Record) -> None:
    out = engine.run(runtime_image.image_id, ["sh", "-c", "id -u; pwd; touch x && echo writable"])
    uid, cwd, writable = out.split()
    assert uid != "0"
    assert (cwd, writable) == ("/workspace", "writable")
    owners = engine.run(
        runtime_image.image_id, ["stat", "-c", "%n %U:%g %a", "/opt", "/opt/venv", "/workspace"]
    )
    # the venv and the work folder: the image's user's, group 0 alike (OpenShift); /opt: root's
    assert owners.splitlines() == ["/opt root:0 755", "/opt/venv pytorch:0 775", "/workspace pytorch:0 775"]


def test_the_build_leaves_no_stray_file(runtime_image: record.Record, dev_image: record.Record) -> None:
    """What a build step may leave behind (a mount's stub, a download, a script): peers'
    sanity tests (AWS's stray-files check) look at /tmp, /var/tmp, / and the user's home; the
    build's bind mounts target /usr/local/sbin."""
    look = "ls -A /tmp /var/tmp /workspace /usr/local/sbin; find / /home/pytorch -maxdepth 1 -name '*.py'"
    for image in (runtime_image, dev_image):
        found = engine.run(image.image_id, ["sh", "-c", look])
        empty = ["/tmp:", "/usr/local/sbin:", "/var/tmp:", "/workspace:"]  # ls sorts its folders
        assert found.split() == empty, (image.flavor, found)
        top = engine.run(image.image_id, ["ls", "-A", "/"]).split()
        assert set(top) - _DEBIAN_TOP == {".dockerenv", "workspace"}, (image.flavor, top)


# A Debian root folder's entries (the merged /usr's links included)
_DEBIAN_TOP = {"bin", "boot", "dev", "etc", "home", "lib", "lib64", "media", "mnt", "opt", "proc"}
_DEBIAN_TOP |= {"root", "run", "sbin", "srv", "sys", "tmp", "usr", "var"}


def test_the_images_user_takes_uid_1000_from_a_base_that_holds_it(base: str | None, tmp_path: Path) -> None:
    """Ubuntu 24.04 (and so NVIDIA's CUDA bases) has `ubuntu` as uid and gid 1000: it gives way
    to `pytorch`, the uid the image declares (docker/image/add-user)."""
    shutil.copy(paths.ROOT / "docker" / "image" / "add-user", tmp_path / "add-user")
    image = build_small(
        tmp_path,
        f"FROM {base or variants.load().bases['debian-trixie'].image}\n"
        "RUN useradd --uid 1000 --user-group --create-home ubuntu\n"
        "RUN --mount=type=bind,source=add-user,target=/tmp/add-user sh /tmp/add-user\n",
        "torchimg-test/add-user:1",
    )
    try:
        out = engine.run(
            image, ["sh", "-c", "getent passwd 1000; getent group 1000; id -u ubuntu || echo gone"]
        )
        assert out.splitlines() == ["pytorch:x:1000:1000::/home/pytorch:/bin/bash", "pytorch:x:1000:", "gone"]
    finally:
        remove_images(image)


def _wheel(folder: Path) -> str:
    """A one-module wheel (pure Python, no index needed) in `folder`; its file name."""
    info = "torchimg_canary-1.0.dist-info"
    files = {
        "torchimg_canary.py": "VALUE = 42\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: torchimg-canary\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    name = "torchimg_canary-1.0-py3-none-any.whl"
    with zipfile.ZipFile(folder / name, "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
    return name


@pytest.mark.parametrize("user", [None, "1000660000:0"])  # the image's user; OpenShift's any UID of group 0
def test_pip_install_works_as_the_images_user(
    runtime_image: record.Record, user: str | None, tmp_path: Path
) -> None:
    """The venv belongs to the image's user and group 0: `%pip install` in Jupyter and a
    derived image's `RUN pip install` add packages without `USER root`."""
    wheel = _wheel(tmp_path)
    tmp_path.chmod(0o755)
    script = f"pip install -q --no-index --no-cache-dir /wheels/{wheel}"
    script += " && python -c 'import torchimg_canary as c; print(c.VALUE)'"
    out = engine.run(
        runtime_image.image_id, ["sh", "-c", script], volumes=[(str(tmp_path), "/wheels", "ro")], user=user
    )
    assert out.strip().splitlines()[-1] == "42"


def test_labels_are_present_and_true(runtime_image: record.Record, default_variant: variants.Variant) -> None:
    labels = labels_of(runtime_image.image_id)
    runtime_lock = default_variant.lock_dir / "runtime.txt"
    pins = lockfile.pins(runtime_lock.read_text())
    git = gitinfo.current()
    assert labels["org.opencontainers.image.revision"] == git.revision
    assert labels["org.opencontainers.image.version"] == "2.9.1-cu128-runtime"
    assert labels["io.torchimg.torch.version"] == pins["torch"]
    assert labels["io.torchimg.cuda.version"] == pins["nvidia-cuda-runtime-cu12"]
    assert labels["io.torchimg.nccl.version"] == pins["nvidia-nccl-cu12"]
    assert labels["io.torchimg.cudnn.version"] == pins["nvidia-cudnn-cu12"]
    assert labels["io.torchimg.driver.min"] == "570.26"
    assert labels["io.torchimg.lock.runtime.sha256"] == lockfile.sha256(runtime_lock)
    base = runtime_image.inputs.base
    assert labels["org.opencontainers.image.base.digest"] == (
        default_variant.base.digest if base.pinned else base.id
    )
    assert labels["io.torchimg.built-by"] == "torchimg"
    nccl = py(runtime_image.image_id, "import torch; print('.'.join(map(str, torch.cuda.nccl.version())))")
    assert pins["nvidia-nccl-cu12"].startswith(nccl)
    env = py(runtime_image.image_id, "import os; print(os.environ['NVIDIA_REQUIRE_CUDA'])")
    assert env == "cuda>=12.0"  # the toolkit refuses only a driver of an older CUDA major


def test_the_host_driver_folders_gke_mounts_are_on_the_search_paths(
    runtime_image: record.Record,
) -> None:
    """Where GKE's device plugin mounts the host's libcuda and nvidia-smi: on the loader's
    path (searched before torch's RUNPATH: only driver libraries are there) and at the end of
    PATH, no empty entry (the current folder)."""
    got = py(
        runtime_image.image_id,
        "import os; print(os.environ['LD_LIBRARY_PATH']); print(os.environ['PATH'])",
    ).splitlines()
    assert got[0] == "/usr/local/nvidia/lib:/usr/local/nvidia/lib64"
    path = got[1].split(":")
    assert path[0] == "/opt/venv/bin" and path[-1] == "/usr/local/nvidia/bin" and "" not in path


def test_torch_compile_runs_on_cpu(runtime_image: record.Record) -> None:
    code = (
        "import torch\n"
        "def f(x): return torch.sin(x) * 2 + x.cos()\n"
        "g = torch.compile(f)\n"
        "x = torch.randn(257)\n"
        "torch.testing.assert_close(g(x), f(x))\n"
        "print('compiled ok')\n"
    )
    assert py(runtime_image.image_id, code).endswith("compiled ok")


_IDENTITY = (
    "import getpass, os; home = os.path.expanduser('~'); "
    "print(os.getuid(), getpass.getuser(), home, os.access(home, os.W_OK))"
)


def test_any_uid_gets_a_name_and_a_home_and_torch_compile_works(runtime_image: record.Record) -> None:
    """Kubernetes (runAsUser) and OpenShift run an image as a UID it does not know: one with no
    name (torch.compile's cache folder is named after it) and no writable home. The entrypoint
    gives it both; the image's own user is left as it is."""
    compiled = "import torch; f = torch.compile(lambda x: x.sin() * 2); print(f(torch.zeros(3)).tolist())"
    out = engine.run(runtime_image.image_id, ["python", "-c", f"{_IDENTITY}\n{compiled}"], user="12345:12345")
    assert out.split("\n")[:2] == ["12345 uid12345 /tmp/home-12345 True", "[0.0, 0.0, 0.0]"]
    openshift = engine.run(runtime_image.image_id, ["python", "-c", _IDENTITY], user="1000660000:0")
    assert openshift.strip() == "1000660000 uid1000660000 /tmp/home-1000660000 True"
    mine = engine.run(runtime_image.image_id, ["python", "-c", _IDENTITY])
    assert mine.strip() == "1000 pytorch /home/pytorch True"


def test_sigterm_reaches_the_command(runtime_image: record.Record) -> None:
    """`docker stop` and Kubernetes send SIGTERM to PID 1. Python as PID 1 ignores it (and is
    killed after the grace period): tini is PID 1 and passes it on, so the command ends at once."""
    stop_itself = "import os, signal, time; os.kill(1, signal.SIGTERM); time.sleep(60); print('ignored')"
    with pytest.raises(PipelineError, match=r"exit 143"):
        engine.run(runtime_image.image_id, ["python", "-c", stop_itself])
    pid1 = engine.run(runtime_image.image_id, ["cat", "/proc/1/cmdline"]).split("\0")
    assert pid1[0] == "/usr/bin/tini", pid1


def test_a_running_container_can_be_looked_into(runtime_image: record.Record) -> None:
    """ps, top and free are the first tools of anyone debugging a container (a stuck DataLoader
    worker, memory); `ps -p 1 -o comm=` is also how docker-stacks' tests find tini."""
    out = engine.run(runtime_image.image_id, ["sh", "-c", "ps -p 1 -o comm=; top -bn1 | head -1; free -m"])
    comm, top, *free = out.splitlines()
    assert comm.strip() == "tini", out
    assert top.startswith("top - "), out
    assert free[0].split()[:2] == ["total", "used"], out


def test_healthy_within_seconds_of_the_start(runtime_image: record.Record) -> None:
    """`docker compose up --wait` and `depends_on: service_healthy` wait for `healthy`: the first
    check runs 2 s after the start (--start-interval), not after the 60 s interval."""
    name = engine.new_container_name("torchimg-health")
    docker = shutil.which("docker") or "docker"
    try:
        started = subprocess.run(
            [docker, "run", "-d", "--name", name, runtime_image.image_id, "sleep", "120"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert started.returncode == 0, started.stderr
        status = ""
        for _ in range(40):  # the 60 s interval alone would take longer than these 40 s
            status = subprocess.run(
                [docker, "inspect", "-f", "{{.State.Health.Status}}", name],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            if status != "starting":
                break
            time.sleep(1)
        assert status == "healthy"
    finally:
        engine.remove_container(name)


def test_the_doctor_fails_a_scratch_folder_where_compiled_code_cannot_run(
    runtime_image: record.Record,
) -> None:
    """Docker mounts /dev/shm noexec, as `--tmpfs /tmp` is by default: torch.compile's cache
    there cannot load the code it compiles. The doctor fails it, with the fix."""
    check = "from torchimg_probe import results, scratch"
    check += "; c = results.Report('doctor').run('scratch', scratch.check)"
    script = f'PYTHONPATH=/opt/torchimg python -c "{check}; print(c.status, c.detail, c.fix)"'
    out = engine.run(runtime_image.image_id, ["sh", "-c", script])
    assert out.splitlines()[-1].startswith("pass user pytorch, HOME /home/pytorch writable"), out
    noexec = {"TORCHINDUCTOR_CACHE_DIR": "/dev/shm/inductor"}
    out = engine.run(runtime_image.image_id, ["sh", "-c", script], env=noexec)
    assert out.splitlines()[-1].startswith("fail torch.compile's cache: /dev/shm/inductor"), out
    assert "(to be made in /dev/shm) does not run programs (mounted noexec)" in out, out
    assert "--tmpfs /tmp:exec" in out


def test_no_ca_bundle_or_token_in_any_layer(runtime_image: record.Record, canaries: Canaries) -> None:
    needles = (canaries.ca_marker.encode(), canaries.netrc_password.encode())
    saved = layers.scan(runtime_image.image_id, needles)
    assert sum(b.content for b in saved.layers) > 5_000_000_000  # the whole image was read
    assert len(saved.layers) == len(layers_of(runtime_image.image_id))
    assert saved.found == {n: [] for n in needles}


def test_the_record_describes_the_image(pipeline: Pipeline, runtime_image: record.Record) -> None:
    saved = pipeline.store.read("2.9.1-cu128", "runtime")
    assert saved is not None
    assert saved.image_id == runtime_image.image_id == engine.image_id(saved.tags[0])
    assert saved.build.ok is True
    assert saved.inputs.lockfiles["requirements/locks/2.9.1-cu128/runtime.txt"] == lockfile.sha256(
        image_inputs.lockfiles(variants.load().variant("2.9.1-cu128"), "runtime")[0]
    )


def test_dev_flavor_adds_jupyter_on_top_of_runtime(
    dev_image: record.Record, runtime_image: record.Record
) -> None:
    runtime_layers = layers_of(runtime_image.image_id)
    dev_layers = layers_of(dev_image.image_id)
    assert dev_layers[: len(runtime_layers)] == runtime_layers  # shares every runtime layer
    assert len(dev_layers) > len(runtime_layers)
    out = py(dev_image.image_id, "import jupyterlab, pandas, sklearn, seaborn, tqdm; print('ok')")
    assert out == "ok"
    settings = "/opt/venv/share/jupyter/lab/settings"
    owners = engine.run(
        dev_image.image_id, ["stat", "-c", "%U:%g %a", settings, f"{settings}/overrides.json"]
    )
    assert owners.split() == ["pytorch:0", "775", "pytorch:0", "664"]  # the user may add extensions' settings
    assert "8888/tcp" in engine.exposed_ports(dev_image.image_id)
    with pytest.raises(PipelineError, match="refusing to start Jupyter without authentication"):
        engine.run(dev_image.image_id, [], env={"JUPYTER_TOKEN": ""})


_JUPYTER_API = """
import json, os, signal, subprocess, time, urllib.request, uuid
import websocket  # websocket-client: a dependency of jupyter_server, so in the image
open("/workspace/hello.txt", "w").write("hi")
quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
server = subprocess.Popen(["python", "-I", "/usr/local/bin/torchimg-jupyter"], **quiet)
def get(path, method="GET"):
    url = "http://127.0.0.1:8888" + path + ("&" if "?" in path else "?") + "token=t"
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)
for _ in range(240):
    try:
        get("/api/status")
        break
    except OSError:
        time.sleep(0.5)
notification = get("/lab/api/settings/@jupyterlab/apputils-extension:notification")
kernel = get("/api/kernels", "POST")
channels = "ws://127.0.0.1:8888/api/kernels/" + kernel["id"] + "/channels?token=t"
ws = websocket.create_connection(channels, timeout=120)
msg_id = uuid.uuid4().hex
header = {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
          "msg_type": "execute_request", "version": "5.3"}
ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "channel": "shell",
                    "content": {"code": "print(6 * 7)", "silent": False}}))
printed, deadline = None, time.time() + 120
while printed is None and time.time() < deadline:
    message = json.loads(ws.recv())
    if message.get("parent_header", {}).get("msg_id") == msg_id and message["msg_type"] == "stream":
        printed = message["content"]["text"].strip()
def health():
    check = ["python", "-I", "/usr/local/bin/torchimg-healthcheck"]
    done = subprocess.run(check, capture_output=True, text=True)
    return [done.returncode, done.stderr.strip()]
answering = health()
# a Jupyter command that serves nothing, waiting at its prompt: not a server to judge
prompt = subprocess.Popen(["jupyter-server", "password"], stdin=subprocess.PIPE, **quiet)
time.sleep(1)
beside = health()
prompt.kill()
families = ["tcp", "tcp6"] if os.path.exists("/proc/net/if_inet6") else ["tcp"]  # a kernel with IPv6
listening = [line.split()[1] for name in families for line in open("/proc/net/" + name).readlines()[1:]
             if line.split()[3] == "0A"]  # LISTEN
os.kill(server.pid, signal.SIGSTOP)  # a server that no longer answers (the start script exec'd it)
stopped = health()
os.kill(server.pid, signal.SIGCONT)
print(json.dumps({
    "defaults": {k: v.get("default") for k, v in notification["schema"]["properties"].items()},
    "root": sorted(item["name"] for item in get("/api/contents")["content"]),
    "printed": printed,
    "health": [answering, beside, stopped],
    "listening": listening,
    "ipv6": families == ["tcp", "tcp6"],
}))
server.terminate()
"""


@pytest.mark.parametrize("user", [None, "1000660000:0"])  # the image's user; OpenShift's any UID
def test_jupyter_opens_in_workspace_without_the_news_prompt_and_runs_a_kernel(
    dev_image: record.Record, user: str | None
) -> None:
    """What a person meets in the browser, read through Jupyter's own REST API: the settings
    overrides (no news prompt, no update check), the file browser's root, a kernel that runs code."""
    env = {"JUPYTER_TOKEN": "t"}
    out = engine.run(dev_image.image_id, ["python", "-c", _JUPYTER_API], env=env, user=user)
    found = json.loads(out.strip().splitlines()[-1])
    assert found["defaults"]["fetchNews"] == "false"
    assert found["defaults"]["checkForUpdates"] is False
    assert found["root"] == ["hello.txt"]  # /workspace, not /
    assert found["printed"] == "42"  # a notebook kernel ran code
    # healthy while Jupyter answers, not when it stops answering (compose's --wait, depends_on)
    answering, beside, stopped = found["health"]
    assert answering == [0, ""], answering
    assert beside == [0, ""], beside
    assert stopped[0] == 1 and "does not answer http://127.0.0.1:8888/api" in stopped[1], stopped
    # on every address, IPv4 and IPv6 where the kernel has it (/proc/net/tcp and tcp6, in hex)
    assert "00000000:22B8" in found["listening"]
    if found["ipv6"]:
        assert "00000000000000000000000000000000:22B8" in found["listening"]


def _variant_with_locks(variant: variants.Variant, tmp_path: Path) -> variants.Variant:
    locks = tmp_path / "locks"
    shutil.copytree(variant.lock_dir, locks)
    return dataclasses.replace(variant, lock_dir=locks)


def test_a_tampered_hash_fails_the_build_and_tags_nothing(
    pipeline: Pipeline,
    default_variant: variants.Variant,
    base: str | None,
    canaries: Canaries,
    tmp_path: Path,
) -> None:
    variant = _variant_with_locks(default_variant, tmp_path)
    lock = variant.lock_dir / "runtime.txt"
    text = lock.read_text()
    start = text.index("filelock==")
    hash_at = text.index("--hash=sha256:", start) + len("--hash=sha256:")
    lock.write_text(text[:hash_at] + "0" * 64 + text[hash_at + 64 :])
    repo = TEST_REPOSITORY + "-tampered"
    opts = build.Options(base=base, creds=canaries.creds, repository=repo)
    with pytest.raises(PipelineError, match="DO NOT MATCH THE HASHES"):
        build.build(*pipeline.at("runtime", variant), opts)[0]
    tag = f"{repo}:{variant.name}-runtime"
    assert engine.image_id(tag) is None
    remove_images(tag)


def test_a_base_with_another_python_than_the_lock_fails_in_the_build(
    pipeline: Pipeline,
    default_variant: variants.Variant,
    base: str | None,
    canaries: Canaries,
    tmp_path: Path,
) -> None:
    variant = _variant_with_locks(default_variant, tmp_path)
    lock = variant.lock_dir / "runtime.txt"
    lock.write_text(lock.read_text().replace("# python: 3.13", "# python: 3.12"))
    opts = build.Options(
        base=base or default_variant.base.image, creds=canaries.creds, repository=TEST_REPOSITORY + "-py"
    )
    with pytest.raises(PipelineError, match=r"compiled for Python 3.12, but this base image has Python 3.13"):
        build.build(*pipeline.at("runtime", variant), opts)[0]
    assert engine.image_id(f"{TEST_REPOSITORY + '-py'}:{variant.name}-runtime") is None


def test_a_missing_base_image_is_named(pipeline: Pipeline, default_variant: variants.Variant) -> None:
    opts = build.Options(base="torchimg-test/no-such-base:never", repository=TEST_REPOSITORY)
    with pytest.raises(PipelineError, match="base image torchimg-test/no-such-base:never is neither"):
        build.build(*pipeline.at("runtime", default_variant), opts)[0]


def test_an_engine_that_does_not_answer(
    pipeline: Pipeline, default_variant: variants.Variant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(PipelineError, match="the Docker Engine does not answer") as exc:
        build.build(*pipeline.at("runtime", default_variant), build.Options(repository=TEST_REPOSITORY))[0]
    assert "systemctl start docker" in str(exc.value)
