"""Reading BuildKit's plain progress: which steps ran, which came from cache, how long."""

from torchimg import buildlog

LOG = """#5 [python 1/2] FROM docker.io/local/debian:trixie
#5 DONE 0.1s
#12 [builder 2/2] RUN --mount=type=bind,from=lock,source=runtime.txt pip install
#12 3.1 Downloading torch-2.9.1-cp313-cp313-manylinux_2_28_x86_64.whl (899.7 MB)
#12 DONE 84.8s
#13 [runtime 1/6] COPY --from=builder /layers/nvidia/ /
#13 CACHED
#20 exporting to image
#20 exporting layers 132.7s done
#20 unpacking to docker.io/torchimg-test/pytorch:2.9.1-cu128-runtime 64.7s done
#20 DONE 198.0s""".splitlines()


def test_steps_states_and_export_substeps() -> None:
    steps = {s.name.strip(): s for s in buildlog.steps(LOG)}
    assert (
        steps["[builder 2/2] RUN --mount=type=bind,from=lock,source=runtime.txt pip install"].seconds == 84.8
    )
    assert steps["[runtime 1/6] COPY --from=builder /layers/nvidia/ /"].state == "CACHED"
    assert steps["exporting layers"].seconds == 132.7
    assert steps["unpacking"].seconds == 64.7
    assert steps["exporting to image"].seconds == 198.0


def test_ran_tells_executed_from_cached() -> None:
    assert buildlog.ran(LOG, "builder")
    assert not buildlog.ran(LOG, "runtime")


MULTI = """#9 [linux/arm64 python 2/2] RUN --mount=type=bind,source=image/apt-install apt-install python3
#9 DONE 265.2s
#10 [linux/amd64 python 2/2] RUN --mount=type=bind,source=image/apt-install clamped apt-install python3
#10 DONE 11.0s
#17 [linux/amd64->arm64 builder 2/2] RUN --mount=type=bind,from=lock,source=runtime.txt sh install-wheels
#17 DONE 80.5s
#18 [linux/arm64 runtime 1/6] COPY --from=builder /layers/nvidia/ /
#18 DONE 12.0s
#19 [linux/arm64 runtime 4/6] RUN clamped apt-install g++
#19 CACHED""".splitlines()


def test_stage_with_and_without_a_platform() -> None:
    assert buildlog.stage("[builder 2/2] RUN pip") == ("builder", "RUN")
    assert buildlog.stage("[linux/amd64->arm64 builder-dev 1/1] RUN sh") == ("builder-dev", "RUN")
    assert buildlog.stage("[linux/arm64 runtime 1/6] COPY --from=builder") == ("runtime", "COPY")
    assert buildlog.stage("[internal] load build definition from Dockerfile") is None
    assert buildlog.stage("exporting to image") is None


def test_run_seconds_counts_executed_run_steps_of_the_stages() -> None:
    assert buildlog.ran(MULTI, "builder")
    assert not buildlog.ran(MULTI, "dev")
    assert buildlog.run_seconds(MULTI, ("python", "runtime")) == 276.2  # COPY and cached excluded
    assert buildlog.run_seconds(MULTI, ("builder",)) == 80.5
