"""The ``imgcls`` command: parsing arguments and printing results, nothing else. Every command is a
thin client of the library.
"""

import time

# Process start, near enough: the CLI package is the first import. A command's --time-limit and
# --profile count from here, so the seconds spent importing are inside them.
PROCESS_STARTED = time.perf_counter()
