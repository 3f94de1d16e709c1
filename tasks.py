"""Local conveniences (invoke): `inv --list`. The pipeline's stages are nox sessions; both
call the `torchimg` package, so no logic lives here."""

from invoke.context import Context
from invoke.tasks import task

from torchimg import devtools, paths
from torchimg.adapters import local_registry

devtools.bad_task_arguments_exit_2()
devtools.quiet_on_closed_pipe()


@task(name="registry", help={"action": "up, down or status", "address": "host:port (default localhost:5000)"})
def registry_(c: Context, action: str, address: str = local_registry.LOCAL) -> None:
    """The embedded local registry: `inv registry up|down|status`."""
    with devtools.user_errors():
        print(devtools.registry_action(action, address))


@task(
    help={
        "variant": "variant (default: the default one)",
        "flavor": "runtime or dev",
        "run": "run this shell command instead of an interactive shell",
    }
)
def shell(c: Context, variant: str = "", flavor: str = "runtime", run: str = "") -> None:
    """Open a shell in a built image, with the GPUs (when present) and ./workspace mounted."""
    with devtools.user_errors():
        c.run(devtools.run_command(variant, flavor, ["bash", "-c", run] if run else ["bash"]), pty=True)


@task(help={"variant": "variant (default: the default one)", "port": "host port (default 8888)"})
def jupyter(c: Context, variant: str = "", port: str = "8888") -> None:
    """Start Jupyter Lab from the dev image; the URL with its token is printed."""
    with devtools.user_errors():
        c.run(devtools.run_command(variant, "dev", [], ports={devtools.host_port(port): 8888}), pty=True)


@task(
    help={
        "variant": "variant (default: the default one)",
        "flavor": "runtime (default) or dev",
        "image": "any image of this pipeline by reference, not with --variant/--flavor (pulled if not here)",
    }
)
def doctor(c: Context, variant: str = "", flavor: str = "", image: str = "") -> None:
    """Is this node ready for GPU work? Driver, /dev/shm, MIG, ECC, PCIe, NCCL; exit 1 on a failure."""
    with devtools.user_errors():
        unhealthy, report = devtools.doctor(variant, flavor, image)
        for line in unhealthy:
            print(f"  NOT healthy: {line}")
        print(f"doctor: {'NOT healthy' if unhealthy else 'healthy'}; report: {paths.shown(report)}")
        if unhealthy:
            raise SystemExit(1)


@task
def images(c: Context) -> None:
    """This project's images and how far each got: build, test, scan, push."""
    with devtools.user_errors():
        print(devtools.images_table(), end="")


@task(
    help={
        "keep_reports": "keep reports/ (records, scan reports, release manifests)",
        "recorded": "only the images the records in reports/ name (CI jobs sharing one engine)",
    }
)
def clean(c: Context, keep_reports: bool = False, recorded: bool = False) -> None:
    """Remove this project's images (by their labels) and reports; say what was removed."""
    with devtools.user_errors():
        print("\n".join(devtools.clean(keep_reports, recorded)))
