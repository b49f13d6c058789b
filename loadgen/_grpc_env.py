"""gRPC's core logs TLS handshake failures to stderr; loadgen reports them itself, in one line.

The setting only takes effect when made before grpc is first imported, hence this module, imported first.
"""

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
