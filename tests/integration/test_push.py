"""`nox -s push` against a real registry: gates, digests read back, tag order, collisions,
and a registry that goes away in the middle of a push.

Each test pushes to its own repository on a registry the test starts (Debian's
`docker-registry` program, as the pipeline itself does), so nothing here touches
localhost:5000.
"""

import dataclasses
import hashlib
import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.factories import a_record, has_row
from tests.integration.conftest import Pipeline, build_small, remove_images, require_trivy, tag_list
from torchimg import cli, paths, releasenotes
from torchimg.adapters import engine, local_registry, remote_registry
from torchimg.errors import PipelineError, RefusedError, ToolError
from torchimg.model import lockfile, record, tags, variants
from torchimg.model.push_preconditions import Target
from torchimg.stages import push, scan, test

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def target(new_registry: Callable[[], local_registry.Local]) -> local_registry.Local:
    reg = new_registry()
    reg.start()
    return reg


@pytest.fixture(scope="module")
def releasable(
    pipeline: Pipeline, runtime_image: record.Record, default_variant: variants.Variant
) -> record.Record:
    """The runtime image after the real test and scan stages (CPU mode; no vulnerability DB
    here, which a push to a local registry accepts)."""
    require_trivy()
    test.test(*pipeline.at("runtime", default_variant), test.Options())
    return scan.scan(*pipeline.at("runtime", default_variant), scan.Options(allow_no_vuln_db=True))


def _opts(repository: str) -> push.Options:
    # the working tree may be dirty where these tests are developed; the push logic is the same
    return push.Options(Target(repository, allow_dirty=True))


def test_the_local_registry_is_started_and_stopped(new_registry: Callable[[], local_registry.Local]) -> None:
    reg = new_registry()
    assert not local_registry.answers(reg.host)
    assert "docker-registry program" in reg.start()
    assert local_registry.answers(reg.host)
    assert "up, the docker-registry program" in reg.status()
    assert reg.start() == "already up"
    assert "stopped" in reg.stop()
    assert not local_registry.answers(reg.host)
    assert reg.status().endswith("down")


def test_an_untested_image_is_refused(
    pipeline: Pipeline,
    dev_image: record.Record,
    config: variants.Config,
    default_variant: variants.Variant,
    target: local_registry.Local,
) -> None:
    repo = f"{target.host}/untested"
    with pytest.raises(PipelineError) as exc:
        push.push(*pipeline.at("dev", default_variant), _opts(repo))
    assert "has not been tested" in exc.value.what
    assert "nox -s test" in exc.value.fix
    assert tag_list(target.host, "untested") == []


