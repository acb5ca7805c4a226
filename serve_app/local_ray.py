"""Starting Ray from a command-line tool (the prebuild, the offline bulk tool) on a machine that may be busy.

Ray's local node waits a fixed 30 s for its raylet to register with the GCS. On a loaded machine (a 2-core host
running another Ray beside it) that start sometimes takes longer, and `ray.init` fails before anything of the
tool ran: such a start is tried once more. Any other failure, and a second timeout, is the caller's.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

logger = logging.getLogger(__name__)

NODE_START_TIMEOUT = "The current node timed out during startup"


def init(**options: Any) -> None:
    """`ray.init(**options)`, once more if the local node it started timed out before it registered."""
    try:
        ray.init(**options)
    except Exception as error:
        if NODE_START_TIMEOUT not in str(error):
            raise
        logger.warning("Ray's local node did not register within Ray's 30 s; starting it once more")
        ray.shutdown()
        ray.init(**options)
