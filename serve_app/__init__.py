"""Background removal as a Ray Serve application: a CPU ingress in front of batched GPU model replicas."""

__version__ = "0.1.0"
