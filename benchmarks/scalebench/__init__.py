"""Parts of `benchmarks/scale.py`: a small Kubernetes HTTP client (`kube_http`), the record of every TGIService
change the watch saw (`ledger`), process and API server figures (`probes`), and the table and targets (`report`).

The benchmark treats the operator as a black box: it talks to the API server, the emulator's admin API, /proc and
the API server's /metrics, never to the operator's modules.
"""
