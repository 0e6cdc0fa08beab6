"""Pure transformations, no I/O: one package per destination and the user JavaScript runtime."""
