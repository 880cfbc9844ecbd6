"""Local stand-ins for the paid services (Baseten, OpenAI, Cartesia).

Development, test, demo and benchmark tooling only: production code (``agent/``,
``plugins/``) never imports this package.
"""
