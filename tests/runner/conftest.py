"""Runner tests: keep INFO logs from the runner visible on failure."""

import logging

logging.getLogger("mizzen.runner").setLevel(logging.INFO)
