"""The codec's HTTP service (FastAPI): `uvicorn --factory server.app:create_app`.

server.app builds the app and loads the models in its lifespan; server.engine holds the models
and batches their calls (server.batching); server.routes has one router per resource.
"""
