"""`python -m raman_client ...`: same as the `raman-client` console script."""

import sys

from raman_client.cli import main

sys.exit(main())
