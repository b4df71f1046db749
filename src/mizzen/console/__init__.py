"""The console (``mizzen dashboard``, Kiali's job): a traffic graph, services/workloads with health and
charts, Istio config with validation, proxy sync status, traces and route simulation, served by the control
plane under ``/console/`` from Prometheus, Jaeger and the control plane's own state."""
