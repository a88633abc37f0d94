"""The player daemon."""

import os

# The player spawns scores from a process that runs gRPC threads. gRPC's fork handlers
# have hung such processes (DESIGN-NOTES §1.10); scores are spawned without preexec_fn,
# so no fork handler is needed. Set before grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
