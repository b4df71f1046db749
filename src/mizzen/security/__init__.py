"""Workload identity, Citadel's job: the CA, its gRPC service, and the agent side (pilot-agent's SDS).

* :mod:`.identity` — SPIFFE identities ``spiffe://<trust domain>/ns/<ns>/sa/<sa>``.
* :mod:`.pki` — keys, CSRs and certificate facts (``cryptography`` only; no hand-written X.509/ASN.1).
* :mod:`.bundle` — the trust bundle: one or several roots (root rotation).
* :mod:`.files` — private (0600) files and directories written atomically.
* :mod:`.ca` — the certificate authority: a self-signed root in the state dir or a plugged-in ``cacerts`` CA;
  signs workload certificates for an authenticated identity only.
* :mod:`.authn` — who is calling: the ``Authenticator`` interface and the local per-pod credentials.
* :mod:`.caproto` / :mod:`.caserver` — Istio's ``istio.v1.auth.IstioCertificateService/CreateCertificate``.
* :mod:`.nodeagent` — the agent side: CA client, ``SecretManager`` (fetch, cache, rotate) and the SDS server.
"""
