"""The pure translation core: config snapshot + registry snapshot + proxy -> Envoy xDS resources.

No I/O and no asyncio anywhere below this package; everything is a function of its inputs.
"""
