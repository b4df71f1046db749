"""The agent side of workload identity, as pilot-agent's ``security/pkg/nodeagent``.

* :mod:`.caclient` — calls the CA's ``CreateCertificate`` with the pod's credential.
* :mod:`.cache` — :class:`SecretManager`: key + CSR, fetch, cache, rotate at about half the TTL, retry with
  backoff while the CA is away (the still-valid certificate keeps being served); ``proxy-config secret`` data.
* :mod:`.sds` — the SDS server on a Unix socket serving ``default`` and ``ROOTCA`` to the pod's Envoy.
"""
