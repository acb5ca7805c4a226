"""Ray Serve deployments: all Ray code lives here and in serve_app.app."""
