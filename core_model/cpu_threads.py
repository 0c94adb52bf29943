"""Per-thread intra-op thread counts for running several small CPU computations side by side.

PyTorch's CPU build keeps its intra-op thread count per calling thread: `torch.set_num_threads`
sets the OpenMP thread count of the calling thread and MKL's thread-local count, and also the
default with which threads that have not run a parallel op yet start. `use_one_intra_op_thread`
gives the calling thread one intra-op thread and puts that default back, so the encoder runs of
other threads keep every core.
"""

from __future__ import annotations

import threading

import torch


def use_one_intra_op_thread() -> None:
    """Run this thread's torch CPU ops on one thread; other threads keep their own setting.

    Meant as the initializer of a pool whose threads each run one small computation (one
    click's decoder pass), so that N such threads use N cores without oversubscribing them.
    Results can differ from a multi-threaded run of the same op by float rounding only.
    """
    default = torch.get_num_threads()
    torch.set_num_threads(1)
    if default != 1:  # restore the default of threads started later from a throwaway thread
        restore = threading.Thread(target=torch.set_num_threads, args=(default,), daemon=True)
        restore.start()
        restore.join()
