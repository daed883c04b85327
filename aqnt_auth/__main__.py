"""``python -m aqnt_auth``: the same as the ``aqnt-auth`` command."""

import sys

from ._cli import main

sys.exit(main())
