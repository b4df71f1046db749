"""Kubernetes admission webhooks (istiod's ``:15017``): the HTTPS server and its AdmissionReview handling
(:mod:`.review`, :mod:`.server`), Galley's validation of Istio's kinds (:mod:`.validation`), the
``ValidatingWebhookConfiguration`` objects (:mod:`.configuration`) and the leader's caBundle/failurePolicy
patcher (:mod:`.patcher`)."""
