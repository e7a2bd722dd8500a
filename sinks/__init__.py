"""rlobs' built-in sinks, one module each, registered under the ``rlobs.sinks`` entry point.

Each depends only on the public contract in :mod:`rlobs`; none imports another.
"""
