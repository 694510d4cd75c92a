"""What a cluster offers: the site.toml model and its discovery from a live cluster."""
