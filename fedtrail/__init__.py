"""fedtrail: a blockchain-audited federated-learning node for medical imaging."""

from fedtrail.errors import FedtrailError

__all__ = ["FedtrailError", "__version__"]
__version__ = "0.1.0"
