"""The agent (pilot-agent's job): Envoy bootstrap, starting and supervising Envoy, readiness."""
