"""cluster: many hosts' captures analysed on a Dask cluster, one merged report.

``run`` (hosts, :func:`~pcapreset.cluster.run.fleet`, the task on a worker),
``merge`` (:class:`~pcapreset.cluster.merge.FleetReport`: per host, per backend
server, fleet totals), ``text`` (its text), ``command`` (``pcapreset fleet``).
On top of the library: each host is one :func:`pcapreset.analyze` call.
Dask and distributed (the ``fleet`` extra) are imported only when a fleet runs.
"""
