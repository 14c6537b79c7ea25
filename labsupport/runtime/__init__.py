"""The engine every lesson runs on: real aiohttp services with latency and fault models
(``services``, ``latency``, ``faults``, ``pool``), the ``Lab`` that owns them, open- and
closed-loop load (``load``), what was measured (``metrics``), Kafka messaging helpers
(``messaging``), stores, the cache server, settings and errors.

It never imports the notebook kit, the lessons or the course tooling.
"""
