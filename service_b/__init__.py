"""Service B of the demo pair (arrives with the demo issue)."""
