"""The NUMBA backend of the Ops: :mod:`.dispatch`."""
