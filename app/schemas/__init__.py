"""marshmallow schemas, one module per resource (they also feed the OpenAPI description)."""
