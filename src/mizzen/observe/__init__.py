"""Observability around the mesh, like Istio's addons: a real Prometheus scraping every proxy and the control
plane with Istio's job and relabelling (:mod:`.sd`, :mod:`.prometheus`), Istio's dashboards' queries
(:mod:`.dashboards`) and a real Jaeger for traces (:mod:`.jaeger`). The processes are started and stopped by
their PIDs (:mod:`.process`); the console (a later issue) reads the same Prometheus and Jaeger APIs."""
