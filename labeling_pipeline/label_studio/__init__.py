"""Label Studio I/O: the REST client, safe image fetching, annotation conversion, project sync."""
