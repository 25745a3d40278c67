"""Pure jinja2 rendering of the challenger's ConfigMap and Deployment manifests."""