def test_push_reads_the_digest_back_then_moves_tags(
    pipeline: Pipeline,
    releasable: record.Record,
    config: variants.Config,
    default_variant: variants.Variant,
    target: local_registry.Local,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = f"{target.host}/release"
    m = push.push(*pipeline.at("runtime", default_variant), _opts(repo))
    immutable = tags.immutable_of(default_variant, "runtime", releasable)
    assert m["immutable_tag"] == immutable
    assert m["moving_tags"] == ["2.9.1-cu128-runtime", "2.9-cu128-runtime", "latest"]
    beside = tags.release_files(m["digest"])
    assert tag_list(target.host, "release") == sorted([immutable, *m["moving_tags"], beside])
    for t in [immutable, *m["moving_tags"]]:
        assert remote_registry.serves(f"{repo}:{t}", releasable.image_id) == m["digest"]
    assert m["already_present"] is False
    assert m["previous"] is None
    lock = default_variant.lock_dir / "runtime.txt"
    assert m["lockfiles"] == {paths.shown(lock): lockfile.sha256(lock)}
    assert m["base"]["digest"] == releasable.labels["org.opencontainers.image.base.digest"]
    assert m["smoke"]["fail"] == 0 and m["smoke"]["pass"] > 0
    assert m["packages"]["torch"] == "2.9.1"
    # what apt put in, which no lockfile pins, listed from the scan of this very image
    installed = m["os_packages"][releasable.build.platforms[0]]
    assert {"python3", "g++", "tini", "procps", "ca-certificates"} <= set(installed)
    assert installed["tini"].startswith("0.19")
    assert m["scan"]["counts"]["secret"] == 0
    saved = pipeline.store.read(default_variant.name, "runtime")
    assert saved is not None and saved.push is not None and saved.push.digest == m["digest"]
    manifest_md = Path(saved.push.manifest).with_suffix(".md")
    text = manifest_md.read_text()
    assert has_row(text, f"`{repo}:latest`", f"`{m['digest']}`")
    assert "First release of this line" in text
    # the manifest and notes travel beside the image, byte for byte as written here
    attached = remote_registry.attached_release(repo, m["digest"])
    assert attached is not None and attached.manifest_bytes == Path(saved.push.manifest).read_bytes()
    assert attached.notes == manifest_md.read_bytes()
    assert f"`{repo}:{beside}`" in text
    with pytest.raises(RefusedError, match="not a one-layer image of files"):  # refused before any pull
        engine.read_files(f"{repo}:latest", ["release.json"])
    # what anyone running the image reads, on any machine
    capsys.readouterr()
    assert cli.main(["notes", repo]) == 0  # :latest
    assert capsys.readouterr().out == text
    assert cli.main(["notes", f"{repo}@{m['digest']}", "--json"]) == 0
    assert capsys.readouterr().out.encode() == Path(saved.push.manifest).read_bytes()
    assert cli.main(["notes", f"{repo}:no-such-tag"]) == 2
    assert "the registry has no such tag" in capsys.readouterr().err
    assert cli.main(["notes", f"{repo}@sha256:{'0' * 64}"]) == 2
    assert "no release notes beside" in capsys.readouterr().err


def test_pushing_again_is_idempotent(
    pipeline: Pipeline,
    releasable: record.Record,
    config: variants.Config,
    default_variant: variants.Variant,
    target: local_registry.Local,
) -> None:
    repo = f"{target.host}/release"
    before = {t: remote_registry.digest(f"{repo}:{t}") for t in tag_list(target.host, "release")}
    first = remote_registry.digest(f"{repo}:latest")
    m = push.push(*pipeline.at("runtime", default_variant), _opts(repo))
    assert m["already_present"] is True
    assert m["digest"] == first
    # the first release's manifest stays beside the image: nothing in the registry changed
    assert {t: remote_registry.digest(f"{repo}:{t}") for t in tag_list(target.host, "release")} == before


def test_an_immutable_tag_naming_other_content_is_refused(
    pipeline: Pipeline,
    releasable: record.Record,
    config: variants.Config,
    default_variant: variants.Variant,
    target: local_registry.Local,
    base: str | None,
) -> None:
    repo = f"{target.host}/collide"
    immutable = f"{repo}:{tags.immutable_of(default_variant, 'runtime', releasable)}"
    squatter = engine.push_as(base or default_variant.base.image, immutable)  # other content, same tag
    with pytest.raises(PipelineError) as exc:
        push.push(*pipeline.at("runtime", default_variant), _opts(repo))
    assert "never overwritten" in exc.value.what
    assert remote_registry.digest(immutable) == squatter
    assert tag_list(target.host, "collide") == [immutable.rsplit(":", 1)[1]]  # no moving tag


def test_a_registry_stopped_mid_push_moves_nothing_and_a_rerun_succeeds(
    pipeline: Pipeline,
    releasable: record.Record,
    config: variants.Config,
    default_variant: variants.Variant,
    new_registry: Callable[[], local_registry.Local],
) -> None:
    reg = new_registry()
    reg.start()
    repo = f"{reg.host}/midpush"
    errors: list[BaseException] = []

    def release() -> None:
        try:
            push.push(*pipeline.at("runtime", default_variant), _opts(repo))
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=release)
    worker.start()
    uploads = reg.storage / "docker" / "registry" / "v2" / "repositories" / "midpush" / "_uploads"
    deadline = time.monotonic() + 300
    while not uploads.exists() and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uploads.exists(), "the push never started uploading"
    reg.stop()
    worker.join(timeout=300)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], PipelineError), errors
    assert "push of" in str(errors[0]) and "failed" in str(errors[0])
    assert "no moving tag" in str(errors[0]) or "nothing after the failed step" in str(errors[0])

    reg.start()
    assert not set(tag_list(reg.host, "midpush")) & {"latest", "2.9.1-cu128-runtime", "2.9-cu128-runtime"}
    m = push.push(*pipeline.at("runtime", default_variant), _opts(repo))
    beside = tags.release_files(m["digest"])
    assert tag_list(reg.host, "midpush") == sorted([m["immutable_tag"], *m["moving_tags"], beside])
    assert remote_registry.digest(f"{repo}:latest") == m["digest"]


