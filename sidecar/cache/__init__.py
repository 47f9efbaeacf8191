"""In-process cache tier."""
