"""The learning loop's shared core: log rows as labels, drift and live calibration.

Both the command line (``training``: ``leadscore monitor``, ``train --from-log``,
``retrain``) and the service (``serving``: ``GET /v1/monitoring``, the board's monitoring
page, Prometheus gauges) use it, and neither imports the other, so it lives here, below
both: it imports ``features``, ``models`` and ``scorelog`` only.
"""
