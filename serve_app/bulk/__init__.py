"""Bulk background removal for folders of 10^4 to 10^6 images: `python -m serve_app.bulk {client,offline}`."""
