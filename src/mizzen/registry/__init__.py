"""The service registry: services and their endpoints from Kubernetes Services, ServiceEntries,
WorkloadEntries and workloads registered by a runner."""
