"""Drop-in routes for the APIs users already call: rembg's server and remove.bg. Parsing and error shapes only;
the ingress runs the same pipeline for them as for its own API."""
