"""tgi-operator: serve Hugging Face TGI on Cloud Run GPUs from a Kubernetes TGIService resource."""

__version__ = "0.1.0"

API_GROUP = "tgi-operator.dev"
API_VERSION = "v1alpha1"
KIND = "TGIService"
PLURAL = "tgiservices"
