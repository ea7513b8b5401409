"""Real Prometheus for the dashboard tests (and the README picture): servers, dashboards, TraceQL.

* ``servers`` starts Debian's ``prometheus`` and ``prometheus-pushgateway`` on free loopback
  ports with temporary configs and TSDBs, and queries the HTTP API.
* ``dashboards`` reads ``dashboards/*.json``: every panel query, Grafana variables substituted.
* ``traceql`` is a small TraceQL syntax checker (Grafana's grammar is JavaScript only).
"""
