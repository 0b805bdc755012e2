"""Triton kernels of streamgen, each beside a plain-torch reference and registered as a torch op.

One sub-package per op (``qk_norm_rope``, ``adaln``, ``cache_attention``); each holds
``reference.py`` (plain torch: the ground truth and the CPU path), ``triton_kernel.py`` (the kernel
and its launcher) and ``op.py`` (the ``torch.library.custom_op`` registration in the ``streamgen``
namespace, with a fake implementation so ``torch.compile`` traces through it).

Which path runs is decided per call (:func:`streamgen.kernels.runtime.use_triton`): the Triton
kernel on CUDA tensors, or on CPU tensors when ``TRITON_INTERPRET=1`` is set; the reference otherwise.
Importing this package imports neither triton nor any kernel.
"""
