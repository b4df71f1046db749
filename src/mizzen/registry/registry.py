"""The mutable registry: Services/ServiceEntries/WorkloadEntries from config plus runner-registered workloads,
producing an immutable RegistrySnapshot. (Stub: being written.)"""
