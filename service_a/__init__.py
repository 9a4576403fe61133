"""Service A of the demo pair (arrives with the demo issue)."""
