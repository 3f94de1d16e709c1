"""The compatibility table decides the index torch comes from and the pin's local version."""

from torchimg.model import torch_builds


def test_pypi_carries_one_cuda_build_per_release() -> None:
    assert torch_builds.default_index("2.9.1", "cu128") == torch_builds.PYPI_INDEX
    assert torch_builds.default_index("2.7.1", "cu126") == torch_builds.PYPI_INDEX
    assert torch_builds.default_index("2.9.1", "cu126") == "https://download.pytorch.org/whl/cu126"
    assert torch_builds.default_index("2.9.1", "cpu") == "https://download.pytorch.org/whl/cpu"


def test_local_version_only_on_pytorch_index() -> None:
    assert torch_builds.torch_requirement("2.9.1", "cu128", torch_builds.PYPI_INDEX) == "torch==2.9.1"
    assert torch_builds.torch_requirement("2.9.1", "cu128", "https://mirror.example/simple") == "torch==2.9.1"
    pytorch = "https://download.pytorch.org/whl/cu128"
    assert torch_builds.torch_requirement("2.9.1", "cu128", pytorch) == "torch==2.9.1+cu128"
    assert torch_builds.torch_requirement("2.9.1", "cpu", "https://download.pytorch.org/whl/cpu") == (
        "torch==2.9.1+cpu"
    )


def test_every_shipped_cuda_tag_has_driver_data() -> None:
    for rel in torch_builds.RELEASES.values():
        assert rel.pypi_cuda in rel.builds
        assert all(tag == torch_builds.CPU or tag in torch_builds.CUDA for tag in rel.builds)
