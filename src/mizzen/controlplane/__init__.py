"""The istiod-like control plane: config store, registry, debounced push loop, xDS server, HTTP API/debug."""
