"""Label Studio ML backend protocol: a Flask app over `core_model` and the pipeline."""
