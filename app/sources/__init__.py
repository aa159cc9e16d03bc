"""Source repositories: the upstreams Depot mirrors (`model.py`), their definitions read from the
reference's YAML templates (`templates.py`), and each source's own keyring (`keys.py`)."""
