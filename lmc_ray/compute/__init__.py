"""The sweep's input and compute, no Ray: model references pinned and fetched (sources, models), eval sets read and
tokenized (data), θ(α) written in place (interpolate), evaluated (evaluate, packed, trim, metrics), per process
(residents, core)."""
