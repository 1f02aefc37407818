"""The fault matrix: every fault on every runtime, asserted and documented."""
