"""torchimg: a reproducible PyTorch + CUDA image pipeline (lock, build, test, scan, push)."""
