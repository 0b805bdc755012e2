import os

# Keep the two CPU cores usable by the rest of the suite (and by parallel helpers' runs).
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(1)
