"""Benchmark-only Locust user for benchmarks/gate_capacity.py: the gate's load request, sent by
Locust's plain ``HttpUser`` (python-requests) instead of ``FastHttpUser`` (geventhttpclient).

It takes the gate's own ``LoadUser`` think time, bodies and task, so the request is byte for byte
the one the gate sends; only the HTTP client differs. Same environment as load_tests/predict.py.
"""

from locust import HttpUser

from load_tests.predict import LoadUser


class PlainLoadUser(HttpUser):
    wait_time = LoadUser.wait_time
    on_start = LoadUser.on_start
    tasks = LoadUser.tasks
