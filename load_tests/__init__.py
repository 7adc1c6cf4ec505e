"""Locust users of the gate; run only inside Locust's own process."""
