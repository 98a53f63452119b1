"""The software side: golden model (golden/), host driver and devices (host/), performance
model (perf/) and accuracy evaluation (eval/)."""
