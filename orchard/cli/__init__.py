"""The ``orchard`` command line, built on the public SDK (``orchard.client``)."""
