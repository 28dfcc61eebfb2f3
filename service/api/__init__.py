"""HTTP layer: the FastAPI application, its routes, inputs and errors."""
