"""Named neural-network layers and functions (Equinox modules)."""
