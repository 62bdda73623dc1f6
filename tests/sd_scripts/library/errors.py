"""Exceptions that print under the names the real libraries give them in a traceback."""


class OutOfMemoryError(RuntimeError):
    """Printed as `torch.OutOfMemoryError: CUDA out of memory. ...`."""


OutOfMemoryError.__module__ = "torch"


class SafetensorError(Exception):
    """Printed as `safetensors_rust.SafetensorError: ...`."""


SafetensorError.__module__ = "safetensors_rust"


def cuda_out_of_memory() -> OutOfMemoryError:
    return OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 7.79 GiB"
        " of which 12.19 MiB is free. Including non-PyTorch memory, this process has 7.76 GiB"
        " memory in use. Of the allocated memory 7.41 GiB is allocated by PyTorch, and 187.34 MiB"
        " is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try"
        " setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See"
        " documentation for Memory Management "
        " (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
    )
