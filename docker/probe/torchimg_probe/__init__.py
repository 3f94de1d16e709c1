"""In-image probe: smoke checks, matmul benchmark and the node doctor. Needs torch, and
nvidia-ml-py for the doctor's NVML reads (a check says so when it is missing)."""
