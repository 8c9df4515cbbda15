"""A local Cloud Run Admin API v2 + IAM emulator (control plane) and its data plane; see README.md."""
