"""The JAX backend of the Ops: :mod:`.dispatch`."""
