"""Serving on many devices and machines with Ray Serve (the optional extra ``streamgen[cluster]``).

Each Serve replica of :class:`~streamgen.server.cluster.replica.StreamgenReplica` runs today's
single-machine server (``create_app``) on one device; one :mod:`gateway <.gateway>` deployment is the
endpoint clients see. Every session holds one long Serve request on the replica that streams it, so
Serve's ``max_ongoing_requests`` (the replica's session capacity) routes, back-pressures and
autoscales by sessions in use. Ray is imported only inside this package (docs/deploy.md).
"""
