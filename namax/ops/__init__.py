"""Named operations, one module per family; ``namax`` re-exports each module's ``__all__``."""
