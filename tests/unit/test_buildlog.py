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
    assert buildlog.ran(LOG, "[builder ")
    assert not buildlog.ran(LOG, "[runtime ")
