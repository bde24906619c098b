"""Settings of the third-party libraries every rankscope process shares.

Kept apart from the driver so that workers (a Slurm job, a Ray task, a CPU-pool process) can
quiet the libraries without importing the driver; transformers is imported only if installed.
"""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    """Our progress bars speak for the libraries' own bars and info logs."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("transformers", "peft", "datasets", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
