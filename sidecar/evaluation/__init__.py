"""Pure entitlement evaluation: no I/O, clock injected."""