def test_moving_tags_never_move_backwards_unless_forced(
    pipeline: Pipeline,
    releasable: record.Record,
    config: variants.Config,
    default_variant: variants.Variant,
    target: local_registry.Local,
    base: str | None,
    tmp_path: Path,
) -> None:
    repo = f"{target.host}/forward"
    newer = build_small(
        tmp_path,
        f"FROM {base or default_variant.base.image}\n"
        'LABEL org.opencontainers.image.created="2099-01-01T00:00:00Z"\n',
        "torchimg-test/newer:1",
    )
    try:
        squatter = engine.push_as(newer, f"{repo}:2.9-cu128-runtime")
    finally:
        remove_images(newer)
    with pytest.raises(RefusedError, match="never move backwards") as exc:
        push.push(*pipeline.at("runtime", default_variant), _opts(repo))
    assert "--force-move" in exc.value.fix
    immutable = tags.immutable_of(default_variant, "runtime", releasable)
    assert tag_list(target.host, "forward") == sorted([immutable, "2.9-cu128-runtime"])  # none moved
    assert remote_registry.digest(f"{repo}:2.9-cu128-runtime") == squatter

    # a version tag's release of this (older) commit: its immutable tag only, nothing moved
    m = push.push(
        *pipeline.at("runtime", default_variant), dataclasses.replace(_opts(repo), moving_tags=False)
    )
    assert m["references"] == [f"{repo}:{immutable}@{m['digest']}"]
    assert remote_registry.digest(f"{repo}:2.9-cu128-runtime") == squatter
    assert m["previous"] is None or m["previous"]["digest"] != squatter  # not the newer image

    forced = dataclasses.replace(_opts(repo), force_move=True)
    m = push.push(*pipeline.at("runtime", default_variant), forced)
    assert remote_registry.digest(f"{repo}:2.9-cu128-runtime") == m["digest"] != squatter


def test_the_previous_release_is_compared_from_the_manifest_beside_it(
    pipeline: Pipeline,
    releasable: record.Record,
    default_variant: variants.Variant,
    target: local_registry.Local,
    base: str | None,
    tmp_path: Path,
) -> None:
    """A fresh CI runner has neither the previous release's manifest in reports/releases/ nor,
    in a shallow clone, its commit: the notes come from the manifest attached beside it."""
    repo = f"{target.host}/beside"
    older = build_small(
        tmp_path,
        f"FROM {base or default_variant.base.image}\n"
        'LABEL org.opencontainers.image.created="2000-01-01T00:00:00Z" '
        f'org.opencontainers.image.revision="{"0" * 40}"\n',
        "torchimg-test/older:1",
    )
    try:
        previous = engine.push_as(older, f"{repo}:2.9.1-cu128-runtime")
    finally:
        remove_images(older)
    platform = releasable.build.platforms[0]
    # what a release from another machine attached beside that image (its own lists)
    installed = pipeline.store.read(default_variant.name, "runtime")
    assert installed is not None and installed.scan is not None
    os_before = {**installed.scan.os_packages[platform], "tini": "0.18.0-1", "gone-since": "1.0-1"}
    py_before = {**releasenotes.packages(sorted(releasable.inputs.lockfiles)), "torch": "2.9.0"}
    earlier = {"digest": previous, "packages": py_before, "os_packages": {platform: os_before}}
    remote_registry.attach_release(repo, previous, json.dumps(earlier).encode(), b"# earlier\n")

    m = push.push(*pipeline.at("runtime", default_variant), _opts(repo))
    assert m["previous"]["digest"] == previous
    assert m["package_diff"] == {"added": {}, "removed": {}, "changed": {"torch": ["2.9.0", "2.9.1"]}}
    os_diff = m["os_package_diff"][platform]
    assert os_diff["removed"] == {"gone-since": "1.0-1"} and os_diff["added"] == {}
    assert list(os_diff["changed"]) == ["tini"] and os_diff["changed"]["tini"][0] == "0.18.0-1"
    saved = pipeline.store.read(default_variant.name, "runtime")
    assert saved is not None and saved.push is not None
    text = Path(saved.push.manifest).with_suffix(".md").read_text()
    assert has_row(text, "tini", "0.18.0-1", os_diff["changed"]["tini"][1])
    assert has_row(text, "torch", "2.9.0", "2.9.1")


def test_release_files_that_are_not_what_push_attaches_are_refused_when_read(
    target: local_registry.Local, tmp_path: Path
) -> None:
    """The registry is not trusted: a file over the size limit, or a link where the manifest
    goes, is refused with the tag to remove, before or instead of being read."""
    repo = f"{target.host}/odd-files"
    big = f"{repo}:sha256-{'1' * 64}.release"
    engine.push_files(big, {"release.json": os.urandom(2 * 2**20)}, {})
    with pytest.raises(
        RefusedError, match=r"not a one-layer image of files of at most 1024 KiB \(a layer of"
    ):
        engine.read_files(big, ["release.json"])
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "release.json").symlink_to("/etc/passwd")  # a link in the image's root
    dockerfile = "FROM scratch\nCOPY files/ /\n"
    link = build_small(tmp_path, dockerfile, "torchimg-test/link:1", compression="uncompressed")
    zipped = build_small(tmp_path, dockerfile, "torchimg-test/link:zst", compression="zstd")
    try:
        ref, gz = (f"{repo}:sha256-{c * 64}.release" for c in "24")
        engine.push_as(link, ref)
        engine.push_as(zipped, gz)
    finally:
        remove_images(link, zipped)
    # a compressed layer (an older pipeline's, or docker's) is decompressed in memory, at most
    # 1 MiB of it: its link is refused as the uncompressed one's below
    with pytest.raises(RefusedError, match=r"release\.json: a symbolic link"):
        engine.read_files(gz, ["release.json"])
    with pytest.raises(RefusedError, match=r"release\.json: a symbolic link") as exc:
        engine.read_files(ref, ["release.json"])
    assert ref in exc.value.fix  # the tag to remove
    assert engine.read_files(ref, ["other.json"]) == {}  # a file it does not hold: not there
    assert engine.read_files(f"{repo}:sha256-{'3' * 64}.release", ["release.json"]) is None

    # ONBUILD triggers would run when the layer is fetched (a build FROM the image): refused first
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "release.json").write_text("{}")
    dockerfile = "FROM scratch\nONBUILD RUN echo triggered\nCOPY plain/ /\n"
    onbuild = build_small(tmp_path, dockerfile, "torchimg-test/onbuild:1", compression="uncompressed")
    try:
        ref = f"{repo}:sha256-{'5' * 64}.release"
        engine.push_as(onbuild, ref)
    finally:
        remove_images(onbuild)
    with pytest.raises(RefusedError, match="an image with ONBUILD triggers"):
        engine.read_files(ref, ["release.json"])

    # an uncompressed layer of 10 KiB whose sparse entry claims 2 GiB: read as a tar, never unpacked
    (tmp_path / "sparse").mkdir()
    with (tmp_path / "sparse" / "release.json").open("wb") as f:
        f.truncate(2**31)
        f.write(b"{}")
    tar = ["tar", "--sparse", "--format=posix", "-C", str(tmp_path / "sparse")]
    subprocess.run([*tar, "-cf", str(tmp_path / "l.tar"), "."], check=True)
    layer = (tmp_path / "l.tar").read_bytes()
    assert len(layer) < 64 * 2**10
    sparse = f"{repo}:sha256-{'6' * 64}.release"
    _put_image(target.host, "odd-files", sparse.rsplit(":", 1)[1], layer)
    used = shutil.disk_usage(tmp_path).used
    with pytest.raises(RefusedError, match=r"release\.json: not a plain file of at most 1 MiB"):
        engine.read_files(sparse, ["release.json"])
    assert shutil.disk_usage(tmp_path).used - used < 2**30  # nothing near 2 GiB was written


def _put_image(host: str, name: str, tag: str, layer: bytes) -> None:
    """Push a one-layer image made by hand (a layer no builder would write) with the registry's
    HTTP API."""

    def blob(data: bytes) -> dict[str, object]:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        start = urllib.request.Request(f"http://{host}/v2/{name}/blobs/uploads/", method="POST")
        with urllib.request.urlopen(start) as answer:
            where = urllib.parse.urljoin(f"http://{host}/", answer.headers["Location"])
        glue = "&" if "?" in where else "?"
        octets = {"Content-Type": "application/octet-stream"}
        upload = urllib.request.Request(f"{where}{glue}digest={digest}", data, octets, method="PUT")
        urllib.request.urlopen(upload).close()
        return {"digest": digest, "size": len(data)}

    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    config["rootfs"]["diff_ids"] = [f"sha256:{hashlib.sha256(layer).hexdigest()}"]  # type: ignore[index]
    config_type = "application/vnd.oci.image.config.v1+json"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config_type, **blob(json.dumps(config).encode())},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob(layer)}],
    }
    put = urllib.request.Request(
        f"http://{host}/v2/{name}/manifests/{tag}",
        json.dumps(manifest).encode(),
        {"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        method="PUT",
    )
    urllib.request.urlopen(put).close()


class _FlakyProxy(http.server.BaseHTTPRequestHandler):
    """Forwards to the real registry, but answers 500 to every manifest request for one tag."""

    upstream = ""
    broken_tag = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def handle(self) -> None:
        """A TLS hello gets the plain-HTTP answer a registry gives, so the engine falls back
        to http as it does for the real local registries."""
        if self.connection.recv(1, socket.MSG_PEEK) == b"\x16":
            self.wfile.write(
                b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
            )
            return
        super().handle()

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _forward(self) -> None:
        body = self._body()
        if f"/manifests/{self.broken_tag}" in self.path:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        conn = http.client.HTTPConnection(self.upstream, timeout=120)
        skip = {"transfer-encoding", "connection", "content-length"}
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for key, value in self.headers.items():  # each one: an engine sends several Accept headers
            if key.lower() not in skip:
                conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in skip:
                self.send_header(key, value)
        # a HEAD answer keeps the upstream's length (a blob's size); others carry their body
        length = resp.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward  # noqa: N815 (http.server)


@pytest.fixture(scope="module")
def dev_releasable(
    pipeline: Pipeline, dev_image: record.Record, default_variant: variants.Variant
) -> record.Record:
    require_trivy()
    test.test(*pipeline.at("dev", default_variant), test.Options(bench=False))
    return scan.scan(*pipeline.at("dev", default_variant), scan.Options(allow_no_vuln_db=True))


def test_a_registry_failing_for_one_flavor_fails_it_with_exit_3_and_pushes_the_other(
    pipeline: Pipeline,
    releasable: record.Record,
    dev_releasable: record.Record,
    default_variant: variants.Variant,
    target: local_registry.Local,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The blobs are in the registry's repository already, so only manifests cross the proxy.
    for rec in (releasable, dev_releasable):
        engine.push_as(rec.image_id, f"{target.host}/flaky:seed-{rec.flavor}")
    broken = tags.immutable_of(default_variant, "runtime", releasable)
    handler = type("Handler", (_FlakyProxy,), {"upstream": target.host, "broken_tag": broken})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        repo = f"localhost:{server.server_address[1]}/flaky"
        argv = ["--reports", str(pipeline.reports), "push", "--flavor", "runtime", "--flavor", "dev"]
        argv += ["--repository", repo, "--allow-dirty"]
        code = cli.main(argv)
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert code == 3, err
    assert "push: 1 of 2 done; failed: 2.9.1-cu128 runtime (exit 3)" in err
    assert "Traceback" not in err
    pushed = set(tag_list(target.host, "flaky"))
    assert not pushed & {broken, "2.9.1-cu128-runtime", "2.9-cu128-runtime", "latest"}, pushed
    dev = tags.immutable_of(default_variant, "dev", dev_releasable)
    assert pushed >= {dev, "2.9.1-cu128-dev", "2.9-cu128-dev", "latest-dev"}, pushed


def test_each_platform_of_a_pushed_index_is_read_back_by_its_own_digest(
    target: local_registry.Local, tmp_path: Path
) -> None:
    both = ("linux/amd64", "linux/arm64")
    for arch in ("amd64", "arm64"):
        (tmp_path / arch).mkdir()
        (tmp_path / arch / "which").write_text(arch * 1000)
    dockerfile = (
        "FROM scratch\nARG TARGETARCH\nCOPY ${TARGETARCH}/which /which\n"
        'LABEL org.opencontainers.image.created="2026-12-01T00:00:00Z" which="${TARGETARCH}"\n'
    )
    two = build_small(tmp_path, dockerfile, "torchimg-test/two-platform:latest", platforms=both)
    one = build_small(tmp_path, dockerfile, "torchimg-test/one-platform:latest")
    repo = f"{target.host}/two-platform"
    try:
        digest = engine.push_as(two, f"{repo}:test")
        served = remote_registry.platforms(f"{repo}@{digest}")
        assert [p["platform"] for p in served] == list(both)
        assert len({p["digest"] for p in served}) == 2
        assert all(p["served"] and int(str(p["size"])) > 0 for p in served), served
        # the labels push judges moving tags by: buildx answers one image per platform here
        found = remote_registry.labels(f"{repo}@{digest}")
        assert found.get("org.opencontainers.image.created") == "2026-12-01T00:00:00Z", found
        assert "which" not in found  # a label the platforms disagree on is nobody's
        rec = a_record()
        rec.build.platforms = list(both)
        assert push._platforms_served(rec, f"{repo}@{digest}") == served
        single = engine.push_as(one, f"{repo}:single")  # a manifest, no index: no platform is listed
        with pytest.raises(ToolError, match="does not serve linux/"):
            push._platforms_served(rec, f"{repo}@{single}")
    finally:
        remove_images(two, one)
